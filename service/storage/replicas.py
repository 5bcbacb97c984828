"""Read replicas: one pool per PostgreSQL streaming standby, chosen per read.

Reads (queries, document gets and lists) run on a replica that is up and whose
replay is within ``max_lag_s`` of the primary; otherwise on the primary. Writes,
migrations, LISTEN and key look-ups never come here: they use the primary pool.

Lag is measured by LSN, not by ``pg_last_xact_replay_timestamp()`` (which grows
while an idle primary writes nothing): a background thread samples the primary's
``pg_current_wal_lsn()`` every ``check_interval_s`` and each replica's
``pg_last_wal_replay_lsn()``; a replica's lag is the age of the newest primary
sample it has replayed (0 when it has replayed the latest one).

Read-your-writes: ``commit_token()`` (read on the primary after a write commits)
names an LSN; a read that passes it goes only to a replica whose last checked
replay LSN is at or past it, else to the primary. The token is opaque to callers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from service import metrics
from service.errors import InvalidArgument, RetrievalError, Unavailable
from service.storage.database import Database

_log = logging.getLogger(__name__)

T = TypeVar("T")
PRIMARY = "primary"
_TOKEN = re.compile(r"lsn1\.([0-9A-F]{1,8})\.([0-9A-F]{1,8})")
_CHECK_TIMEOUT_S = 2.0  # connect and statement timeout of one replica check
_CHECK_STATEMENT_TIMEOUT = sql.SQL("SET LOCAL statement_timeout = {}").format(
    sql.Literal(int(_CHECK_TIMEOUT_S * 1000))
)


def _lsn(text: str) -> int:
    """PostgreSQL's ``pg_lsn`` text (``16/B374D848``) as a number."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_token(lsn: int) -> str:
    return f"lsn1.{lsn >> 32:X}.{lsn & 0xFFFFFFFF:X}"


def parse_token(token: str) -> int | None:
    """The LSN a consistency token names; None for "" (no token); InvalidArgument else."""
    if not token:
        return None
    found = _TOKEN.fullmatch(token)
    if found is None:
        raise InvalidArgument(
            "consistency_token is malformed: pass back the token an ingest response gave"
        )
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def lag_s(samples: Iterable[tuple[float, int]], replay: int, now: float) -> float | None:
    """A replica's lag: seconds since the newest primary sample ``(time, LSN)`` (oldest
    first) that its replay position ``replay`` has reached; None when it is behind all."""
    for at, lsn in reversed(list(samples)):
        if lsn <= replay:
            return now - at
    return None


def _replica_failure(error: BaseException) -> bool:
    """Whether a read failed because of the replica, not the request: the replica is
    unreachable, or cancelled the read in a conflict with WAL replay (SQLSTATE 40001,
    raw or translated into a service error)."""
    if isinstance(error, Unavailable):
        return True
    conflict = psycopg.errors.SerializationFailure
    return isinstance(error, conflict) or isinstance(error.__cause__, conflict)


@dataclass(frozen=True)
class ReplicaState:
    label: str  # "replica<i>": its index in read_database_urls, never the URL
    usable: bool  # up, and within the lag bound
    replay_lsn: int
    lag_s: float | None  # None: not measurable (down, or beyond the history kept)


@dataclass
class _Replica:
    index: int
    conninfo: str
    db: Database | None = None
    replay_lsn: int = 0
    lag_s: float | None = None
    usable: bool = False

    @property
    def label(self) -> str:
        return f"replica{self.index}"


class ReadPools:
    """The primary pool plus one pool per replica URL; ``run`` picks one per read."""

    def __init__(
        self,
        primary: Database,
        urls: Sequence[str] = (),
        *,
        max_lag_s: float = 5.0,
        check_interval_s: float = 1.0,
        pool_max_size: int = 10,
    ) -> None:
        self._primary = primary
        self._replicas = [
            _Replica(i, make_conninfo(url, connect_timeout=int(_CHECK_TIMEOUT_S)))
            for i, url in enumerate(urls)
        ]
        self._max_lag_s = max_lag_s
        self._interval_s = check_interval_s
        self._pool_max_size = pool_max_size
        # (monotonic time, primary LSN), newest last; enough to measure lag past the bound.
        self._samples: deque[tuple[float, int]] = deque(
            maxlen=int(max_lag_s / check_interval_s) + 3
        )
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="replica-check", daemon=True)

    def start(self) -> None:
        """Check the replicas once (bounded by the check timeouts), then keep checking."""
        self.check()
        if self._replicas:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=_CHECK_TIMEOUT_S * (len(self._replicas) + 2))
        for replica in self._replicas:
            self._drop(replica)

    # ------------------------------------------------------------------ reads

    def run(self, work: Callable[[Database], T], *, token: str = "") -> T:
        """``work(db)`` on a usable replica, or on the primary. A replica that fails
        (gone since the last check, or a recovery conflict) is marked down and the
        read runs again on the primary: reads are safe to repeat."""
        lsn = parse_token(token)
        chosen = self._choose(lsn)
        if chosen is not None:
            replica, db = chosen
            try:
                result = work(db)
            except (RetrievalError, psycopg.Error) as e:
                if not _replica_failure(e):
                    raise
                self._mark_down(replica, str(e))
            else:
                metrics.count_read(replica.label)
                return result
        metrics.count_read(PRIMARY)
        return work(self._primary)

    def commit_token(self) -> str:
        """A token for reads that must see every write committed so far ("" without
        replicas: every read then runs on the primary anyway)."""
        if not self._replicas:
            return ""
        with self._primary.autocommit() as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return format_token(_lsn(row[0]))

    def replicas(self) -> list[ReplicaState]:
        """Each replica's state at the last check, for health reports and tests."""
        with self._lock:
            return [ReplicaState(r.label, r.usable, r.replay_lsn, r.lag_s) for r in self._replicas]

    def in_use(self) -> dict[str, bool]:
        """Pool label -> whether reads without a token go there now."""
        with self._lock:
            used = {r.label: r.usable for r in self._replicas}
        return {PRIMARY: not any(used.values()), **used}

    def _choose(self, lsn: int | None) -> tuple[_Replica, Database] | None:
        with self._lock:
            ready = [
                r
                for r in self._replicas
                if r.usable and r.db is not None and (lsn is None or r.replay_lsn >= lsn)
            ]
            if not ready:
                return None
            self._next += 1
            replica = ready[self._next % len(ready)]
            assert replica.db is not None
            return replica, replica.db

    def _mark_down(self, replica: _Replica, why: str) -> None:
        with self._lock:
            was = replica.usable
            replica.usable = False
        if was:
            _log.warning("read replica %d failed a read, primary serves: %s", replica.index, why)
        self._report()

    # ------------------------------------------------------------------ checks

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check()
            except Exception:
                _log.exception("read replica check failed")

    def check(self) -> None:
        """One round: sample the primary's LSN, then each replica's replay LSN."""
        if not self._replicas:
            self._report()
            return
        primary_lsn = self._primary_lsn()
        now = time.monotonic()
        if primary_lsn is not None:
            self._samples.append((now, primary_lsn))
        for replica in self._replicas:
            replay = self._replay_lsn(replica)
            lag = (
                None if replay is None or primary_lsn is None else lag_s(self._samples, replay, now)
            )
            usable = lag is not None and lag <= self._max_lag_s
            with self._lock:
                was = replica.usable
                replica.replay_lsn = replay or 0
                replica.lag_s = lag
                replica.usable = usable
            if usable and not was:
                _log.info("read replica %d in use (lag %.1f s)", replica.index, lag)
            elif was and not usable:
                _log.warning(
                    "read replica %d skipped (down or lagging; lag %s s): the primary serves",
                    replica.index,
                    "unknown" if lag is None else f"{lag:.1f}",
                )
        self._report()

    def _primary_lsn(self) -> int | None:
        try:
            with self._primary.connection() as conn:
                conn.execute(_CHECK_STATEMENT_TIMEOUT)
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except (Unavailable, psycopg.Error) as e:
            _log.warning("cannot read the primary's WAL position: %s", e)
            return None
        assert row is not None
        return _lsn(row[0])

    def _replay_lsn(self, replica: _Replica) -> int | None:
        """The replica's replay LSN, opening its pool if needed; None when down."""
        try:
            if replica.db is None:
                db = Database(
                    replica.conninfo,
                    min_size=1,
                    max_size=self._pool_max_size,
                    timeout=_CHECK_TIMEOUT_S,
                )
                db.open(timeout=_CHECK_TIMEOUT_S)
                with self._lock:
                    replica.db = db
            with replica.db.connection() as conn:
                conn.execute(_CHECK_STATEMENT_TIMEOUT)
                row = (
                    conn.cursor(row_factory=dict_row)
                    .execute(
                        "SELECT pg_is_in_recovery() AS standby,"
                        " pg_last_wal_replay_lsn()::text AS replayed"
                    )
                    .fetchone()
                )
        except (Unavailable, psycopg.Error) as e:
            if replica.usable or replica.db is not None:
                _log.warning("read replica %d unreachable: %s", replica.index, e)
            self._drop(replica)
            return None
        assert row is not None
        if not row["standby"] or row["replayed"] is None:
            _log.warning("read replica %d is not a streaming standby: skipped", replica.index)
            return None
        return _lsn(row["replayed"])

    def _drop(self, replica: _Replica) -> None:
        with self._lock:
            db, replica.db, replica.usable = replica.db, None, False
        if db is not None:
            db.close()

    def _report(self) -> None:
        with self._lock:
            lags = {r.label: r.lag_s for r in self._replicas}
        metrics.set_read_pools(self.in_use(), lags)

"""Empty chunk partitions kept ready for CreateDatastore, made by a background thread.

Creating a partition is DDL on ``datastore_chunks``: PostgreSQL rebuilds the parent's
partition descriptor, which grows with the number of datastores (measured: about 2 ms
at 10 datastores, 10-25 ms at 5,000; docs/scale.md). The filler attaches
``RETRIEVAL_SPARE_PARTITIONS`` partitions ahead of need, each under a fresh id; a new
datastore takes one of those ids (``storage.partitions.claim_spare``) and only adds
its own indexes and triggers to the partition, DDL on its own relation. Once half of
them are claimed, the filler attaches the missing ones in one transaction (each attach
makes every connection rebuild the parent's partition descriptor on its next write
through it: a batch costs one rebuild). With none spare (a burst of creates, or the
setting at 0), CreateDatastore creates its partition itself, as before.
"""

from __future__ import annotations

import logging
import threading

from service.storage import partitions
from service.storage.database import Database

_log = logging.getLogger(__name__)

_RETRY_S = 5.0  # after a failure (the database down): try again this much later
_JOIN_TIMEOUT_S = 10.0


class SparePartitions:
    """Keeps up to ``target`` spare partitions (a daemon thread, woken after each claim)."""

    def __init__(self, db: Database, target: int) -> None:
        self._db = db
        self._target = target
        self._low = target // 2  # refill once no more than this many are left
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._full = False  # until the first fill, which tops up whatever is missing
        self.made = 0  # spare partitions this process attached (for tests and logs)

    @property
    def enabled(self) -> bool:
        return self._target > 0

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="spare-partitions", daemon=True)
        self._thread.start()
        self._wanted.set()

    def wanted(self) -> None:
        """A spare was claimed: top them up once half are gone."""
        self._wanted.set()

    def close(self) -> None:
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT_S)
            self._thread = None

    def fill(self, *, low: int | None = None) -> int:
        """Top the spares up to ``target`` in one transaction when no more than ``low``
        (default: half of them) are left; how many were attached."""
        with self._db.connection() as conn:
            made = partitions.top_up_spares(conn, self._target, self._low if low is None else low)
        self.made += made
        return made

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            self._wanted.clear()
            if self._stop.is_set():
                return
            try:
                self.fill(low=None if self._full else self._target - 1)
                self._full = True
            except Exception:
                _log.warning("could not make spare chunk partitions; retrying", exc_info=True)
                self._stop.wait(_RETRY_S)
                self._wanted.set()

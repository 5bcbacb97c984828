"""App.open: a part that fails to open closes every part opened before it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from service.app import App
from service.errors import FailedPrecondition
from service.settings import Settings
from tests.helpers.paths import MODEL_CACHE


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """Processes of a PostgreSQL server running in ``pgdata``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(pgdata) in part for part in cmdline):
            found.append(process)
    return found


def test_a_model_that_fails_to_load_leaves_no_database_or_pool_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # a folder no backend can load
    settings = Settings(
        data_dir=tmp_path / "data",  # no database_url: the embedded server
        port=0,
        create_local_key=False,
        onnx_cache_dir=MODEL_CACHE,
        models={"broken": str(broken)},
        preload_models=["broken"],
    )
    threads_before = set(threading.enumerate())
    with pytest.raises(FailedPrecondition, match="cannot load embedding model 'broken'"):
        App.open(settings)
    # The server had started (open got as far as the models): its data directory exists.
    assert (settings.pgdata / "PG_VERSION").exists()
    deadline = time.monotonic() + 30
    while _postgres_processes(settings.pgdata) or set(threading.enumerate()) - threads_before:
        assert time.monotonic() < deadline, (
            f"left behind: {_postgres_processes(settings.pgdata)}, "
            f"threads {set(threading.enumerate()) - threads_before}"
        )
        time.sleep(0.05)
    assert not (settings.pgdata / "postmaster.pid").exists()  # stopped, not killed

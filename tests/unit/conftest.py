"""The unit layer: pure functions only, no database, no model, no server.

`.venv/bin/python -m pytest tests/unit -q` runs in seconds. The shared fixtures of
tests/conftest.py are lazy (session fixtures start nothing until a test asks), and this
hook refuses a unit test that asks for one of the fixtures that start something.
"""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
# The fixtures that start PostgreSQL, load the model or open a port (tests/conftest.py,
# tests/helpers/http_fixtures.py).
STARTS_SOMETHING = frozenset(
    {"pg_url", "settings", "app", "server", "target", "make_client", "client"}
    | {"http_server", "http_url", "start_http", "http_client"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT not in Path(str(item.path)).parents:
            continue
        wanted = STARTS_SOMETHING.intersection(getattr(item, "fixturenames", ()))
        if wanted:
            raise pytest.UsageError(
                f"{item.nodeid}: a unit test may not use {sorted(wanted)} (it starts a "
                "database, the model or a server); put it beside the integration tests"
            )

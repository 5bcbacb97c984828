"""Operator commands: re-embedding progress and cancel, datastore export and import.

Registered by ``service.cli``; each opens the database from the same settings as
the server (DATABASE_URL or the embedded server in ``--data-dir``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from service.errors import InvalidArgument
from service.models import Metric, ReembedStatus
from service.settings import Settings

if TYPE_CHECKING:
    from service.app import App

_POLL_S = 0.5


def add_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    settings: Callable[[argparse.Namespace], Settings],
) -> None:
    status = sub.add_parser(
        "reembed-status",
        parents=[common],
        help="show a datastore's re-embedding job, with a progress bar until it ends",
    )
    status.add_argument("id", help="datastore id")
    status.add_argument("--no-wait", action="store_true", help="print the state once and exit")
    status.set_defaults(fn=lambda a: _reembed_status(a, settings(a)))
    cancel = sub.add_parser(
        "reembed-cancel", parents=[common], help="cancel a re-embedding job (the old model stays)"
    )
    cancel.add_argument("id", help="datastore id")
    cancel.set_defaults(fn=lambda a: _reembed_cancel(a, settings(a)))
    export = sub.add_parser(
        "export-datastore", parents=[common], help="write a datastore as JSON lines to stdout"
    )
    export.add_argument("id", help="datastore id")
    export.set_defaults(fn=lambda a: _export(a, settings(a)))
    load = sub.add_parser(
        "import-datastore",
        parents=[common],
        help="create a datastore from an export-datastore file (or a Pinecone-shaped dump)",
    )
    load.add_argument("file", type=Path, help="the JSON lines file ('-' for stdin)")
    load.add_argument("--name", default="", help="the new datastore's name (default: the file's)")
    owner = load.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user-id", help="owner's user id")
    owner.add_argument("--email", help="owner's e-mail")
    load.add_argument(
        "--format",
        choices=["export", "pinecone"],
        default="export",
        help="'pinecone': one {id, values, metadata} record per line, into a datastore "
        "with embedding_model 'none'",
    )
    load.add_argument(
        "--metric", choices=[m.value for m in Metric], default="cosine", help="pinecone only"
    )
    load.add_argument(
        "--text-field", default="text", help="pinecone only: the metadata field holding the text"
    )
    load.set_defaults(fn=lambda a: _import(a, settings(a)))


@contextmanager
def _app(settings: Settings) -> Iterator[App]:
    from service.app import App

    # No job threads: a job belongs to the server that runs it.
    app = App.open(settings, load_models=False, run_jobs=False)
    try:
        yield app
    finally:
        app.close()


def _describe(job: ReembedStatus) -> str:
    text = (
        f"{job.state}: {job.chunks_done}/{job.chunks_total} chunks, "
        f"{job.source_model} -> {job.target_model} ({job.target_dimensions} dimensions)"
    )
    return f"{text}; error: {job.error}" if job.error else text


def _reembed_status(args: argparse.Namespace, settings: Settings) -> int:
    datastore_id = _uuid(args.id)
    with _app(settings) as opened:
        job = opened.reembedding.status(datastore_id)
        if job is None:
            print(f"datastore {datastore_id} has no re-embedding job")
            return 1
        if job.running and not args.no_wait:
            job = _follow(opened, datastore_id, job)
    print(_describe(job))
    return 0 if job.state in ("done", "copying", "indexing", "switching") else 1


def _follow(app: App, datastore_id: UUID, job: ReembedStatus) -> ReembedStatus:
    from tqdm import tqdm

    with tqdm(total=job.chunks_total, unit="chunk", desc=job.state, file=sys.stderr) as bar:
        while True:
            bar.total = max(job.chunks_total, job.chunks_done)
            bar.n = job.chunks_done
            bar.set_description(job.state)
            bar.refresh()
            if not job.running:
                return job
            time.sleep(_POLL_S)
            latest = app.reembedding.status(datastore_id)
            if latest is None:  # the datastore was deleted
                return ReembedStatus("cancelled", 0, 0, job.target_model, 0, job.source_model, 0)
            job = latest


def _reembed_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _app(settings) as opened:
        cancelled = opened.reembedding.cancel(_uuid(args.id))
    print("cancelled" if cancelled else "no re-embedding job is running")
    return 0 if cancelled else 1


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.transfer import export_datastore

    with _app(settings) as opened:
        done = export_datastore(opened.db, _uuid(args.id), sys.stdout)
    sys.stdout.flush()
    print(f"exported {done.documents} documents, {done.chunks} chunks", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from service.core.transfer import Importer, owner

    with _app(settings) as opened:
        user_id = _uuid(args.user_id) if args.user_id else opened.identity.find_user(args.email)
        importer = Importer(opened.datastores, opened.ingestion, owner(opened.db, user_id))
        with _open(args.file) as lines:
            if args.format == "pinecone":
                done = importer.import_pinecone(
                    lines, args.name, Metric(args.metric), args.text_field
                )
            else:
                done = importer.import_export(lines, args.name)
    print(done.datastore.id)
    print(f"imported {done.documents} documents, {done.chunks} chunks", file=sys.stderr)
    return 0


@contextmanager
def _open(path: Path) -> Iterator[Iterator[str]]:
    if str(path) == "-":
        yield iter(sys.stdin)
        return
    try:
        with path.open(encoding="utf-8") as f:
            yield iter(f)
    except FileNotFoundError as e:
        raise InvalidArgument(f"no such file: {path}") from e


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as e:
        raise InvalidArgument(f"{text!r} is not an id (a UUID)") from e

"""``ingest`` / ``python -m ingest``: push files, directory trees or record files into a datastore.

Re-running the same command finishes an interrupted job: documents already
stored are recognised by their content hash and skipped without re-embedding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from ingest.credentials import MissingKey, resolve_api_key
from ingest.datastores import UnknownDatastore, resolve_datastore
from ingest.job import JobError, run_job, status_of
from ingest.report import Tally, progress_bar, write_failures
from ingest.sources import Source, SourceOptions
from ingest.sources.tabular import FieldMap
from ingest.sources.walk import ALL_FORMATS
from service.client import Client, connect

TARGET_ENV = "RETRIEVAL_TARGET"
DEFAULT_TARGET = "127.0.0.1:50051"

EXIT_OK = 0
EXIT_FAILED_DOCUMENTS = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingest",
        description="Ingest documents into an Agentopia Retrieval datastore over StreamIngest. "
        "Inputs are files or directories: .txt, .md, .html, .pdf (one document each), "
        ".jsonl and .csv (one document per record; a BEIR corpus.jsonl reads as it is). "
        "Re-run the same command to finish an interrupted job.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="files and directories to ingest")
    p.add_argument("--datastore", "-d", required=True, help="datastore id, or a name of yours")
    p.add_argument("--create", action="store_true", help="create the named datastore if missing")
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        help=f"server host:port (default ${TARGET_ENV} or {DEFAULT_TARGET})",
    )
    conn.add_argument("--api-key", help="API key (default $RETRIEVAL_API_KEY, then the key file)")
    conn.add_argument(
        "--key-file", type=Path, help="file holding the API key (default .data/api-key)"
    )
    conn.add_argument(
        "--tls", action="store_true", help="speak TLS (implied by the three options below)"
    )
    conn.add_argument(
        "--ca-file", type=Path, help="PEM CA bundle verifying the server (default: system roots)"
    )
    conn.add_argument(
        "--client-cert", type=Path, help="PEM client certificate, for a server requiring mTLS"
    )
    conn.add_argument("--client-key", type=Path, help="PEM private key of --client-cert")
    conn.add_argument(
        "--retries",
        type=int,
        default=8,
        help="times in a row to resume after the connection drops (default 8)",
    )
    src = p.add_argument_group("sources")
    src.add_argument("--format", choices=ALL_FORMATS, help="read every file as this format")
    for flag, verb in (("--include", "only read"), ("--exclude", "skip")):
        src.add_argument(
            flag,
            action="append",
            default=[],
            metavar="GLOB",
            help=f"{verb} files whose relative path or name matches (repeatable)",
        )
    src.add_argument("--hidden", action="store_true", help="also read hidden files and folders")
    src.add_argument("--id-field", default="id,_id", help="record id field(s), first found wins")
    src.add_argument("--title-field", default="title", help="record title field(s)")
    src.add_argument("--text-field", default="text", help="record text field(s)")
    src.add_argument(
        "--metadata-fields",
        help="record fields kept as metadata, comma-separated (default: all the others)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--failed-file",
        type=Path,
        default=Path("ingest-failed.tsv"),
        help="where failed ids and reasons go (default ingest-failed.tsv; written on failure)",
    )
    out.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    out.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar: auto = only on a terminal",
    )
    return p


def _source(args: argparse.Namespace) -> Source:
    fields = FieldMap(
        id=_names(args.id_field),
        title=_names(args.title_field),
        text=_names(args.text_field),
        metadata=None if args.metadata_fields is None else _names(args.metadata_fields),
    )
    options = SourceOptions(
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        format=args.format,
        fields=fields,
        hidden=args.hidden,
    )
    return Source(args.inputs, options)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        source = _source(args)
        key = resolve_api_key(args.api_key, args.key_file)
        client = connect(
            args.target,
            key,
            tls=args.tls,
            ca_file=args.ca_file,
            client_cert=args.client_cert,
            client_key=args.client_key,
        )
    except (OSError, ValueError, MissingKey) as e:
        print(f"ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args, source, client)
    finally:
        client.close()


def _run(args: argparse.Namespace, source: Source, client: Client) -> int:
    try:
        datastore = resolve_datastore(client, args.datastore, create=args.create)
    except UnknownDatastore as e:
        print(f"ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as e:
        status, details = status_of(e)
        print(f"ingest: {status.name}: {details}", file=sys.stderr)
        return EXIT_ABORTED
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    tally = Tally(progress_bar(source.count() if show else None, enabled=show))
    code = EXIT_OK
    try:
        run_job(client, datastore.id, source, tally, retries=args.retries)
    except JobError as e:
        print(f"ingest: stream failed: {e}", file=sys.stderr)
        code = EXIT_ABORTED
    except KeyboardInterrupt:
        print("ingest: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        tally.finish()
    return _report(args, datastore.id, tally, code)


def _report(args: argparse.Namespace, datastore_id: str, tally: Tally, code: int) -> int:
    print(f"datastore {datastore_id}: {tally.summary_line()}")
    if tally.failures:
        write_failures(args.failed_file, tally.failures)
        print(f"{len(tally.failures)} failed: ids and reasons in {args.failed_file}")
    if code != EXIT_OK:
        print("incomplete: run the same command again to finish (stored documents are skipped)")
    elif tally.failures:
        code = EXIT_FAILED_DOCUMENTS
    if args.summary_json:
        summary = {**tally.summary(), "datastore_id": datastore_id, "exit_code": code}
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``ingest`` package: sources, credentials, and the CLI against a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.serve_process import ServeProcess
from ingest.cli import main
from ingest.credentials import MissingKey, resolve_api_key
from ingest.records import Record, Unreadable
from ingest.sources import Source, SourceOptions
from ingest.sources.html import html_to_text
from ingest.sources.tabular import FieldMap
from service.app import App
from service.client import Client, connect, pb
from service.core.chunking import chunk_text
from service.models import Role
from service.settings import Settings
from tests.helpers.ingest_cli import assert_consistent, datastore_counts, run_cli
from tests.helpers.paths import SCIFACT
from tests.helpers.rpc import stream_ingest_threads

# ------------------------------------------------------------------ fixtures and helpers


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer is ``text`` (Helvetica, no compression)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mixed"
    (root / "notes").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("Photosynthesis turns light into sugar in plant leaves.\n")
    (root / "notes" / "b.md").write_text("# Stars\n\nStars fuse hydrogen into helium.\n")
    (root / "c.html").write_text(
        "<html><head><title>Rivers</title><style>p { color: red }</style>"
        "<script>var hidden = 'script text';</script></head>"
        "<body><h1>Rivers</h1><p>Rivers carry water &amp; silt to the sea.</p>"
        "<script>alert('no')</script></body></html>"
    )
    (root / "d.pdf").write_bytes(minimal_pdf("Glaciers are slow rivers of ice."))
    records = [
        {"id": "r1", "title": "Volcano", "text": "Volcanoes erupt molten rock.", "year": 2020},
        {"id": "r2", "text": "Oceans cover most of the planet.", "metadata": {"lang": "en"}},
    ]
    (root / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "image.png").write_bytes(b"\x89PNG not a document")
    (root / ".hidden" / "secret.txt").write_text("never read")
    return root


@pytest.fixture
def cli_user(app: App, target: str) -> Iterator[tuple[str, Client]]:
    """(API key, client) of a fresh user, for CLI runs against the test server."""
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@cli")
    key = app.identity.create_key(user_id, Role.USER).key
    client = connect(target, key)
    yield key, client
    client.close()


def expected_chunks(app: App, datastore: pb.Datastore, texts: list[str]) -> int:
    model = app.models.get(datastore.config.embedding_model)
    size, overlap = datastore.config.chunk_size, datastore.config.chunk_overlap
    return sum(
        len(chunk_text(t, model.token_offsets(t), chunk_size=size, overlap=overlap)) for t in texts
    )


def small_corpus(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": f"s{i}", "title": f"S{i}", "text": f"Short note {i}."}))
            f.write("\n")
    return path


# ------------------------------------------------------------------ sources


def test_directory_walk_reads_every_format(mixed_dir: Path) -> None:
    items = list(Source([mixed_dir]))
    by_id = {i.external_id: i for i in items}
    assert sorted(by_id) == ["a.txt", "c.html", "d.pdf", "notes/b.md", "r1", "r2"]
    assert all(isinstance(i, Record) for i in items)
    md = by_id["notes/b.md"]
    assert isinstance(md, Record) and md.title == "Stars"
    assert md.metadata == {"source": "mixed", "path": "notes/b.md", "format": "md"}
    html = by_id["c.html"]
    assert isinstance(html, Record) and html.title == "Rivers"
    assert "water & silt" in html.text and "script" not in html.text and "color" not in html.text
    pdf = by_id["d.pdf"]
    assert isinstance(pdf, Record) and "Glaciers are slow rivers of ice." in pdf.text
    assert pdf.metadata["pages"] == 1
    r1, r2 = by_id["r1"], by_id["r2"]
    assert isinstance(r1, Record) and isinstance(r2, Record)
    assert r1.title == "Volcano" and r1.metadata["year"] == 2020
    assert r2.metadata == {"source": "mixed", "path": "e.jsonl", "format": "jsonl", "lang": "en"}
    assert Source([mixed_dir]).count() == 6
    # the same inputs give the same items again: ids and content are stable
    assert list(Source([mixed_dir])) == items


def test_include_exclude_and_hidden(mixed_dir: Path) -> None:
    only_md = Source([mixed_dir], SourceOptions(include=("*.md", "*.txt")))
    assert [i.external_id for i in only_md] == ["a.txt", "notes/b.md"]
    no_notes = Source([mixed_dir], SourceOptions(exclude=("notes/*", "*.pdf", "*.jsonl")))
    assert [i.external_id for i in no_notes] == ["a.txt", "c.html"]
    hidden = Source([mixed_dir], SourceOptions(include=("*.txt",), hidden=True))
    assert [i.external_id for i in hidden] == [".hidden/secret.txt", "a.txt"]


def test_unreadable_inputs_are_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "bad.jsonl").write_text(
        '{"id": "ok", "text": "fine"}\nnot json\n{"id": "x"}\n[1]\n'
    )
    items = list(Source([tmp_path]))
    failed = {i.external_id: i.reason for i in items if isinstance(i, Unreadable)}
    assert "cannot read PDF" in failed["broken.pdf"]
    assert "no text" in failed["empty.txt"]
    assert "invalid JSON" in failed["bad.jsonl#2"]
    assert "no text" in failed["x"]
    assert "not a JSON object" in failed["bad.jsonl#4"]
    assert [i.external_id for i in items if isinstance(i, Record)] == ["ok"]


def test_csv_and_jsonl_field_mapping(tmp_path: Path) -> None:
    csv_file = tmp_path / "papers.csv"
    csv_file.write_text(
        "key,heading,body,year,venue\nk1,First,Body one,2001,X\nk2,,Body two,2002,Y\n"
    )
    fields = FieldMap(id=("key",), title=("heading",), text=("body",), metadata=("year",))
    items = list(Source([csv_file], SourceOptions(fields=fields)))
    assert [(i.external_id, i.title, i.text) for i in items if isinstance(i, Record)] == [
        ("k1", "First", "Body one"),
        ("k2", "", "Body two"),
    ]
    first = items[0]
    assert isinstance(first, Record)
    assert first.metadata == {"source": "papers.csv", "path": "papers.csv", "format": "csv"} | {
        "year": "2001"
    }
    no_ids = tmp_path / "rows.jsonl"
    no_ids.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    mapped = list(Source([no_ids], SourceOptions(fields=FieldMap(text=("body",)))))
    assert [i.external_id for i in mapped] == ["rows.jsonl#1", "rows.jsonl#3"]


def test_beir_corpus_format(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    row = {"_id": "42", "id": "other", "title": "T", "text": "Body.", "metadata": {"url": "u"}}
    corpus.write_text(json.dumps(row) + "\n")
    [item] = list(Source([corpus], SourceOptions(format="beir")))
    assert isinstance(item, Record)
    assert (item.external_id, item.title, item.text) == ("42", "T", "Body.")
    assert item.metadata == {"source": "corpus.jsonl", "path": "corpus.jsonl", "format": "beir"} | {
        "url": "u"
    }


def test_html_drops_scripts_styles_and_keeps_paragraphs() -> None:
    title, text = html_to_text(
        "<title> A  page </title><body><div>One<br>Two</div><style>x{}</style>"
        "<noscript>enable js</noscript><p>Three &lt;3&gt;</p><svg><text>drawn</text></svg></body>"
    )
    assert title == "A page"
    assert text.splitlines() == ["One", "Two", "Three <3>"]


def test_api_key_resolution(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("from-file\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api-key").write_text("from-data-dir\n")
    env = {"RETRIEVAL_API_KEY": "from-env", "RETRIEVAL_DATA_DIR": str(data_dir)}
    assert resolve_api_key("from-flag", key_file, environ=env) == "from-flag"
    assert resolve_api_key(None, key_file, environ=env) == "from-env"
    no_env_key = {"RETRIEVAL_DATA_DIR": str(data_dir)}
    assert resolve_api_key(None, key_file, environ=no_env_key) == "from-file"
    assert resolve_api_key(None, None, environ=no_env_key) == "from-data-dir"
    with pytest.raises(MissingKey):
        resolve_api_key(None, None, environ={"RETRIEVAL_DATA_DIR": str(tmp_path / "none")})


def test_feed_resends_unanswered_documents_after_a_restart() -> None:
    from ingest.job import JobError, _Feed

    items = [Record(f"r{i}", f"text {i}") for i in range(6)]
    unreadable: list[Unreadable] = []
    feed = _Feed([*items[:2], Unreadable("bad", "why"), *items[2:]], "ds", unreadable.append)
    first = feed.requests()
    sent = [next(first).document.external_id for _ in range(4)]
    assert sent == ["r0", "r1", "r2", "r3"] and unreadable == [Unreadable("bad", "why")]
    feed.acknowledge("r0")
    with pytest.raises(JobError):
        feed.acknowledge("r2")  # answers come in the order documents were sent
    assert feed.restart() == 3
    assert list(first) == []  # the old stream stops sending
    second = [r.document.external_id for r in feed.requests()]
    assert second == ["r1", "r2", "r3", "r4", "r5"]
    assert all(r.datastore_id == "ds" for r in feed.requests())


# ------------------------------------------------------------------ the CLI against the server


def test_cli_ingests_a_mixed_directory_then_skips_it(
    app: App,
    target: str,
    cli_user: tuple[str, Client],
    mixed_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, client = cli_user
    (mixed_dir / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    failed_file = tmp_path / "failed.tsv"
    code, summary = run_cli(
        target, key, mixed_dir, "--datastore", "mixed", "--create", "--failed-file", failed_file
    )
    assert code == 1  # one input failed
    assert summary["created"] == 6 and summary["failed"] == 1 and summary["documents"] == 7
    assert failed_file.read_text().startswith("broken.pdf\tcannot read PDF")
    out = capsys.readouterr().out
    assert "6 created, 0 updated, 0 unchanged, 1 failed" in out
    ds_id = str(summary["datastore_id"])
    counts = datastore_counts(app, ds_id)
    assert counts["documents"] == 6
    assert_consistent(counts)
    datastore = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds_id))
    texts = [i.text for i in Source([mixed_dir]) if isinstance(i, Record)]
    assert counts["chunks"] == expected_chunks(app, datastore, texts)
    got = client.ingest.GetDocument(pb.GetDocumentRequest(datastore_id=ds_id, external_id="r1"))
    assert got.document.metadata["path"] == "e.jsonl" and got.document.metadata["year"] == 2020

    (mixed_dir / "broken.pdf").unlink()
    (mixed_dir / "a.txt").write_text("Photosynthesis also releases oxygen.\n")
    code, summary = run_cli(target, key, mixed_dir, "--datastore", ds_id)
    assert code == 0
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (0, 1, 5)
    assert datastore_counts(app, ds_id)["documents"] == 6


def test_cli_usage_errors(
    target: str, cli_user: tuple[str, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = cli_user
    assert main([str(tmp_path / "missing"), "-d", "x", "--api-key", key]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("text")
    args = [str(tmp_path), "-d", "no-such-name", "--target", target, "--api-key", key]
    assert main(args) == 2
    assert "pass --create" in capsys.readouterr().err
    args = [str(tmp_path), "-d", str(uuid.uuid4()), "--target", target, "--api-key", key]
    assert main(args) == 3
    assert "NOT_FOUND" in capsys.readouterr().err


def test_cli_scifact_sample_counts_match(
    app: App, target: str, cli_user: tuple[str, Client], tmp_path: Path
) -> None:
    corpus = SCIFACT / "corpus.jsonl"
    if not corpus.exists():
        pytest.skip("SciFact corpus not present")
    sample = tmp_path / "corpus.jsonl"
    with corpus.open() as f:
        lines = [next(f) for _ in range(40)]
    sample.write_text("".join(lines))
    key, client = cli_user
    code, summary = run_cli(target, key, sample, "-d", "scifact-sample", "--create")
    assert code == 0 and summary["created"] == 40
    ds_id = str(summary["datastore_id"])
    counts = datastore_counts(app, ds_id)
    datastore = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds_id))
    texts = [json.loads(line)["text"] for line in lines]
    assert counts["documents"] == 40
    assert counts["chunks"] == expected_chunks(app, datastore, texts)
    assert_consistent(counts)


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_killed_cli_rerun_completes_exactly(
    app: App, target: str, cli_user: tuple[str, Client], tmp_path: Path
) -> None:
    n = 4000
    corpus = small_corpus(tmp_path / "corpus.jsonl", n)
    key, client = cli_user
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="killed"))
    args = [sys.executable, "-m", "ingest", str(corpus), "-d", ds.id, "--target", target]
    args += ["--api-key", key, "--progress", "never"]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: datastore_counts(app, ds.id)["documents"] > 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _wait_for(lambda: not stream_ingest_threads())  # the server has noticed and stopped
    before = datastore_counts(app, ds.id)
    assert 0 < before["documents"] < n
    assert_consistent(before)

    code, summary = run_cli(target, key, corpus, "-d", ds.id)
    assert code == 0
    assert summary["unchanged"] == before["documents"]
    assert summary["created"] == n - before["documents"]
    assert summary["failed"] == summary["updated"] == 0
    after = datastore_counts(app, ds.id)
    assert after["documents"] == after["chunks"] == n
    assert_consistent(after)


# ------------------------------------------------------------------ killing the server


@pytest.fixture
def server_process(settings: Settings, tmp_path: Path) -> Iterator[ServeProcess]:
    """The service in a subprocess, on the tests' database and settings."""
    log = tmp_path / "server.log"
    with ServeProcess(tmp_path / "server", log=log, settings=settings, ready_timeout_s=180) as s:
        yield s


def _stream_docs(ds_id: str, n: int) -> Iterator[pb.StreamIngestRequest]:
    for i in range(n):
        document = pb.DocumentInput(external_id=f"k{i}", text=f"Kill test note number {i}.")
        yield pb.StreamIngestRequest(datastore_id=ds_id, document=document)


@pytest.mark.slow
def test_killed_server_keeps_every_acknowledged_document_whole(
    app: App, cli_user: tuple[str, Client], server_process: ServeProcess
) -> None:
    import grpc

    n = 4000
    key, _ = cli_user
    client = connect(server_process.target, key)
    try:
        ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="server-kill"))
        acknowledged = []
        with pytest.raises(grpc.RpcError) as info:
            for result in client.ingest.StreamIngest(_stream_docs(ds.id, n)):
                assert result.status == pb.CREATED
                acknowledged.append(result.external_id)
                if len(acknowledged) == 1:
                    server_process.kill()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        counts = datastore_counts(app, ds.id)
        assert_consistent(counts)
        assert len(acknowledged) <= counts["documents"] < n
        with app.db.connection() as conn:
            stored = {
                r[0]
                for r in conn.execute(
                    "SELECT external_id FROM datastore_documents WHERE datastore_id = %s", (ds.id,)
                )
            }
        assert set(acknowledged) <= stored

        server_process.start()
        results = list(client.ingest.StreamIngest(_stream_docs(ds.id, n), wait_for_ready=True))
        statuses = {r.external_id: r.status for r in results}
        assert all(statuses[e] == pb.UNCHANGED for e in stored)
        assert sum(s == pb.CREATED for s in statuses.values()) == n - len(stored)
        after = datastore_counts(app, ds.id)
        assert after["documents"] == after["chunks"] == n
        assert_consistent(after)
    finally:
        client.close()


@pytest.mark.slow
def test_cli_resumes_across_a_server_restart(
    app: App, cli_user: tuple[str, Client], server_process: ServeProcess, tmp_path: Path
) -> None:
    n = 4000
    corpus = small_corpus(tmp_path / "corpus.jsonl", n)
    key, _ = cli_user
    client = connect(server_process.target, key)
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="resume"))
    client.close()
    summary_file = tmp_path / "summary.json"
    args = [sys.executable, "-m", "ingest", str(corpus), "-d", ds.id]
    args += ["--target", server_process.target, "--api-key", key, "--progress", "never"]
    args += ["--summary-json", str(summary_file)]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(lambda: datastore_counts(app, ds.id)["documents"] > 0)
        server_process.kill()
        assert_consistent(datastore_counts(app, ds.id))
        server_process.start()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode()
    assert b"resuming" in output
    summary = json.loads(summary_file.read_text())
    assert summary["failed"] == 0
    assert summary["created"] + summary["unchanged"] + summary["updated"] == n
    after = datastore_counts(app, ds.id)
    assert after["documents"] == after["chunks"] == n
    assert_consistent(after)

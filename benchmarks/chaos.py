"""Chaos: the service under abusive clients, overload, database faults and restarts (issue 18).

Every scenario runs against real processes: the service as `python -m service serve`
(embedded PostgreSQL, or a separate cluster from the wheel's binaries run as a non-root
user for the external-database scenario) and the `ingest` CLI as a subprocess.

    .venv/bin/python -m benchmarks.chaos --out OUT_DIR [--scenarios idle,flood,...]

Scenarios: idle (c=1 query p50), flood (the same with 200 keyless idle calls open),
overload (64 concurrent callers on one user key), rss (16 clients sending the largest
allowed messages as fast as they can, peak RSS of the server process), restart (an ingest
job across SIGTERM and a new server on the same data), embedded-kill (kill -9 of the embedded
postmaster under an ingest job), external-restart (stop -m immediate of an external
PostgreSQL for 8 s under an ingest job and queries). Writes OUT_DIR/results.json and prints
a summary table. Figures measure whatever the code does: a scenario that does not recover
reports null.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg

from benchmarks import chaos_lib as lib
from benchmarks._harness import REPO, rss_bytes
from devtools.serve_process import ServeProcess
from service.client import Client, connect, pb
from service.core.identity import KEY_PREFIX, hash_key
from service.models import Role
from service.storage import users

CACHE = str(REPO / ".venv" / "model-cache")
MB = 1024 * 1024
ALL = ("idle", "flood", "overload", "rss", "restart", "embedded-kill", "external-restart")
QUERIES = [f"chaos note {i} about resilience" for i in range(1000)]


def make_key(url: str, role: Role = Role.USER) -> str:
    key = KEY_PREFIX + uuid.uuid4().hex + uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as conn:
        user_id = users.create_user(conn, f"{uuid.uuid4().hex}@chaos")
        users.insert_api_key(
            conn, user_id, name="chaos", prefix=key[:12], key_hash=hash_key(key), role=role
        )
    return key


def text_datastore(client: Client, n_docs: int) -> str:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name=f"chaos-{n_docs}"))
    docs = [pb.DocumentInput(external_id=f"q{i}", text=QUERIES[i]) for i in range(n_docs)]
    client.ingest.IngestDocuments(pb.IngestDocumentsRequest(datastore_id=ds.id, documents=docs))
    return str(ds.id)


def p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def idle_and_flood(
    served: ServeProcess, client: Client, ds: str, n: int, res: dict[str, Any]
) -> None:
    latencies, _ = lib.timed_queries(client, ds, QUERIES[:n])
    res["idle_query_p50_ms"] = p50(latencies)
    idle = lib.IdleCalls(served.target, 200)
    time.sleep(2.0)
    res["keyless_flood_open_calls"] = idle.open_count()
    latencies, codes = lib.timed_queries(client, ds, QUERIES[:n])
    res["keyless_flood_query_p50_ms"] = p50(latencies)
    res["keyless_flood_query_statuses"] = dict(codes)
    idle.close()


def overload(client: Client, ds: str, res: dict[str, Any]) -> None:
    """64 callers sharing one user key, 5 queries each, all at once."""
    codes: Counter[str] = Counter()
    refusals_ms: list[float] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        for j in range(5):
            start = time.perf_counter()
            try:
                client.retrieval.Query(
                    pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds]), text=QUERIES[i + j]),
                    timeout=30,
                )
                code = "OK"
            except grpc.RpcError as e:
                code = lib.code_name(e)
            with lock:
                codes[code] += 1
                if code == "RESOURCE_EXHAUSTED":
                    refusals_ms.append((time.perf_counter() - start) * 1000)

    with ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(caller, range(64)))
    res["overload_statuses"] = dict(codes)
    res["overload_refusal_p50_ms"] = p50(refusals_ms)


def rss_flood(served: ServeProcess, url: str, seconds: float, res: dict[str, Any]) -> None:
    """16 clients (each its own user) send ~3.9 MiB IngestDocuments as fast as they can."""
    keys = [make_key(url) for _ in range(16)]
    res["rss_before_flood_mb"] = round(rss_bytes(served.pid, peak=True) / MB, 1)
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def sender(key: str, ds: str) -> None:
        client = connect(served.target, key)
        chunks = [
            pb.ChunkInput(content=chr(65 + i % 26) * 65_000, vector=[1.0, 0.5, 0.25, i + 1.0])
            for i in range(60)
        ]
        request = pb.IngestDocumentsRequest(
            datastore_id=ds, documents=[pb.DocumentInput(external_id="big", chunks=chunks)]
        )
        while time.monotonic() < end:
            try:
                client.ingest.IngestDocuments(request, timeout=60)
                code = "OK"
            except grpc.RpcError as e:
                code = lib.code_name(e)
            with lock:
                codes[code] += 1
        client.close()

    # created one at a time: concurrent CreateDatastore calls can deadlock on partitions
    config = pb.DatastoreConfig(embedding_model="none", dimensions=4)
    targets = []
    for key in keys:
        client = connect(served.target, key)
        request = pb.CreateDatastoreRequest(name="flood", config=config)
        targets.append(client.datastores.CreateDatastore(request).id)
        client.close()
    threads = [
        threading.Thread(target=sender, args=(k, d)) for k, d in zip(keys, targets, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["rss_flood_message_bytes"] = 60 * 65_000
    res["rss_flood_statuses"] = dict(codes)
    res["peak_rss_mb"] = round(rss_bytes(served.pid, peak=True) / MB, 1)


def job_through(
    served: ServeProcess, url: str, tmp: Path, n: int, tag: str, fault: Any
) -> dict[str, Any]:
    """Run an ingest job of ``n`` documents, apply ``fault()`` once documents land, let the job
    finish (or fail), run it again, and count what the datastore holds."""
    client = connect(served.target, served.key)
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name=f"job-{tag}")).id
    client.close()
    corpus = lib.write_corpus(tmp / f"{tag}.jsonl", n, tag)
    job = lib.ingest_job(served.target, served.key, corpus, ds)

    def landed() -> bool:
        try:
            return lib.document_counts(url, ds, n)["lost"] < n
        except psycopg.Error:
            return False

    lib.wait_for(landed, timeout=300)
    out: dict[str, Any] = {"fault": fault()}
    try:
        out["first_run_exit"] = job.wait(timeout=600)
    except Exception:
        job.kill()
        out["first_run_exit"] = None
    rerun = lib.ingest_job(served.target, served.key, corpus, ds)
    out["rerun_exit"] = rerun.wait(timeout=600)
    out.update(lib.document_counts(url, ds, n))
    return out


def embedded_url(data_dir: Path) -> str:
    return f"postgresql://postgres:@/postgres?host={(data_dir / 'pgdata').resolve()}"


def embedded_scenarios(args: argparse.Namespace, tmp: Path, res: dict[str, Any]) -> None:
    data_dir = tmp / "embedded"
    settings = {"onnx_cache_dir": CACHE, "query_cache_size": "0"}
    served = ServeProcess(
        data_dir, log=args.out / "serve-embedded.log", settings=settings, grace_s=120
    )
    url = embedded_url(data_dir)
    try:
        res["serve_start_s"] = round(served.start(), 1)
        client = connect(served.target, served.key)
        ds = text_datastore(client, 50)
        if {"idle", "flood"} & args.scenarios:
            idle_and_flood(served, client, ds, args.queries, res)
        if "overload" in args.scenarios:
            overload(client, ds, res)
        client.close()
        if "rss" in args.scenarios:
            rss_flood(served, url, args.flood_s, res)
        if "restart" in args.scenarios:

            def restart() -> dict[str, Any]:
                began = time.monotonic()
                code = served.stop()
                stopped = time.monotonic() - began
                return {
                    "exit": code,
                    "stop_s": round(stopped, 1),
                    "start_s": round(served.start(), 1),
                }

            res["graceful_restart"] = job_through(served, url, tmp, args.docs, "restart", restart)
        if "embedded-kill" in args.scenarios:
            res["embedded_kill"] = embedded_kill(served, url, tmp, args.docs)
            res["embedded_kill_recovery_s"] = res["embedded_kill"]["fault"]["recovery_s"]
    finally:
        served.close()


def embedded_kill(served: ServeProcess, url: str, tmp: Path, n: int) -> dict[str, Any]:
    client = connect(served.target, served.key)
    ds = text_datastore(client, 5)
    prober = lib.Prober(client, ds)

    def kill() -> dict[str, Any]:
        pid = lib.postmaster_pid(served.data_dir / "pgdata")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        lib.wait_for(lambda: prober.first_ok_after(killed_at) is not None, timeout=90)
        recovery = prober.first_ok_after(killed_at)
        fails = prober.failures_between(killed_at, killed_at + (recovery or 90))
        out = {
            "recovery_s": None if recovery is None else round(recovery, 2),
            "failed_calls": len(fails),
            "failed_call_p50_s": p50(fails),
            "service_restarted_to_count": recovery is None,
        }
        if recovery is None:  # not back by itself: restart the service to finish the job
            served.stop()
            served.start()
        return out

    try:
        return job_through(served, url, tmp, n, "kill", kill)
    finally:
        prober.stop()
        client.close()


def external_restart(args: argparse.Namespace, tmp: Path, res: dict[str, Any]) -> None:
    pg = lib.ExternalPostgres(tmp / "external")
    pg.init()
    pg.start()
    settings = {"onnx_cache_dir": CACHE, "database_url": pg.url}
    served = ServeProcess(
        tmp / "external-data", log=args.out / "serve-external.log", settings=settings, grace_s=120
    )
    try:
        served.start()
        client = connect(served.target, served.key)
        ds = text_datastore(client, 5)
        prober = lib.Prober(client, ds)

        def outage() -> dict[str, Any]:
            stopped_at = time.monotonic()
            pg.stop("immediate")
            time.sleep(args.outage_s)
            pg.start()
            back_at = time.monotonic()
            lib.wait_for(lambda: prober.first_ok_after(back_at) is not None, timeout=60)
            recovery = prober.first_ok_after(back_at)
            fails = prober.failures_between(stopped_at, back_at)
            codes = Counter(c for t, _, c in prober.events if stopped_at <= t < back_at)
            return {
                "outage_s": args.outage_s,
                "calls_during_outage": dict(codes),
                "fail_fast_p50_s": p50(fails),
                "fail_fast_max_s": round(max(fails), 3) if fails else None,
                "recovery_s": None if recovery is None else round(recovery, 2),
            }

        try:
            job = job_through(served, pg.url, tmp, args.docs, "external", outage)
        finally:
            prober.stop()
            client.close()
        res["external_restart"] = job
        res["db_restart_fail_fast_s"] = job["fault"]["fail_fast_p50_s"]
        res["db_restart_recovery_s"] = job["fault"]["recovery_s"]
    finally:
        served.close()
        pg.destroy()


FIELDS = (
    "idle_query_p50_ms",
    "keyless_flood_query_p50_ms",
    "db_restart_fail_fast_s",
    "db_restart_recovery_s",
    "embedded_kill_recovery_s",
    "lost_documents",
    "partial_documents",
    "duplicate_documents",
    "overload_statuses",
    "peak_rss_mb",
)
JOBS = ("graceful_restart", "embedded_kill", "external_restart")


def summarize(res: dict[str, Any]) -> None:
    jobs = [res[j] for j in JOBS if j in res]
    for name in ("lost", "partial", "duplicate"):
        res[f"{name}_documents"] = sum(j[name] for j in jobs) if jobs else None
    res["document_scenarios"] = [j for j in JOBS if j in res]
    width = max(len(f) for f in FIELDS)
    print(f"{'field':<{width}}  value")
    for field in FIELDS:
        print(f"{field:<{width}}  {json.dumps(res.get(field))}")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument("--scenarios", default=",".join(ALL), help="comma-separated subset")
    parser.add_argument("--queries", type=int, default=200, help="queries per latency figure")
    parser.add_argument("--docs", type=int, default=3000, help="documents per ingest job")
    parser.add_argument("--flood-s", type=float, default=20.0, help="seconds of the rss flood")
    parser.add_argument("--outage-s", type=float, default=8.0, help="external database outage")
    args = parser.parse_args(argv)
    args.scenarios = set(args.scenarios.split(","))
    unknown = args.scenarios - set(ALL)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"scenarios": sorted(args.scenarios)}
    signal.signal(signal.SIGTERM, _interrupted)  # so the servers started here are stopped
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        if args.scenarios - {"external-restart"}:
            embedded_scenarios(args, Path(tmp), res)
        if "external-restart" in args.scenarios:
            external_restart(args, Path(tmp), res)
    summarize(res)
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

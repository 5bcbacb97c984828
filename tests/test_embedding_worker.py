"""The embedding worker with a tiny deterministic model: lanes, batching, slicing, priority."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import Unavailable
from tests.helpers.counting_model import CountingModel, make_worker


def test_large_jobs_come_back_in_input_order_from_slices() -> None:
    model = CountingModel()
    worker = make_worker(model, lanes=2, batch_size=4)
    texts = ["x" * n for n in (9, 1, 7, 3, 5, 2, 8, 4, 6, 10)]
    try:
        out = worker.embed("m", texts)
    finally:
        worker.stop()
    assert out[:, 0].tolist() == [len(t) for t in texts]
    assert all(len(b) <= 4 for b in model.batches)
    assert len(model.batches) == 3
    assert model.batches[0] == ["x", "xx", "xxx", "xxxx"]  # shortest first


def test_ingestion_slices_are_spread_over_the_lanes() -> None:
    model = CountingModel(delay_s=0.02)
    worker = make_worker(model, lanes=2, batch_size=2)
    texts = [f"text {i:02d}" for i in range(20)]
    try:
        out = worker.embed("m", texts)
    finally:
        worker.stop()
    assert out[:, 0].tolist() == [len(t) for t in texts]
    assert len(model.batches) == 10
    assert len(set(model.threads)) == 2  # two lanes, neither of them the caller
    assert threading.current_thread().name not in model.threads
    assert model.most_at_once == 2
    assert all(model.single_thread)  # two lanes: each run on one core


def test_concurrent_queries_run_side_by_side_on_the_lanes() -> None:
    model = CountingModel(delay_s=0.1)
    worker = make_worker(model, lanes=2)  # query_batch 1: one query per run
    results: dict[int, float] = {}

    def query(i: int) -> None:
        results[i] = float(worker.embed("m", ["q" * i])[0, 0])

    threads = [threading.Thread(target=query, args=(i,)) for i in range(1, 5)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        worker.stop()
    assert results == {i: float(i) for i in range(1, 5)}
    assert sorted(len(b) for b in model.batches) == [1, 1, 1, 1]
    assert model.most_at_once == 2


def test_a_failing_slice_fails_its_job_and_the_lanes_go_on() -> None:
    model = CountingModel(fail_on="bad")
    worker = make_worker(model, lanes=2, batch_size=2)
    try:
        with pytest.raises(RuntimeError, match="model failure"):
            worker.embed("m", ["good one", "bad", "fine", "also fine", "last"])
        out = worker.embed("m", ["after"])
    finally:
        worker.stop()
    assert out[:, 0].tolist() == [5.0]


def test_a_query_alone_on_an_idle_worker_runs_on_the_calling_thread() -> None:
    model = CountingModel()
    worker = make_worker(model, lanes=2)
    try:
        with worker.query():
            out = worker.embed_query("m", "alone")
    finally:
        worker.stop()
    assert out.tolist() == [5.0, 1.0]
    assert model.threads == [threading.current_thread().name]
    assert model.single_thread == [False]  # the lone query gets every core


def test_a_query_with_another_in_flight_goes_to_a_lane() -> None:
    model = CountingModel()
    worker = make_worker(model, lanes=2)
    try:
        with worker.query(), worker.query():
            worker.embed_query("m", "first")
        with worker.query():  # counted queries end with their block
            worker.embed_query("m", "second")
        worker.embed_query("m", "unmarked")  # not in a query() block: never alone
    finally:
        worker.stop()
    caller = threading.current_thread().name
    assert [t == caller for t in model.threads] == [False, True, False]
    assert model.single_thread == [True, False, True]


def test_concurrent_queries_share_a_batch() -> None:
    model = CountingModel(delay_s=0.05)
    worker = make_worker(model, lanes=1, query_batch=64, max_wait_s=0.01)
    results: dict[int, float] = {}

    def query(i: int) -> None:
        with worker.query():
            results[i] = float(worker.embed_query("m", "q" * i)[0])

    callers = {f"query-{i}" for i in range(1, 9)}
    try:
        # the first query (alone so far) holds the model for 50 ms; the others queue up
        first = threading.Thread(target=query, args=(1,), name="query-1")
        first.start()
        time.sleep(0.01)
        threads = [
            threading.Thread(target=query, args=(i,), name=f"query-{i}") for i in range(2, 9)
        ]
        for t in threads:
            t.start()
        for t in [first, *threads]:
            t.join()
    finally:
        worker.stop()
    assert results == {i: float(i) for i in range(1, 9)}
    assert len(model.batches) < 8  # fewer model calls than queries
    assert model.threads[0] == "query-1"  # the lone first query ran on its own thread
    assert not callers & set(model.threads[1:])  # the queued ones went through the lane
    assert not any(model.single_thread)  # a single lane runs on every core


def test_a_query_does_not_wait_for_a_whole_ingestion_batch() -> None:
    model = CountingModel(delay_s=0.02)
    worker = make_worker(model, lanes=1, batch_size=4)
    bulk_done = threading.Event()

    def bulk() -> None:
        worker.embed("m", ["b" * 5] * 80)  # 20 slices
        bulk_done.set()

    try:
        t = threading.Thread(target=bulk)
        t.start()
        time.sleep(0.05)
        worker.embed("m", ["query"])
        assert not bulk_done.is_set()  # the query was served between slices
        t.join()
    finally:
        worker.stop()
    assert ["query"] in model.batches


def test_stop_fails_waiting_callers_instead_of_hanging() -> None:
    model = CountingModel(delay_s=0.2)
    worker = make_worker(model, lanes=1)
    errors: list[BaseException] = []

    def call(text: str) -> None:
        try:
            worker.embed("m", [text])
        except Unavailable as e:
            errors.append(e)

    running = threading.Thread(target=call, args=("running",))
    running.start()
    while not model.batches:  # wait until the lane is busy with "running"
        time.sleep(0.005)
    queued = threading.Thread(target=call, args=("queued",))
    queued.start()
    time.sleep(0.05)
    worker.stop()
    running.join()
    queued.join()
    assert model.batches == [["running"]]  # finished; the queued one never ran
    assert len(errors) == 1
    with pytest.raises(Unavailable):
        worker.embed("m", ["late"])


def test_query_cache_returns_the_same_vector_without_the_model() -> None:
    model = CountingModel()
    worker = make_worker(model, query_cache_size=2)
    try:
        first = worker.embed_query("m", "hello")
        again = worker.embed_query("m", "hello")
    finally:
        worker.stop()
    assert again is first
    assert model.batches == [["hello"]]


def test_bulk_work_waits_behind_queries_however_small() -> None:
    """Re-embedding batches (``bulk``) queue like ingestion slices, behind queries."""
    model = CountingModel(delay_s=0.1)
    worker = make_worker(model, lanes=1, batch_size=4)
    try:
        threads = [
            threading.Thread(target=worker.embed, args=("m", ["busy"])),
            threading.Thread(
                target=worker.embed, args=("m", ["bulk", "bulk"]), kwargs={"bulk": True}
            ),
            threading.Thread(target=worker.embed, args=("m", ["query"])),
        ]
        for t in threads:
            t.start()
            time.sleep(0.03)  # each queued while the first still runs
        for t in threads:
            t.join(timeout=5)
    finally:
        worker.stop()
    assert model.batches == [["busy"], ["query"], ["bulk", "bulk"]]

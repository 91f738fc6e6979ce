"""The server under load, on loopback: a bounded queue (503 + Retry-After), clients that leave, a bug in the batching
loop, a big request beside small ones, shutdown, and a flood. The model's passes are held or slowed where a test
needs them to be (the tiny model is too fast to show it), so the assertions stay relative and hold on a slow machine."""

import asyncio
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import serving, serving_in_thread
from encoderfit.runs.predictor import Predictor
from encoderfit.serving.app import Batching
from encoderfit.serving.batcher import Batcher, Metrics, Overloaded


def post(url, body, timeout=60):
    return httpx.post(url + "/v1/predict", json=body, timeout=timeout)


def metric(url, name) -> float:
    """A series' value in /metrics (0 when absent)."""
    lines = httpx.get(url + "/metrics", timeout=30).text.splitlines()
    return next((float(line.split()[-1]) for line in lines if line.split(" ")[0] == name), 0.0)


def wait_for_metric(url, name, value, seconds=30):
    deadline = time.time() + seconds
    while metric(url, name) != value:
        assert time.time() < deadline, f"{name} never reached {value} (now {metric(url, name)})"
        time.sleep(0.05)


class Gate:
    """Holds every model pass until opened, and records the texts of each pass."""

    def __init__(self, monkeypatch):
        self.opened, self.entered, self.passes = threading.Event(), threading.Event(), []
        original, gate = Predictor.predict, self

        def predict(predictor, texts, pairs=None):
            gate.passes.append(list(texts))
            gate.entered.set()
            assert gate.opened.wait(60), "the test never opened the gate"
            return original(predictor, texts, pairs)

        monkeypatch.setattr(Predictor, "predict", predict)


def test_a_full_queue_answers_503_with_retry_after(trained_run, monkeypatch):
    gate = Gate(monkeypatch)
    with serving_in_thread(trained_run, batching=Batching(max_queue=2)) as url, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, url, {"text": f"the team scored goal {i}"}) for i in range(2)]
        wait_for_metric(url, "encoderfit_queued_requests", 2)  # one in the held pass, one waiting
        busy = post(url, {"text": "one request too many"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json() == {"error": "the server is busy: 2 requests are already waiting (--max_queue 2); retry after 1 s"}
        gate.opened.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert post(url, {"text": "the queue has room again"}).status_code == 200
        assert metric(url, "encoderfit_shed_requests_total") == 1
        assert metric(url, 'encoderfit_requests_total{path="/v1/predict",status="503"}') == 1
        assert httpx.get(url + "/health", headers={"Host": "localhost"}).status_code == 400  # allowed: 127.0.0.1 only


def test_the_batcher_itself_refuses_past_max_queue(trained_run):
    """The HTTP layer refuses before reading the body; requests that pass it at the same moment meet this check."""

    async def scenario():
        batcher = Batcher(Predictor.from_pretrained(trained_run), Metrics(), 5, 256, True, max_queue=1)
        batcher.start()
        answers = await asyncio.gather(batcher.predict(["goal for the team"]), batcher.predict(["garlic soup"]),
                                       return_exceptions=True)
        await batcher.stop()
        return answers

    first, second = asyncio.run(scenario())
    assert first[0]["label"] == "sport" and isinstance(second, Overloaded) and "--max_queue 1" in str(second)


def test_the_texts_of_clients_that_left_are_not_computed(trained_run, monkeypatch):
    gate = Gate(monkeypatch)
    with serving_in_thread(trained_run) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, {"text": "the chef baked bread"})
        assert gate.entered.wait(30)
        for i in range(5):  # each gives up while the first pass holds the model
            with pytest.raises(httpx.ReadTimeout):
                post(url, {"texts": [f"gone client {i}", "and its second text"]}, timeout=0.3)
        wait_for_metric(url, "encoderfit_abandoned_requests_total", 5)
        gate.opened.set()
        assert first.result().status_code == 200
        assert post(url, {"text": "a client that stays"}).status_code == 200
    computed = [t for texts in gate.passes for t in texts]
    assert computed == ["the chef baked bread", "a client that stays"], computed


def test_an_error_escaping_the_batching_loop_fails_its_pass_and_later_requests_are_answered(trained_run, monkeypatch, caplog):
    original, calls = Batcher._deliver, []

    def broken_once(batcher, taken, results):
        calls.append(len(taken))
        if len(calls) == 1:
            raise RuntimeError("injected bug in the batching loop")
        return original(batcher, taken, results)

    monkeypatch.setattr(Batcher, "_deliver", broken_once)
    with serving_in_thread(trained_run) as url:
        hit = post(url, {"text": "the first request meets the bug"}, timeout=30)
        assert hit.status_code == 500 and hit.json() == {
            "error": "internal error while answering this request; the server log has the details"}
        with ThreadPoolExecutor(4) as pool:
            later = list(pool.map(lambda i: post(url, {"text": f"goal for the team {i}"}, timeout=30), range(4)))
        assert [r.status_code for r in later] == [200] * 4
        assert metric(url, "encoderfit_batcher_restarts_total") == 1
    assert "the batcher's loop failed" in caplog.text and "injected bug" in caplog.text


def test_shutdown_cancels_the_batcher_and_its_threads(trained_run):
    from starlette.testclient import TestClient

    from encoderfit.serving.app import create_app, model_info

    predictor = Predictor.from_pretrained(trained_run)
    app = create_app(predictor, model_info(trained_run, predictor, "torch"))
    with TestClient(app) as client:
        assert client.post("/v1/predict", json={"text": "goal for the team"}).status_code == 200
        batcher = app.state.batcher
        assert not batcher.task.done()
    assert batcher.task.cancelled() and batcher.worker._shutdown and batcher.measurer._shutdown


def long_texts(n: int, chars: int = 5000) -> list:
    rng = random.Random(0)
    words = "goal team chef oven cloud server the a of and very garlic kernel".split()
    return [" ".join(rng.choice(words) for _ in range(chars // 3))[:chars] for _ in range(n)]


def test_a_small_request_is_not_stuck_behind_a_big_one(trained_run, monkeypatch):
    """16 long texts at 0.25 s each (a big model's pace), two a pass: a one-line request sent meanwhile is answered
    after about one pass, not after all of them; the big request's answers are those of one pass over its texts."""
    big = long_texts(16)
    expected = [r["label"] for r in Predictor.from_pretrained(trained_run).predict(big)]
    original, started = Predictor.predict, threading.Event()

    def slow(predictor, texts, pairs=None):
        long = sum(len(t) > 1000 for t in texts)
        if long:
            started.set()
        time.sleep(0.25 * long)
        return original(predictor, texts, pairs)

    monkeypatch.setattr(Predictor, "predict", slow)
    with serving_in_thread(trained_run, batching=Batching(max_batch_tokens=1024)) as url, ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        pending = pool.submit(post, url, {"texts": big})
        assert started.wait(30)
        sent = time.perf_counter()
        small = post(url, {"text": "goal for the team"})
        small_s = time.perf_counter() - sent
        answer = pending.result()
        big_s = time.perf_counter() - start
        assert metric(url, "encoderfit_batch_tokens_count") >= 8  # 512 tokens a text (truncated), two a pass
    assert small.status_code == 200 and answer.status_code == 200
    assert [r["label"] for r in answer.json()["results"]] == expected
    assert small_s < big_s / 2, (small_s, big_s)


def server_pid(port: int) -> int:
    """The `encoderfit serve ... --port PORT` process this test process started."""
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"serve" in args and str(port).encode() in args:
            return int(entry.name)
    raise AssertionError(f"no server process on port {port}")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc (Linux)")
def test_a_flood_gets_only_200s_and_503s_and_the_server_memory_stays_flat(trained_run):
    import aiohttp

    body = {"texts": long_texts(8, 400)}

    async def flood(url, n=250):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(_):
                async with session.post(url + "/v1/predict", json=body) as response:
                    return response.status, response.headers.get("Retry-After"), set(await response.json())
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout=240)

    with serving(trained_run, "--max_queue", "8") as url:
        pid = server_pid(int(url.rsplit(":", 1)[1]))
        asyncio.run(flood(url))  # the first flood grows the allocator's pools and the connection buffers
        before = rss_mib(pid)
        answers = asyncio.run(flood(url)) + asyncio.run(flood(url))
        after = rss_mib(pid)
        assert httpx.post(url + "/v1/predict", json={"text": "after the flood"}, timeout=30).status_code == 200
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) == {200, 503}, statuses
    assert all(retry == "1" and keys == {"error"} for status, retry, keys in answers if status == 503)
    assert all(keys == {"results"} for status, _, keys in answers if status == 200)
    assert after - before < 64, f"server RSS grew {after - before:.0f} MiB over two floods ({before:.0f} -> {after:.0f} MiB)"

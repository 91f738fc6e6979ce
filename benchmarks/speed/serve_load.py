"""Load on the real server, loopback only, bounded in count and time.

    python benchmarks/speed/serve_load.py [--run runs/vader-movies] [--quick]

1. 32 concurrent clients send real VADER movie-review snippets, one per request: requests/s and p50/p99
   latency with dynamic batching and with batching disabled, each against a fresh server.
2. 10,000 requests mixing valid bodies, malformed ones (lone surrogates among them) and GETs to thousands of
   distinct unknown paths: counts of each status (no 5xx allowed), the number of request series in /metrics, and
   the server's resident memory after warm-up and at the end.
Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402

CLIENTS = 32
TIME_LIMIT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, batching: bool, backend: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "encoderfit", "serve", str(run), "--port", str(port), "--backend", backend,
           "--batching", str(batching).lower(), "--max_body_bytes", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def clients(url: str, bodies: list, n_clients: int = CLIENTS) -> tuple[list, Counter, float]:
    """n_clients workers take bodies from a shared list until it is empty or the time limit passes."""
    latencies, statuses, queue = [], Counter(), list(reversed(bodies))
    deadline = time.perf_counter() + TIME_LIMIT_S

    async def worker(session: aiohttp.ClientSession):
        while queue and time.perf_counter() < deadline:
            content, ctype = queue.pop()
            start = time.perf_counter()
            if ctype == "GET":  # content is a path
                request = session.get(url + content)
            else:
                request = session.post(url + "/v1/classify", data=content, headers={"Content-Type": ctype})
            async with request as response:
                await response.read()
            latencies.append(time.perf_counter() - start)
            statuses[response.status] += 1

    # aiohttp: the load generator shares the 2 cores with the server, and httpx cost several times more CPU per request
    connector = aiohttp.TCPConnector(limit=n_clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(n_clients)))
        return latencies, statuses, time.perf_counter() - start


def model_ceiling(run: Path, backend: str, texts: list) -> dict:
    """The model alone, in this process, no HTTP: texts/s one text per pass vs. passes of CLIENTS texts (the most
    that CLIENTS one-text clients can have waiting), taken in request order. No server can batch better."""
    from encoderfit.runs.predictor import Classifier

    clf = Classifier.from_pretrained(run, backend=backend)
    clf.predict(texts[:CLIENTS])
    start = time.perf_counter()
    for text in texts:
        clf.predict([text])
    single = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(texts), CLIENTS):
        clf.predict(texts[i : i + CLIENTS])
    grouped = len(texts) / (time.perf_counter() - start)
    return {"single": single, "grouped": grouped, "ratio": grouped / single, "n": len(texts)}


def valid(texts):
    return [(json.dumps({"text": t}).encode(), "application/json") for t in texts]


def malformed(i: int):
    cases = [(b"{broken json", "application/json"), (json.dumps({"texts": []}).encode(), "application/json"),
             (json.dumps({"texts": [1, 2]}).encode(), "application/json"), (b'{"text": "hi"}', "text/plain"),
             (json.dumps({"text": "   "}).encode(), "application/json"), (json.dumps({"text": "x" * 30000}).encode(), "application/json"),
             (json.dumps({"text": "a", "texts": ["b"]}).encode(), "application/json"), (b"\xff\xfe\x00", "application/json"),
             (b'{"text": "lone \\ud800 surrogate"}', "application/json"), (b'{"texts": ["ok", "x\xed\xa0\x80"]}', "application/json")]
    return cases[i % len(cases)]


def request_series(url: str) -> int:
    """How many `encoderfit_requests_total` series the server's /metrics holds (it must not grow with paths)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(line.startswith("encoderfit_requests_total{") for line in text.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "vader-movies"))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "model").is_dir():
        raise SystemExit(f"{run}: no trained run; make it with `encoderfit train --config examples/vader-movies.yaml`")
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare

    texts = prepare(DataArgs(source="vader-movies")).test["text"]
    per_mode = 320 if args.quick else 1600
    requested = [texts[i % len(texts)] for i in range(per_mode)]
    bodies = valid(requested)
    ceiling = model_ceiling(run, args.backend, requested[: 320 if args.quick else 960])
    print(f"[serve] model alone: {ceiling}", flush=True)
    load = {}
    for batching in (True, False):
        proc, url = start(run, batching, args.backend)
        asyncio.run(clients(url, bodies[:64]))  # warm-up
        latencies, statuses, seconds = asyncio.run(clients(url, bodies))
        proc.terminate()
        proc.wait()
        load[batching] = {"rps": len(latencies) / seconds, "p50": np.percentile(latencies, 50) * 1000,
                          "p99": np.percentile(latencies, 99) * 1000, "n": len(latencies), "statuses": dict(statuses)}
        print(f"[serve] batching={batching}: {load[batching]}", flush=True)

    total = 2000 if args.quick else 10000
    # half valid; a quarter malformed bodies; a quarter GETs to distinct unknown paths
    mixed = [valid([texts[i % len(texts)]])[0] if i % 2 == 0 else malformed(i // 4) if i % 4 == 1 else (f"/no/such/page/{i}", "GET")
             for i in range(total)]
    proc, url = start(run, True, args.backend)
    asyncio.run(clients(url, [m for m in mixed[:2000] if m[1] != "GET"]))  # warm-up long enough to meet most batch shapes once
    warm, series_before = rss_mb(proc.pid), request_series(url)
    latencies, statuses, seconds = asyncio.run(clients(url, mixed))
    end, series_after = rss_mb(proc.pid), request_series(url)
    proc.terminate()
    proc.wait()
    fivexx = sum(n for s, n in statuses.items() if s >= 500)
    paths = sum(m[1] == "GET" for m in mixed)
    print(f"[serve] mixed: {dict(statuses)} rss {warm:.0f} -> {end:.0f} MB; request series {series_before} -> {series_after}", flush=True)

    on, off = load[True], load[False]
    write_section("serve_load", "\n".join([
        f"## Serving: `python benchmarks/speed/serve_load.py`{' --quick' if args.quick else ''} ({args.backend} backend, loopback)", "",
        f"{CLIENTS} concurrent clients, one real VADER movie-review snippet per request, {per_mode} requests per mode, "
        "a fresh server for each mode, after a warm-up.", "",
        "| mode | requests/s | p50 latency (ms) | p99 latency (ms) | requests | statuses |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        f"| dynamic batching (max_wait 5 ms) | {on['rps']:.1f} | {on['p50']:.0f} | {on['p99']:.0f} | {on['n']} | {on['statuses']} |",
        f"| batching disabled (one request per model pass) | {off['rps']:.1f} | {off['p50']:.0f} | {off['p99']:.0f} | {off['n']} | {off['statuses']} |",
        "",
        f"Dynamic batching: **{on['rps'] / off['rps']:.2f}x** the requests/s (target >= 3x) at p99 {on['p99']:.0f} ms vs "
        f"{off['p99']:.0f} ms (target: no worse).", "",
        f"What batching can gain here, measured in the same run: the model alone, in one process with no HTTP, labels "
        f"{ceiling['single']:.1f} texts/s one text per pass and {ceiling['grouped']:.1f} texts/s in passes of {CLIENTS} "
        f"(the most {CLIENTS} one-text clients can have waiting; {ceiling['n']} of the same texts in request order): "
        f"**{ceiling['ratio']:.2f}x**, against the server's {on['rps'] / off['rps']:.2f}x. Dynamic batching can only make "
        "model passes cheaper per text, so 3x would need passes of 32 mixed-length texts to cost a third per text of "
        "passes of one. On 2 CPU cores they do not: a pass over one short text already keeps both cores busy with its "
        "matrix products. On a GPU, where one short text leaves most of the device idle, the same batching gains far more.", "",
        f"Robustness: {len(latencies)} requests: half valid, a quarter malformed (bad JSON, wrong types, empty, oversized, "
        f"wrong content type, both fields, lone surrogates as JSON escapes and as raw bytes), and a quarter GETs to "
        f"{paths} distinct unknown paths: statuses {dict(sorted(statuses.items()))}; **{fivexx} 5xx**. Request series in "
        f"/metrics: {series_before} before, {series_after} after (labelled by route, not by path). Server RSS "
        f"{warm:.0f} MB after warm-up, {end:.0f} MB at the end (**{end / warm:.2f}x**, target <= 1.2x).",
    ]))
    print("[serve] wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()

"""The after-deployment loop on a real shift (docs/monitoring.md, "Measured on a real shift"): a model trained on the
VADER movie snippets, served with `--log --log_texts`, receives held-out movie snippets and then tweets, Amazon reviews
and NYT editorial snippets (positive/negative as in the movie task).

    python benchmarks/quality/monitor_shift.py --run runs/vader-movies --out results/monitor_shift.json   # the full benchmark
    python benchmarks/quality/monitor_shift.py --smoke                                                    # minutes, tiny sizes

It measures:
1. drift alarms: `encoderfit monitor` on each shifted domain (p < 0.01 wanted) and on `--nulls` random in-domain samples
   of the same size drawn from the run's test split (false alarms counted), each a time window of one log;
2. the label-free accuracy estimates (ATC, CBPE) against the true accuracy of each window;
3. `retrain` after `--feedback` labels from one shifted domain (promoted?, then old vs new on that domain's unseen texts,
   McNemar) and after `--noise` random labels (it should decline);
4. the log under load: `--requests` requests from `--clients` concurrent clients, SIGKILL mid-load: every acknowledged
   id in the log once, the file intact and within `--log_max_mb`; throughput with logging on against off.
Without --run it trains one with examples/vader-movies.yaml (with --smoke: 400 training snippets, one epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLI = [sys.executable, "-m", "encoderfit"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`encoderfit serve RUN ARGS` in its own process on a free loopback port."""

    def __init__(self, run: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*CLI, "serve", str(run), "--port", str(self.port), *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the server did not start: {' '.join(args)}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def send(url: str, texts, clients: int = 8, per_request: int = 4):
    """Every text through /v1/predict, `per_request` a request, from `clients` threads: [(id, label)] in text order."""
    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]

    def one(chunk):
        with httpx.Client(timeout=120) as http:
            r = http.post(url + "/v1/predict", json={"texts": chunk})
            r.raise_for_status()
            return [(x.get("id"), x["label"]) for x in r.json()["results"]]  # ids only from a server with --log

    with ThreadPoolExecutor(clients) as pool:
        return [row for rows in pool.map(one, chunks) for row in rows]


def window(url: str, texts, gold):
    """Send one sample as its own time window of the log: (since, until, true accuracy, ids)."""
    time.sleep(0.01)
    since = datetime.now().isoformat()
    answered = send(url, texts)
    time.sleep(0.01)
    until = datetime.now().isoformat()
    return since, until, sum(label == g for (_, label), g in zip(answered, gold)) / len(gold), [i for i, _ in answered]


def monitor(run: Path, log: Path, since: str, until: str, out: Path, permutations: int) -> dict:
    proc = subprocess.run([*CLI, "monitor", str(run), "--log", str(log), "--since", since, "--until", until, "--output", str(out),
                           "--permutations", str(permutations)], capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(proc.stderr[-2000:])
    figures = json.loads((out / "monitor.json").read_text())
    figures["exit_code"] = proc.returncode
    return figures


def domain(name: str):
    from encoderfit.data.sources import load_source

    ds = load_source(f"vader-{name}")["train"]
    return list(ds["text"]), list(ds["label"])


def summary(figures: dict, truth: float) -> dict:
    acc = figures.get("accuracy") or {}
    emb = figures["tests"].get("embeddings") or {}
    return {"alarm": figures["exit_code"] == 3, "alarms": figures["alarms"], "rows": figures["rows"],
            "p": {k: (t or {}).get("p_value") for k, t in figures["tests"].items()}, "domain_auc": emb.get("domain_auc"),
            "true_accuracy": truth, "atc": (acc.get("atc") or {}).get("estimate"), "cbpe": (acc.get("cbpe") or {}).get("estimate"),
            "atc_error": None if not acc else acc["atc"]["estimate"] - truth, "cbpe_error": None if not acc else acc["cbpe"]["estimate"] - truth}


def retrain(run: Path, log: Path, out: Path, extra) -> dict:
    proc = subprocess.run([*CLI, "retrain", str(run), "--feedback", str(log), "--output_dir", str(out), "--pointer",
                           str(out.parent / f"{out.name}-pointer"), *extra], capture_output=True, text=True)
    if proc.returncode not in (0, 4):
        raise SystemExit(proc.stderr[-3000:])
    return {"exit_code": proc.returncode, **json.loads((out / "metrics.json").read_text())["retrain"]}


def unseen_comparison(old: Path, new: Path, texts, gold) -> dict:
    from encoderfit.core.stats import mcnemar_exact
    from encoderfit.stages.predict import Predictor

    right = {who: [r["label"] == g for r, g in zip(Predictor.from_pretrained(p).predict(texts), gold)] for who, p in (("old", old), ("new", new))}
    return {"n": len(texts), "old_accuracy": sum(right["old"]) / len(texts), "new_accuracy": sum(right["new"]) / len(texts),
            "mcnemar": mcnemar_exact(right["new"], right["old"])}


def load_and_kill(run: Path, work: Path, requests: int, clients: int, max_mb: float) -> dict:
    """Throughput without and with the log, then SIGKILL mid-load: every acknowledged id in the log once."""
    text = ["a gripping, lovely film", "the plot drags and the jokes fall flat", "not bad at all"]
    speed = {}
    for old in (*work.glob("speed.db*"), *work.glob("killed.db*")):
        old.unlink()
    for name, args in (("off", []), ("on", ["--log", str(work / "speed.db")])):
        server = Server(run, *args)
        started = time.perf_counter()
        send(server.url, text * (requests // 3), clients, per_request=1)
        speed[name] = (requests // 3 * 3) / (time.perf_counter() - started)
        server.stop()
    log = work / "killed.db"
    server = Server(run, "--log", str(log), "--log_max_mb", str(max_mb))
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(server.url + "/v1/predict", json={"texts": [random.choice(text)]})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["results"][0]["id"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while len(acked) < requests // 2:
        time.sleep(0.01)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    with sqlite3.connect(log) as conn:
        intact = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in conn.execute("SELECT id FROM predictions")]
    size = sum(p.stat().st_size for p in work.glob("killed.db*") if not p.name.endswith("-shm"))
    return {"requests_per_s_off": speed["off"], "requests_per_s_on": speed["on"], "ratio": speed["on"] / speed["off"],
            "acknowledged": len(acked), "logged": len(ids), "missing": len(set(acked) - set(ids)), "duplicates": len(ids) - len(set(ids)),
            "intact": intact, "bytes": size, "bound_bytes": int(max_mb * 2 ** 20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a vader-movies run (default: train one)")
    parser.add_argument("--work", type=Path, default=Path("runs/monitor-shift"))
    parser.add_argument("--out", type=Path, help="where to write the results JSON")
    parser.add_argument("--sample", type=int, default=500, help="texts per window")
    parser.add_argument("--nulls", type=int, default=20, help="random in-domain windows")
    parser.add_argument("--feedback", type=int, default=200)
    parser.add_argument("--noise", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--domains", default="tweets,amazon,nyt")
    parser.add_argument("--retrain_domain", default="tweets")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.sample, args.nulls, args.feedback, args.requests, args.clients, args.permutations = 60, 2, 40, 300, 8, 200
        args.domains = "tweets"
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.run
    if run is None:
        run = args.work / "movies"
        if not run.is_dir():
            extra = ["--data.max_train_samples", "400", "--train.epochs", "1"] if args.smoke else []
            subprocess.run([*CLI, "train", "--config", "examples/vader-movies.yaml", "--output_dir", str(run), *extra], check=True)
    from encoderfit.stages.rundir import RunDir
    from encoderfit.tasks import get_task

    rundir = RunDir(run)
    cfg = rundir.config()
    test = rundir.require_predictions("test", get_task(cfg.task), cfg.labels)
    test_gold = [cfg.labels[int(y)] for y in test.targets]
    rng = random.Random(0)
    results = {"run": str(run), "sample": args.sample, "windows": {}, "nulls": []}
    log = args.work / "traffic.db"
    log.unlink(missing_ok=True)
    server = Server(run, "--log", str(log), "--log_texts", "true")
    try:
        spans = {}
        for i in range(args.nulls):
            pick = rng.sample(range(len(test.texts)), min(args.sample, len(test.texts)))
            spans[f"movies-{i}"] = window(server.url, [test.texts[j] for j in pick], [test_gold[j] for j in pick])
        texts = {}
        for name in args.domains.split(","):
            texts[name] = domain(name)
            order = rng.sample(range(len(texts[name][0])), len(texts[name][0]))
            texts[name] = ([texts[name][0][j] for j in order], [texts[name][1][j] for j in order])
            spans[name] = window(server.url, texts[name][0][:args.sample], texts[name][1][:args.sample])
        target = args.retrain_domain
        fb_texts, fb_gold = texts[target][0][args.sample:args.sample + args.feedback], texts[target][1][args.sample:args.sample + args.feedback]
        ids = [i for i, _ in send(server.url, fb_texts)]
        with httpx.Client(timeout=60) as http:
            for i, label in zip(ids, fb_gold):
                http.post(server.url + "/v1/feedback", json={"id": i, "label": label}).raise_for_status()
    finally:
        server.stop()
    for name, (since, until, truth, _) in spans.items():
        row = summary(monitor(run, log, since, until, args.work / "monitor" / name, args.permutations), truth)
        (results["nulls"].append(row) if name.startswith("movies-") else results["windows"].__setitem__(name, row))
    results["false_alarms"] = sum(r["alarm"] for r in results["nulls"])
    unseen = slice(args.sample + args.feedback, None)
    results["retrain"] = retrain(run, log, args.work / "retrained", [])
    results["retrain"]["unseen"] = unseen_comparison(run, args.work / "retrained", texts[target][0][unseen][:2000], texts[target][1][unseen][:2000])
    noise_log = args.work / "noise.db"
    noise_log.unlink(missing_ok=True)
    server = Server(run, "--log", str(noise_log), "--log_texts", "true")
    try:
        noisy = texts[target][0][-args.noise:]
        ids = [i for i, _ in send(server.url, noisy)]
        with httpx.Client(timeout=60) as http:
            for i in ids:
                http.post(server.url + "/v1/feedback", json={"id": i, "label": rng.choice(cfg.labels)}).raise_for_status()
    finally:
        server.stop()
    results["retrain_noise"] = retrain(run, noise_log, args.work / "retrained-noise", [])
    results["log"] = load_and_kill(run, args.work, args.requests, args.clients, max_mb=64)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

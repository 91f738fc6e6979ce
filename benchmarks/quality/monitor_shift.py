"""The after-deployment loop on a real shift (docs/monitoring.md, "Measured on a real shift"): a model trained on the
VADER movie snippets, served with `--log --log_texts`, receives held-out movie snippets and then tweets, Amazon reviews
and NYT editorial snippets (positive/negative as in the movie task).

    python benchmarks/quality/monitor_shift.py --run runs/vader-movies --out results/monitor_shift.json   # the full benchmark
    python benchmarks/quality/monitor_shift.py --smoke                                                    # minutes, tiny sizes
    python benchmarks/quality/monitor_shift.py --table results/monitor_shift.json                         # its tables again

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
STARTED = time.perf_counter()


def say(what: str) -> None:
    """Progress on stderr, with the minutes since the start (the full run takes tens of minutes)."""
    print(f"[{(time.perf_counter() - STARTED) / 60:5.1f} min] {what}", file=sys.stderr, flush=True)


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
    local = threading.local()  # one keep-alive client per thread: a client per request would time the client, not the server

    def one(chunk):
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=120)
        r = local.http.post(url + "/v1/predict", json={"texts": chunk})
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
    drift = [name for name, t in figures["tests"].items() if t and t.get("alarm")]
    return {"alarm": figures["exit_code"] == 3, "drift_alarms": drift, "alarms": figures["alarms"], "rows": figures["rows"],
            "p": {k: (t or {}).get("p_value") for k, t in figures["tests"].items()}, "domain_auc": emb.get("domain_auc"),
            "true_accuracy": truth, "atc": (acc.get("atc") or {}).get("estimate"), "cbpe": (acc.get("cbpe") or {}).get("estimate"),
            "atc_error": None if not acc else acc["atc"]["estimate"] - truth,
            "cbpe_error": None if not acc else acc["cbpe"]["estimate"] - truth,
            "atc_interval": None if not acc else [acc["atc"]["low"], acc["atc"]["high"]],
            "cbpe_interval": None if not acc else [acc["cbpe"]["low"], acc["cbpe"]["high"]],
            "reference": acc.get("reference"), "feedback": figures.get("feedback")}


def retrain(run: Path, log: Path, out: Path, extra) -> dict:
    proc = subprocess.run([*CLI, "retrain", str(run), "--feedback", str(log), "--output_dir", str(out), "--pointer",
                           str(out.parent / f"{out.name}-pointer"), *extra], capture_output=True, text=True)
    if proc.returncode not in (0, 4):
        raise SystemExit(proc.stderr[-3000:])
    return {"exit_code": proc.returncode, **json.loads((out / "metrics.json").read_text())["retrain"]}


def unseen_comparison(old: Path, new: Path, texts, gold) -> dict:
    from encoderfit.core.stats import mcnemar_exact
    from encoderfit.runs.predictor import Predictor

    right = {who: [r["label"] == g for r, g in zip(Predictor.from_pretrained(p).predict(texts), gold)] for who, p in (("old", old), ("new", new))}
    return {"n": len(texts), "old_accuracy": sum(right["old"]) / len(texts), "new_accuracy": sum(right["new"]) / len(texts),
            "mcnemar": mcnemar_exact(right["new"], right["old"])}


TEXTS = ["a gripping, lovely film", "the plot drags and the jokes fall flat", "not bad at all"]


def log_bytes(work: Path, name: str) -> int:
    """The log's database and write-ahead file together (what --log_max_mb bounds)."""
    return sum(p.stat().st_size for p in work.glob(f"{name}*") if p.is_file() and not p.name.endswith("-shm"))


def throughput(run: Path, work: Path, requests: int, clients: int, rounds: int = 2) -> dict:
    """Requests per second (one text each, `clients` keep-alive clients) without and with the log, alternating
    off/on `rounds` times so that a drift of the machine's speed falls on both."""
    done = {"off": [0, 0.0], "on": [0, 0.0]}
    per_round = requests // rounds // 3 * 3
    for r in range(rounds):
        for name in ("off", "on"):
            for old in work.glob("speed.db*"):
                old.unlink()
            server = Server(run, *(["--log", str(work / "speed.db")] if name == "on" else []))
            started = time.perf_counter()
            send(server.url, TEXTS * (per_round // 3), clients, per_request=1)
            done[name][0] += per_round
            done[name][1] += time.perf_counter() - started
            server.stop()
    rate = {name: n / seconds for name, (n, seconds) in done.items()}
    return {"requests_per_s_off": rate["off"], "requests_per_s_on": rate["on"], "ratio": rate["on"] / rate["off"],
            "requests_each": done["on"][0], "rounds": rounds}


def hammer(url: str, clients: int, until, watch=None) -> tuple:
    """`clients` threads posting one text a request until `until(acknowledged)` is true: (the acknowledged ids in order,
    the event that stops the threads, the threads)."""
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(url + "/v1/predict", json={"texts": [random.choice(TEXTS)]})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["results"][0]["id"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while not until(len(acked)):
        if watch:
            watch()
        time.sleep(0.01)
    return acked, stop, threads


def killed(run: Path, work: Path, requests: int, clients: int, max_mb: float) -> dict:
    """SIGKILL mid-load (after half of `requests` answered): every acknowledged id in the log once, the file intact."""
    for old in work.glob("killed.db*"):
        old.unlink()
    log = work / "killed.db"
    server = Server(run, "--log", str(log), "--log_max_mb", str(max_mb))
    acked, stop, threads = hammer(server.url, clients, lambda n: n >= requests // 2)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    with sqlite3.connect(log) as conn:
        intact = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in conn.execute("SELECT id FROM predictions")]
    return {"acknowledged": len(acked), "logged": len(ids), "missing": len(set(acked) - set(ids)),
            "duplicates": len(ids) - len(set(ids)), "intact": intact, "bytes": log_bytes(work, "killed.db"),
            "bound_bytes": int(max_mb * 2 ** 20)}


def bounded(run: Path, work: Path, requests: int, clients: int, max_mb: float) -> dict:
    """`requests` requests into a log bounded well under their size: its size, sampled as it is written, stays in the
    bound, and the rows kept are the newest."""
    for old in work.glob("bounded.db*"):
        old.unlink()
    log, largest = work / "bounded.db", [0]
    server = Server(run, "--log", str(log), "--log_max_mb", str(max_mb))
    watch = lambda: largest.__setitem__(0, max(largest[0], log_bytes(work, "bounded.db")))  # noqa: E731
    acked, stop, threads = hammer(server.url, clients, lambda n: n >= requests, watch)
    stop.set()
    for t in threads:
        t.join()
    server.stop()
    watch()
    with sqlite3.connect(log) as conn:
        intact = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = {r[0] for r in conn.execute("SELECT id FROM predictions")}
    order = {i: n for n, i in enumerate(acked)}
    oldest_kept = min((order[i] for i in kept if i in order), default=len(acked))
    return {"acknowledged": len(acked), "kept": len(kept), "intact": intact, "largest_bytes": largest[0],
            "final_bytes": log_bytes(work, "bounded.db"), "bound_bytes": int(max_mb * 2 ** 20),
            # concurrent answers commit and arrive in slightly different orders: count deletions beyond that slack
            "deleted_newer_than_a_kept_row": sum(1 for n, i in enumerate(acked) if n > oldest_kept + clients and i not in kept)}


def table(results: dict) -> str:
    """The results as the markdown tables of docs/monitoring.md."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    span = lambda r, k: f"{pct(r[k][0])}-{pct(r[k][1])}"  # noqa: E731
    lines = ["| window (500 texts) | drift alarm (tests that fired) | smallest p | domain AUC | true accuracy | ATC (95% CI) | "
             "ATC error | CBPE (95% CI) | CBPE error |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["windows"].items():
        lines.append(f"| {name} | {'yes' if r['drift_alarms'] else 'no'} ({', '.join(r['drift_alarms']) or '-'}) | "
                     f"{min(p for p in r['p'].values() if p is not None):.2g} | {r['domain_auc']:.3f} | {pct(r['true_accuracy'])} | "
                     f"{pct(r['atc'])} ({span(r, 'atc_interval')}) | {100 * r['atc_error']:+.1f} | {pct(r['cbpe'])} "
                     f"({span(r, 'cbpe_interval')}) | {100 * r['cbpe_error']:+.1f} |")
    nulls = results["nulls"]
    err = lambda k: [100 * r[k] for r in nulls]  # noqa: E731
    covered = sum(r["atc_interval"][0] <= r["true_accuracy"] <= r["atc_interval"][1] for r in nulls)
    lines.append(f"| {len(nulls)} in-domain samples | {results['false_drift_alarms']} of {len(nulls)} "
                 f"(any alarm: {results['false_alarms']}) | {min(min(p for p in r['p'].values() if p is not None) for r in nulls):.2g} "
                 f"(the smallest of all) | {min(r['domain_auc'] for r in nulls):.3f}-{max(r['domain_auc'] for r in nulls):.3f} | "
                 f"{pct(min(r['true_accuracy'] for r in nulls))}-{pct(max(r['true_accuracy'] for r in nulls))} | "
                 f"interval covers the truth {covered} of {len(nulls)} | mean {sum(err('atc_error')) / len(nulls):+.1f}, "
                 f"most {max(err('atc_error'), key=abs):+.1f} | | mean {sum(err('cbpe_error')) / len(nulls):+.1f}, "
                 f"most {max(err('cbpe_error'), key=abs):+.1f} |")
    rt, noise, log = results["retrain"], results["retrain_noise"], results["log"]
    unseen = rt["unseen"]
    lines += ["", f"- retrain after {rt['feedback_used']['training'] + rt['feedback_used']['held_out']} labels: promoted = "
              f"{rt['promoted']}; {rt['reason']} On {unseen['n']} unseen texts of the domain: {pct(unseen['old_accuracy'])}% -> "
              f"{pct(unseen['new_accuracy'])}% (McNemar p = {unseen['mcnemar']['p_value']:.2g}).",
              f"- retrain after {noise['feedback_used']['training'] + noise['feedback_used']['held_out']} random labels: promoted = "
              f"{noise['promoted']}; {noise['reason']}"]
    t, k, b = log["throughput"], log["killed"], log["bounded"]
    lines += [f"- throughput, one text a request, {t['requests_each']} requests each way in {t['rounds']} alternating rounds: "
              f"{t['requests_per_s_off']:.0f} req/s without the log, {t['requests_per_s_on']:.0f} with it ({t['ratio']:.2f}x).",
              f"- SIGKILL mid-load: {k['acknowledged']} acknowledged, {k['logged']} logged, {k['missing']} missing, "
              f"{k['duplicates']} duplicated, integrity {'ok' if k['intact'] else 'FAILED'}, {k['bytes'] / 2 ** 20:.2f} MB "
              f"(bound {k['bound_bytes'] / 2 ** 20:.0f} MB).",
              f"- {b['acknowledged']} requests into a {b['bound_bytes'] / 2 ** 20:.0f} MB log: largest size seen "
              f"{b['largest_bytes'] / 2 ** 20:.2f} MB ({100 * b['largest_bytes'] / b['bound_bytes']:.0f}% of the bound), "
              f"{b['kept']} newest rows kept, {b['deleted_newer_than_a_kept_row']} deleted out of turn, integrity "
              f"{'ok' if b['intact'] else 'FAILED'}."]
    return "\n".join(lines)


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
    parser.add_argument("--table", type=Path, help="print the markdown tables of a results JSON written before, and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
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
    from encoderfit.runs.rundir import RunDir
    from encoderfit.tasks import get_task

    rundir = RunDir(run)
    cfg = rundir.config()
    test = rundir.require_predictions("test", get_task(cfg.task), cfg.labels)
    test_gold = [cfg.labels[int(y)] for y in test.targets]
    rng = random.Random(0)
    results = {"run": str(run), "sample": args.sample, "windows": {}, "nulls": []}
    log = args.work / "traffic.db"
    log.unlink(missing_ok=True)
    say(f"sending {args.nulls} in-domain windows and {args.domains} ({args.sample} texts each) through the server")
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
        since, until, truth, ids = window(server.url, fb_texts, fb_gold)
        with httpx.Client(timeout=60) as http:
            for i, label in zip(ids, fb_gold):
                http.post(server.url + "/v1/feedback", json={"id": i, "label": label}).raise_for_status()
        spans[f"{target}-feedback"] = (since, until, truth, ids)  # the feedback's window: accuracy on its labels
    finally:
        server.stop()
    for name, (since, until, truth, _) in spans.items():
        say(f"monitor: {name}")
        row = summary(monitor(run, log, since, until, args.work / "monitor" / name, args.permutations), truth)
        (results["nulls"].append(row) if name.startswith("movies-") else results["windows"].__setitem__(name, row))
    results["false_alarms"] = sum(r["alarm"] for r in results["nulls"])
    results["false_drift_alarms"] = sum(bool(r["drift_alarms"]) for r in results["nulls"])
    unseen = slice(args.sample + args.feedback, None)
    say(f"retrain after {args.feedback} {target} labels")
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
    say(f"retrain after {args.noise} random labels")
    results["retrain_noise"] = retrain(run, noise_log, args.work / "retrained-noise", [])
    say(f"the log under load: {args.requests} requests from {args.clients} clients, then SIGKILL")
    results["log"] = {"throughput": throughput(run, args.work, args.requests, args.clients),
                      "killed": killed(run, args.work, args.requests, args.clients, max_mb=64)}
    say(f"the log under a 1 MB bound: {args.requests} requests")
    results["log"]["bounded"] = bounded(run, args.work, args.requests, args.clients, max_mb=1)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    print(table(results))
    say("done")


if __name__ == "__main__":
    main()

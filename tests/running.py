"""How the tests run encoderfit as its users do: the CLI (in this process, or in its own for what only a process
shows) and the HTTP server (uvicorn in a thread, or `encoderfit serve` in a process) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def run_cli(*args: str, check: bool = True, input: str | None = None, cwd: Path | None = None,
            own_process: bool = False) -> subprocess.CompletedProcess:
    """`encoderfit ARGS` as a user runs it: its exit code, stdout and stderr.

    By default `cli.main` runs in this process, with stdin, stdout and stderr (and the working directory) replaced
    for the call and an uncaught exception turned into exit code 1 with its traceback on stderr, as the interpreter
    would: the same code path as the console entry point without a second interpreter importing torch and
    transformers (~6 s a call on 2 cores). `own_process=True` starts `python -m encoderfit` for what only a process
    shows (the entry point itself, signals)."""
    if own_process:
        proc = subprocess.run([sys.executable, "-m", "encoderfit", *args], capture_output=True, text=True, input=input, cwd=cwd)
    else:
        proc = _run_in_process(list(args), input, cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"encoderfit {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def _run_in_process(args: list[str], input: str | None, cwd: Path | None) -> subprocess.CompletedProcess:
    import io
    import traceback

    from encoderfit import cli

    def stream(data: bytes = b"") -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")

    saved = sys.stdin, sys.stdout, sys.stderr, os.getcwd()
    sys.stdin, sys.stdout, sys.stderr = stream((input or "").encode("utf-8")), stream(), stream()
    try:
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = cli.main(args)
        except SystemExit as exit_:  # argparse's --help and usage errors
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except Exception:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
        out, err = sys.stdout, sys.stderr
        out.flush(), err.flush()
        text = [s.buffer.getvalue().decode("utf-8", "replace") for s in (out, err)]
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved[:3]
        os.chdir(saved[3])
    return subprocess.CompletedProcess(["encoderfit", *args], code, *text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving_in_thread(run: Path, **app_options):
    """The app `encoderfit serve RUN` runs, served by uvicorn on a free loopback port in a thread of this process (no
    second interpreter to start); yields its URL."""
    import threading

    import uvicorn

    from encoderfit.runs.predictor import Predictor
    from encoderfit.serving.app import Access, create_app, model_info

    predictor = Predictor.from_pretrained(run)
    app = create_app(predictor, model_info(run, predictor, "torch"), access=Access(allowed_hosts=["127.0.0.1"]), **app_options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    """Until the server process at `url` answers /health (fails if it exits or takes over `seconds`)."""
    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
        assert time.time() < deadline, "server did not start"


@contextlib.contextmanager
def serving(run: Path, *args: str):
    """`encoderfit serve RUN ARGS` in a subprocess on a free loopback port, until the block ends; yields its URL."""

    port = free_port()
    cmd = [sys.executable, "-m", "encoderfit", "serve", str(run), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)

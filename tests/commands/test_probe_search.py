"""What a hostile probe found in `embed`, `search` and `serve --corpus`: text lines split at \\n only, a repeatable
--query, one-line errors before any work (empty files, missing corpus, a directory as --output, an index that cannot
be written), and index directories that concurrent or interrupted builders never share nor leave behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port, run_cli
from failing import cli_fails
from shared import TEN

from encoderfit import cli

from encoderfit.commands import search
from encoderfit.runs import search_index
from encoderfit.runs.predictor import Predictor


def read_jsonl(text: str) -> list[dict]:
    """JSONL as written: lines end at \\n only (a text's U+2028 is written as it is, as JSON allows)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def lines_file(path: Path) -> Path:
    path.write_text("\n".join(TEN) + "\n", encoding="utf-8", newline="")
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def predictor(embedding_run) -> Predictor:
    model = Predictor.from_pretrained(embedding_run)
    model.fingerprint = "test-model"
    return model


def test_txt_lines_are_split_at_newlines_only_in_embed_and_search(embedding_run, tmp_path):
    corpus = lines_file(tmp_path / "docs.txt")
    run_cli("embed", str(embedding_run), "--input", str(corpus), "--output", str(tmp_path / "v.npy"))
    assert np.load(tmp_path / "v.npy").shape[0] == 10  # 12 with str.splitlines
    proc = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--index", str(tmp_path / "index"),
                   "--query", TEN[7], "--query", TEN[1], "--top_k", "1")
    first, second = read_jsonl(proc.stdout)
    assert first["results"][0] == {"id": "8", "score": pytest.approx(1.0, abs=1e-4), "text": TEN[7]}
    assert second["results"][0]["id"] == "2" and second["results"][0]["text"] == TEN[1]  # the index reads it back whole



def test_query_is_repeatable_and_the_single_form_still_works(embedding_run, tmp_path):
    corpus = lines_file(tmp_path / "docs.txt")
    one = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", "recipe bake oven", "--top_k", "2")
    assert [r["query"] for r in read_jsonl(one.stdout)] == ["recipe bake oven"]
    many = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", "recipe bake oven", "--query=referee trophy win",
                   "--query", "null", "--top_k", "2")
    assert [r["query"] for r in read_jsonl(many.stdout)] == ["recipe bake oven", "referee trophy win", "null"]
    listed = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", "[recipe bake oven, coach player season]",
                     "--top_k", "2")
    assert [r["query"] for r in read_jsonl(listed.stdout)] == ["recipe bake oven", "coach player season"]
    api = search.search(embedding_run, corpus, query="recipe bake oven", top_k=2)  # the Python API: one text, or a list
    assert len(api) == 1 and len(search.search(embedding_run, corpus, query=["recipe bake oven", "coach player season"], top_k=2)) == 2


def test_gather_repeated_only_touches_options_that_take_texts():
    commands = cli.commands()
    assert cli.gather_repeated(["search", "r", "--query", "a", "--top_k", "3", "--query", "b"], commands["search"]) == \
        ["search", "r", '--query=["a", "b"]', "--top_k", "3"]
    assert cli.gather_repeated(["serve", "r", "--allowed_hosts", "a", "--allowed_hosts", "b"], commands["serve"]) == \
        ["serve", "r", '--allowed_hosts=["a", "b"]']
    assert cli.gather_repeated(["search", "r", "--queries", "q.txt", "--query"], commands["search"]) == \
        ["search", "r", "--queries", "q.txt", "--query"]


# ---------------------------------------------------------------- one line, before any work


def test_empty_and_missing_files_are_one_line(embedding_run, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert "an empty file (0 bytes)" in cli_fails("embed", str(embedding_run), "--input", str(empty))
    assert "an empty file (0 bytes)" in cli_fails("search", str(embedding_run), "--corpus", str(empty), "--query", "x")
    assert "an empty file (0 bytes)" in cli_fails("serve", str(embedding_run), "--corpus", str(empty), "--port", str(free_port()))
    assert not (embedding_run / "indexes" / "empty.jsonl").exists()
    # a missing corpus is named before the model is loaded: a run that is not there is never looked at
    msg = cli_fails("search", str(tmp_path / "no-run"), "--corpus", str(tmp_path / "missing.txt"), "--query", "x")
    assert "--corpus: file" in msg and "missing.txt' does not exist" in msg
    assert "is a directory" in cli_fails("search", str(tmp_path / "no-run"), "--corpus", str(tmp_path), "--query", "x")


@pytest.mark.parametrize("command,name", [("embed", "vectors.npy"), ("predict", "out.jsonl")])
def test_a_directory_as_output_is_refused_before_any_work(embedding_run, tmp_path, monkeypatch, command, name):
    target = tmp_path / name
    target.mkdir()
    monkeypatch.setattr(Predictor, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    msg = cli_fails(command, str(embedding_run), "--input", str(lines_file(tmp_path / "in.txt")), "--output", str(target))
    assert f"--output: {target} is a directory; give a file path, e.g. {target}/" in msg
    assert target.is_dir() and not list(target.iterdir())


def test_read_only_run_directory_names_the_index_and_suggests_index(embedding_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(embedding_run, run, ignore=shutil.ignore_patterns("indexes"))
    (run / "indexes").symlink_to("/sys")  # a place nobody may write, even root (as a read-only mount)
    corpus = lines_file(tmp_path / "docs.txt")
    msg = cli_fails("search", str(run), "--corpus", str(corpus), "--query", "recipe bake oven")
    assert f"cannot write the search index {run / 'indexes' / 'docs.txt'}" in msg and "pass --index DIR" in msg
    assert "pass --index DIR" in cli_fails("serve", str(run), "--corpus", str(corpus), "--port", str(free_port()))
    assert "pass --corpus FILE as well" in cli_fails("serve", str(run), "--index", str(tmp_path / "idx"), "--port", str(free_port()))
    proc = run_cli("search", str(run), "--corpus", str(corpus), "--query", "recipe bake oven", "--index", str(tmp_path / "idx"))
    assert read_jsonl(proc.stdout)[0]["results"][0]["id"] == "4"


# ---------------------------------------------------------------- index directories


def test_builders_of_one_index_never_share_a_directory(predictor, tmp_path, monkeypatch):
    """A second build of the same index starts and finishes while the first is embedding (two `search` calls at once):
    each works in a directory of its own, the first finds the second's complete index published and keeps it."""
    target = tmp_path / "indexes" / "docs"
    embed, seen = search_index.embed_texts, []

    def embed_while_another_builds(model, texts):
        seen.append(leftovers(target.parent))
        if len(seen) == 1:
            search_index.SearchIndex.build(model, texts, [str(i) for i in range(len(texts))], target, "sha")
        return embed(model, texts)

    monkeypatch.setattr(search_index, "embed_texts", embed_while_another_builds)
    index = search_index.SearchIndex.build(predictor, TEN, [f"d{i}" for i in range(10)], target, "sha")
    first, second = seen
    assert len(first) == 1 and len(second) == 2 and first[0] in second and first[0].startswith(".docs.partial-")
    assert index.ids[0] == "0" and sorted(p.name for p in target.iterdir()) == ["documents.jsonl", "meta.json", "vectors.npy"]
    assert leftovers(target.parent) == []
    rebuilt = search_index.SearchIndex.build(predictor, TEN, [f"d{i}" for i in range(10)], target, "other-sha")  # a stale one is replaced
    assert rebuilt.ids[0] == "d0" and rebuilt.meta["corpus_sha256"] == "other-sha" and leftovers(target.parent) == []


@pytest.mark.parametrize("signal", [KeyboardInterrupt, cli.Terminated])
def test_an_interrupted_build_leaves_no_partial_directory(embedding_run, tmp_path, monkeypatch, signal):
    """cli turns SIGTERM into Terminated in the main thread, as Ctrl-C is KeyboardInterrupt: raised mid-embedding."""
    corpus = lines_file(tmp_path / "docs.txt")

    def interrupted(model, texts):
        raise signal()

    monkeypatch.setattr(search_index, "embed_texts", interrupted)
    proc = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--index", str(tmp_path / "idx" / "docs"),
                   "--query", "x", check=False)
    assert proc.returncode in (130, 143) and leftovers(tmp_path / "idx") == [] and not (tmp_path / "idx" / "docs").exists()


def test_what_killed_builders_left_is_removed_by_the_next(predictor, tmp_path):
    import socket

    parent = tmp_path / "indexes"
    parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = [f".docs.partial-{int(dead.stdout)}@{host}-abc123", ".docs.partial", ".docs.old-xyz"]
    alive = [f".docs.partial-{os.getpid()}@{host}-def456", f".docs.partial-{int(dead.stdout)}@elsewhere-ghi789", ".docs.txt.partial"]
    for name in stale + alive:
        (parent / name).mkdir()
        (parent / name / "vectors.npy").write_bytes(b"partial")
    search_index.SearchIndex.build(predictor, TEN, [str(i) for i in range(10)], parent / "docs", "sha")
    assert leftovers(parent) == sorted(alive)  # a live builder's, another host's and another index's are kept

"""The real server in a subprocess on a loopback port: every endpoint, every error, the API key, batching, the page."""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import serving
from encoderfit.runs.predictor import Predictor

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run, "--api_key", KEY, "--max_texts", "8", "--max_chars", "500", "--max_body_bytes", "20000",
                 "--max_wait_ms", "50") as url:
        yield url


def post(url, body, headers=AUTH, **kwargs):
    return httpx.post(url + "/v1/predict", json=body, headers=headers, timeout=30, **kwargs)


def test_classify_matches_the_python_api(server, trained_run):
    texts = ["garlic sauce in the oven", "the coach and the referee", "a kernel compiler for the cloud"]
    response = post(server, {"texts": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = Predictor.from_pretrained(trained_run).predict(texts)
    assert [r["label"] for r in results] == [e["label"] for e in expected]
    for got, want in zip(results, expected):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    single = post(server, {"text": texts[0]}).json()["results"]
    assert len(single) == 1 and single[0]["label"] == expected[0]["label"]


def test_health_model_docs_and_metrics(server):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    info = httpx.get(server + "/v1/model", headers=AUTH).json()
    assert info["labels"] == ["food", "sport", "tech"] and "test" in info["metrics"] and info["max_length"] == 512
    for closed in ("/docs", "/openapi.json"):  # an API key is set: the docs are off unless --docs true
        assert httpx.get(server + closed).status_code == 404
    post(server, {"text": "the team won the league"})
    metrics = httpx.get(server + "/metrics", headers=AUTH).text
    for series in ("encoderfit_requests_total", "encoderfit_request_seconds_bucket", "encoderfit_batch_texts_count",
                   'encoderfit_predicted_label_total{label="sport"}', "encoderfit_confidence_sum", "encoderfit_abstained_total"):
        assert series in metrics, series


@pytest.mark.parametrize("body,status,message", [
    ({"texts": []}, 422, "between 1 and 8"),
    ({"texts": ["ok"] * 9}, 422, "between 1 and 8"),
    ({"texts": ["fine", "  "]}, 422, "texts.1: empty text"),
    ({"texts": [1, 2]}, 422, "texts.0"),
    ({"texts": "not a list"}, 422, "texts"),
    ({"text": "a", "texts": ["b"]}, 422, "exactly one of"),
    ({"pairs": [["a", "b"]]}, 422, "this model takes single texts"),
    ({}, 422, "exactly one of"),
    ({"texts": ["a"], "extra": 1}, 422, "extra"),
    ({"text": "x" * 501}, 413, "over the limit of 500"),
])
def test_bad_bodies_get_clear_4xx(server, body, status, message):
    response = post(server, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_transport_errors(server):
    raw = lambda content, ctype: httpx.post(server + "/v1/predict", content=content, timeout=30,  # noqa: E731
                                          headers={**AUTH, "Content-Type": ctype})
    assert raw(b"{not json", "application/json").status_code == 422
    assert raw(b'{"text": "hi"}', "text/plain").status_code == 415
    big = raw(json.dumps({"text": "y" * 30000}).encode(), "application/json")
    assert big.status_code == 413 and "20000 bytes" in big.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(100):
            yield b"z" * 1000

    streamed = httpx.post(server + "/v1/predict", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_api_key_is_required(server):
    assert post(server, {"text": "hi"}, headers={}).status_code == 401
    assert post(server, {"text": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(server + "/metrics").status_code == 401
    assert httpx.get(server + "/health").status_code == 200


def test_concurrent_requests_share_model_passes(server):
    before = httpx.get(server + "/metrics", headers=AUTH).text
    count = lambda text: float(next(l.split()[-1] for l in text.splitlines() if l.startswith("encoderfit_batch_texts_count")))  # noqa: E731,E741
    texts = [f"goal number {i} for the team" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda t: post(server, {"text": t}), texts))
    assert [(r.status_code, r.json()["results"][0]["label"] if r.status_code == 200 else r.text) for r in responses] == [(200, "sport")] * len(texts)
    passes = count(httpx.get(server + "/metrics", headers=AUTH).text) - count(before)
    assert passes < len(texts), "no two concurrent requests shared a model pass"


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian chromium not installed (CI installs it)")
def test_try_it_page_in_headless_chromium(server):
    from playwright.sync_api import sync_playwright

    text = "the chef baked garlic bread in the oven"
    expected = post(server, {"text": text}).json()["results"][0]["label"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking", "--no-first-run"])
        page = browser.new_page()
        page.goto(server + "/")
        page.fill("#key", KEY)
        page.fill("#text", text)
        page.click("#go")
        page.wait_for_function("document.getElementById('label').textContent.length > 1 && "
                               "document.getElementById('label').textContent !== '…'")
        shown = page.inner_text("#label")
        bars = page.locator(".bar").count()
        browser.close()
    assert shown == expected and bars == 3


# ---------------------------------------------------------------- hardening: bad requests fail alone


def test_lone_surrogates_get_a_422_as_escape_or_raw_bytes(server):
    escaped = httpx.post(server + "/v1/predict", content=b'{"texts": ["fine", "bad \\ud800 text"]}', timeout=30,
                         headers={**AUTH, "Content-Type": "application/json"})
    assert escaped.status_code == 422 and escaped.json() == {
        "error": "texts.1: character 4 is a lone surrogate, not valid Unicode; send UTF-8 text"}
    raw = httpx.post(server + "/v1/predict", content=b'{"text": "x\xed\xa0\x80"}', timeout=30,
                     headers={**AUTH, "Content-Type": "application/json"})
    assert raw.status_code == 422 and "lone surrogate" in raw.json()["error"]


def test_one_poisoned_request_among_100_good_ones_fails_alone(server):
    good = [{"text": f"goal number {i} for the team"} for i in range(100)]
    bodies = good[:50] + [None] + good[50:]

    def send(body):
        if body is None:
            return httpx.post(server + "/v1/predict", content=b'{"text": "\\udfff"}', timeout=60,
                              headers={**AUTH, "Content-Type": "application/json"})
        return post(server, body)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, bodies))
    statuses = [r.status_code for r in responses]
    assert statuses[50] == 422 and statuses[:50] + statuses[51:] == [200] * 100
    assert all(r.headers["content-type"].startswith("application/json") for r in responses)


def test_a_failed_model_pass_is_rerun_request_by_request(trained_run):
    """The real tokenizer fails on a lone surrogate: sent past the HTTP checks, only its own request fails."""
    import asyncio

    from encoderfit.serving.batcher import Batcher, Metrics

    async def scenario():
        batcher = Batcher(Predictor.from_pretrained(trained_run), Metrics(), max_wait_ms=200, max_batch_texts=256, enabled=True)
        batcher.start()
        jobs = [batcher.predict([f"the chef cooked dinner {i}"]) for i in range(5)] + [batcher.predict(["\udcff"])]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    assert [type(r).__name__ for r in results[:5]] == ["list"] * 5 and results[0][0]["label"] == "food"
    assert isinstance(results[5], Exception)


def test_distinct_paths_do_not_grow_the_metrics(server):
    import asyncio

    import aiohttp

    def series(text):
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("encoderfit_requests_total{")}

    httpx.get(server + "/no/such/path/0")
    httpx.get(server + "/metrics", headers=AUTH)  # its own series exists from here on, whichever test ran first
    before = series(httpx.get(server + "/metrics", headers=AUTH).text)

    async def flood(n=3000):
        async with aiohttp.ClientSession() as session:
            async def one(i):
                async with session.get(f"{server}/no/such/path/{i}") as response:
                    return response.status
            return await asyncio.gather(*(one(i) for i in range(n)))

    assert set(asyncio.run(flood())) == {404}
    after = series(httpx.get(server + "/metrics", headers=AUTH).text)
    assert after == before, after - before
    assert 'encoderfit_requests_total{path="other",status="404"}' in after


def test_every_error_has_one_shape_and_head_works(server):
    missing = httpx.get(server + "/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    wrong_method = httpx.get(server + "/v1/predict", headers=AUTH)
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}
    for path in ("/health", "/"):
        assert httpx.head(server + path).status_code == 200
    mixed_case = httpx.post(server + "/v1/predict", content=b'{"text": "the team won"}', timeout=30,
                            headers={**AUTH, "Content-Type": "Application/JSON; charset=UTF-8"})
    assert mixed_case.status_code == 200


def test_host_header_must_name_this_server(server):
    rebound = httpx.get(server + "/health", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "Host header 'attacker.example:8000'" in rebound.json()["error"]
    assert httpx.get(server + "/health", headers={"Host": "localhost"}).status_code == 200
    for forged in ("127.0.0.1:1@evil.com", "127.0.0.1:", "localhost.evil.com", "127.0.0.1 evil.com"):
        refused = httpx.get(server + "/health", headers={"Host": forged})
        assert refused.status_code == 400 and refused.json()["error"].startswith(f"Host header '{forged}' is not served"), forged
    assert httpx.get(server + "/health", headers={"Host": "[::1]:8000"}).status_code == 200


def test_allowed_host_patterns():
    from encoderfit.core.errors import UserError
    from encoderfit.serving.http import host_patterns

    assert host_patterns(["LocalHost", "::1", "[::1]", "*.example.com", "*"]) == ["localhost", "[::1]", "[::1]", "*.example.com", "*"]
    for bad in ("api.*.com", "*example.com"):
        with pytest.raises(UserError, match="--allowed_hosts: .* a wildcard must be like"):
            host_patterns([bad])


def test_docs_can_be_opened_with_a_key_and_the_port_is_checked(trained_run):
    from conftest import run_cli

    with serving(trained_run, "--api_key", KEY, "--docs", "true") as url:
        assert httpx.get(url + "/docs").status_code == 200
        assert {"/v1/predict", "/v1/classify"} <= set(httpx.get(url + "/openapi.json").json()["paths"])
    proc = run_cli("serve", str(trained_run), "--port", "99999", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == "error: --port: 99999 is not a TCP port; use 1-65535"

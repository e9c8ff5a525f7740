"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 (no network, no mocks)."""

import json
import sys
import time
from pathlib import Path

import pytest

from nd_fairseq.pneg.backends import (BackendFatal, BackendUnavailable, OpenAICompletionsBackend, RequestRejected,
                                      SamplingConfig, completions_url)

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "pneg"))
from completions_server import CompletionsServer  # noqa: E402

PROMPT = (Path(__file__).parent / "fixtures" / "pneg" / "appendix_g_prompt.txt").read_text(encoding="utf-8")


def backend(server, **kw):
    delays = kw.pop("delays", None)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5.0)
    return OpenAICompletionsBackend(server.url, "test-model", sleep=(delays.append if delays is not None else time.sleep),
                                    **kw)


def test_request_body_follows_pneg_sampling_settings():
    with CompletionsServer() as server:
        texts = backend(server, api_key="sk-test").complete(PROMPT)
        req = server.requests[0]
    assert len(texts) == 1 and texts[0].startswith(" My neighbour")
    assert req["path"] == "/v1/completions"
    body = req["body"]
    assert body["temperature"] == 0.8
    assert body["frequency_penalty"] == 0.4 and body["presence_penalty"] == 0.4
    assert body["stop"] == ["###"]
    assert body["model"] == "test-model" and body["prompt"] == PROMPT and body["n"] == 1
    assert body["max_tokens"] == 256 and "seed" not in body and "top_p" not in body
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["headers"]["Content-Type"] == "application/json"


def test_no_key_no_authorization_header_and_seed_only_on_request():
    with CompletionsServer() as server:
        backend(server, send_seed=True).complete(PROMPT, seed=42)
        req = server.requests[0]
    assert "Authorization" not in req["headers"]
    assert req["body"]["seed"] == 42


def test_http_429_and_500_are_retried_with_exponential_backoff():
    delays = []
    with CompletionsServer() as server:
        server.queue(("status", 429, "rate limited"), ("status", 500, "boom"), ("status", 503, "busy"))
        texts = backend(server, delays=delays, backoff_base=1.0, backoff_max=60).complete(PROMPT)
        assert len(server.requests) == 4
    assert texts[0].startswith(" My neighbour")
    # base * 2**r with a jitter in [0.5, 1]
    assert len(delays) == 3
    for r, d in enumerate(delays):
        assert 0.5 * 2 ** r <= d <= 2 ** r


def test_retry_after_header_is_honoured():
    delays = []
    with CompletionsServer() as server:
        server.queue(("status", 429, "slow down", {"Retry-After": "7"}))
        backend(server, delays=delays, backoff_base=0.01).complete(PROMPT)
    assert delays == [7.0]


def test_malformed_json_is_retried():
    with CompletionsServer() as server:
        server.queue(("raw", b"{not json"), ("raw", b'{"choices": []}'), ("raw", b'{"choices": [{"text": 3}]}'))
        texts = backend(server).complete(PROMPT)
        assert len(server.requests) == 4
    assert texts[0].startswith(" My neighbour")


def test_timeout_is_retried():
    with CompletionsServer() as server:
        server.queue(("sleep", 1.5))
        t0 = time.perf_counter()
        texts = backend(server, timeout=0.3).complete(PROMPT)
        elapsed = time.perf_counter() - t0
        assert len(server.requests) == 2
    assert texts[0].startswith(" My neighbour")
    assert elapsed < 1.5  # gave up on the slow answer instead of waiting for it


def test_retries_exhausted_stop_with_a_one_line_error():
    with CompletionsServer() as server:
        server.queue(*[("status", 500, "down")] * 3)
        with pytest.raises(BackendUnavailable) as err:
            backend(server, max_retries=2).complete(PROMPT)
        assert len(server.requests) == 3
    msg = str(err.value)
    assert "\n" not in msg and "3 tries" in msg and "HTTP 500" in msg and "rerun" in msg


def test_auth_and_not_found_are_fatal_without_retry():
    with CompletionsServer() as server:
        server.queue(("status", 401, "invalid api key"))
        with pytest.raises(BackendFatal, match="HTTP 401.*invalid api key.*--api-key-env"):
            backend(server).complete(PROMPT)
        server.queue(("status", 404, "no such model"))
        with pytest.raises(BackendFatal, match="HTTP 404"):
            backend(server).complete(PROMPT)
        assert len(server.requests) == 2


def test_too_long_prompt_is_rejected_for_this_request_only():
    with CompletionsServer() as server:
        server.queue(("status", 400, "This model's maximum context length is 2049 tokens"))
        with pytest.raises(RequestRejected, match="maximum context length"):
            backend(server).complete(PROMPT)
        assert len(server.requests) == 1


def test_unreachable_server_is_transient():
    with CompletionsServer() as server:
        url = server.url
    b = OpenAICompletionsBackend(url, "m", max_retries=1, backoff_base=0.0, timeout=1.0, sleep=lambda s: None)
    with pytest.raises(BackendUnavailable, match="cannot reach|connection"):
        b.complete(PROMPT)


def test_servers_that_ignore_n_are_asked_again():
    with CompletionsServer(honour_n=False) as server:
        texts = backend(server).complete(PROMPT, n=3, stop=("###", "\n"), seed=10)
        assert [r["body"]["n"] for r in server.requests] == [3, 2, 1]
        assert server.requests[0]["body"]["stop"] == ["###", "\n"]
    assert len(texts) == 3


def test_configuration_errors():
    from nd_fairseq.io_utils import InputError

    with pytest.raises(InputError, match="--base-url"):
        OpenAICompletionsBackend("localhost:8000", "m")
    with pytest.raises(InputError, match="--model"):
        OpenAICompletionsBackend("http://localhost:8000/v1", "")
    assert completions_url("http://h/v1/") == "http://h/v1/completions"
    assert completions_url("http://h/v1/completions") == "http://h/v1/completions"


def test_sampling_config_overrides_reach_the_body():
    with CompletionsServer() as server:
        backend(server, sampling=SamplingConfig(temperature=0.5, max_tokens=64, top_p=0.9)).complete(PROMPT)
        body = server.requests[0]["body"]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 64 and body["top_p"] == 0.9
    json.dumps(body)

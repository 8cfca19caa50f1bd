"""The OpenAI-compatible API backend (agentflan.api_backend) against a local imitation of the
endpoint: a threaded http.server on 127.0.0.1 that answers ``POST /v1/chat/completions`` and can be
told to fail (429 with Retry-After, 5xx, 401, a slow reply) for the next requests.

Checked: the request (path, Bearer key, body), the retry policy and its waits, the one-line error
after the last attempt (naming the endpoint and record, never the key), the reply cache (a rerun
sends nothing; another max_tokens sends again; going back sends nothing), the run record, and
that the key is in no file under the output directory and in no log line."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentflan import stages
from agentflan.api_backend import (ApiCache, ApiError, ApiGenerator, MessageError, cache_path,
                                   record_path, request_hash)
from agentflan.io import DataError, write_jsonl

KEY = "sk-test-9f2c1d7e-SECRET-never-written"
SERVED = "gpt-test-0613"
FAST = {"backoff_s": 0.001, "max_backoff_s": 0.01, "max_attempts": 4, "timeout_s": 5.0}


class FakeEndpoint:
    """The imitation endpoint. ``script`` holds what the next requests get, first first:
    ``(status, headers, body)`` or ``("sleep", seconds)`` (a reply that comes too late); an empty
    script answers normally: ``"echo: <last message content>"`` from model ``SERVED``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple] = []
        self.reply = lambda messages: f"  echo: {messages[-1]['content']}\n"
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):       # keep the test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                              "body": body})
                    step = endpoint.script.pop(0) if endpoint.script else None
                if step is not None and step[0] == "sleep":
                    time.sleep(step[1])
                    step = None
                if step is None:
                    content = endpoint.reply(body["messages"])
                    step = (200, {}, {"id": "cmpl-1", "object": "chat.completion", "model": SERVED,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": content}}],
                                      "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
                status, headers, payload = step
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client timed out first
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(monkeypatch):
    ep = FakeEndpoint()
    monkeypatch.setenv("OPENAI_BASE_URL", ep.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield ep
    ep.close()


def _items(n: int, benchmark: str = "gsm8k") -> list[dict]:
    return [{"id": f"{benchmark}/{i}", "benchmark": benchmark,
             "messages": [{"role": "system", "content": "Answer briefly."},
                          {"role": "user", "content": f"What is {i} + {i}?"}],
             "reference": {"answer": str(2 * i)}, "meta": {}} for i in range(n)]


def _stage(tmp_path: Path, items: dict[str, list[dict]], **backend) -> dict[str, Path]:
    """Run stages.generate with the API backend; returns the predictions paths."""
    paths, out = {}, {}
    for bench, rows in items.items():
        paths[bench] = tmp_path / "eval" / f"{bench}.jsonl"
        if not paths[bench].exists():
            write_jsonl(paths[bench], rows)
        out[bench] = tmp_path / "results" / "gpt-test" / f"{bench}.predictions.jsonl"
    stages.generate(model="gpt-test", items={b: str(p) for b, p in paths.items()},
                    out={b: str(p) for b, p in out.items()}, generation={}, options={}, threads=1,
                    backend={"kind": "api", "model": "gpt-test", "max_tokens": 16, **FAST, **backend})
    return out


def _gen(**kw) -> tuple[ApiGenerator, list[float]]:
    slept: list[float] = []
    opts = {**FAST, **kw}
    return ApiGenerator(opts.pop("model", "gpt-test"), max_tokens=opts.pop("max_tokens", 16),
                        sleep=slept.append, **opts), slept


# ------------------------------------------------------------------ a normal run, through the stage
def test_normal_reply_request_and_run_record(tmp_path, endpoint, capsys):
    out = _stage(tmp_path, {"gsm8k": _items(3), "mmlu": _items(2, "mmlu")})
    preds = [json.loads(x) for x in out["gsm8k"].read_text().splitlines()]
    assert preds == [{"backend": "api", "id": f"gsm8k/{i}", "prediction": f"echo: What is {i} + {i}?"}
                     for i in range(3)]
    assert len(endpoint.requests) == 5
    first = endpoint.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == f"Bearer {KEY}"
    assert first["body"] == {"model": "gpt-test", "temperature": 0, "max_tokens": 16,
                             "messages": [{"role": "system", "content": "Answer briefly."},
                                          {"role": "user", "content": "What is 0 + 0?"}]}
    rec = json.loads(record_path(out["gsm8k"]).read_text())
    assert rec["requested_model"] == "gpt-test" and rec["served_models"] == {SERVED: 3}
    assert rec["endpoint"] == endpoint.url + "/chat/completions"
    assert rec["predictions"] == 3 and rec["replies"] == {"cached": 0, "requested": 3}
    assert rec["http"] == {"requests": 3, "retries": 0}
    assert len(rec["date"]) == 10 and rec["date"][4] == "-" and rec["reply_dates"] == {rec["date"]: 3}
    assert rec["finish_reasons"] == {"stop": 3}
    # the cache is kept; its lines are complete and sorted-key JSON
    lines = cache_path(out["mmlu"]).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["served_model"] == SERVED for x in lines)
    assert not any(p.name.endswith(".partial.jsonl") for p in out["gsm8k"].parent.iterdir())
    assert KEY not in capsys.readouterr().out


# ------------------------------------------------------------------ retries
def test_429_with_retry_after_then_success(endpoint):
    endpoint.script = [(429, {"Retry-After": "2"}, {"error": {"message": "rate limited"}})]
    gen, slept = _gen()
    assert gen([[{"role": "user", "content": "hi"}]]) == ["echo: hi"]
    assert slept == [2.0]                      # Retry-After honoured, not the tiny backoff
    assert (gen.requests, gen.retries, gen.generated) == (2, 1, 1)
    assert len(endpoint.requests) == 2


def test_500_twice_then_success_with_seeded_backoff(endpoint):
    err = (500, {}, {"error": {"message": "server exploded"}})
    waits = []
    for _ in range(2):
        endpoint.script = [err, err]
        gen, slept = _gen(backoff_s=0.01, max_backoff_s=1.0, seed=7)
        assert gen([[{"role": "user", "content": "x"}]], ids=["a/1"]) == ["echo: x"]
        assert (gen.requests, gen.retries) == (3, 2)
        assert 0.01 <= slept[0] < 0.015 and 0.02 <= slept[1] < 0.03    # exponential, jitter in [1, 1.5)
        waits.append(slept)
    assert waits[0] == waits[1]                # the jitter is seeded: the same waits every run
    endpoint.script = [err]
    other, slept = _gen(backoff_s=0.01, max_backoff_s=1.0, seed=8)
    other([[{"role": "user", "content": "x"}]], ids=["a/1"])
    assert slept[0] != waits[0][0]


def test_timeout_is_retried(endpoint):
    endpoint.script = [("sleep", 0.6)]
    gen, slept = _gen(timeout_s=0.2)
    assert gen([[{"role": "user", "content": "slow"}]]) == ["echo: slow"]
    assert gen.retries == 1 and len(slept) == 1


def test_permanent_401_is_one_clear_line_without_the_key(endpoint):
    endpoint.script = [(401, {}, {"error": {"message": f"Incorrect API key provided: {KEY}"}})] * 3
    gen, slept = _gen()
    with pytest.raises(ApiError) as err:
        gen([[{"role": "user", "content": "hi"}]], ids=["gsm8k/4"])
    msg = str(err.value)
    assert isinstance(err.value, DataError)    # the command line prints it as its one error line
    assert msg.startswith(f"POST {endpoint.url}/chat/completions (record 'gsm8k/4'): HTTP 401")
    assert "\n" not in msg and KEY not in msg and "***" in msg
    assert len(endpoint.requests) == 1 and slept == []     # a 401 is not retried


def test_last_retry_gives_up_with_one_line(endpoint):
    endpoint.script = [(503, {}, {"error": "overloaded"})] * 10
    gen, slept = _gen(max_attempts=3)
    with pytest.raises(ApiError, match=r"\(record 'q/1'\): HTTP 503 .*gave up after 3 attempts"):
        gen([[{"role": "user", "content": "hi"}]], ids=["q/1"])
    assert len(endpoint.requests) == 3 and len(slept) == 2


def test_missing_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ApiError, match=r"^\$OPENAI_API_KEY: not set"):
        ApiGenerator("gpt-test")


# ------------------------------------------------------------------ cache
def test_rerun_sends_nothing_and_max_tokens_change_sends_again(tmp_path, endpoint):
    items = {"gsm8k": _items(4)}
    out = _stage(tmp_path, items)
    first = out["gsm8k"].read_bytes()
    assert len(endpoint.requests) == 4
    out["gsm8k"].unlink()
    _stage(tmp_path, items)                                    # rerun: all from the cache
    assert len(endpoint.requests) == 4
    assert out["gsm8k"].read_bytes() == first
    rec = json.loads(record_path(out["gsm8k"]).read_text())
    assert rec["replies"] == {"cached": 4, "requested": 0} and rec["http"]["requests"] == 0
    assert rec["served_models"] == {SERVED: 4}                # known from the cache, not from a request
    _stage(tmp_path, items, max_tokens=32)                     # another request body: pay again
    assert len(endpoint.requests) == 8
    assert {r["body"]["max_tokens"] for r in endpoint.requests[4:]} == {32}
    _stage(tmp_path, items)                                    # and back: still cached
    assert len(endpoint.requests) == 8
    assert len(cache_path(out["gsm8k"]).read_text().splitlines()) == 8


def test_changed_item_is_requested_alone(tmp_path, endpoint):
    items = _items(3)
    out = _stage(tmp_path, {"gsm8k": items})
    items[1]["messages"][-1]["content"] = "What is 10 + 10?"
    write_jsonl(tmp_path / "eval" / "gsm8k.jsonl", items)
    _stage(tmp_path, {"gsm8k": items})
    assert len(endpoint.requests) == 4
    assert endpoint.requests[-1]["body"]["messages"][-1]["content"] == "What is 10 + 10?"
    assert json.loads(out["gsm8k"].read_text().splitlines()[1])["prediction"] == "echo: What is 10 + 10?"


def test_concurrent_requests_give_the_same_bytes(tmp_path, endpoint):
    a = _stage(tmp_path / "a", {"gsm8k": _items(9)})
    b = _stage(tmp_path / "b", {"gsm8k": _items(9)}, concurrency=4)
    assert a["gsm8k"].read_bytes() == b["gsm8k"].read_bytes()
    assert len(cache_path(b["gsm8k"]).read_text().splitlines()) == 9


def test_cache_file_torn_and_bad_lines(tmp_path):
    path = tmp_path / "x.predictions.jsonl.api-cache.jsonl"
    body = {"model": "m", "messages": [], "temperature": 0, "max_tokens": 1}
    with ApiCache(path, "S") as c:
        c.append([("a", request_hash(body), "r", SERVED, "stop")])
    path.write_bytes(path.read_bytes() + b'{"id": "b", "req')    # a kill in the middle of a line
    c = ApiCache(path, "S")
    assert c.torn == 1 and c.get("a", request_hash(body)) == "r" and c.get("a", "other") is None
    assert path.read_bytes().endswith(b"\n") and len(path.read_text().splitlines()) == 1
    assert ApiCache(path, "T").get("a", request_hash(body)) is None     # other settings: not used ...
    assert len(path.read_text().splitlines()) == 1                      # ... but kept
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(DataError, match=r"api-cache\.jsonl:2: unreadable API cache line"):
        ApiCache(path, "S")


def test_hotpotqa_episodes_step_by_step_and_cached(tmp_path, endpoint):
    """Multi-step episodes through keyed_fn: one request per step (ids ``<item>#<step>``); a rerun
    replays every step from the cache."""
    from agentflan.evaluation import registry
    items = registry.load_items("hotpotqa", Path(__file__).parent / "fixtures" / "eval" / "raw", {})
    assert items

    def react(messages):
        if len(messages) == 2:      # system + question: search first
            return "Thought: look it up\nAction: Search\nAction Input: {\"entity\": \"Nowhere\"}"
        return "Thought: done\nAction: FinalAnswer\nAction Input: {\"answer\": \"yes\"}"
    endpoint.reply = react
    out = _stage(tmp_path, {"hotpotqa": items})
    preds = [json.loads(x) for x in out["hotpotqa"].read_text().splitlines()]
    assert [p["prediction"] for p in preds] == ["yes"] * len(items)
    assert {p["stop_reason"] for p in preds} == {"finish"}
    assert len(endpoint.requests) == 2 * len(items)
    ids = sorted(json.loads(x)["id"] for x in cache_path(out["hotpotqa"]).read_text().splitlines())
    assert ids == sorted(f"{it['id']}#{k}" for it in items for k in (1, 2))
    first = out["hotpotqa"].read_bytes()
    _stage(tmp_path, {"hotpotqa": items})
    assert len(endpoint.requests) == 2 * len(items) and out["hotpotqa"].read_bytes() == first


# ------------------------------------------------------------------ bad input, key hygiene
def test_bad_role_names_file_and_record_and_writes_no_predictions(tmp_path, endpoint):
    items = _items(2)
    items[1]["messages"].append({"role": "tool", "content": "x"})
    with pytest.raises(DataError, match=r"gsm8k\.jsonl: record 'gsm8k/1': message 2 .*role 'tool'"):
        _stage(tmp_path, {"gsm8k": items})
    assert not (tmp_path / "results" / "gpt-test" / "gsm8k.predictions.jsonl").exists()
    assert endpoint.requests == []            # the whole benchmark is checked before any request
    with pytest.raises(MessageError):
        ApiGenerator("m").body([{"role": "user"}], "r")


def test_key_is_bearer_only_and_never_written(tmp_path, endpoint, capsys):
    endpoint.script = [(500, {}, {"error": f"echoing your key {KEY}"})]
    _stage(tmp_path, {"gsm8k": _items(2)})
    assert {r["auth"] for r in endpoint.requests} == {f"Bearer {KEY}"}
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".api.json") for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert KEY not in captured.out and KEY not in captured.err


def test_cli_prints_one_error_line_and_writes_no_predictions(tmp_path, endpoint):
    import os
    import subprocess
    import sys
    endpoint.script = [(401, {}, {"error": {"message": "invalid key"}})]
    write_jsonl(tmp_path / "gsm8k.jsonl", _items(2))
    out = tmp_path / "res" / "gsm8k.predictions.jsonl"
    params = {"model": "gpt-test", "items": {"gsm8k": str(tmp_path / "gsm8k.jsonl")},
              "out": {"gsm8k": str(out)}, "generation": {}, "options": {}, "threads": 1,
              "backend": {"kind": "api", "model": "gpt-test", "max_tokens": 8}}
    (tmp_path / "params.json").write_text(json.dumps(params))
    proc = subprocess.run([sys.executable, "-m", "agentflan.cli", "generate", "--params",
                           f"@{tmp_path / 'params.json'}"], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert err == [f"error: POST {endpoint.url}/chat/completions (record 'gsm8k/0'): HTTP 401 "
                   "Unauthorized: {\"error\": {\"message\": \"invalid key\"}}"]
    assert "Traceback" not in proc.stderr and KEY not in proc.stderr + proc.stdout
    assert not out.exists() and len(endpoint.requests) == 1


# ------------------------------------------------------------------ config
def test_config_schema_api_models():
    import inspect

    import yaml

    from agentflan.config import SCHEMA_PATH, ROOT, validate
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert validate(json.loads(json.dumps(base)))["evaluation"]["api_models"] == {}     # default: none
    cfg = json.loads(json.dumps(base))
    cfg.setdefault("evaluation", {})["api_models"] = {"gpt-4": {"model": "gpt-4-0613", "max_tokens": 512}}
    entry = validate(cfg)["evaluation"]["api_models"]["gpt-4"]
    # the schema's defaults are ApiGenerator's: a configured entry is exactly the backend's options
    params = inspect.signature(ApiGenerator).parameters
    props = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["evaluation"]["properties"][
        "api_models"]["additionalProperties"]["properties"]
    for name, spec in props.items():
        # label: the Table 1 row (the rules drop it from the backend's options)
        assert name in ("model", "label") or name in params, name
        if "default" in spec:
            assert entry[name] == spec["default"] == params[name].default, name
    for bad in ({"max_tokens": 5}, {"model": "m", "api_key": "sk-no"}, {"model": "m", "max_tokens": 0}):
        cfg["evaluation"]["api_models"] = {"gpt-4": bad}
        with pytest.raises(DataError, match=r"evaluation\.api_models\.gpt-4"):
            validate(cfg)

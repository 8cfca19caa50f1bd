"""Generation through an OpenAI-compatible chat endpoint (GPT-3.5/4 rows of Table 1 without a GPU).

:class:`ApiGenerator` has the calling interface that :func:`agentflan.stages.generate` and
:func:`agentflan.evaluation.registry.run_episodes` use on :class:`agentflan.generate.Generator`
(``__call__(batch_messages, progress=..., ids=..., log=..., desc=...)``, ``keyed_fn``,
``settings()``/``settings_key()``, the ``generated``/``resumed``/``truncated_prompts`` counters),
so the stage runs either backend.

* **Request.** Each conversation (its ``role``/``content`` pairs as the benchmark gives them; roles
  ``system``/``user``/``assistant`` only) is sent as ``POST {base_url}/chat/completions`` with
  ``{"model", "messages", "temperature": 0, "max_tokens"}`` (and ``stop`` when configured). The
  base URL is ``$OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``), the key
  ``$OPENAI_API_KEY``, sent as ``Authorization: Bearer``; both come from the environment only and
  the key is never logged or written (error texts are scrubbed of it). Standard library only.
* **Retries.** HTTP 429 and 5xx, timeouts and connection errors are retried up to
  ``max_attempts`` times in all. The wait before retry *k* (1-based) is ``Retry-After`` when the
  server sends one (seconds or an HTTP date; at most ``max_retry_after_s``), else
  ``min(max_backoff_s, backoff_s * 2**(k-1))`` times a jitter factor in [1, 1.5) drawn from a
  generator seeded by ``(seed, item id, request hash, k)``: deterministic, whatever the thread
  interleaving. Any other HTTP status fails at once. A failure is one :class:`ApiError` line
  naming the endpoint, the record and the status (never the key).
* **Cache.** :class:`ApiCache`, the file ``<predictions>.api-cache.jsonl`` next to the
  predictions, keeps every reply ever paid for, keyed by item id (HotpotQA ``<id>#<step>``),
  sha256 of the canonical request body and the settings key. Unlike the local model's resume side
  file it is kept after the predictions are written and keeps the lines of other settings, so
  neither a rerun nor going back to earlier settings pays twice.
* **Run record.** :func:`write_run_record` writes ``<predictions>.api.json``: the requested and
  the served model names (the ``model`` field of the responses, counted over the replies of the
  predictions, cached ones included), the UTC date of the run and the UTC dates the replies were
  paid for, counts of requests, retries and cached replies. Dates (days, no time of day) are the
  one timestamp in the package's artifacts, and they are only in this sidecar and the cache: the
  predictions file stays a deterministic function of the replies.

See docs/CONTRACTS.md ("API backend").
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from .io import AppendLog, DataError, dumps, write_json

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
CACHE_SUFFIX = ".api-cache.jsonl"
RECORD_SUFFIX = ".api.json"
# bump when the meaning of a cached reply changes; part of the settings key
API_FORMAT = 1
ROLES = ("system", "user", "assistant")
_CACHE_KEYS = frozenset({"id", "request", "settings", "reply", "served_model", "finish_reason", "date"})


class ApiError(DataError):
    """A request that failed for good, or a backend that cannot start: one line naming the
    endpoint (``POST <url>``, never the key) or the setting, and the record. A
    :class:`~agentflan.io.DataError`, so the command line prints it as its one error line."""

    def __init__(self, where: str, message: str, record: str | None = None):
        super().__init__(where, message, record=record)


class MessageError(ValueError):
    """A conversation the chat API cannot take (names the record; the stage adds the file)."""


class _Fatal(Exception):
    """A non-retryable failure of one request (wrapped into :class:`ApiError` with the record)."""


def cache_path(out: str | os.PathLike) -> Path:
    """The reply cache of a predictions file: ``<out>.api-cache.jsonl``."""
    return Path(str(out) + CACHE_SUFFIX)


def record_path(out: str | os.PathLike) -> Path:
    """The run record (served model, date) of a predictions file: ``<out>.api.json``."""
    return Path(str(out) + RECORD_SUFFIX)


def public_endpoint(base_url: str) -> str:
    """``base_url`` without user info, query or fragment (what logs and artifacts may show)."""
    u = urllib.parse.urlsplit(base_url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path.rstrip("/"), "", ""))


def request_hash(body: dict) -> str:
    """sha256 of the canonical JSON of a request body."""
    return hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()


def run_date() -> str:
    """Today's UTC date (``YYYY-MM-DD``): the date of the run in the run record."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


class ApiCache(AppendLog):
    """Every reply paid for, one JSON line each (sorted keys):
    ``{"id", "request", "settings", "reply", "served_model", "finish_reason", "date"}`` (``date``:
    the UTC day the reply was paid for).

    Same file discipline as :class:`agentflan.generate.ResumeLog`: a last line without its
    newline is torn and dropped (the file is rewritten before anything is appended), any other
    unreadable line is an error naming the file and line; appends are whole lines, fsynced. It
    differs in two ways: lines of other settings are kept (they are still paid for), and the
    file is not removed after the predictions are written."""

    def __init__(self, path: str | os.PathLike, settings_key: str):
        super().__init__(path)
        self.settings_key = settings_key
        self.entries: dict[tuple[str, str, str], tuple[str, str, str | None, str]] = {}
        self.lines = 0
        self.torn = 0
        self.used = 0                       # replies handed out by get()
        self.served: Counter[str] = Counter()   # served model of every reply handed out or added
        self.dates: Counter[str] = Counter()    # and the day it was paid for
        self.finishes: Counter[str] = Counter()  # and why it ended ("stop", "length", ...)
        if self.path.exists():
            self._read()
            if self.torn:
                self._rewrite()

    def _read(self) -> None:
        for lineno, obj in self._complete_lines("API cache", "delete the line (or the file, paying "
                                                             "again) to go on"):
            ok = isinstance(obj, dict) and set(obj) == _CACHE_KEYS and all(
                isinstance(obj[k], str) for k in _CACHE_KEYS - {"finish_reason"}) and \
                (obj["finish_reason"] is None or isinstance(obj["finish_reason"], str))
            if not ok:
                rec = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
                raise DataError(self.path, f"API cache line is not {{{', '.join(sorted(_CACHE_KEYS))}}} "
                                           "with string values", line=lineno, record=rec)
            self.entries.setdefault((obj["id"], obj["request"], obj["settings"]),
                                    (obj["reply"], obj["served_model"], obj["finish_reason"], obj["date"]))

    def _line(self, key: tuple[str, str, str], value: tuple[str, str, str | None, str]) -> str:
        rid, req, settings = key
        reply, served, finish, date = value
        return dumps({"id": rid, "request": req, "settings": settings, "reply": reply,
                      "served_model": served, "finish_reason": finish, "date": date}) + "\n"

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for key, value in self.entries.items():
                fh.write(self._line(key, value))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def get(self, rid: str, request: str) -> str | None:
        """The cached reply of ``rid`` for this exact request under the current settings, or None."""
        hit = self.entries.get((rid, request, self.settings_key))
        if hit is None:
            return None
        self.used += 1
        self.served[hit[1]] += 1
        self.dates[hit[3]] += 1
        self.finishes[hit[2] or "none"] += 1
        return hit[0]

    def append(self, rows: list[tuple]) -> None:
        """Append ``(id, request hash, reply, served model, finish reason)`` rows (dated today,
        UTC), then fsync."""
        if not rows:
            return
        today = run_date()
        items = [((rid, req, self.settings_key), (reply, served, finish, today))
                 for rid, req, reply, served, finish in rows]
        self._append_text("".join(self._line(k, v) for k, v in items))
        for key, value in items:
            self.entries.setdefault(key, value)
            self.served[value[1]] += 1
            self.dates[value[3]] += 1
            self.finishes[value[2] or "none"] += 1

    def summary(self) -> str:
        if not (self.lines or self.torn):
            return f"no API cache ({self.path.name}), every request is new"
        mine = sum(1 for k in self.entries if k[2] == self.settings_key)
        return (f"API cache {self.path.name}: {len(self.entries)} replies, {mine} under these settings, "
                f"{self.torn} torn last line dropped")


_NOTHING = object()


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class ApiGenerator:
    """Greedy (``temperature: 0``) replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, model: str, *, max_tokens: int = 512, stop: list[str] | None = None,
                 timeout_s: float = 120.0, max_attempts: int = 6, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, max_retry_after_s: float = 300.0, concurrency: int = 1,
                 seed: int = 0, environ: dict | None = None, sleep: Callable[[float], None] = time.sleep):
        env = os.environ if environ is None else environ
        if not isinstance(model, str) or not model:
            raise ApiError("API backend", "'model' must be a non-empty string")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ApiError("API backend", f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_attempts < 1 or concurrency < 1:
            raise ApiError("API backend", "max_attempts and concurrency must be at least 1")
        self.base_url = (env.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ApiError(f"${BASE_URL_ENV}", "not an http(s) URL")
        self._key = env.get(API_KEY_ENV) or ""
        if not self._key:
            raise ApiError(f"${API_KEY_ENV}", "not set (the key is read from the "
                           "environment only, never from a file)")
        self.endpoint = public_endpoint(self.base_url) + "/chat/completions"
        self._url = self.base_url + "/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.concurrency = concurrency
        self.seed = seed
        self._sleep = sleep
        self.truncated_prompts = 0      # never: an over-long prompt is the server's error
        self.generated = 0              # replies requested (paid for) in this process
        self.resumed = 0                # replies taken from the cache
        self.requests = 0               # HTTP requests sent, retries included
        self.retries = 0                # requests repeated after a retryable failure
        self.waits: list[float] = []    # every wait before a retry, in seconds (in call order)
        self.finish_reasons: Counter[str] = Counter()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ identity
    def settings(self) -> dict:
        """What answers: the endpoint (without user info or query), the API model, max_tokens,
        temperature, stop and a format number. The body (these and the messages) is hashed into
        each reply's own key too; the endpoint and the format number are only here."""
        return {"format": API_FORMAT, "backend": "openai-chat", "endpoint": self.endpoint,
                "model": self.model, "max_tokens": self.max_tokens, "temperature": 0, "stop": self.stop}

    def settings_key(self) -> str:
        return hashlib.sha256(dumps(self.settings()).encode("utf-8")).hexdigest()

    def body(self, messages: list[dict], rid: str | None = None) -> dict:
        """The request body of one conversation (:class:`MessageError` naming the record when a message is
        not ``{"role": system|user|assistant, "content": str}``)."""
        out = []
        for k, m in enumerate(messages if isinstance(messages, list) else [None]):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                role = m.get("role") if isinstance(m, dict) else None
                raise MessageError(f"record {rid!r}: message {k} is not {{role: system|user|assistant, "
                                 f"content: str}} (role {role!r}); the API backend sends only those")
            out.append({"role": m["role"], "content": m["content"]})
        body = {"model": self.model, "messages": out, "temperature": 0, "max_tokens": self.max_tokens}
        if self.stop:
            body["stop"] = self.stop
        return body

    # ------------------------------------------------------------------ HTTP
    def _scrub(self, text: str) -> str:
        text = text.replace(self._key, "***") if self._key else text
        return " ".join(text.split())[:300]

    def _wait(self, attempt: int, rid: str, req: str, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after_s)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        rng = random.Random(f"{self.seed}|{rid}|{req}|{attempt}")
        return base * (1.0 + 0.5 * rng.random())

    def _once(self, data: bytes) -> dict:
        req = urllib.request.Request(self._url, data=data, method="POST", headers={
            "Authorization": f"Bearer {self._key}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = self._scrub(exc.read().decode("utf-8", "replace")) if exc.fp else ""
            except (OSError, http.client.HTTPException):
                detail = ""
            what = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(what, _retry_after(exc.headers.get("Retry-After"))) from None
            raise _Fatal(what) from None
        except (TimeoutError, socket.timeout) as exc:
            raise _Retryable(f"timeout after {self.timeout_s:g} s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timeout after {self.timeout_s:g} s") from None
            raise _Retryable(f"connection failed ({self._scrub(str(exc.reason))})") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {self._scrub(str(exc))})") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Fatal(f"response is not JSON ({exc})") from None

    def request(self, messages: list[dict], rid: str = "?") -> tuple[str, str, str | None]:
        """``(reply, served model, finish reason)`` of one conversation, with retries."""
        body = self.body(messages, rid)
        return self._request(body, request_hash(body), rid)

    def _request(self, body: dict, req: str, rid: str) -> tuple[str, str, str | None]:
        data = dumps(body).encode("utf-8")
        obj, last = _NOTHING, ""
        for attempt in range(1, self.max_attempts + 1):
            with self._lock:
                self.requests += 1
                self.retries += int(attempt > 1)
            try:
                obj = self._once(data)
                break
            except _Retryable as exc:
                last = exc.what
                if attempt < self.max_attempts:
                    delay = self._wait(attempt, rid, req, exc.retry_after)
                    with self._lock:
                        self.waits.append(delay)
                    self._sleep(delay)
            except _Fatal as exc:
                raise ApiError(f"POST {self.endpoint}", str(exc), record=rid) from None
        if obj is _NOTHING:
            raise ApiError(f"POST {self.endpoint}", f"{last}; gave up after "
                           f"{self.max_attempts} attempts", record=rid)
        try:
            choice = obj["choices"][0]
            content = choice["message"]["content"]
            served = obj.get("model")
        except (KeyError, IndexError, TypeError):
            raise ApiError(f"POST {self.endpoint}", "response has no choices[0].message.content",
                           record=rid) from None
        if not isinstance(content, str):
            raise ApiError(f"POST {self.endpoint}", "choices[0].message.content is "
                           f"{type(content).__name__}, not a string", record=rid)
        if not isinstance(served, str) or not served:
            raise ApiError(f"POST {self.endpoint}", "response has no 'model' name", record=rid)
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        return content.strip(), served, finish if isinstance(finish, str) else None

    # ------------------------------------------------------------------ the Generator interface
    def __call__(self, batch_messages: list[list[dict]], progress: bool = False, *,
                 ids: list[str] | None = None, log=None, desc: str = "generate") -> list[str]:
        """One reply per message list, in input order.

        With ``log`` (an :class:`ApiCache`, or a :class:`agentflan.generate.ResumeLog`) and one id
        per message list, cached replies are reused and every new reply is appended as soon as
        it arrives. Up to ``concurrency`` requests are in flight at a time."""
        from tqdm import tqdm

        if log is not None and (ids is None or len(ids) != len(batch_messages)):
            raise ValueError("resumable generation needs one id per message list")
        names = list(ids) if ids is not None else [f"#{i}" for i in range(len(batch_messages))]
        bodies = [self.body(m, names[i]) for i, m in enumerate(batch_messages)]
        keys = [request_hash(b) for b in bodies]
        outputs: dict[int, str] = {}
        todo = []
        for i in range(len(bodies)):
            reply = log.get(names[i], keys[i]) if log is not None else None
            if reply is None:
                todo.append(i)
            else:
                outputs[i] = reply
        self.resumed += len(bodies) - len(todo)
        bar = tqdm(total=len(bodies), initial=len(bodies) - len(todo), desc=desc, unit="item",
                   disable=not progress, mininterval=10)

        def done(i: int, result: tuple[str, str, str | None]) -> None:
            reply, served, finish = result
            outputs[i] = reply
            self.generated += 1
            self.finish_reasons[finish or "none"] += 1
            if isinstance(log, ApiCache):
                log.append([(names[i], keys[i], reply, served, finish)])
            elif log is not None:
                log.append([(names[i], keys[i], reply)])
            bar.update(1)

        try:
            if self.concurrency == 1:
                for i in todo:
                    done(i, self._request(bodies[i], keys[i], names[i]))
            else:
                with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                    pending = {pool.submit(self._request, bodies[i], keys[i], names[i]): i for i in todo}
                    try:
                        while pending:
                            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in sorted(finished, key=pending.get):
                                i = pending.pop(fut)
                                done(i, fut.result())
                    finally:
                        for fut in pending:
                            fut.cancel()
        finally:
            bar.close()
        return [outputs[i] for i in range(len(bodies))]

    def as_fn(self) -> Callable[[list[list[dict]]], list[str]]:
        return lambda batch: self(batch)

    def keyed_fn(self, log, desc: str) -> Callable[[list[list[dict]], list[str]], list[str]]:
        """``fn(messages, ids)`` for :func:`agentflan.evaluation.registry.run_episodes` with
        ``step_ids=True``, as :meth:`agentflan.generate.Generator.keyed_fn`."""
        calls = [0]

        def fn(batch: list[list[dict]], ids: list[str]) -> list[str]:
            calls[0] += 1
            return self(batch, progress=True, ids=ids, log=log, desc=f"{desc} step {calls[0]}")
        return fn

    def open_log(self, out: str | os.PathLike) -> ApiCache:
        """The reply cache of the predictions file ``out``."""
        return ApiCache(cache_path(out), self.settings_key())


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


def write_run_record(out: str | os.PathLike, gen: ApiGenerator, cache: ApiCache, *, n: int,
                     requests: int, retries: int, generated: int, resumed: int,
                     date: str | None = None) -> Path:
    """Write ``<out>.api.json``: what served the predictions of ``out`` and when (UTC date)."""
    path = record_path(out)
    write_json(path, {
        "backend": "openai-chat",
        "endpoint": gen.endpoint,
        "requested_model": gen.model,
        "served_models": dict(sorted(cache.served.items())),
        "max_tokens": gen.max_tokens,
        "temperature": 0,
        "stop": gen.stop,
        "settings": gen.settings_key(),
        "date": date or run_date(),
        "reply_dates": dict(sorted(cache.dates.items())),
        "finish_reasons": dict(sorted(cache.finishes.items())),
        "predictions": n,
        "replies": {"requested": generated, "cached": resumed},
        "http": {"requests": requests, "retries": retries},
    })
    return path

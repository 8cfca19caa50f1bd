"""Generation survives a kill: finished replies go to a side file (``<out>.partial.jsonl``), a
rerun reuses the ones whose key matches and generates only the rest, and the predictions are
byte-identical to an uninterrupted run's (single-turn benchmarks and multi-step HotpotQA episodes),
with the plain backend (units = left-padded batches) and the fast one (units = groups of
``batch_size * group_batches`` prompts sharing the decode slots).

The model is a tiny random Llama with one edit: its replies start with ``Action:`` (a forced chain
of tokens), then go on at random, so with ``stop_on_invalid: false`` every HotpotQA episode runs
all its steps with a growing prompt."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflan.evaluation import registry
from agentflan.io import DataError, dumps, write_jsonl
from forcing import force_chain

torch = pytest.importorskip("torch")

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"
GEN = {"max_new_tokens": 24, "batch_size": 4, "max_prompt_length": 192}
# (backend settings, prompts per unit of work)
BACKENDS = {"plain": ({"backend": "plain"}, 4), "fast": ({"backend": "fast", "group_batches": 1}, 4),
            "fast-groups": ({"backend": "fast", "group_batches": 2}, 8)}
EPISODE_OPTIONS = {"stop_on_invalid": False, "max_steps": 3}


def _single_items(n: int) -> list[dict]:
    return [{"id": f"gsm8k/{i}", "benchmark": "gsm8k",
             "messages": [{"role": "user", "content": f"Tom has {i} apples and buys {i * 7 % 13} more. "
                                                      + "How many apples? " * (i % 5)}],
             "reference": {"answer": str(i + i * 7 % 13)}, "meta": {}} for i in range(n)]


def _episode_items(copies: int) -> list[dict]:
    base = registry.load_items("hotpotqa", RAW, {})
    out = []
    for k in range(copies):
        for it in base:
            it = json.loads(json.dumps(it))
            it["id"] = f"{it['id']}/{k}"
            it["messages"][-1]["content"] += f" (variant {k})"
            out.append(it)
    return out


def _force_reply_prefix(model_dir: Path, tok, prompt_ends: set[int], prefix: str) -> None:
    """Make the model answer every prompt with ``prefix`` first (in place; see forcing.force_chain)."""
    force_chain(model_dir, model_dir, tok, prompt_ends, tok.encode(prefix, add_special_tokens=False))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from agentflan.modeling import init_tiny_llama, load_tokenizer, train_bpe_tokenizer
    from agentflan.template import SegmentTokenizer, render
    root = tmp_path_factory.mktemp("resume")
    single, episodes = _single_items(64), _episode_items(5)
    texts = [render([{**m, "train": False} for m in it["messages"]]) for it in single + episodes]
    texts += ["Thought: look it up\nAction: Search[Jane Doe]\nObservation: found"] * 20
    train_bpe_tokenizer(texts, root / "tok", vocab_size=400)
    tok = load_tokenizer(str(root / "tok"))
    init_tiny_llama({"hidden_size": 48, "intermediate_size": 96, "num_layers": 2, "num_heads": 2,
                     "tie_word_embeddings": False}, tok, seed=0, out_dir=root / "model")
    seg = SegmentTokenizer(tok)
    ends = {seg.encode_prompt(it["messages"])[-1] for it in single + episodes}
    _force_reply_prefix(root / "model", tok, ends, "Action:")
    write_jsonl(root / "gsm8k.jsonl", single)
    write_jsonl(root / "hotpotqa.jsonl", episodes)
    return root, single, episodes


def _counting(gen, fail_after: int | None = None):
    """Count the prompts and units the model generates for; raise (a stand-in for a kill) after
    ``fail_after`` units."""
    seen = {"rows": 0, "batches": 0}
    real = gen._generate

    def wrapped(prompts, width):
        if fail_after is not None and seen["batches"] >= fail_after:
            raise KeyboardInterrupt("killed")
        seen["rows"] += len(prompts)
        seen["batches"] += 1
        return real(prompts, width)
    gen._generate = wrapped
    return seen


def _generator(root, backend: str = "plain"):
    from agentflan.generate import Generator
    return Generator(str(root / "model"), threads=1, **GEN, **BACKENDS[backend][0])


# ---------------------------------------------------------------------------- side file
def _line(rid, prompt, reply, settings):
    return dumps({"id": rid, "prompt": prompt, "reply": reply, "settings": settings}) + "\n"


def test_side_file_drops_stale_and_torn_lines(tmp_path):
    from agentflan.generate import ResumeLog
    path = tmp_path / "x.predictions.jsonl.partial.jsonl"
    good = _line("a", "p1", "reply a", "K") + _line("b", "p2", "reply \u0d46 b", "K")
    path.write_text(good + _line("c", "p3", "old", "OTHER") + _line("d", "p4", "torn", "K")[:25],
                    encoding="utf-8")
    log = ResumeLog(path, "K")
    assert (log.stale, log.torn, len(log.entries)) == (1, 1, 2)
    assert log.get("a", "p1") == "reply a" and log.get("b", "p2") == "reply \u0d46 b"
    assert log.get("a", "p-other") is None and log.get("c", "p3") is None and log.get("d", "p4") is None
    assert path.read_text(encoding="utf-8") == good          # rewritten before anything is appended
    log.append([("d", "p4", "new d")])
    log.close()
    again = ResumeLog(path, "K")
    assert (again.stale, again.torn, len(again.entries)) == (0, 0, 3) and again.get("d", "p4") == "new d"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("bad, msg", [("{not json\n", "unreadable side-file line"),
                                      ('{"id": "z", "reply": "r"}\n', "side-file line is not")])
def test_side_file_bad_middle_line_is_an_error(tmp_path, bad, msg):
    from agentflan.generate import ResumeLog
    path = tmp_path / "y.partial.jsonl"
    text = _line("a", "p1", "r", "K") + bad + _line("b", "p2", "r", "K")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:2") + ".*" + msg):
        ResumeLog(path, "K")
    assert path.read_text(encoding="utf-8") == text          # left as it was


# ---------------------------------------------------------------------------- in-process resume
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_resume_generates_only_missing_items(tiny, tmp_path, backend):
    from agentflan.generate import ResumeLog, prompt_hash
    root, single, _ = tiny
    unit = BACKENDS[backend][1]
    msgs, ids = [it["messages"] for it in single[:40]], [it["id"] for it in single[:40]]
    gen = _generator(root, backend)
    assert gen.unit == unit
    key = gen.settings_key()
    full = gen(msgs)
    assert len(set(full)) > 5 and all(t.startswith("Action:") for t in full)

    path = tmp_path / "gsm8k.predictions.jsonl.partial.jsonl"
    kill_after = 16 // unit
    seen = _counting(gen, fail_after=kill_after)             # "killed" after 16 of 40 prompts
    with pytest.raises(KeyboardInterrupt), ResumeLog(path, key) as log:
        gen(msgs, ids=ids, log=log)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 16 and seen["rows"] == 16 and seen["batches"] == kill_after
    # one unit's lines become stale (other settings), and a torn line is left at the end
    stale = lines[-unit:]
    with open(path, "w", encoding="utf-8") as fh:
        for row in lines[:-unit]:
            fh.write(_line(row["id"], row["prompt"], row["reply"], key))
        for row in stale:
            fh.write(_line(row["id"], row["prompt"], "stale reply", "0" * 64))
        fh.write(_line("gsm8k/39", "p", "torn", key)[:30])

    gen2 = _generator(root, backend)
    seen2 = _counting(gen2)
    kept = 16 - unit
    with ResumeLog(path, key) as log:
        assert (len(log.entries), log.stale, log.torn) == (kept, unit, 1)
        out = gen2(msgs, ids=ids, log=log)
    assert out == full                                       # same units => same replies
    assert seen2["rows"] == 40 - kept and gen2.resumed == kept and gen2.generated == 40 - kept
    # the side file now holds every reply, each keyed by id, prompt hash and settings
    done = {json.loads(x)["id"]: json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()}
    assert sorted(done) == sorted(ids)
    assert done["gsm8k/7"]["prompt"] == prompt_hash(gen2._prompt_ids(msgs[7]))
    assert {d["settings"] for d in done.values()} == {key}

    # a prompt that changed is regenerated (its old line no longer matches), the rest is reused
    msgs2 = [list(m) for m in msgs]
    msgs2[5] = [{"role": "user", "content": "A different question."}]
    gen3 = _generator(root, backend)
    seen3 = _counting(gen3)
    with ResumeLog(path, key) as log:
        out3 = gen3(msgs2, ids=ids, log=log)
    assert seen3["rows"] == 1 and out3[:5] == full[:5] and out3[6:] == full[6:]


def test_settings_key_tracks_model_and_decoding(tiny, tmp_path):
    import shutil

    from agentflan.generate import Generator
    root, _, _ = tiny
    a = Generator(str(root / "model"), threads=1, **GEN).settings_key()         # the default backend: fast
    assert a == Generator(str(root / "model"), threads=1, **GEN, backend="fast", group_batches=4).settings_key()
    assert Generator(str(root / "model"), threads=1, **{**GEN, "max_new_tokens": 25}).settings_key() != a
    assert Generator(str(root / "model"), threads=1, **{**GEN, "batch_size": 8}).settings_key() != a
    # the backend and its parameters are part of the key
    others = [_generator(root, "plain").settings_key(), _generator(root, "fast").settings_key(),
              Generator(str(root / "model"), threads=1, **GEN, prefill_tokens=64).settings_key(),
              Generator(str(root / "model"), threads=1, **GEN, share_prefixes=False).settings_key()]
    assert len({a, *others}) == 5
    other = tmp_path / "model"
    shutil.copytree(root / "model", other)
    assert Generator(str(other), threads=1, **GEN).settings_key() == a      # content, not path
    (other / "README.md").write_text("notes")
    assert Generator(str(other), threads=1, **GEN).settings_key() == a
    cfg = json.loads((other / "generation_config.json").read_text())
    cfg["note"] = 1
    (other / "generation_config.json").write_text(json.dumps(cfg))
    assert Generator(str(other), threads=1, **GEN).settings_key() != a


def test_step_ids_name_each_episode_step():
    items = registry.load_items("hotpotqa", RAW, {})
    calls = []

    def scripted(batch, ids):
        calls.append(ids)
        # the first episode finishes at once, the others search first
        return ["Action: Finish[x]" if i.endswith("#2") or i.startswith(items[0]["id"]) else
                "Action: Search[Jane Doe]" for i in ids]
    rows = registry.run_episodes(items, scripted, {}, step_ids=True)
    q = [it["id"] for it in items]
    assert calls == [[f"{q[0]}#1", f"{q[1]}#1", f"{q[2]}#1"], [f"{q[1]}#2", f"{q[2]}#2"]]
    assert [r["stop_reason"] for r in rows] == ["finish"] * 3
    # identical episodes are named by order
    twins = [items[0], {**items[0], "id": "twin"}]
    calls.clear()
    registry.run_episodes(twins, lambda b, ids: calls.append(ids) or ["Action: Search[Jane Doe]"] * len(b),
                          {"max_steps": 2}, step_ids=True)
    assert calls == [[f"{q[0]}#1", "twin#1"], [f"{q[0]}#2", "twin#2"]]


@pytest.mark.parametrize("backend", ["plain", "fast"])
def test_episodes_resume_step_by_step(tiny, tmp_path, backend):
    from agentflan.generate import ResumeLog
    root, _, episodes = tiny
    items = episodes[:8]
    gen = _generator(root, backend)
    key = gen.settings_key()
    full = registry.run_episodes(items, gen.as_fn(), EPISODE_OPTIONS)
    assert all(len(r["trajectory"]) == 3 and r["stop_reason"] == "max_steps" for r in full)
    assert len({r["trajectory"][-1]["assistant"] for r in full}) > 1

    path = tmp_path / "hotpotqa.predictions.jsonl.partial.jsonl"
    seen = _counting(gen, fail_after=3)      # step 1 (2 batches) and half of step 2, then "killed"
    with pytest.raises(KeyboardInterrupt), ResumeLog(path, key) as log:
        registry.run_episodes(items, gen.keyed_fn(log, "hotpotqa"), EPISODE_OPTIONS, step_ids=True)
    ids = [json.loads(x)["id"] for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(ids) == 12 and sum(i.endswith("#1") for i in ids) == 8 and seen["rows"] == 12

    gen2 = _generator(root, backend)
    seen2 = _counting(gen2)
    with ResumeLog(path, key) as log:
        rows = registry.run_episodes(items, gen2.keyed_fn(log, "hotpotqa"), EPISODE_OPTIONS, step_ids=True)
    assert rows == full
    assert seen2["rows"] == 24 - 12 and gen2.resumed == 12


# ---------------------------------------------------------------------------- a real kill
def _params(root: Path, out_dir: Path, backend: str) -> Path:
    p = out_dir / "params.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({
        "model": str(root / "model"),
        "items": {b: str(root / f"{b}.jsonl") for b in ("gsm8k", "hotpotqa")},
        "out": {b: str(out_dir / f"{b}.predictions.jsonl") for b in ("gsm8k", "hotpotqa")},
        "generation": {**GEN, **BACKENDS[backend][0]}, "options": {"hotpotqa": EPISODE_OPTIONS}, "threads": 1}))
    return p


def _cmd(params: Path) -> list[str]:
    return [sys.executable, "-m", "agentflan.cli", "generate", "--params", f"@{params}"]


def _replies(log: str, benchmark: str) -> tuple[int, int]:
    m = re.search(rf"\[generate\] {benchmark}: \d+ predictions; replies: (\d+) resumed, (\d+) generated", log)
    assert m, log
    return int(m.group(1)), int(m.group(2))


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run_until(cmd, side: Path, min_lines: int, log_path: Path) -> None:
    """Start the job and SIGKILL it once ``side`` has at least ``min_lines`` complete lines."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 120
        while _complete_lines(side) < min_lines:
            assert proc.poll() is None, f"job ended before it could be killed:\n{log_path.read_text()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("backend", ["plain", "fast"])
def test_killed_generation_resumes_byte_identical(tiny, tmp_path, capsys, backend):
    from agentflan import stages
    root, single, episodes = tiny
    ref, run = tmp_path / "ref", tmp_path / "run"
    stages.generate(**json.loads(_params(root, ref, backend).read_text()))      # uninterrupted, in this process
    ref_log = capsys.readouterr().out
    assert _replies(ref_log, "gsm8k") == (0, len(single))
    n_steps = _replies(ref_log, "hotpotqa")[1]
    assert n_steps == 3 * len(episodes)                      # every episode ran all its steps
    assert not list(ref.glob("*.partial.jsonl"))

    params = _params(root, run, backend)
    outs = {b: run / f"{b}.predictions.jsonl" for b in ("gsm8k", "hotpotqa")}
    sides = {b: Path(f"{outs[b]}.partial.jsonl") for b in outs}
    # kill 1: in the middle of the single-turn benchmark
    _run_until(_cmd(params), sides["gsm8k"], 20, run / "kill1.log")
    k1 = _complete_lines(sides["gsm8k"])
    assert 20 <= k1 < len(single) and not outs["gsm8k"].exists()
    # kill 2 (of the rerun): in the middle of the episodes, in their second step
    _run_until(_cmd(params), sides["hotpotqa"], len(episodes) + 4, run / "kill2.log")
    log2 = (run / "kill2.log").read_text()
    assert _replies(log2, "gsm8k") == (k1, len(single) - k1)
    k2 = _complete_lines(sides["hotpotqa"])
    assert len(episodes) + 4 <= k2 < n_steps
    assert _complete_lines(sides["gsm8k"]) == len(single)    # kept until the job ends
    for out in outs.values():                                # what Snakemake does to a failed job
        out.unlink(missing_ok=True)

    final = subprocess.run(_cmd(params), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _replies(final.stdout, "gsm8k") == (len(single), 0)
    assert _replies(final.stdout, "hotpotqa") == (k2, n_steps - k2)
    for b, out in outs.items():
        assert out.read_bytes() == (ref / out.name).read_bytes(), b
        assert {json.loads(x)["backend"] for x in out.read_text(encoding="utf-8").splitlines()} == {backend}
    assert not list(run.glob("*.partial.jsonl"))

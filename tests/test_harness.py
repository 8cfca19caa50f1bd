"""Table 4's general benchmarks through lm-evaluation-harness (agentflan.evaluation.harness).

A tiny random Llama with a BPE tokenizer trained here, wired (tests/forcing.py) to answer every
chat prompt with ``def seven(x): return 7`` and the assistant end tag, on tiny files in the raw
layout (MMLU: 5 test rows in two subjects, one without a YAML of lm-eval, with dev rows; GSM8K:
3 rows; HumanEval: 2 problems, the first solved by that answer). Checked: ids equal our loader's,
per-sample means equal lm-eval's numbers, MMLU's group accuracy equals lm-eval's per-subject
numbers weighted by size and log-likelihoods recomputed here, each subject's shots are its own dev
rows in the Agent-FLAN template with the token ids of training, GSM8K's strict/flexible filters,
HumanEval's pass/fail through the confined runner (end to end, and lm-eval's metric plumbing with
canned completions), the stop at the assistant end tag, two runs give the same bytes, no socket is
opened, no temporary path leaks into the record.
"""
from __future__ import annotations

import json
import os
import random
import socket

import pytest

from agentflan.io import write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

pytestmark = pytest.mark.xdist_group("harness")   # one worker builds the model and runs once

from agentflan.evaluation import general, harness  # noqa: E402
from agentflan.template import ASSISTANT_STOP, SegmentTokenizer, render  # noqa: E402

REPLY = "def seven(x): return 7"

MMLU_TEST = [
    {"question": "Which planet is red?", "choices": ["Venus", "Mars", "Earth", "Moon"], "answer": 1,
     "subject": "astronomy"},
    {"question": "Which river flows through Lunaria?", "choices": ["Breva", "Zem", "Vel", "Luna"], "answer": 3,
     "subject": "miniature_geography"},
    {"question": "Which star is closest?", "choices": ["Sirius", "Vega", "Sun", "Rigel"], "answer": 2,
     "subject": "astronomy"},
    {"question": "What is the capital of Norvik?", "choices": ["Port Elis", "Fjell", "Brenn", "Miraz"],
     "answer": 1, "subject": "miniature_geography"},
    {"question": "How many moons has Mars?", "choices": ["0", "1", "2", "3"], "answer": 2, "subject": "astronomy"},
]
MMLU_DEV = [
    {"question": "Dev geo one?", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "miniature_geography"},
    {"question": "Dev astro one?", "choices": ["e", "f", "g", "h"], "answer": 3, "subject": "astronomy"},
    {"question": "Dev geo two?", "choices": ["i", "j", "k", "l"], "answer": 1, "subject": "miniature_geography"},
    {"question": "Dev astro two?", "choices": ["m", "n", "o", "p"], "answer": 2, "subject": "astronomy"},
    {"question": "Dev astro three?", "choices": ["q", "r", "s", "t"], "answer": 1, "subject": "astronomy"},
    {"question": "Dev geo three?", "choices": ["u", "v", "w", "x"], "answer": 2, "subject": "miniature_geography"},
    {"question": "Dev other?", "choices": ["1", "2", "3", "4"], "answer": 0, "subject": "anatomy"},
]
GSM8K = [
    {"question": "Ann has 3 apples and gets 4 more. How many apples does she have?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "Bob has 9 pens and gives away 2. How many are left?", "answer": "9 - 2 = 7\n#### 7"},
    {"question": "A box holds 5 cups. How many cups are in 2 boxes?", "answer": "2 * 5 = 10\n#### 10"},
]
HUMANEVAL = [
    {"task_id": "HumanEval/0", "prompt": 'def seven(x):\n    """Return 7.\n    >>> seven(1)\n    7\n    """\n',
     "canonical_solution": "    return 7\n", "test": "\n\ndef check(candidate):\n    assert candidate(1) == 7\n",
     "entry_point": "seven"},
    {"task_id": "HumanEval/1", "prompt": 'def double(x):\n    """Return 2 * x.\n    >>> double(2)\n    4\n    """\n',
     "canonical_solution": "    return 2 * x\n", "test": "\n\ndef check(candidate):\n    assert candidate(3) == 6\n",
     "entry_point": "double"},
]
SHOTS = 2
OPTIONS = {"mmlu": {"num_fewshot": SHOTS}, "gsm8k": {"num_fewshot": 1, "max_gen_toks": 24},
           "humaneval": {"max_gen_toks": 24}, "batch_size": 4, "max_length": 512}


def _files(raw):
    return {"mmlu": {"test": str(raw / "cais/mmlu/all/test.jsonl"), "dev": str(raw / "cais/mmlu/all/dev.jsonl")},
            "gsm8k": {"test": str(raw / "openai/gsm8k/main/test.jsonl")},
            "humaneval": {"test": str(raw / "openai/openai_humaneval/openai_humaneval/test.jsonl")}}


class _NoNetwork:
    """Socket calls recorded and refused (the harness must never reach the network)."""

    def __init__(self):
        self.calls = []

    def __enter__(self):
        self.mp = pytest.MonkeyPatch()
        for name in ("create_connection", "getaddrinfo"):
            self.mp.setattr(socket, name, self._refuse(name))
        self.mp.setattr(socket.socket, "connect", self._refuse("connect"))
        return self

    def _refuse(self, name):
        def f(*a, **k):
            self.calls.append(name)
            raise OSError(f"network disabled in this test ({name})")
        return f

    def __exit__(self, *exc):
        self.mp.undo()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from forcing import force_chain

    from agentflan.modeling import init_tiny_llama, load_tokenizer, train_bpe_tokenizer
    root = tmp_path_factory.mktemp("harness")
    raw = root / "raw"
    write_jsonl(raw / "cais/mmlu/all/test.jsonl", MMLU_TEST)
    write_jsonl(raw / "cais/mmlu/all/dev.jsonl", MMLU_DEV)
    write_jsonl(raw / "openai/gsm8k/main/test.jsonl", GSM8K)
    write_jsonl(raw / "openai/openai_humaneval/openai_humaneval/test.jsonl", HUMANEVAL)
    texts = [json.dumps(r) for r in MMLU_TEST + MMLU_DEV + GSM8K + HUMANEVAL] + [REPLY + ASSISTANT_STOP] * 5
    train_bpe_tokenizer(texts, root / "tok", vocab_size=400)
    tok = load_tokenizer(str(root / "tok"))
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
            "tie_word_embeddings": False}
    init_tiny_llama(arch, tok, seed=0, out_dir=root / "random")
    # every chat prompt ends with the assistant begin tag: its last token starts the forced answer
    ends = {tok.encode(tok.bos_token + render([{"role": "user", "content": p["prompt"]}], add_generation_prompt=True),
                       add_special_tokens=False)[-1] for p in HUMANEVAL}
    chain = tok.encode(REPLY + ASSISTANT_STOP, add_special_tokens=False)
    force_chain(root / "random", root / "model", tok, ends, chain)
    files = _files(raw)
    with _NoNetwork() as guard:
        first = harness.run(str(root / "model"), files, OPTIONS, str(root / "work1"), threads=1)
        second = harness.run(str(root / "model"), files, OPTIONS, str(root / "work2"), threads=1)
    return {"root": root, "raw": raw, "tok": tok, "files": files, "out": first, "again": second,
            "network": guard.calls}


def test_ids_are_our_loaders_and_means_are_the_metrics(world):
    out = world["out"]
    assert set(out) == {"mmlu", "gsm8k", "humaneval"}
    for bench, metric, key in (("mmlu", "accuracy", "correct"), ("gsm8k", "accuracy", "correct"),
                               ("humaneval", "pass@1", "passed")):
        metrics, rows, record = out[bench]
        assert list(metrics) == [metric]
        assert [r["id"] for r in rows] == [it["id"] for it in general.load_items(bench, world["raw"])]
        assert metrics[metric] == pytest.approx(100.0 * sum(r[key] for r in rows) / len(rows), abs=1e-9)
        assert record["lm_eval_version"] == harness.LM_EVAL_VERSION == __import__("lm_eval").__version__


def test_mmlu_group_accuracy_is_lm_evals_weighted_subject_accuracy(world):
    metrics, rows, record = world["out"]["mmlu"]
    res = record["results"]
    subjects = {"mmlu_astronomy": 3, "mmlu_miniature_geography": 2}
    assert record["group_subtasks"] == {harness.MMLU_GROUP: sorted(subjects)}
    assert {t: record["n-samples"][t]["effective"] for t in subjects} == subjects
    weighted = sum(res[t]["acc,none"] * n for t, n in subjects.items()) / sum(subjects.values())
    assert 100 * res[harness.MMLU_GROUP]["acc,none"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert 100 * weighted == pytest.approx(metrics["accuracy"], abs=1e-9)
    for t in subjects:   # per subject: lm-eval's acc = the mean of our rows of that subject
        mine = [r["correct"] for r in rows if f"mmlu_{r['subject']}" == t]
        assert res[t]["acc,none"] == pytest.approx(sum(mine) / len(mine))
    for r in rows:
        assert r["correct"] == (r["chosen"] == r["answer"])
        assert r["answer"] == "ABCD"[MMLU_TEST[int(r["id"].split("/")[1])]["answer"]]
    assert record["n-shot"]["mmlu_astronomy"] == SHOTS
    assert record["facts"]["subjects_without_lm_eval_yaml"] == ["miniature_geography"]


def _mmlu_text(r):
    return (f"{r['question'].strip()}\nA. {r['choices'][0]}\nB. {r['choices'][1]}\nC. {r['choices'][2]}\n"
            f"D. {r['choices'][3]}\nAnswer:")


def _mmlu_messages(subject: str, description: str, row: dict) -> list[dict]:
    msgs = [{"role": "system", "content": description}]
    for d in [d for d in MMLU_DEV if d["subject"] == subject][:SHOTS]:
        msgs += [{"role": "user", "content": _mmlu_text(d)}, {"role": "assistant", "content": "ABCD"[d["answer"]]}]
    return msgs + [{"role": "user", "content": _mmlu_text(row)}]


@pytest.mark.parametrize("subject,description", [
    ("astronomy", "The following are multiple choice questions (with answers) about astronomy.\n\n"),
    ("miniature_geography",
     "The following are multiple choice questions (with answers) about miniature geography.\n\n"),
])
def test_mmlu_shots_are_the_subjects_dev_rows_in_the_agentflan_template(world, subject, description):
    """The prompt lm-eval scored: BOS + the Agent-FLAN rendering of lm-eval's description (system),
    the subject's first dev rows as user/assistant turns (first_n, multi-turn) and the test row;
    tokenised as lm-eval does (BOS spelled, so no special tokens added), it is exactly the ids
    training's encode_prompt gives."""
    _, _, record = world["out"]["mmlu"]
    prompt = record["example_prompts"][f"mmlu_{subject}"]
    first = next(r for r in MMLU_TEST if r["subject"] == subject)
    msgs = _mmlu_messages(subject, description, first)
    tok = world["tok"]
    assert prompt == tok.bos_token + render(msgs, add_generation_prompt=True)
    assert tok.encode(prompt, add_special_tokens=False) == SegmentTokenizer(tok).encode_prompt(msgs)
    others = [d["question"] for d in MMLU_DEV if d["subject"] != subject]
    unused = [d["question"] for d in MMLU_DEV if d["subject"] == subject][SHOTS:]
    assert not any(q in prompt for q in others + unused)


def test_mmlu_loglikelihoods_recomputed(world):
    """lm-eval's log-likelihood of each letter after the prompt, recomputed with the model here."""
    from agentflan.modeling import load_causal_lm
    _, rows, record = world["out"]["mmlu"]
    tok = world["tok"]
    model = load_causal_lm(str(world["root"] / "model"), dtype="fp32").eval()
    prompt = record["example_prompts"]["mmlu_astronomy"]
    ctx = tok.encode(prompt, add_special_tokens=False)
    lls = []
    for letter in "ABCD":
        whole = tok.encode(prompt + letter, add_special_tokens=False)
        assert whole[:len(ctx)] == ctx
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
    assert rows[0]["loglikelihoods"] == pytest.approx(lls, abs=2e-3)


def test_gsm8k_strict_match_is_the_accuracy(world):
    """The forced reply has no "The answer is N.": strict-match finds nothing; flexible-extract
    takes its last number (7), right for the two rows whose answer is 7."""
    metrics, rows, record = world["out"]["gsm8k"]
    assert [r["response"] for r in rows] == [REPLY] * 3
    assert [r["extracted"] for r in rows] == ["[invalid]"] * 3 and metrics["accuracy"] == 0.0
    assert [r["flexible-extract_correct"] for r in rows] == [True, True, False]
    name = harness.TASK_NAMES["gsm8k"]
    assert record["results"][name]["exact_match,flexible-extract"] == pytest.approx(2 / 3)
    assert record["results"][name]["exact_match,strict-match"] == 0.0
    assert record["n-shot"][name] == 1
    prompt = record["example_prompts"][name]
    assert prompt.startswith(tok_bos(world) + "<|Human|>\u0d46Q: There are 15 trees in the grove.")
    assert "If there are 3 cars" not in prompt
    assert prompt.endswith(f"Q: {GSM8K[0]['question']}\nA:\n <|Assistant|>\u0d46")
    until = record["configs"][name]["generation_kwargs"]["until"]
    assert until[:3] == ["Q:", "</s>", "<|im_end|>"] and until[-1] == ASSISTANT_STOP


def tok_bos(world):
    return world["tok"].bos_token


def test_humaneval_end_to_end_through_the_confined_runner(world):
    """The first problem is solved by the forced answer (cut at the assistant end tag), the second
    is not; lm-eval's build_predictions puts the prompt in front."""
    metrics, rows, record = world["out"]["humaneval"]
    assert metrics == {"pass@1": 50.0}
    assert [(r["id"], r["completion"], r["passed"], r["status"]) for r in rows] == [
        ("humaneval/HumanEval/0", REPLY, True, "passed"),
        ("humaneval/HumanEval/1", REPLY, False, "failed (exit 1)")]
    assert "AssertionError" in rows[1]["stderr"]
    cfg = record["configs"][harness.TASK_NAMES["humaneval"]]
    assert cfg["filter_list"][0]["filter"][0]["filter_fn"].endswith("utils.py:build_predictions")
    assert cfg["generation_kwargs"]["max_gen_toks"] == 24 and cfg["generation_kwargs"]["until"][-1] == ASSISTANT_STOP
    assert record["results"][harness.TASK_NAMES["humaneval"]]["pass@1,create_test"] == 0.5


def test_humaneval_metric_in_lm_evals_task_with_canned_completions(world, tmp_path):
    """lm-eval's task built from our config: its filter puts the prompt first, its
    process_results calls our metric, which runs code_eval's program confined."""
    from lm_eval.api.task import ConfigurableTask
    o = harness.options_with_defaults(OPTIONS)
    ex = harness._Executor(timeout=5.0, memory_mb=1024)
    with harness._offline():
        cfg, n, _ = harness._humaneval_task(world["files"]["humaneval"], o, [ASSISTANT_STOP], str(tmp_path / "c"), ex)
        task = ConfigurableTask(config=cfg)
    docs = list(task.test_docs())
    assert n == 2 and [d["task_id"] for d in docs] == ["HumanEval/0", "HumanEval/1"]
    build = cfg["filter_list"][0]["filter"][0]["filter_fn"]   # lm-eval's build_predictions, verbatim
    assert build.__module__ == "lm_eval.tasks.humaneval.utils" and build.__name__ == "build_predictions"
    right = [build([[d["canonical_solution"]]], [d])[0] for d in docs]
    wrong = [build([["    return None\n"]], [d])[0] for d in docs]
    for d, r, w in zip(docs, right, wrong):
        assert r == [d["prompt"] + d["canonical_solution"]]
        assert task.process_results(d, [r]) == {"pass@1": 1.0}
        assert task.process_results(d, [w]) == {"pass@1": 0.0}
    assert sorted(v["status"] for v in ex.outcomes.values()) == ["failed (exit 1)"] * 2 + ["passed"] * 2
    slow = harness._Executor(timeout=1.0, memory_mb=256)
    assert slow([docs[0]["test"] + "\ncheck(seven)"], [["while True:\n    pass\n"]], [1]) == {"pass@1": 0.0}
    assert [v["status"] for v in slow.outcomes.values()] == ["timeout"]


def test_deterministic_no_network_no_paths(world):
    a, b = world["out"], world["again"]
    assert json.dumps(a, sort_keys=True, ensure_ascii=False) == json.dumps(b, sort_keys=True, ensure_ascii=False)
    assert world["network"] == []
    blob = json.dumps({k: v[2] for k, v in a.items()}, sort_keys=True)
    assert str(world["root"]) not in blob and "/tmp" not in blob
    for key in ("date", "git_hash", "total_evaluation_time_seconds", "config", "samples", "pretty_env_info"):
        assert all(key not in v[2] for v in a.values())


def test_offline_context_sets_and_restores():
    import datasets.config as dcfg
    import huggingface_hub.constants as hcon
    before = (os.environ.get("HF_HUB_OFFLINE"), hcon.HF_HUB_OFFLINE, dcfg.HF_DATASETS_OFFLINE)
    with harness._offline():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert hcon.HF_HUB_OFFLINE is True and dcfg.HF_DATASETS_OFFLINE is True
    assert (os.environ.get("HF_HUB_OFFLINE"), hcon.HF_HUB_OFFLINE, dcfg.HF_DATASETS_OFFLINE) == before


def test_plain_prompts_when_the_tokenizer_has_no_template_and_execute_false(world, tmp_path):
    files = {"humaneval": world["files"]["humaneval"]}
    opts = {"chat_format": "tokenizer", "humaneval": {"execute": False, "max_gen_toks": 4}, "max_length": 256}
    out = harness.run(str(world["root"] / "model"), files, opts, str(tmp_path / "w"))
    metrics, rows, record = out["humaneval"]
    assert metrics == {"pass@1": None}
    assert [(r["passed"], r["status"]) for r in rows] == [(None, "not executed")] * 2
    assert record["chat_template"] == "none (tokenizer has none)"
    assert record["example_prompts"][harness.TASK_NAMES["humaneval"]] == HUMANEVAL[0]["prompt"]
    info = harness.scoring_info("humaneval", opts)
    assert info["execute"] is False and "not executed: pass@1 not computed" in info["deviations"]


def test_options_and_scoring_info():
    with pytest.raises(harness.HarnessError, match="unknown harness option"):
        harness.options_with_defaults({"limit": 5})
    with pytest.raises(harness.HarnessError, match="unknown harness option"):
        harness.options_with_defaults({"gsm8k": {"shots": 2}})
    with pytest.raises(harness.HarnessError, match="chat_format"):
        harness.options_with_defaults({"chat_format": "fireact"})
    harness.options_with_defaults(harness.MINIATURE)
    harness._check_lm_eval()   # the installed lm-eval is the pinned one, with the YAML values scoring_info states
    d = harness.scoring_info("gsm8k")
    assert d["protocol"] == f"lm-evaluation-harness {harness.LM_EVAL_VERSION}" and d["shots"] == 8
    assert d["task_yaml"] == "lm_eval/tasks/gsm8k/gsm8k-cot.yaml"
    assert d["metric"] == "exact_match of filter strict-match"
    m = harness.scoring_info("gsm8k", harness.MINIATURE)
    assert m["shots"] == 3 and "3 of the YAML's 8 exemplars" in m["deviations"]
    assert harness.scoring_info("mmlu")["shots"] == 5 and harness.scoring_info("mmlu")["chat_template"] == "agentflan"
    h = harness.scoring_info("humaneval")
    assert h["execution_confined"] is True and "confined" in h["executor"] and h["max_gen_toks"] == 1024
    assert json.dumps(harness.scoring_info("humaneval", harness.MINIATURE), sort_keys=True) == \
        json.dumps(harness.scoring_info("humaneval", harness.MINIATURE), sort_keys=True)


def test_miniworld_mmlu_dev_split():
    from agentflan.miniworld import general as mw
    dev = mw.mmlu_dev(random.Random("miniworld/0/mmlu_dev"))
    assert dev == mw.mmlu_dev(random.Random("miniworld/0/mmlu_dev"))
    assert len(dev) == mw.MMLU_DEV_PER_SUBJECT == 5
    test = mw.mmlu(random.Random("miniworld/0/mmlu"), 60)
    assert all(set(r) == set(test[0]) for r in dev) and {r["subject"] for r in dev} == {test[0]["subject"]}
    assert all(len(r["choices"]) == 4 and r["choices"][r["answer"]] for r in dev)
    key = [(r["question"], r["choices"]) for r in test]
    assert not any((r["question"], r["choices"]) in key for r in dev)
    assert len({r["question"] for r in dev}) == 5
    assert mw.MMLU_DEV_PATH == "cais/mmlu/all/dev.jsonl"


def test_parquet_files_give_the_same_scores(world, tmp_path):
    """The paper preset's files are parquet (MMLU's ``all/test-*.parquet`` and ``all/dev-*.parquet``):
    same rows, same metrics and per-sample rows as from JSONL."""
    import pandas as pd
    files = {}
    for bench, spec in world["files"].items():
        files[bench] = {}
        for split, path in spec.items():
            rows = [json.loads(line) for line in open(path, encoding="utf-8")]
            out = tmp_path / bench / f"{split}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_parquet(out, index=False)
            files[bench][split] = [str(out)]
    got = harness.run(str(world["root"] / "model"), files, OPTIONS, str(tmp_path / "w"))
    for bench in harness.BENCHMARKS:
        assert got[bench][:2] == world["out"][bench][:2]
        paths = {c["dataset_path"] for c in got[bench][2]["configs"].values()}
        assert paths == ({"json"} if bench == "mmlu" else {"parquet"})   # MMLU: per-subject JSONL written by us


def test_model_adapter_renders_the_chat_formats(world):
    """The adapter's apply_chat_template (what lm-eval calls): Agent-FLAN = BOS + training's
    rendering (continuing a final assistant message when lm-eval asks); llama2-chat = our
    reference rendering with the system prompt."""
    from agentflan.chat_formats import Llama2ChatFormat
    from agentflan.template import ASSISTANT_BEGIN
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}]
    tok = world["tok"]
    o = harness.options_with_defaults({"max_length": 256})
    lm, chat, stops, on, runtime = harness._make_lm(str(world["root"] / "model"), o, 1)
    assert on and stops == [ASSISTANT_STOP] and chat.startswith("agentflan")
    assert runtime == {"device": "cpu", "dtype": "float32"}
    assert lm.apply_chat_template(msgs) == tok.bos_token + render(msgs, add_generation_prompt=True)
    assert lm.apply_chat_template(msgs + [{"role": "assistant", "content": "It is"}], add_generation_prompt=False) \
        == tok.bos_token + render(msgs) + ASSISTANT_BEGIN + "It is"
    o = harness.options_with_defaults({"max_length": 256, "chat_format": "llama2-chat", "system_prompt": "You help."})
    lm, chat, stops, on, _ = harness._make_lm(str(world["root"] / "model"), o, 1)
    assert on and stops == [] and chat.startswith("llama2-chat")
    assert lm.apply_chat_template(msgs) == Llama2ChatFormat(tok, "You help.").render(msgs)
    assert lm.apply_chat_template(msgs).startswith("<s>[INST] <<SYS>>\nYou help.\n<</SYS>>\n\nBe brief.\n\nHi [/INST]")

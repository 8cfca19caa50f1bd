"""Models evaluated but never trained here: external checkpoints (evaluation.external_models, their
chat formats) and API models (evaluation.api_models) in the config, the DAG and Table 1."""
from __future__ import annotations

import copy
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

import dag_runs  # tests/ is on sys.path (pytest's default "prepend" import mode)
import yaml

from agentflan import config as cfg
from agentflan.chat_formats import Llama2ChatFormat, get
from agentflan.io import DataError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from forcing import force_chain  # noqa: E402

REPORTED = ROOT / "paper" / "paper_reported.yaml"
FIXTURE = Path(__file__).parent / "fixtures" / "summary"


def _mini() -> dict:
    return cfg.load_config(ROOT / "config" / "config.yaml")


def _paper() -> dict:
    return cfg.load_config(ROOT / "config" / "paper.yaml")


def _invalid(config: dict, tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(DataError) as exc:
        cfg.load_config(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# ---------------------------------------------------------------------------- config
def test_config_errors_are_one_line(tmp_path):
    raw = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    both = copy.deepcopy(raw)
    both["evaluation"]["external_models"]["agentlm-7b"]["path"] = "/x"
    assert "exactly one of 'source'" in _invalid(both, tmp_path)
    nosrc = copy.deepcopy(raw)
    nosrc["evaluation"]["external_models"]["agentlm-7b"]["source"] = "nosuch"
    assert "no data.sources.nosuch" in _invalid(nosrc, tmp_path)
    dataset = copy.deepcopy(raw)
    dataset["evaluation"]["external_models"]["agentlm-7b"]["source"] = "agentflan"
    assert "not a model repo" in _invalid(dataset, tmp_path)
    fmt = copy.deepcopy(raw)
    fmt["evaluation"]["external_models"]["agentlm-7b"]["chat_format"] = "vicuna"
    assert "external_models.agentlm-7b.chat_format" in _invalid(fmt, tmp_path)
    sysp = copy.deepcopy(raw)
    sysp["evaluation"]["external_models"]["agentflan_released-7b"]["system_prompt"] = "Hi"
    assert "only chat_format llama2-chat takes a system_prompt" in _invalid(sysp, tmp_path)
    badid = copy.deepcopy(raw)
    badid["evaluation"]["api_models"] = {"gpt-3.5": {"model": "gpt-3.5-turbo", "label": "GPT-3.5"}}
    assert "model ids must match" in _invalid(badid, tmp_path)
    clash = copy.deepcopy(raw)
    clash["evaluation"]["api_models"] = {"react-7b": {"model": "gpt-4"}}
    assert "also a model this run trains" in _invalid(clash, tmp_path)
    label = copy.deepcopy(raw)
    label["evaluation"]["api_models"] = {"gpt-4": {"model": "gpt-4", "label": "AgentLM-7B"}}
    assert "label 'AgentLM-7B' is also the label of" in _invalid(label, tmp_path)
    mini = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    mini["evaluation"]["external_models"]["standin-xs"]["standin_of"] = "nosuch-xs"
    assert "'nosuch-xs' is not a model of this run" in _invalid(mini, tmp_path)


def test_model_ids_and_experiments_include_the_evaluated_only_models():
    mini = _mini()
    assert "standin-xs" in cfg.model_ids(mini) and cfg.evaluated_only_ids(mini) == ["standin-xs"]
    exp = cfg.experiments(mini)
    rows = {r["model_id"]: r["label"] for r in exp["tables"]["table1"]}
    assert rows["standin-xs"].startswith("External stand-in")
    assert "standin-xs" in {s["model_id"] for s in exp["figures"]["fig1"]["series"]}
    paper = _paper()
    assert cfg.evaluated_only_ids(paper) == ["agentflan_released-7b", "agentlm-7b", "fireact-7b"]
    rows = {r["label"]: r["model_id"] for r in cfg.experiments(paper)["tables"]["table1"]}
    assert rows["AgentLM-7B"] == "agentlm-7b" and rows["Agent-FLAN-7B (released)"] == "agentflan_released-7b"
    assert rows["FireAct-7B"] == "fireact-7b"
    assert "GPT-4" not in rows      # not configured by default
    paper["evaluation"]["api_models"] = {"gpt-4": {"model": "gpt-4-0613", "label": "GPT-4"},
                                         "gpt_35-turbo": {"model": "gpt-3.5-turbo"}}    # unlabelled: no row
    cfg.validate(paper)
    assert {"gpt-4", "gpt_35-turbo"} <= set(cfg.model_ids(paper))
    exp = cfg.experiments(paper)
    assert [r["model_id"] for r in exp["tables"]["table1"]][-1] == "gpt-4"
    assert "gpt_35-turbo" not in {r["model_id"] for r in exp["tables"]["table1"]}
    assert exp["figures"]["fig1"]["series"][-1] == {"label": "GPT-4", "model_id": "gpt-4"}


# ---------------------------------------------------------------------------- llama2-chat
CONV = [{"role": "system", "content": "Use the tools."},
        {"role": "user", "content": " What is 2+2? "},
        {"role": "assistant", "content": "Thought: add.\nAction: calc"},
        {"role": "user", "content": "Observation: 4"}]
# Hand-written from Meta's reference (facebookresearch/llama, llama/generation.py, Llama 2
# `chat_completion`: B_INST/E_INST = "[INST]"/"[/INST]", B_SYS/E_SYS = "<<SYS>>\n"/"\n<</SYS>>\n\n",
# pairs f"{B_INST} {prompt.strip()} {E_INST} {answer.strip()} " with BOS and EOS, the last user
# message f"{B_INST} {prompt.strip()} {E_INST}" with BOS only), BOS/EOS spelled <s>/</s> as in
# Hugging Face's "How to prompt Llama 2". AgentLM's fixed system prompt: THUDM/AgentTuning README.
# (the reference strips the folded system + user text as a whole: the user's own leading space stays)
EXPECTED = ("<s>[INST] <<SYS>>\nUse the tools.\n<</SYS>>\n\n What is 2+2? [/INST] Thought: add.\nAction: calc </s>"
            "<s>[INST] Observation: 4 [/INST]")
EXPECTED_AGENTLM = ("<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"
                    "Use the tools.\n\n What is 2+2? [/INST] Thought: add.\nAction: calc </s>"
                    "<s>[INST] Observation: 4 [/INST]")


def test_llama2_chat_prompt_byte_for_byte(llama2_tokenizer):
    tok = llama2_tokenizer
    fmt = get("llama2-chat", tok)
    assert fmt.render(CONV) == EXPECTED
    assert fmt.stop is None
    agentlm = get("llama2-chat", tok, "You are a helpful, respectful and honest assistant.")
    assert agentlm.render(CONV) == EXPECTED_AGENTLM
    for f, text in ((fmt, EXPECTED), (agentlm, EXPECTED_AGENTLM)):
        ids = f.encode_prompt(CONV)
        # the control tokens are ids, never text; the text between them decodes back exactly
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 2 and ids.count(tok.eos_token_id) == 1
        pieces, cur = [], []
        for i in ids:
            if i in (tok.bos_token_id, tok.eos_token_id):
                if cur:
                    pieces.append(tok.decode(cur))
                pieces.append("<s>" if i == tok.bos_token_id else "</s>")
                cur = []
            else:
                cur.append(i)
        pieces.append(tok.decode(cur))
        assert "".join(pieces) == text
        # and equals Meta's per-piece SentencePiece encode (bos/eos around each piece)
        first, last = text[3:].split("</s><s>")
        ref = ([tok.bos_token_id] + tok.encode(first, add_special_tokens=False) + [tok.eos_token_id]
               + [tok.bos_token_id] + tok.encode(last, add_special_tokens=False))
        assert ids == ref
    # content cannot inject control tokens
    inj = fmt.encode_prompt([{"role": "user", "content": "a </s><s> b"}])
    assert inj.count(tok.eos_token_id) == 0 and inj.count(tok.bos_token_id) == 1


def test_llama2_chat_rejects_a_prompt_not_ending_with_user(llama2_tokenizer):
    from agentflan.chat_formats import ChatFormatError
    with pytest.raises(ChatFormatError, match="end with a user message"):
        Llama2ChatFormat(llama2_tokenizer).render([{"role": "user", "content": "x"},
                                                   {"role": "assistant", "content": "y"}])


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory, llama2_tokenizer):
    """A tiny Llama with Llama-2's tokenizer wired to answer every llama2-chat prompt with
    'Action: Go', the Agent-FLAN end tag, more text, EOS, then ' Observation'."""
    from agentflan.modeling import init_tiny_llama
    from agentflan.template import ASSISTANT_STOP
    tok = llama2_tokenizer
    root = tmp_path_factory.mktemp("eosmodel")
    init_tiny_llama({"hidden_size": 48, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}, tok, 0,
                    root / "random")
    fmt = get("llama2-chat", tok)
    msgs = [[{"role": "user", "content": f"Question {i}?"}] for i in range(5)] + [CONV]
    ends = {fmt.encode_prompt(m)[-1] for m in msgs}
    body = tok.encode("Action: Go", add_special_tokens=False)
    tag = [t for t in tok.encode("x" + ASSISTANT_STOP + "Done", add_special_tokens=False)[1:] if t not in body]
    after = tok.encode(" Observation", add_special_tokens=False)
    chain = body + tag + [tok.eos_token_id] + after
    force_chain(root / "random", root / "m", tok, ends, chain)
    return root / "m", msgs, tok, body + tag


@pytest.mark.parametrize("backend", ["fast", "plain"])
def test_llama2_chat_generation_stops_at_eos(eos_model, backend):
    from agentflan.generate import Generator
    path, msgs, tok, before_eos = eos_model
    gen = Generator(str(path), backend=backend, max_new_tokens=30, batch_size=4, chat_format="llama2-chat")
    replies = gen(msgs)
    # not cut at the Agent-FLAN end tag: the reply runs to EOS and nothing after it is generated
    expected = tok.decode(before_eos, skip_special_tokens=True).strip()
    assert "\u0d3f" in expected and replies == [expected] * len(msgs)
    assert gen.settings()["chat_format"] == {"name": "llama2-chat", "system_prompt": None}
    assert gen.settings()["stop"] is None
    other = Generator(str(path), backend=backend, max_new_tokens=30, batch_size=4)
    assert other.settings_key() != gen.settings_key()      # the chat format is part of the resume key
    if backend == "fast":
        ids = gen.engine.run([gen.fmt.encode_prompt(m) for m in msgs])
        assert ids == [before_eos + [tok.eos_token_id]] * len(msgs)


# ---------------------------------------------------------------------------- fireact
# Hand-written from FireAct's generation.py (anchen1011/FireAct): prepare_prompt(question) =
# "Below is an instruction that describes a task. Write a response that appropriately completes the
# request.\n\n### Instruction:\n{question}\n\n### Response:\n"; each step is written back as
# f"Thought: {thought}\nAction: {action}\nObservation: {obs}\n" and the model continues from
# "Thought:" (stop word "\nObservation:"). The system message + first user message as the question
# is our mapping (docs/models.md).
EXPECTED_FIREACT = ("Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request.\n\n### Instruction:\nUse the tools.\n\n What is 2+2?\n\n"
                    "### Response:\nThought: add.\nAction: calc\nObservation: 4\nThought:")


def test_fireact_prompt_byte_for_byte_and_one_bos(llama2_tokenizer):
    tok = llama2_tokenizer
    fmt = get("fireact", tok)
    assert fmt.render(CONV) == EXPECTED_FIREACT
    assert fmt.stop == "\nObservation:" and fmt.reply_lead == "Thought: "
    ids = fmt.encode_prompt(CONV)
    # FireAct tokenises the prompt with the tokenizer's defaults: BOS, then the text
    assert ids == tok(EXPECTED_FIREACT)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and tok.decode(ids[1:]) == EXPECTED_FIREACT
    first = fmt.render([{"role": "user", "content": "Question: who?  "}])
    assert first.endswith("### Instruction:\nQuestion: who?\n\n### Response:\nThought:")
    from agentflan.chat_formats import ChatFormatError
    with pytest.raises(ChatFormatError, match="end with a user message"):
        fmt.render(CONV[:3])
    with pytest.raises(ChatFormatError, match="takes no system_prompt"):
        get("fireact", tok, "x")


@pytest.mark.parametrize("backend", ["fast", "plain"])
def test_fireact_generation_keeps_the_thought_and_cuts_at_the_observation(tmp_path_factory, llama2_tokenizer,
                                                                          backend):
    from agentflan.generate import Generator, cut_at_stop
    from agentflan.modeling import init_tiny_llama
    tok = llama2_tokenizer
    root = tmp_path_factory.mktemp(f"fireact-{backend}")
    init_tiny_llama({"hidden_size": 48, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}, tok, 0,
                    root / "m")
    msgs = [[{"role": "user", "content": f"Question {i}?"}] for i in range(3)] + [CONV]
    gen = Generator(str(root / "m"), backend=backend, max_new_tokens=6, batch_size=2, chat_format="fireact")
    assert gen.settings()["chat_format"] == {"name": "fireact"} and gen.settings()["stop"] == "\nObservation:"
    assert gen.settings_key() != Generator(str(root / "m"), backend=backend, max_new_tokens=6,
                                           batch_size=2).settings_key()
    replies = gen(msgs)
    # the continuation of "Thought:" is given back whole, as FireAct writes a step back
    raw = [cut_at_stop(tok.decode(ids, skip_special_tokens=True), "\nObservation:")
           for ids in gen.engine.run([gen.fmt.encode_prompt(m) for m in msgs])] if backend == "fast" else None
    assert all(r.startswith("Thought: ") for r in replies)
    if raw is not None:
        assert replies == ["Thought: " + r for r in raw]
    # FireAct's stop word ends the reply (the decoders stop there; the text is cut at it)
    assert cut_at_stop(" add.\nAction: calc[2+2]\nObservation: 4\nThought: x", "\nObservation:") == \
        "add.\nAction: calc[2+2]"


# ---------------------------------------------------------------------------- checkpoints
def test_bin_only_checkpoint_is_refused_in_one_line(tmp_path):
    from agentflan.external import check_checkpoint
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model-00001-of-00002.bin").write_bytes(b"\x80\x02")
    with pytest.raises(DataError) as exc:
        check_checkpoint(d)
    msg = str(exc.value)
    assert "\n" not in msg and "pytorch_model-00001-of-00002.bin" in msg and "safetensors only" in msg
    (d / "model.safetensors").write_bytes(b"")
    assert check_checkpoint(d) == d


def test_standin_is_a_deterministic_copy(tmp_path, llama2_tokenizer):
    from agentflan.external import save_standin
    from agentflan.modeling import init_tiny_llama
    init_tiny_llama({"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
                    llama2_tokenizer, 0, tmp_path / "src")
    (tmp_path / "src" / "README.md").write_text("not copied")
    names = save_standin(tmp_path / "src", tmp_path / "a")
    assert "model.safetensors" in names and "README.md" not in names
    save_standin(tmp_path / "src", tmp_path / "b")
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() == (tmp_path / "src" / n).read_bytes()


# ---------------------------------------------------------------------------- API models
def test_api_generate_without_key_stops_in_one_line(tmp_path, monkeypatch):
    from agentflan import stages
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    items = tmp_path / "gsm8k.jsonl"
    items.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "1+1?"}]}) + "\n")
    with pytest.raises(DataError) as exc:
        stages.generate(model="gpt-4", items={"gsm8k": str(items)}, out={"gsm8k": str(tmp_path / "p.jsonl")},
                        generation={}, options={}, threads=1, backend={"kind": "api", "model": "gpt-4-0613"})
    assert "\n" not in str(exc.value) and "OPENAI_API_KEY" in str(exc.value)
    assert not (tmp_path / "p.jsonl").exists()


def _records():
    return [{"requested_model": "gpt-4", "served_models": {"gpt-4-0613": 3}, "date": "2024-05-03",
             "reply_dates": {"2024-05-01": 1, "2024-05-02": 2}},
            {"requested_model": "gpt-4", "served_models": {"gpt-4-0613": 2}, "date": "2024-05-03",
             "reply_dates": {"2024-05-02": 2}}]


def test_api_row_names_the_served_model_and_dates(tmp_path):
    from agentflan.external import served_summary
    from agentflan.reporting import build_table
    info = served_summary(_records())
    assert info == {"served_model": "gpt-4-0613", "requested_model": "gpt-4", "served_dates": "2024-05-01..2024-05-02"}
    assert served_summary(list(reversed(_records()))) == info
    summary = tmp_path / "summary"
    shutil.copytree(FIXTURE, summary)
    exp = json.loads((summary / "experiments.json").read_text())
    exp["tables"]["table1"].append({"label": "GPT-4", "model_id": "gpt-4"})
    (summary / "experiments.json").write_text(json.dumps(exp))
    with open(summary / "scores.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model_id"] == "agentflan-7b"]
    with open(summary / "scores.csv", "a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(f"gpt-4,{r['benchmark']},{r['metric']},{r['value']}\n")
    with open(summary / "models.csv", encoding="utf-8") as fh:
        old = list(csv.DictReader(fh))
    cols = list(old[0]) + ["kind", "label", "served_model", "requested_model", "served_dates"]
    with open(summary / "models.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(old)
        w.writerow({"model_id": "gpt-4", "kind": "api", "label": "GPT-4", "trained": "false", **info})
    build_table("table1", summary, REPORTED, tmp_path / "a.csv", tmp_path / "a.md")
    md = (tmp_path / "a.md").read_text()
    assert ("GPT-4: answered through an OpenAI-compatible API by gpt-4-0613 (requested gpt-4), replies dated "
            "2024-05-01..2024-05-02") in md
    gpt4 = [line for line in md.splitlines() if line.startswith("| GPT-4 | ours")][0]
    assert "not run" not in gpt4.split("|")[4]          # HotpotQA is computed
    build_table("table1", summary, REPORTED, tmp_path / "b.csv", tmp_path / "b.md")
    assert (tmp_path / "b.md").read_bytes() == (tmp_path / "a.md").read_bytes()


# ---------------------------------------------------------------------------- the DAG
def _dry(tmp_path, *args):
    return dag_runs.dry_run(tmp_path, *args)


def test_default_dry_run_plans_the_standin(tmp_path):
    out = _dry(tmp_path, "--configfile", str(ROOT / "config" / "config.yaml"))
    assert "rule standin_checkpoint:" in out and "data/mini/external/standin-xs" in out
    assert "results/mini/eval/standin-xs/teval.predictions.jsonl" in out
    assert "results/mini/eval/standin-xs/teval.scores.json" in out
    assert '"chat_format": {"name": "agentflan"' in out and '"model": "data/mini/external/standin-xs"' in out


def test_paper_dry_run_plans_the_external_models(tmp_path):
    out = _dry(tmp_path, "--configfile", str(ROOT / "config" / "paper.yaml"))
    for model in ("agentlm-7b", "agentflan_released-7b", "fireact-7b"):
        assert f"results/paper/eval/{model}/teval.predictions.jsonl" in out
        assert f"results/paper/eval/{model}/teval.scores.json" in out
    for source in ("agentlm7b", "agentflan7b", "fireact7b"):
        assert f"data/paper/raw/{source}.manifest.json" in out
    assert "results/paper/models/agentlm-7b" not in out          # never trained


def test_api_model_dry_run(tmp_path):
    override = tmp_path / "api.yaml"
    override.write_text(yaml.safe_dump({"evaluation": {"api_models": {
        "gpt-4": {"label": "GPT-4", "model": "gpt-4-0613", "max_tokens": 64}}}}))
    out = _dry(tmp_path, "--configfile", str(ROOT / "config" / "config.yaml"), str(override))
    assert "rule generate_api:" in out
    assert "results/mini/eval/gpt-4/teval.predictions.jsonl.api.json" in out
    assert "results/mini/eval/gpt-4/teval.scores.json" in out
    assert '"kind": "api"' in out and '"model": "gpt-4-0613"' in out

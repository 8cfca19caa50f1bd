"""Training and generation on a toy corpus: both methods run, losses are logged per category,
the label mask is what the loss policy says, and generation stops at the assistant end tag."""
import json

import pytest

from agentflan.io import write_jsonl
from agentflan.template import ASSISTANT_END, SegmentTokenizer

torch = pytest.importorskip("torch")

RECORDS = [
    {"id": f"r{i}", "source": "toolbench_tflan_60p_r10r5u7", "turns": [
        {"role": "system", "content": "Tools: get_weather", "train": False, "capability": None},
        {"role": "user", "content": f"Weather in city{i % 3}?", "train": False, "capability": None},
        {"role": "assistant", "content": "I will check the weather.", "train": True, "capability": "reasoning"},
        {"role": "user", "content": "Which API?", "train": False, "capability": None},
        {"role": "assistant", "content": "get_weather", "train": True, "capability": "retrieval"},
        {"role": "assistant", "content": "Thought: ok\nAction: get_weather", "train": False, "capability": None},
    ]} for i in range(24)
] + [{"id": f"g{i}", "source": "sharegpt", "turns": [
    {"role": "user", "content": "hi", "train": False, "capability": None},
    {"role": "assistant", "content": "hello there", "train": True, "capability": None}]} for i in range(8)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from agentflan.modeling import init_tiny_llama, load_tokenizer, train_bpe_tokenizer
    from agentflan.template import render
    root = tmp_path_factory.mktemp("toy")
    train_bpe_tokenizer((render(r["turns"]) for r in RECORDS), root / "tok", vocab_size=300)
    tok = load_tokenizer(str(root / "tok"))
    init_tiny_llama({"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
                    tok, seed=0, out_dir=root / "init")
    write_jsonl(root / "train.jsonl", RECORDS)
    return root, tok


def test_label_mask_matches_loss_policy(toy):
    _, tok = toy
    enc = SegmentTokenizer(tok).encode_record(RECORDS[0])
    trained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != -100])
    # the end tags' final space merges with the next turn's "<|" (untrained): template boundary rule
    assert trained == "I will check the weather." + ASSISTANT_END[:-1] + "get_weather" + ASSISTANT_END[:-1]
    assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == -100


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_and_generate(toy, method):
    from agentflan.generate import Generator
    from agentflan.train import load_metrics, train
    root, _ = toy
    recipe = {"method": method, "learning_rate": 5e-3, "warmup_start_lr": 1e-3, "warmup_ratio": 0.1,
              "batch_size": 8, "per_device_batch_size": 4, "epochs": 2, "max_length": 64, "seed": 0,
              "logging_steps": 1, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    out = root / f"model-{method}"
    eff = train(base_model=str(root / "init"), data_path=root / "train.jsonl", out_dir=out,
                metrics_path=root / f"{method}.metrics.jsonl", config_path=root / f"{method}.json",
                recipe=recipe, model_id=f"toy-{method}", checkpoint_dir=root / f"ck-{method}")
    assert eff["batch_size"] == 8 and eff["gradient_accumulation_steps"] == 2 and eff["steps"] == 8
    rows = load_metrics(root / f"{method}.metrics.jsonl")
    assert len(rows) == 8
    assert {"loss_reasoning", "loss_retrieval", "loss_general", "loss_content"} <= set().union(*rows)
    if method == "full":
        assert rows[-1]["loss"] < rows[0]["loss"]
    cfg = json.loads((root / f"{method}.json").read_text())
    assert cfg["encoding"]["examples"] == len(RECORDS)
    gen = Generator(str(out), max_new_tokens=12, batch_size=4)
    texts = gen([[{"role": "user", "content": "Weather in city1?"}]] * 3)
    assert len(texts) == 3 and texts[0] == texts[1] == texts[2]
    assert "\u0d3f\n" not in texts[0]


def test_lr_schedule_warmup_starts_at_warmup_lr():
    from agentflan.train import lr_lambda_factory
    fn = lr_lambda_factory(warmup_steps=10, total_steps=110, start_ratio=0.2, min_ratio=0.0)
    assert fn(0) == pytest.approx(0.2)       # 4e-6 / 2e-5, paper Table 5
    assert fn(10) == pytest.approx(1.0)
    assert fn(60) == pytest.approx(0.5)
    assert fn(110) == pytest.approx(0.0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_trained_positions_only_match_full_logits(toy, method):
    """The LM head applied at trained positions only (``logits_to_keep`` with a boolean mask)
    gives the full-logits loss and gradients."""
    import torch
    import torch.nn.functional as F
    from agentflan.modeling import load_causal_lm
    from agentflan.train import accepts_logits_to_keep, collate, encode_dataset, keep_mask
    root, tok = toy
    examples, _ = encode_dataset(RECORDS, tok, 64)
    batch = collate([{"input_ids": e.input_ids, "labels": e.labels, "capability": e.capability,
                      "part": e.part} for e in examples], tok.pad_token_id)
    model = load_causal_lm(str(root / "init"), dtype="fp32")
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    assert accepts_logits_to_keep(model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    tgt = batch["labels"][:, 1:]
    mask = tgt != -100
    assert 0 < int(mask.sum()) < mask.numel()  # some positions are masked out

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    logits = model(**inputs).logits[:, :-1]
    full = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100)
    g_full = grads(full)
    keep = keep_mask(batch["labels"])
    sparse = F.cross_entropy(model(**inputs, logits_to_keep=keep).logits, tgt[mask])
    g_sparse = grads(sparse)
    assert torch.allclose(full, sparse, atol=1e-6)
    assert g_full.keys() == g_sparse.keys() and len(g_full) > 0
    for name in g_full:
        assert torch.allclose(g_full[name], g_sparse[name], atol=1e-6), name


def test_length_grouped_order_is_a_seeded_permutation_that_pads_less_with_wider_windows():
    import random
    from agentflan.train import length_grouped_order
    rng = random.Random(7)
    lengths = [rng.choice([rng.randint(10, 60), rng.randint(200, 400)]) for _ in range(2000)]

    def padded(order, batch=16):
        return sum(max(lengths[i] for i in order[k:k + batch]) * len(order[k:k + batch])
                   for k in range(0, len(order), batch))
    narrow = length_grouped_order(lengths, 16, seed=0, mega=1)
    mid = length_grouped_order(lengths, 16, seed=0, mega=16)
    wide = length_grouped_order(lengths, 16, seed=0, mega=64)
    for order in (narrow, mid, wide):
        assert sorted(order) == list(range(len(lengths)))
    assert wide == length_grouped_order(lengths, 16, seed=0, mega=64)
    assert wide != length_grouped_order(lengths, 16, seed=1, mega=64)
    assert padded(wide) < padded(mid) < padded(narrow)

"""Packed training (issue 12): samples share rows, position ids restart per sample, attention never
crosses samples, and the loss, its gradients and the trained tokens are those of the padded path."""
import random

import pytest

from agentflan.template import Encoded
from agentflan.train import _Packed, collate, global_count, keep_mask, loss_terms, pack_rows, packing_settings

torch = pytest.importorskip("torch")


def _examples(n: int, seed: int = 0, vocab: int = 120) -> list[Encoded]:
    """Random samples of varied length: BOS untrained, then stretches of trained and untrained."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(5, 40)
        ids = [1] + [rng.randrange(3, vocab) for _ in range(length - 1)]
        labels = [-100] + [t if rng.random() < 0.5 else -100 for t in ids[1:]]
        if all(x == -100 for x in labels):
            labels[-1] = ids[-1]
        out.append(Encoded(ids, labels, [rng.randrange(0, 5) for _ in ids], [rng.randrange(0, 3) for _ in ids]))
    return out


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).float().eval()


def _trainer(model, normalization):
    from transformers import TrainingArguments
    from agentflan.train import _make_trainer_cls
    args = TrainingArguments(output_dir="/tmp/agentflan-packing-test", use_cpu=True, report_to=[],
                             per_device_train_batch_size=1, remove_unused_columns=False)
    return _make_trainer_cls()(model=model, args=args, normalization=normalization,
                               schedule=(0, 1, 1.0, 0.0))


def test_best_fit_rows_respect_the_capacity_and_keep_every_sample_once():
    rng = random.Random(3)
    lengths = [rng.randint(1, 50) for _ in range(200)]
    rows = pack_rows(lengths, 60)
    assert sorted(i for r in rows for i in r) == list(range(200))
    assert all(sum(lengths[i] for i in r) <= 60 for r in rows)
    assert len(rows) < 200 and pack_rows(lengths, 60) == rows  # packs, and deterministically
    assert pack_rows([70, 5], 60) == [[0], [1]]  # a sample over capacity gets a row of its own


def test_default_capacity_never_widens_a_row_beyond_the_padded_batch():
    ex = _examples(64, seed=1)
    packed = _Packed(ex, per_device=8, capacity=None)
    for k, micro in enumerate(packed.micro):
        widest = max(len(e) for e in ex[8 * k:8 * k + 8])
        assert max(sum(len(e) for e in row) for row in micro) == widest
    st = packed.stats()
    assert st["samples"] == 64 and st["real_tokens"] == sum(len(e) for e in ex)
    assert st["rows"] < 64 and st["computed_tokens"] < sum(max(len(e) for e in ex[k:k + 8]) * 8 for k in range(0, 64, 8))


def test_packed_batch_has_restarting_positions_and_the_same_trained_tokens():
    ex = _examples(16, seed=2)
    batch = collate([{"rows": _Packed(ex, 16, 80).micro[0]}], pad_id=0)
    pos, sample = batch["position_ids"], batch["sample"]
    for r in range(pos.size(0)):
        for t in range(1, pos.size(1)):
            assert pos[r, t] == (pos[r, t - 1] + 1 if sample[r, t] == sample[r, t - 1] else 0)
    assert "attention_mask" not in batch
    assert int((batch["labels"] != -100).sum()) == sum(sum(x != -100 for x in e.labels) for e in ex)
    assert sorted(set(sample[sample >= 0].tolist())) == list(range(16))


@pytest.mark.parametrize("normalization", ["token", "sample"])
def test_packed_loss_and_gradients_equal_the_samples_run_one_by_one(model, normalization):
    ex = _examples(12, seed=4)
    trainer = _trainer(model, normalization)
    packed = collate([{"rows": _Packed(ex, 12, 90).micro[0]}], pad_id=0)
    assert packed["input_ids"].size(0) < 12  # several samples share rows

    def grads(batches):
        model.zero_grad()
        denom = global_count(batches, normalization)  # what the trainer divides by: 12 samples either way
        assert int(denom) == (sum(int(keep_mask(b["labels"]).sum()) for b in batches)
                              if normalization == "token" else 12)
        total = 0.0
        for b in batches:
            loss = trainer.compute_loss(model, dict(b), num_items_in_batch=torch.as_tensor(denom))
            loss.backward()
            total += float(loss.detach())
        return total, [p.grad.clone() for p in model.parameters()]

    loss_p, g_p = grads([packed])
    loss_1, g_1 = grads([collate([{"input_ids": e.input_ids, "labels": e.labels, "capability": e.capability,
                                    "part": e.part}], pad_id=0) for e in ex])
    assert loss_p == pytest.approx(loss_1, rel=1e-5)
    for a, b in zip(g_p, g_1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_attention_never_crosses_samples(model):
    ex = _examples(10, seed=5)
    micro = _Packed(ex, 10, 100).micro[0]
    batch = collate([{"rows": micro}], pad_id=0)
    row = max(range(len(micro)), key=lambda r: len(micro[r]))
    assert len(micro[row]) >= 3
    changed = [list(r) for r in micro]
    victim = changed[row][1]
    changed[row][1] = Encoded([1] + [7] * (len(victim) - 1), victim.labels, victim.capability, victim.part)
    other = collate([{"rows": changed}], pad_id=0)
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        b = model(input_ids=other["input_ids"], position_ids=other["position_ids"]).logits
    s = batch["sample"][row]
    victim_id = int(s[len(micro[row][0])])
    same = (s != victim_id) & (s >= 0)
    assert torch.equal(a[row][same], b[row][same])  # every other sample of the row: bit for bit
    assert not torch.equal(a[row][s == victim_id], b[row][s == victim_id])
    # and each sample's logits are those of the sample alone
    first = micro[row][0]
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([first.input_ids])).logits[0]
    torch.testing.assert_close(a[row, :len(first)], alone, rtol=1e-5, atol=1e-5)


def test_sample_normalisation_counts_samples_not_rows():
    labels = torch.tensor([[-100, 5, 6, -100, 7, -100], [-100, 8, -100, -100, -100, -100]])
    sample = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 2, 2, 3, 3, 3]])
    keep = keep_mask(labels)
    ce = torch.tensor([1.0, 2.0, 3.0, 4.0])  # positions (0,0), (0,1), (0,3), (1,0)
    assert float(loss_terms(ce, keep, "sample", sample)) == pytest.approx(1.5 + 3.0 + 4.0)
    assert int(global_count([{"labels": labels, "sample": sample}], "sample")) == 3


def test_packing_settings_are_checked():
    assert packing_settings({}, 64) is None and packing_settings({"packing": True}, 64) == {"max_tokens": None}
    assert packing_settings({"packing": {"max_tokens": 128}}, 64) == {"max_tokens": 128}
    with pytest.raises(ValueError, match="at least max_length"):
        packing_settings({"packing": {"max_tokens": 32}}, 64)
    with pytest.raises(ValueError, match="packing must be"):
        packing_settings({"packing": "yes"}, 64)


def test_training_packed_reaches_the_padded_runs_losses_and_weights(tmp_path):
    """train() end to end: packed (several samples per row) and padded micro-batches of the same
    seeded order give the same per-step losses and final weights (fp32 tolerance)."""
    from safetensors.torch import load_file

    from agentflan.io import write_jsonl
    from agentflan.modeling import init_tiny_llama, load_tokenizer, train_bpe_tokenizer
    from agentflan.template import render
    from agentflan.train import load_metrics, train
    from test_train import RECORDS
    train_bpe_tokenizer((render(r["turns"]) for r in RECORDS), tmp_path / "tok", vocab_size=300)
    tok = load_tokenizer(str(tmp_path / "tok"))
    init_tiny_llama({"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
                    tok, seed=0, out_dir=tmp_path / "init")
    write_jsonl(tmp_path / "train.jsonl", RECORDS)
    runs = {}
    for name, packing in (("padded", False), ("packed", {"max_tokens": 200})):
        recipe = {"method": "full", "learning_rate": 5e-3, "warmup_start_lr": 1e-3, "warmup_ratio": 0.1,
                  "batch_size": 16, "per_device_batch_size": 8, "epochs": 2, "max_length": 64, "seed": 0,
                  "logging_steps": 1, "packing": packing}
        eff = train(base_model=str(tmp_path / "init"), data_path=tmp_path / "train.jsonl", out_dir=tmp_path / name,
                    metrics_path=tmp_path / f"{name}.jsonl", config_path=tmp_path / f"{name}.json", recipe=recipe,
                    model_id=name, checkpoint_dir=tmp_path / f"ck-{name}")
        runs[name] = (eff, [r["loss"] for r in load_metrics(tmp_path / f"{name}.jsonl") if "loss" in r],
                      load_file(str(tmp_path / name / "model.safetensors")))
    (pad_eff, pad_loss, pad_w), (pack_eff, pack_loss, pack_w) = runs["padded"], runs["packed"]
    assert pack_eff["batches"]["rows"] < pad_eff["batches"]["rows"] == len(RECORDS)
    assert pack_eff["tokens_trained"] == pad_eff["tokens_trained"] and pack_eff["steps"] == pad_eff["steps"] == 4
    assert pack_loss == pytest.approx(pad_loss, rel=1e-4)
    for k in pad_w:
        torch.testing.assert_close(pack_w[k], pad_w[k], rtol=1e-4, atol=1e-5)

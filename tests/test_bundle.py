"""Results bundle (issue 11): one deterministic archive of what the tables are computed from, checked
against its manifest, and every table, figure and the diff rebuilt from it byte for byte."""
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import dag_runs
from agentflan import bundle as B
from agentflan.io import DataError

skip_dag = pytest.mark.skipif(os.environ.get("AGENTFLAN_SKIP_DAG") == "1", reason="AGENTFLAN_SKIP_DAG=1")


def _files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "summary").mkdir()
    (tmp_path / "summary" / "scores.csv").write_text("model,benchmark,score\nm,b,1.0\n")
    (tmp_path / "summary" / "experiments.json").write_text('{"run": "t"}\n')
    return {"summary/scores.csv": str(tmp_path / "summary" / "scores.csv"),
            "summary/experiments.json": str(tmp_path / "summary" / "experiments.json")}


def test_bundle_is_deterministic_and_verified(tmp_path):
    files = _files(tmp_path)
    a = B.write_bundle(files, {"run": "t", "preset": "miniature"}, tmp_path / "a.tar.gz", code_hash="c" * 64, commit=None)
    B.write_bundle(files, {"run": "t", "preset": "miniature"}, tmp_path / "b.tar.gz", code_hash="c" * 64, commit=None)
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    manifest, members = B.read_bundle(tmp_path / "a.tar.gz")
    assert manifest == a and set(members) == {"summary/scores.csv", "summary/experiments.json", "config.json"}
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
    note = B.unpack_summary(tmp_path / "a.tar.gz", tmp_path / "out", ["scores.csv"], "t")
    assert (tmp_path / "out" / "scores.csv").read_bytes() == Path(files["summary/scores.csv"]).read_bytes()
    assert "Rebuilt from the results bundle `a.tar.gz`" in B.header_note(tmp_path / "out")
    assert note["code_hash"] == "c" * 64
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["experiments.json", "scores.csv"]  # note beside


def test_altered_or_foreign_bundles_are_refused_in_one_line(tmp_path):
    files = _files(tmp_path)
    B.write_bundle(files, {"run": "t"}, tmp_path / "a.tar.gz", code_hash="c" * 64, commit=None)
    # one member altered after packing
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["summary/scores.csv"] = b"model,benchmark,score\nm,b,99.0\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "bad.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(DataError, match="summary/scores.csv: sha256 differs from the manifest"):
        B.read_bundle(tmp_path / "bad.tar.gz")
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not a readable results bundle"):
        B.read_bundle(tmp_path / "junk.tar.gz")
    with pytest.raises(DataError, match="bundle of run 't', but this config's run is 'mini'"):
        B.unpack_summary(tmp_path / "a.tar.gz", tmp_path / "out", [], "mini")
    with pytest.raises(DataError, match="lacks summary files"):
        B.unpack_summary(tmp_path / "a.tar.gz", tmp_path / "out", ["scores.csv", "models.csv"], "t")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match="model weights never go into a results bundle"):
        B.write_bundle({"x/model.safetensors": str(tmp_path / "model.safetensors")}, {"run": "t"},
                       tmp_path / "w.tar.gz", code_hash="c" * 64, commit=None)
    assert not (tmp_path / "w.tar.gz").exists()


def test_members_are_named_by_root_with_their_provenance(tmp_path):
    (tmp_path / "res" / "eval" / "m").mkdir(parents=True)
    f = tmp_path / "res" / "eval" / "m" / "teval.scores.json"
    f.write_text("{}")
    Path(f"{f}.provenance.json").write_text("{}")
    got = B.members_of({"eval": str(tmp_path / "res" / "eval")}, [str(f)])
    assert got == {"eval/m/teval.scores.json": str(f), "eval/m/teval.scores.json.provenance.json": f"{f}.provenance.json"}
    with pytest.raises(ValueError, match="under none of the bundle's roots"):
        B.members_of({"eval": str(tmp_path / "elsewhere")}, [str(f)])


@skip_dag
@pytest.mark.slow
@pytest.mark.xdist_group("dag")  # the shared reference run of tests/dag_runs.py: one worker
def test_tables_and_figures_rebuild_from_the_bundle_byte_for_byte(tmp_path_factory):
    """The reduced DAG's bundle, then a fresh directory with only the bundle: the same tables (CSV and
    provenance byte for byte; Markdown apart from its bundle note), figures and diff."""
    workdir, cfg = dag_runs.reference_run(tmp_path_factory, fast=True)
    proc = dag_runs.snakemake(workdir, cfg, targets=("bundle",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    archive = workdir / "results" / dag_runs.RUN / "bundle" / f"{dag_runs.RUN}-results.tar.gz"
    manifest, members = B.read_bundle(archive)
    assert not any(n.endswith((".safetensors", ".bin")) for n in members)
    assert any(n.startswith("eval/") and n.endswith(".predictions.jsonl") for n in members)
    assert any(n.startswith("train/") and n.endswith("metrics.jsonl") for n in members)
    assert manifest["run"] == dag_runs.RUN and len(manifest["code_hash"]) == 64

    fresh = tmp_path_factory.mktemp("from-bundle")
    fresh_cfg = dag_runs.smoke_config(fresh, fast=True)
    proc = dag_runs.snakemake(fresh, fresh_cfg, "--config", f"from_bundle={archive}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (fresh / "data").exists() and not (fresh / "results" / dag_runs.RUN / "models").exists()
    compared = 0
    for sub in ("paper_tables", "figures"):
        for p in sorted((workdir / sub).iterdir()):
            q = fresh / sub / p.name
            assert q.exists(), f"{sub}/{p.name} was not rebuilt"
            if p.suffix == ".md" and p.name.startswith("table"):
                got = [line for line in q.read_text().splitlines() if not line.startswith("*Rebuilt from the results bundle")]
                assert "Rebuilt from the results bundle" in q.read_text()
                assert [x for x in got if x] == [x for x in p.read_text().splitlines() if x], p.name
            else:
                assert q.read_bytes() == p.read_bytes(), f"{sub}/{p.name} differs"
            compared += 1
    assert compared >= 6 * 2 + 8
    second = dag_runs.snakemake(fresh, fresh_cfg, "--config", f"from_bundle={archive}", "-n")
    assert "Nothing to be done" in second.stdout + second.stderr
    json.dumps(manifest)

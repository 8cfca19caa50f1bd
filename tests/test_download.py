"""download.py against a local stand-in for the hub (tests/fixtures/hub); no network."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentflan import download as dl
from agentflan.download import (AGENTFLAN_STEMS, PAPER_SOURCES, SourceSpec, agentflan_files,
                                fetch_source, verify_tree)
from agentflan.io import DataError, sha256_file

FIXTURE_HUB = Path(__file__).parent / "fixtures" / "hub"
REPO = "internlm/Agent-FLAN"
SHA_MAIN = "a" * 40
SHA_NEW = "b" * 40


class FakeHub:
    """Copies files matching ``allow_patterns`` from a local directory that stands in for the hub."""

    def __init__(self, root: Path, refs: dict[str, str] | None = None, fail_after: int | None = None):
        self.root = root
        self.refs = dict(refs or {"main": SHA_MAIN})
        self.fail_after = fail_after
        self.calls: list[dict] = []

    def __call__(self, repo_id, *, repo_type, revision, allow_patterns, local_dir):
        self.calls.append({"repo_id": repo_id, "repo_type": repo_type, "revision": revision,
                           "allow_patterns": list(allow_patterns)})
        sha = revision if dl.is_commit(revision) else self.refs[revision]
        src = self.root / repo_id
        n = 0
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            if p.is_file() and dl.matches(rel, allow_patterns):
                if self.fail_after is not None and n >= self.fail_after:
                    raise ConnectionError("simulated network failure halfway")
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, Path(local_dir) / rel)
                n += 1
        # what snapshot_download leaves behind in a local_dir
        meta = Path(local_dir) / ".cache" / "huggingface" / "download"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "junk.metadata").write_text(f"{sha}\netag\n0\n")
        return sha


@pytest.fixture
def hub(tmp_path) -> Path:
    root = tmp_path / "hub"
    shutil.copytree(FIXTURE_HUB, root)
    return root


@pytest.fixture
def spec() -> SourceSpec:
    return SourceSpec("agentflan", REPO, files=["*.jsonl"],
                      required=[f"*{s}.jsonl" for s in AGENTFLAN_STEMS])


def _paths(tmp_path):
    return tmp_path / "data" / "run" / "raw", tmp_path / "data" / "run" / "sources.lock.json"


def _leftovers(dest_root: Path) -> list[str]:
    return sorted(p.name for p in (dest_root / "internlm").iterdir()
                  if p.name != "Agent-FLAN") if (dest_root / "internlm").exists() else []


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_first_fetch_records_lock(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fake = FakeHub(hub)
    res = fetch_source(spec, dest_root, lock_path, hub_fetch=fake)
    assert res["action"] == "recorded" and res["origin"] == "hub"
    assert fake.calls == [{"repo_id": REPO, "repo_type": "dataset", "revision": "main",
                           "allow_patterns": ["*.jsonl"]}]
    repo_dir = dest_root / REPO
    src = hub / REPO
    expected = {p.relative_to(src).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in sorted(src.rglob("*.jsonl"))}
    assert len(expected) == 7
    lock = json.loads(lock_path.read_text())
    assert lock == {"agentflan": {"repo_id": REPO, "revision_requested": "main",
                                  "resolved_commit": SHA_MAIN, "files": expected}}
    # sorted keys, no timestamps: the file is the canonical dump
    assert lock_path.read_text() == json.dumps(lock, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    # exactly the locked files are in place: no README (not matched), no .cache, no temp dirs
    assert sorted(_snapshot(repo_dir)) == sorted(expected)
    assert _leftovers(dest_root) == []
    assert res["entry"] == lock["agentflan"]


def test_second_fetch_verifies_and_requests_resolved_commit(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    before = lock_path.read_bytes()
    fake = FakeHub(hub, refs={"main": SHA_NEW})  # "main" moved upstream
    res = fetch_source(spec, dest_root, lock_path, hub_fetch=fake)
    assert res["action"] == "verified"
    assert fake.calls[0]["revision"] == SHA_MAIN  # the locked commit, not "main"
    assert lock_path.read_bytes() == before
    verify_tree(dest_root, lock_path)


def test_pinned_commit_is_passed_through(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    spec.revision = SHA_NEW
    fake = FakeHub(hub)
    fetch_source(spec, dest_root, lock_path, hub_fetch=fake)
    assert fake.calls[0]["revision"] == SHA_NEW
    entry = json.loads(lock_path.read_text())["agentflan"]
    assert entry["revision_requested"] == SHA_NEW and entry["resolved_commit"] == SHA_NEW


def test_altered_file_is_refused_and_nothing_changes(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    before_lock = lock_path.read_bytes()
    before_tree = _snapshot(dest_root / REPO)
    target = hub / REPO / "data" / "toolbench_negative.jsonl"
    if not target.exists():
        target = hub / REPO / "data" / "data_toolbench_negative.jsonl"
    old = sha256_file(target)
    target.write_text(target.read_text() + '{"id": "sneaky", "conversation": []}\n')
    new = sha256_file(target)
    with pytest.raises(DataError) as ei:
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    msg = str(ei.value)
    assert target.name in msg and old in msg and new in msg
    assert "update_lock" in msg
    assert lock_path.read_bytes() == before_lock
    assert _snapshot(dest_root / REPO) == before_tree
    assert _leftovers(dest_root) == []


def test_update_lock_accepts_upstream_change(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    target = next((hub / REPO).rglob("toolbench_react_10p.jsonl"))
    target.write_text('{"id": "changed", "conversation": []}\n')
    fake = FakeHub(hub, refs={"main": SHA_NEW})
    res = fetch_source(spec, dest_root, lock_path, hub_fetch=fake, update_lock=True)
    assert res["action"] == "updated"
    assert fake.calls[0]["revision"] == "main"  # re-resolve the requested revision
    entry = json.loads(lock_path.read_text())["agentflan"]
    assert entry["resolved_commit"] == SHA_NEW
    assert entry["files"]["data/toolbench_react_10p.jsonl"]["sha256"] == sha256_file(target)
    assert (dest_root / REPO / "data" / "toolbench_react_10p.jsonl").read_bytes() == target.read_bytes()
    verify_tree(dest_root, lock_path)


def test_missing_file_is_refused(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    (hub / REPO / "data" / "toolbench_react_10p.jsonl").unlink()
    with pytest.raises(DataError, match="required pattern"):
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    # a locked file that is not covered by `required`
    spec.required = []
    with pytest.raises(DataError, match=r"toolbench_react_10p\.jsonl.* is missing"):
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    assert (dest_root / REPO / "data" / "toolbench_react_10p.jsonl").exists()


def test_extra_file_is_refused(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    (hub / REPO / "data" / "new_split.jsonl").write_text('{"id": "x", "conversation": []}\n')
    with pytest.raises(DataError, match=r"unexpected file 'data/new_split\.jsonl'"):
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    # files that do not match the patterns are ignored
    (hub / REPO / "data" / "new_split.jsonl").unlink()
    (hub / REPO / "notes.txt").write_text("not data")
    assert fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))["action"] == "verified"


def test_config_revision_change_is_refused(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    spec.revision = SHA_NEW
    with pytest.raises(DataError, match="differs from the locked"):
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))


@pytest.mark.parametrize("existing", [False, True])
def test_failure_halfway_leaves_destination_as_it_was(tmp_path, hub, spec, existing):
    dest_root, lock_path = _paths(tmp_path)
    if existing:
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    before_tree = _snapshot(dest_root / REPO) if existing else None
    before_lock = lock_path.read_bytes() if existing else None
    with pytest.raises(ConnectionError):
        fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub, fail_after=3),
                     update_lock=True)
    assert _leftovers(dest_root) == []
    if existing:
        assert _snapshot(dest_root / REPO) == before_tree
        assert lock_path.read_bytes() == before_lock
    else:
        assert not (dest_root / REPO).exists()
        assert not lock_path.exists()


def test_mirror_records_the_same_lock(tmp_path, hub, spec):
    dest_hub, lock_hub = _paths(tmp_path / "a")
    fetch_source(spec, dest_hub, lock_hub, hub_fetch=FakeHub(hub))

    # a mirror made with `hf download --local-dir`: carries the commit in .cache metadata
    mirror = tmp_path / "mirror"
    shutil.copytree(hub / REPO, mirror / REPO)
    meta = mirror / REPO / ".cache" / "huggingface" / "download"
    for p in (hub / REPO).rglob("*"):
        if p.is_file():
            m = meta / (p.relative_to(hub / REPO).as_posix() + ".metadata")
            m.parent.mkdir(parents=True, exist_ok=True)
            m.write_text(f"{SHA_MAIN}\nsome-etag\n1712656091.123\n")
    dest_m, lock_m = _paths(tmp_path / "b")

    def no_hub(*a, **k):
        raise AssertionError("the hub must not be contacted when a mirror is given")

    res = fetch_source(spec, dest_m, lock_m, mirror=mirror, hub_fetch=no_hub)
    assert res["origin"] == "mirror" and res["action"] == "recorded"
    assert lock_m.read_bytes() == lock_hub.read_bytes()
    assert _snapshot(dest_m / REPO) == _snapshot(dest_hub / REPO)
    # a mirror is verified against a hub-made lock too
    assert fetch_source(spec, dest_hub, lock_hub, mirror=mirror)["action"] == "verified"


def test_plain_mirror_without_commit(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    res = fetch_source(spec, dest_root, lock_path, mirror=hub)
    assert res["entry"]["resolved_commit"] is None
    # later: the hub fills in the commit after the hashes verified
    res = fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    assert res["action"] == "verified" and res["entry"]["resolved_commit"] == SHA_MAIN
    # mirror is then checked against the same hashes
    (hub / REPO / "data" / "toolbench_react_10p.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match="toolbench_react_10p.jsonl"):
        fetch_source(spec, dest_root, lock_path, mirror=hub)


def test_mirror_missing_repo_dir(tmp_path, spec):
    dest_root, lock_path = _paths(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="mirror has no directory"):
        fetch_source(spec, dest_root, lock_path, mirror=tmp_path / "empty")


def test_real_hub_path_with_monkeypatched_huggingface_hub(tmp_path, hub, spec, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeInfo:
        sha = SHA_MAIN

    class FakeApi:
        def repo_info(self, repo_id, *, repo_type=None, revision=None, **kw):
            calls["repo_info"] = (repo_id, repo_type, revision, kw)
            return FakeInfo()

    def fake_snapshot_download(repo_id, **kw):
        calls["snapshot_download"] = (repo_id, kw)
        FakeHub(hub)(repo_id, repo_type=kw["repo_type"], revision=kw["revision"],
                     allow_patterns=kw["allow_patterns"], local_dir=kw["local_dir"])
        return kw["local_dir"]

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    dest_root, lock_path = _paths(tmp_path)
    res = fetch_source(spec, dest_root, lock_path)
    assert calls["repo_info"] == (REPO, "dataset", "main", {})
    repo_id, kw = calls["snapshot_download"]
    assert repo_id == REPO and kw["revision"] == SHA_MAIN and kw["repo_type"] == "dataset"
    assert kw["allow_patterns"] == ["*.jsonl"]
    assert "trust_remote_code" not in kw
    assert res["entry"]["resolved_commit"] == SHA_MAIN
    assert not (dest_root / REPO / ".cache").exists()


def test_verify_tree_detects_tampering(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    assert verify_tree(dest_root, lock_path) == {"agentflan": 7}
    f = dest_root / REPO / "data" / "toolbench_react_10p.jsonl"
    old = sha256_file(f)
    f.write_text("tampered\n")
    with pytest.raises(DataError) as ei:
        verify_tree(dest_root, lock_path)
    assert "toolbench_react_10p.jsonl" in str(ei.value) and old in str(ei.value)
    assert sha256_file(f) in str(ei.value)


def test_one_source_per_repo(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    other = SourceSpec("agentflan_subset", REPO, files=["data/toolbench*.jsonl"])
    with pytest.raises(DataError, match="one source per repo"):
        fetch_source(other, dest_root, lock_path, hub_fetch=FakeHub(hub))


def test_two_sources_share_one_lock(tmp_path, hub, spec):
    dest_root, lock_path = _paths(tmp_path)
    sg = SourceSpec("sharegpt", "anon8231489123/ShareGPT_Vicuna_unfiltered",
                    files=["ShareGPT_V3_unfiltered_cleaned_split.json"],
                    required=["ShareGPT_V3_unfiltered_cleaned_split.json"])
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    fetch_source(sg, dest_root, lock_path, hub_fetch=FakeHub(hub))
    lock = json.loads(lock_path.read_text())
    assert sorted(lock) == ["agentflan", "sharegpt"]
    assert list(lock["sharegpt"]["files"]) == ["ShareGPT_V3_unfiltered_cleaned_split.json"]
    assert verify_tree(dest_root, lock) == {"agentflan": 7, "sharegpt": 1}


def test_spec_validation():
    with pytest.raises(ValueError):
        SourceSpec("x", "../evil", files=["*"])
    with pytest.raises(ValueError):
        SourceSpec("x", "a/b", files=[])
    assert dl.spec_from_dict("x", {"repo_id": "a/b", "files": ["*.json"]}).revision == "main"
    with pytest.raises(ValueError, match="unknown keys"):
        dl.spec_from_dict("x", {"repo_id": "a/b", "files": ["*"], "trust_remote_code": True})
    assert set(PAPER_SOURCES) >= {"agentflan", "sharegpt", "teval", "glaive"}


def test_pattern_semantics():
    assert dl.matches("data/x.jsonl", ["*.jsonl"])
    assert dl.matches("data/sub/x.json", ["data/"])
    assert not dl.matches("data/X.JSONL", ["*.jsonl"])


def test_cli_mirror_and_verify(tmp_path, hub, capsys):
    dest_root, lock_path = _paths(tmp_path)
    args = ["--source", "agentflan", "--dest", str(dest_root), "--lock", str(lock_path)]
    assert dl.main(args + ["--mirror", str(hub)]) == 0
    assert json.loads(capsys.readouterr().out.strip())["action"] == "recorded"
    assert dl.main(args + ["--verify-only"]) == 0
    (dest_root / REPO / "data" / "toolbench_react_10p.jsonl").write_text("x\n")
    assert dl.main(args + ["--verify-only"]) == 2
    assert "toolbench_react_10p.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# agentflan_files


def test_agentflan_files_resolves_data_prefix():
    files = agentflan_files(FIXTURE_HUB / REPO)
    assert list(files) == list(AGENTFLAN_STEMS)
    assert files["agent_instruct_react"].name == "data_agent_instruct_react.jsonl"
    assert files["toolbench_react_10p"].name == "toolbench_react_10p.jsonl"


def test_agentflan_files_missing_and_duplicate(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE_HUB / REPO, repo)
    # hidden bookkeeping dirs are ignored
    (repo / ".cache").mkdir()
    (repo / ".cache" / "toolbench_react_10p.jsonl").write_text("{}\n")
    assert agentflan_files(repo)["toolbench_react_10p"] == repo / "data" / "toolbench_react_10p.jsonl"
    (repo / "data" / "data_toolbench_react_10p.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match="two files claim .*toolbench_react_10p"):
        agentflan_files(repo)
    (repo / "data" / "data_toolbench_react_10p.jsonl").unlink()
    (repo / "data" / "toolbench_tflan_cot_30p.jsonl").unlink()
    with pytest.raises(DataError, match="toolbench_tflan_cot_30p"):
        agentflan_files(repo)
    with pytest.raises(DataError, match="not found"):
        agentflan_files(tmp_path / "nope")


def test_sources_from_config(tmp_path, hub, capsys):
    cfg = {"data": {"sources": {
        "agentflan": {"repo_id": REPO, "revision": "main", "files": ["data/*.jsonl"]},
        "sharegpt": {"repo_id": "anon8231489123/ShareGPT_Vicuna_unfiltered",
                     "files": ["ShareGPT_V3_unfiltered_cleaned_split.json"]}},
        "mirror": str(hub)}}
    specs = dl.sources_from_config(cfg)
    assert specs["agentflan"].required == ["data/*.jsonl"]  # files double as required by default
    import yaml

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    dest_root, lock_path = _paths(tmp_path)
    assert dl.main(["--config", str(cfg_path), "--all", "--dest", str(dest_root),
                    "--lock", str(lock_path)]) == 0  # mirror taken from data.mirror
    assert sorted(json.loads(lock_path.read_text())) == ["agentflan", "sharegpt"]
    assert list(agentflan_files(dest_root / REPO)) == list(AGENTFLAN_STEMS)


def test_paper_config_sources_parse():
    path = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
    if not path.exists():
        pytest.skip("config/paper.yaml not present")
    import yaml

    specs = dl.sources_from_config(yaml.safe_load(path.read_text()))
    assert specs["agentflan"].repo_id == REPO
    assert specs["sharegpt"].files == ["ShareGPT_V3_unfiltered_cleaned_split.json"]


def test_destination_has_normal_permissions(tmp_path, hub, spec):
    import os
    import stat

    dest_root, lock_path = _paths(tmp_path)
    fetch_source(spec, dest_root, lock_path, hub_fetch=FakeHub(hub))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((dest_root / REPO).stat().st_mode) == 0o777 & ~umask

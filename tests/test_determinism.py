"""Bit-for-bit across machines (issue 10): the pins of agentflan.determinism, then the whole DAG.

* unit: the pins, their config, the refusal of a CPU without AVX2;
* child processes: the pins take effect in a fresh ``python -m agentflan.cli`` / ``agentflan.determinism``
  and override a conflicting inherited environment, while without them the same environment moves bits
  (so the DAG test below can fail);
* DAG (skipped with AGENTFLAN_SKIP_DAG=1): a second run of the smoke config from scratch, in another
  directory, under an environment that emulates another machine, killed with SIGKILL in data building,
  training, generation and table writing and rerun, gives byte-identical artifacts to the reference run
  of tests/test_dag.py (the same run, via tests/dag_runs.py).
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import dag_runs
from agentflan import determinism as det

ROOT = Path(__file__).resolve().parents[1]
AVX2 = det.is_x86_64() and {"avx2", "fma"} <= (det.cpu_flags() or set())
needs_avx2 = pytest.mark.skipif(not AVX2, reason="needs an x86-64 CPU with AVX2 (the pinned level)")
skip_dag = pytest.mark.skipif(os.environ.get("AGENTFLAN_SKIP_DAG") == "1", reason="AGENTFLAN_SKIP_DAG=1")


# ----------------------------------------------------------------------------- unit
def test_pins_are_the_documented_ones_and_follow_the_job_threads():
    env = det.pinned_environment(det.settings_from_config({}), threads=3, x86=True, flags={"avx2", "fma", "sse2"})
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_CBWR"] == "AVX2,STRICT" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ONEDNN_DEFAULT_FPMATH_MODE"] == "STRICT"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["OMP_DYNAMIC"] == env["MKL_DYNAMIC"] == "FALSE"
    assert det.pinned_environment({**det.DEFAULTS, "enabled": False}) == {}


def test_cpu_without_avx2_is_refused_with_the_key_to_change(monkeypatch):
    settings = det.settings_from_config({})
    with pytest.raises(det.DeterminismError, match="determinism.cpu_capability") as exc:
        det.pinned_environment(settings, x86=True, flags={"sse2", "sse4_2", "avx"})
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(det, "cpu_flags", lambda: None)
    with pytest.raises(det.DeterminismError, match="could not be identified"):
        det.pinned_environment(settings, x86=True)
    scalar = det.pinned_environment(det.settings_from_config({"cpu_capability": "default"}), x86=True,
                                    flags={"sse2"})
    assert scalar["ATEN_CPU_CAPABILITY"] == "default" and scalar["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2"
    native = det.pinned_environment(det.settings_from_config({"cpu_capability": "native"}), x86=True, flags=set())
    assert "ATEN_CPU_CAPABILITY" not in native and native["OMP_NUM_THREADS"] == "1"
    arm = det.pinned_environment(settings, x86=False, flags=set())
    assert "ATEN_CPU_CAPABILITY" not in arm and "MKL_CBWR" not in arm


def test_config_section_round_trips_through_the_job_environment():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["determinism"]["properties"]
    assert {k: props[k]["default"] for k in props} == det.DEFAULTS
    section = {"enabled": True, "cpu_capability": "default", "mkl_cbwr": "avx2,strict",
               "deterministic_algorithms": False}
    env = det.env_from_config(section)
    assert det.settings_from_env(env) == {"enabled": True, "cpu_capability": "default", "mkl_cbwr": "AVX2,STRICT",
                                          "deterministic_algorithms": "off"}
    assert det.settings_from_env({})["cpu_capability"] == "avx2"
    for bad in ({"cpu_capability": "avx512"}, {"mkl_cbwr": "AVX3"}, {"mkl_cbwr": "AVX2,LOOSE"},
                {"deterministic_algorithms": "maybe"}, {"threads": 2}):
        with pytest.raises(det.DeterminismError, match="determinism"):
            det.settings_from_config(bad)
    with pytest.raises(det.DeterminismError, match=det.ENV_ENABLED):
        det.settings_from_env({det.ENV_ENABLED: "sometimes"})


def test_job_threads_come_from_the_cli_params(tmp_path):
    assert det.threads_from_argv(["train", "--params", json.dumps({"threads": 4, "x": 1})]) == 4
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"threads": 2}))
    assert det.threads_from_argv(["generate", f"--params=@{f}"]) == 2
    assert det.threads_from_argv(["score", "--params", "{}"]) == 1
    assert det.threads_from_argv(["score", "--params", "{not json"]) == 1  # the cli reports it itself
    assert det.threads_from_argv(["--list"]) == 1


# ----------------------------------------------------------------------------- child processes
def _child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLAN_")}
    env.update(extra)
    return env


def _probe(**extra) -> dict:
    proc = subprocess.run([sys.executable, "-m", "agentflan.determinism"], capture_output=True, text=True,
                          env=_child_env(**extra), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout), "stderr": proc.stderr}


@needs_avx2
def test_pins_take_effect_in_a_child_and_override_the_inherited_environment():
    clean = _probe()
    other = _probe(**{**dag_runs.OTHER_MACHINE_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    assert clean["cpu_capability"] == other["cpu_capability"] == "AVX2"
    assert clean["threads"] == other["threads"] == 1
    assert clean["deterministic_algorithms"] and clean["mkldnn_deterministic"]
    assert other["env"]["MKL_CBWR"] == "AVX2,STRICT" and other["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "ATEN_CPU_CAPABILITY=default from the environment replaced by avx2" in other["stderr"]
    assert other["fingerprint"] == clean["fingerprint"]
    # Without the pins the same environment moves bits: the emulation is real.
    unpinned = _probe(**dag_runs.OTHER_MACHINE_ENV, AGENTFLAN_DETERMINISM="0")
    assert unpinned["cpu_capability"] == "DEFAULT"
    assert unpinned["fingerprint"] != clean["fingerprint"]
    # ... and so does MKL's branch alone (ATen as pinned on this AVX2 machine): the MKL pin matters.
    mkl_only = _probe(MKL_CBWR="COMPATIBLE", AGENTFLAN_DETERMINISM="0")
    assert mkl_only["fingerprint"] != clean["fingerprint"]


def test_deterministic_algorithms_switch_on_without_loading_the_compiler_stack():
    """Every job pins deterministic algorithms; doing so must not import torch's compiler stack
    (seconds per job), and inductor, when something loads it later, is deterministic too."""
    code = ("from agentflan import determinism; determinism.pin(1)\n"
            "import sys, json, torch\n"
            "before = sorted(m for m in ('torch._inductor.config', 'torch._dynamo') if m in sys.modules)\n"
            "import torch._inductor.config as ic\n"
            "print(json.dumps({'before': before, 'on': torch.are_deterministic_algorithms_enabled(),\n"
            "  'warn': torch.is_deterministic_algorithms_warn_only_enabled(), 'inductor': ic.deterministic}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"before": [], "on": True, "warn": True, "inductor": True}


def _cli(stage: str, params: dict, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentflan.cli", stage, "--params", json.dumps(params)],
                          capture_output=True, text=True, env=_child_env(**extra), timeout=600)


@needs_avx2
def test_cli_pins_before_torch_so_init_weights_match_across_machines(tmp_path, qa_tokenizer_dir):
    """The real entry point: init_model's ``normal_`` has an AVX2 kernel; under the emulated other
    machine the pinned cli writes the same weights, the unpinned one does not."""
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}

    def init(name, **extra):
        out = tmp_path / name
        proc = _cli("init_model", {"arch": arch, "tokenizer_dir": str(qa_tokenizer_dir), "seed": 0,
                                   "out_dir": str(out)}, **extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(), proc.stderr

    here, log = init("here")
    assert "[determinism] ATen AVX2, MKL_CBWR=AVX2,STRICT, threads 1" in log
    other, other_log = init("other", **dag_runs.OTHER_MACHINE_ENV)
    assert "ATEN_CPU_CAPABILITY=default from the environment replaced by avx2" in other_log
    assert other == here
    unpinned, unpinned_log = init("unpinned", **dag_runs.OTHER_MACHINE_ENV, AGENTFLAN_DETERMINISM="0")
    assert "[determinism]" not in unpinned_log
    assert unpinned != here


def test_cli_refuses_a_bad_determinism_setting_in_one_line(tmp_path):
    proc = _cli("init_model", {"arch": {}, "tokenizer_dir": str(tmp_path), "seed": 0, "out_dir": str(tmp_path / "m")},
                AGENTFLAN_CPU_CAPABILITY="avx512")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: determinism: determinism.cpu_capability")
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- the whole DAG
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reference = dag_runs.reference_run(tmp_path_factory, fast=True)
    other = dag_runs.other_machine_run(tmp_path_factory, fast=True)
    return reference, other


@skip_dag
@pytest.mark.xdist_group("dag")  # the shared runs of tests/dag_runs.py: one worker
def test_another_machine_rebuilds_every_artifact_byte_for_byte(runs):
    (ref_dir, _), other = runs
    assert other.returncode == 0, other.tail
    ref, got = dag_runs.digests(ref_dir), dag_runs.digests(other.workdir)
    # what the issue names, present in both
    for rel in ("data/smoke/tokenizer/tokenizer.json", "results/smoke/models/init-xs/model.safetensors",
                "results/smoke/models/base-xs/model.safetensors",
                "results/smoke/models/agentflan-xs/model.safetensors",
                "results/smoke/eval/agentflan-xs/teval.predictions.jsonl",
                "results/smoke/eval/agentflan-xs/teval.scores.json", "results/smoke/summary/scores.csv",
                "paper_tables/table1.csv", "paper_tables/table1.md", "paper_tables/diff_vs_paper.md",
                "figures/fig1.png", "figures/fig8.png"):
        assert rel in ref and rel in got, rel
    assert sorted(got) == sorted(ref), {"missing": sorted(set(ref) - set(got))[:20],
                                        "extra": sorted(set(got) - set(ref))[:20]}
    differ = sorted(rel for rel in ref if ref[rel] != got[rel])
    assert not differ, f"{len(differ)} of {len(ref)} artifacts differ, first: {differ[:30]}"


@skip_dag
@pytest.mark.xdist_group("dag")  # the shared runs of tests/dag_runs.py: one worker
def test_killed_and_rerun_it_never_leaves_a_half_written_artifact(runs):
    _, other = runs
    hit = {k.phase: k for k in other.kills}
    assert set(hit) == set(dag_runs.KILL_PHASES)
    for phase, kill in hit.items():
        assert kill.running, f"never caught a {phase} job running (kills: {other.kills})"
        assert not kill.malformed, f"half-written artifacts after the kill during {phase}: {kill.malformed}"
        assert not kill.leftovers, f"processes outlived the process-group kill during {phase}: {kill.leftovers}"
    assert other.reruns == len(dag_runs.KILL_PHASES)
    assert other.returncode == 0, other.tail
    final = {rel: why for rel, p in dag_runs.artifact_files(other.workdir).items() if (why := dag_runs.malformed(p))}
    assert not final, final

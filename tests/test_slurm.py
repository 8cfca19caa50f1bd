"""Cluster execution: the SLURM profile's plan for the paper preset, the per-size job resources
checked by snakemake-executor-plugin-slurm's own validation code, and the launcher line at every
scale (one process, one node, several nodes), run for real with torchrun on this CPU."""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agentflan import config as cfg
from agentflan import launch

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"
PY = sys.executable

try:
    import snakemake_executor_plugin_slurm  # noqa: F401
    HAVE_PLUGIN = True
except ImportError:
    HAVE_PLUGIN = False
needs_plugin = pytest.mark.skipif(not HAVE_PLUGIN, reason='needs the slurm extra: pip install -e ".[slurm]"')

# Runs Snakemake's CLI in-process with the dry-run executor's run_job wrapped: every planned job is
# passed through the plugin's submit-side checks (sbatch line, GRES/GPU parsing, slurm_extra) and
# the jobstep's step settings, exactly as the slurm executor would call them on that job object.
PROBE = r'''
import json, sys
from snakemake.executors import dryrun
from snakemake_executor_plugin_slurm.partitions import get_job_cpu_requirement, parse_gpu_requirements
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting

records = []
run_job = dryrun.Executor.run_job

def checked_run_job(self, job):
    rec = {"rule": job.name, "wildcards": dict(job.wildcards.items()),
           "resources": {k: v if isinstance(v, (int, str)) else str(v) for k, v in job.resources.items()}}
    try:
        validate_slurm_extra(job)
        partition = job.resources.get("slurm_partition")
        params = {"run_uuid": "uuid", "slurm_logfile": "slurm.log", "comment_str": "rule_" + job.name,
                  "account": "", "partition": f" -p {partition}" if partition else "", "workdir": "/work"}
        rec["sbatch"] = get_submit_command(job, params) + set_gres_string(job)
        rec["gpus"] = list(parse_gpu_requirements(job))
        rec["cpus"] = list(get_job_cpu_requirement(job))
        gpu_job = bool(job.resources.get("gpu")) or "gpu" in job.resources.get("gres", "")
        rec["step"] = " ".join([get_cpu_setting(job, gpu_job), get_gpu_setting(job), get_node_setting(job)])
    except Exception as exc:  # recorded, the test fails on it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    records.append(rec)
    return run_job(self, job)

dryrun.Executor.run_job = checked_run_job
from snakemake.cli import main
try:
    main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as fh:
        json.dump(records, fh, sort_keys=True)
'''


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory):
    """`snakemake -n -p --profile profiles/slurm --configfile config/paper.yaml`, with every planned
    job checked by the plugin's validation code."""
    tmp = tmp_path_factory.mktemp("slurm")
    probe = tmp / "probe.py"
    probe.write_text(PROBE)
    work = tmp / "work"
    work.mkdir()
    records = tmp / "jobs.json"
    proc = subprocess.run([PY, str(probe), str(records), "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(work), "-n", "-p", "--profile", str(ROOT / "profiles" / "slurm"),
                           "--configfile", str(PAPER)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, json.loads(records.read_text())


def _plan_jobs(out):
    """(rule, wildcards line, resources line, shell command) of every job the dry run printed."""
    jobs = []
    for block in re.split(r"^rule ", out, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        fields = dict(re.findall(r"^    (wildcards|resources): (.*)$", block, flags=re.M))
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        jobs.append((rule, fields.get("wildcards", ""), fields.get("resources", ""), shell.group(1) if shell else ""))
    return jobs


@needs_plugin
def test_slurm_dry_run_shows_gpus_nodes_and_multinode_launch(slurm_plan):
    out, _ = slurm_plan
    paper = cfg.load_config(PAPER)
    finetunes = [j for j in _plan_jobs(out) if j[0] == "finetune"]
    assert len(finetunes) == sum(1 for m in cfg.model_ids(paper)
                                 if not m.startswith("base-") and m not in cfg.evaluated_only_ids(paper))
    expected = {"7b": 2, "13b": 4, "70b": 16}
    seen = set()
    for _, wildcards, resources, shell in finetunes:
        size = re.search(r"size=(\w+)", wildcards).group(1)
        nodes = expected[size]
        seen.add(size)
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        assert (res["nodes"], res["tasks"], res["gres"], res["mpi"]) == (str(nodes), str(nodes), "gpu:8", "srun")
        assert "slurm_extra" not in res and "gpus" not in res
        # (bash, not shlex, reads the nested quotes of the endpoint: see the tests that run this line)
        assert shell.startswith(
            f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=32 "
            f"--gres=gpu:8 {PY} -m torch.distributed.run --nnodes={nodes} --nproc_per_node=8 "
            '--rdzv_backend=c10d --rdzv_id="$SLURM_JOB_ID" --rdzv_endpoint="$(scontrol show hostnames '
            '"${SLURM_JOB_NODELIST:-$(squeue --noheader --jobs="$SLURM_JOB_ID" --format=%N)}" | head -n1):29500" '
            "-m agentflan.cli train --params '{"), shell
        dataset = re.search(r"dataset=(\w+)", wildcards).group(1)
        assert shell.endswith(f"> logs/paper/train/{dataset}-{size}.log 2>&1")
    assert seen == set(expected)
    generates = [j for j in _plan_jobs(out) if j[0] == "generate"]
    assert len(generates) == len(cfg.model_ids(paper))
    for _, _, resources, shell in generates:
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        assert (res["nodes"], res["gres"]) == ("1", "gpu:1") and "mpi" not in res
        assert shell.startswith(f"{PY} -m agentflan.cli generate ")


@needs_plugin
def test_every_planned_job_passes_the_plugins_validation(slurm_plan):
    _, records = slurm_plan
    assert len(records) > 50
    errors = [(r["rule"], r["wildcards"], r["error"]) for r in records if "error" in r]
    assert not errors, errors
    paper = cfg.load_config(PAPER)
    for rec in records:
        sbatch, res = rec["sbatch"], rec["resources"]
        assert "-p gpu" in sbatch and f"-t {res['runtime']}" in sbatch and f"--mem {res['mem_mb']}" in sbatch
        if rec["rule"] == "finetune":
            spec = paper["training"]["resources"][rec["wildcards"]["size"]]
            n = spec["nodes"]
            assert f"--nodes={n}" in sbatch and f"--ntasks={n}" in sbatch and "--gres=gpu:8" in sbatch
            assert f"--cpus-per-task={spec['cpus_per_task']}" in sbatch and f"--mem {spec['mem_mb']}" in sbatch
            assert "--ntasks-per-gpu" not in sbatch and "--gpus" not in sbatch
            assert rec["gpus"] == [8, None] and rec["cpus"] == [spec["cpus_per_task"], "task"]
        elif rec["rule"] in ("generate", "generate_extra", "harness"):   # evaluation.resources
            spec = paper["evaluation"]["resources"][rec["wildcards"]["model"].rsplit("-", 1)[1]]
            assert "--nodes=1" in sbatch and "--gres=gpu:1" in sbatch and "--ntasks" not in sbatch
            assert f"-t {spec['runtime']}" in sbatch and f"--mem {spec['mem_mb']}" in sbatch
            assert rec["gpus"] == [1, None] and "--nodes=1" in rec["step"]
        else:  # CPU jobs: the profile's cluster-wide defaults, no GPU
            assert "gres" not in sbatch and "--ntasks=1" in sbatch and "--cpus-per-task=4" in sbatch
            assert rec["gpus"] == [0, None]
    assert {r["rule"] for r in records} >= {"finetune", "generate", "score", "fetch", "ablation", "harness",
                                           "generate_extra", "score_extra"}


@needs_plugin
def test_plugin_validation_rejects_what_the_old_profile_did():
    """The checks above can fail: GRES in slurm_extra (the old profile) and a malformed gres."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
    from snakemake_interface_common.exceptions import WorkflowError

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        def __init__(self, **res):
            self.resources = Resources(res)

    with pytest.raises(WorkflowError, match="generic resources"):
        validate_slurm_extra(Job(slurm_extra="--gres=gpu:8 --exclusive"))
    with pytest.raises(WorkflowError, match="GRES"):
        set_gres_string(Job(gres="'gpu:8'"))
    assert set_gres_string(Job(gres="gpu:8")) == " --gres=gpu:8"


def test_profile_has_no_per_size_overrides():
    import yaml
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert "set-resources" not in profile
    assert not {"nodes", "gres", "gpu", "gpus", "tasks", "slurm_extra"} & set(profile["default-resources"])


# ----------------------------------------------------------------------------- resources from config
def test_job_resources_per_scale():
    spec = dict(launch._defaults())
    assert launch.job_resources(spec, threads=3) == {
        "nodes": 1, "tasks": 1, "tasks_per_gpu": None, "mpi": None, "gres": None, "cpus_per_task": 3,
        "mem_mb": 4000, "runtime": 120}
    one = launch.job_resources({**spec, "gpus_per_node": 1, "cpus_per_task": 8}, threads=1)
    assert (one["gres"], one["tasks"], one["tasks_per_gpu"], one["mpi"], one["cpus_per_task"]) == ("gpu:1", 1, 0, None, 8)
    multi = launch.job_resources({**spec, "nodes": 4, "gpus_per_node": 8, "gpu_model": "a100"}, threads=1)
    assert (multi["nodes"], multi["tasks"], multi["gres"], multi["mpi"]) == (4, 4, "gpu:a100:8", "srun")


def test_paper_sizes_and_the_miniature():
    paper = cfg.load_config(PAPER)
    got = {s: launch.job_resources(launch.size_resources(paper, "training", s), 1) for s in cfg.sizes(paper)}
    assert {s: (r["nodes"], r["gres"]) for s, r in got.items()} == {
        "7b": (2, "gpu:8"), "13b": (4, "gpu:8"), "70b": (16, "gpu:8")}
    # host memory per node: ZeRO-2 ranks each load a bf16 copy of the model; ZeRO-3 ranks load one
    # ~10 GB checkpoint shard at a time under zero.Init and the first node gathers the bf16 model
    for size, params_b in (("7b", 6.7), ("13b", 13.0), ("70b", 69.0)):
        stage = 3 if cfg.training_recipe(paper, size)["deepspeed"].endswith("zero3.json") else 2
        need_gb = 8 * 2 * params_b if stage == 2 else 8 * 10 + 2 * params_b
        assert got[size]["mem_mb"] > 1.2 * need_gb * 1000, size
    mini = cfg.load_config(ROOT / "config" / "config.yaml")
    for size in cfg.sizes(mini):
        for section in ("training", "evaluation"):
            res = launch.job_resources(launch.size_resources(mini, section, size), mini["threads_per_job"])
            assert res["gres"] is None and res["nodes"] == 1 and res["mpi"] is None
        assert launch.train_launcher(mini, size, PY) == shlex.quote(PY)


def test_bad_resource_config_is_refused():
    paper = cfg.load_config(PAPER)
    paper["training"]["resources"]["7B"] = {"nodes": 1}
    with pytest.raises(ValueError, match=r"training\.resources\.7B: no such size"):
        launch.check_resources(paper)
    paper = cfg.load_config(PAPER)
    paper["evaluation"]["resources"]["7b"]["nodes"] = 2
    with pytest.raises(ValueError, match=r"evaluation\.resources\.7b\.nodes is 2"):
        launch.check_resources(paper)
    with pytest.raises(Exception, match="'gpus' was unexpected"):  # the old key is not silently ignored
        cfg.load_config(PAPER, {"training": {"resources": {"7b": {"gpus": 8}}}})


def _with_preset(name):
    """config/paper.yaml followed by a preset file, merged the way Snakemake merges --configfile."""
    import yaml
    from snakemake.utils import update_config
    config = yaml.safe_load(PAPER.read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return cfg.validate(config)


def test_one_machine_presets():
    one_gpu, one_node = _with_preset("paper-1gpu.yaml"), _with_preset("paper-1node.yaml")
    for size in ("7b", "13b", "70b"):
        assert launch.train_launcher(one_gpu, size, PY) == PY
        assert cfg.training_recipe(one_gpu, size)["deepspeed"] is None
        assert launch.train_launcher(one_node, size, PY) == \
            f"{PY} -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=8"
        assert cfg.training_recipe(one_node, size) == cfg.training_recipe(cfg.load_config(PAPER), size)
    assert cfg.training_recipe(one_gpu, "70b")["batch_size"] == 128  # the rest of the recipe stays


# ----------------------------------------------------------------------------- the launcher
ONE_NODE = {"nodes": 1, "gpus_per_node": 8, "cpus_per_task": 32}


def test_launcher_one_process():
    spec = dict(launch._defaults())
    assert launch.render_launcher({"kind": "python"}, spec, PY) == PY
    assert launch.render_launcher({"kind": "python"}, ONE_NODE, PY) == PY  # one process even with 8 GPUs
    assert launch.render_launcher({"kind": "torchrun", "nproc_per_node": None}, spec, PY) == PY
    with pytest.raises(ValueError, match="kind: torchrun"):
        launch.render_launcher({"kind": "python"}, {**ONE_NODE, "nodes": 2}, PY)


def test_launcher_one_node():
    assert launch.render_launcher({"kind": "torchrun", "nproc_per_node": None}, ONE_NODE, PY) == \
        f"{PY} -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=8"
    cpu = {"nodes": 1, "gpus_per_node": 0, "cpus_per_task": None}
    assert launch.render_launcher({"kind": "torchrun", "nproc_per_node": 2}, cpu, PY) == \
        f"{PY} -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=2"


def test_launcher_several_nodes():
    line = launch.render_launcher({"kind": "torchrun", "nproc_per_node": None, "rdzv_port": 29511},
                                  {**ONE_NODE, "nodes": 4}, PY)
    assert line == (
        f"srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=32 --gres=gpu:8 "
        f"{PY} -m torch.distributed.run --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d "
        '--rdzv_id="$SLURM_JOB_ID" --rdzv_endpoint="$(scontrol show hostnames '
        '"${SLURM_JOB_NODELIST:-$(squeue --noheader --jobs="$SLURM_JOB_ID" --format=%N)}" | head -n1):29511"')


def _fake_slurm(bin_dir: Path, log: Path, spawn: bool):
    """srun/scontrol/squeue stand-ins on PATH. srun logs its options and, with spawn, starts its
    command once per node (SLURM_NODEID etc. set, as srun does); scontrol and squeue log their
    arguments; the first host is localhost, so a rendezvous there works on this machine."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'''#!{PY}
import json, os, subprocess, sys
args = sys.argv[1:]
i = next(k for k, a in enumerate(args) if not a.startswith("--"))
opts, cmd = args[:i], args[i:]
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{"srun": opts, "cmd": cmd}}) + "\\n")
nodes = int(next(o for o in opts if o.startswith("--nodes=")).split("=")[1])
if not {spawn!r}:
    sys.exit(0)
procs = [subprocess.Popen(cmd, env={{**os.environ, "SLURM_NODEID": str(n), "SLURM_PROCID": str(n),
                                    "SLURM_NNODES": str(nodes)}}) for n in range(nodes)]
sys.exit(max(p.wait() for p in procs))
''')
    (bin_dir / "scontrol").write_text(f'''#!{PY}
import json, sys
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{"scontrol": sys.argv[1:]}}) + "\\n")
assert sys.argv[1:3] == ["show", "hostnames"] and sys.argv[3], sys.argv
print("localhost")
print("node-b")
''')
    (bin_dir / "squeue").write_text(f'''#!{PY}
import json, sys
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{"squeue": sys.argv[1:]}}) + "\\n")
print("localhost,node-b")
''')
    for name in ("srun", "scontrol", "squeue"):
        (bin_dir / name).chmod(0o755)


def _bash(cmd: str, env: dict, cwd: Path, timeout=300):
    """Run a rule-like command the way Snakemake does (bash strict mode)."""
    return subprocess.run(["bash", "-c", f"set -euo pipefail; {cmd}"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _log(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_multinode_line_expands_under_bash_strict_mode(tmp_path):
    """Inside the job the jobstep drops SLURM_JOB_NODELIST: the first host then comes from squeue."""
    log = tmp_path / "calls.jsonl"
    _fake_slurm(tmp_path / "bin", log, spawn=False)
    line = launch.render_launcher({"kind": "torchrun", "rdzv_port": 29500}, {**ONE_NODE, "nodes": 2}, PY)
    cmd = f"{line} -m agentflan.cli train --params '{{\"a\": 1}}'"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    base.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="4242")
    proc = _bash(cmd, base, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = _log(log)
    assert calls[0] == {"squeue": ["--noheader", "--jobs=4242", "--format=%N"]}
    assert calls[1] == {"scontrol": ["show", "hostnames", "localhost,node-b"]}
    srun = calls[2]
    assert srun["srun"][:3] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1"]
    assert srun["cmd"][:3] == [PY, "-m", "torch.distributed.run"]
    assert "--rdzv_id=4242" in srun["cmd"] and "--rdzv_endpoint=localhost:29500" in srun["cmd"]
    assert srun["cmd"][-5:] == ["-m", "agentflan.cli", "train", "--params", '{"a": 1}']
    # with the variable set (plain sbatch), squeue is not asked
    log.unlink()
    proc = _bash(cmd, {**base, "SLURM_JOB_NODELIST": "localhost,node-[b-c]"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = _log(log)
    assert calls[0] == {"scontrol": ["show", "hostnames", "localhost,node-[b-c]"]} and "squeue" not in calls[1]


RANK_PROBE = '''
import json, os, sys
from pathlib import Path
import torch
import torch.distributed as dist
dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")  # as the trainer picks it
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
info = {"rank": dist.get_rank(), "world": dist.get_world_size(), "backend": dist.get_backend(), "sum": t.item(),
        "local_rank": int(os.environ["LOCAL_RANK"]), "group_rank": int(os.environ["GROUP_RANK"]),
        "args": sys.argv[1:]}
Path(sys.argv[1], f"rank{dist.get_rank()}.json").write_text(json.dumps(info, sort_keys=True))
dist.destroy_process_group()
'''


def _ranks(out: Path):
    return sorted((json.loads(p.read_text()) for p in out.glob("rank*.json")), key=lambda r: r["rank"])


def test_one_node_line_runs_two_cpu_ranks_with_gloo(tmp_path):
    (tmp_path / "rankprobe.py").write_text(RANK_PROBE)
    out = tmp_path / "out"
    out.mkdir()
    line = launch.render_launcher({"kind": "torchrun", "nproc_per_node": 2},
                                  {"nodes": 1, "gpus_per_node": 0, "cpus_per_task": None}, PY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = _bash(f"{line} -m rankprobe {out} > {tmp_path / 'run.log'} 2>&1", env, tmp_path)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    ranks = _ranks(out)
    assert [(r["rank"], r["world"], r["local_rank"], r["backend"], r["sum"]) for r in ranks] == [
        (0, 2, 0, "gloo", 3.0), (1, 2, 1, "gloo", 3.0)]


def test_multinode_line_meets_at_a_c10d_rendezvous(tmp_path):
    """The rendered srun + torchrun line over two (simulated) nodes, one CPU rank each: both torchrun
    agents meet at the endpoint on the first host and form one gloo group of world size 2."""
    (tmp_path / "rankprobe.py").write_text(RANK_PROBE)
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "calls.jsonl"
    _fake_slurm(tmp_path / "bin", log, spawn=True)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    line = launch.render_launcher({"kind": "torchrun", "nproc_per_node": 1, "rdzv_port": port},
                                  {"nodes": 2, "gpus_per_node": 0, "cpus_per_task": 1}, PY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="77", PYTHONPATH=str(tmp_path),
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = _bash(f"{line} -m rankprobe {out} > {tmp_path / 'run.log'} 2>&1", env, tmp_path)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    ranks = _ranks(out)
    assert [(r["rank"], r["world"], r["local_rank"], r["backend"], r["sum"]) for r in ranks] == [
        (0, 2, 0, "gloo", 3.0), (1, 2, 0, "gloo", 3.0)]
    assert sorted(r["group_rank"] for r in ranks) == [0, 1]
    assert f"--rdzv_endpoint=localhost:{port}" in _log(log)[-1]["cmd"]

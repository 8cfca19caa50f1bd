"""Job resources and process launch of the GPU rules (``finetune``, ``generate``), from config.

Two things a cluster run needs, computed here from ``training.resources``/``evaluation.resources``
(per model size) and ``training.launcher``, so that every scale uses the same code and a SLURM
profile carries no per-size settings:

* :func:`job_resources`: the rule's Snakemake resources, in the keys that
  snakemake-executor-plugin-slurm reads (``nodes``, ``tasks``, ``gres``, ``cpus_per_task``,
  ``mem_mb``, ``runtime``; ``tasks_per_gpu`` and ``mpi`` steer its task geometry, see there). A key
  whose value is ``None`` is left out of the job by Snakemake, so a CPU-only job asks for no GPU.
* :func:`render_launcher`: what starts ``-m agentflan.cli <stage>``:

  - one process: the Python interpreter itself;
  - one node, N processes (GPUs, or CPU processes with the gloo backend):
    ``torchrun --standalone --nnodes=1 --nproc_per_node=N``;
  - several SLURM nodes: ``srun`` starts one torchrun per node; they meet at a c10d rendezvous on
    the job's first host.

torchrun is spelled ``<python> -m torch.distributed.run`` (the same program as the ``torchrun``
script), so the launcher runs under the interpreter that runs Snakemake, like every other rule.

Inside a SLURM job the slurm-jobstep executor runs the rule's shell command with every ``SLURM_*``
variable removed except the job id (snakemake-executor-plugin-slurm-jobstep 0.6), so the multi-node
line takes the node count from config (the allocation was requested with it) and recovers the node
list from ``squeue`` when ``$SLURM_JOB_NODELIST`` is not set.
"""
from __future__ import annotations

import shlex
from functools import lru_cache

import yaml

from .config import SCHEMA_PATH

SECTIONS = ("training", "evaluation")


@lru_cache(maxsize=1)
def _defaults() -> tuple[tuple[str, object], ...]:
    """Defaults of one size's resources, read from the config schema (the one place they live)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    props = schema["properties"]["training"]["properties"]["resources"]["additionalProperties"]["properties"]
    return tuple((key, spec["default"]) for key, spec in props.items())


def size_resources(config: dict, section: str, size: str) -> dict:
    """``<section>.resources.<size>`` with the schema's defaults filled in."""
    if section not in SECTIONS:
        raise ValueError(f"resources live under one of {SECTIONS}, not {section!r}")
    spec = dict(_defaults())
    spec.update(config[section].get("resources", {}).get(size) or {})
    return spec


def check_resources(config: dict) -> None:
    """Reject resources for a size that models.sizes does not have (a typo would silently give
    that size the one-node, no-GPU defaults) and multi-node generation (one process)."""
    sizes = sorted(config["models"]["sizes"])
    for section in SECTIONS:
        for size in config[section].get("resources") or {}:
            if size not in sizes:
                raise ValueError(f"config {section}.resources.{size}: no such size in models.sizes {sizes}")
    for size in sizes:
        nodes = size_resources(config, "evaluation", size)["nodes"]
        if nodes != 1:
            raise ValueError(f"config evaluation.resources.{size}.nodes is {nodes}: generation is one "
                             f"process on one node")


def job_resources(spec: dict, threads: int) -> dict:
    """Snakemake resources of one job from one size's resource spec (see the schema).

    ``tasks`` is one launcher task per node. The plugin turns ``tasks`` of a GPU job into
    ``--ntasks-per-gpu`` unless ``tasks_per_gpu`` is set, so GPU jobs set ``tasks_per_gpu=0`` (no
    such flag). Multi-node jobs set ``mpi="srun"``: the plugin then submits ``--ntasks=<nodes>`` and
    its jobstep runs the shell command directly on the first node instead of inside
    ``srun -n1 --nodes=1``, and the command's own ``srun`` starts one task on every node.
    """
    nodes = int(spec["nodes"])
    gpus = int(spec["gpus_per_node"])
    gres = None
    if gpus:
        gres = f"gpu:{spec['gpu_model']}:{gpus}" if spec.get("gpu_model") else f"gpu:{gpus}"
    return {
        "nodes": nodes,
        "tasks": nodes,
        "tasks_per_gpu": 0 if gpus else None,
        "mpi": "srun" if nodes > 1 else None,
        "gres": gres,
        "cpus_per_task": int(spec["cpus_per_task"] or threads),
        "mem_mb": int(spec["mem_mb"]),
        "runtime": int(spec["runtime"]),
    }


def processes_per_node(launcher: dict, spec: dict) -> int:
    """Ranks per node: launcher.nproc_per_node, else the size's GPUs per node (at least 1)."""
    if launcher.get("kind", "python") == "python":
        return 1
    return int(launcher.get("nproc_per_node") or spec["gpus_per_node"] or 1)


def first_host_expr() -> str:
    """Bash expression of the job's first host (where the rendezvous store runs)."""
    nodelist = '"${SLURM_JOB_NODELIST:-$(squeue --noheader --jobs="$SLURM_JOB_ID" --format=%N)}"'
    return f'$(scontrol show hostnames {nodelist} | head -n1)'


def render_launcher(launcher: dict, spec: dict, python: str, threads: int = 1) -> str:
    """The command that precedes ``-m agentflan.cli <stage> ...`` for one size.

    ``launcher`` is training.launcher, ``spec`` the size's resources (:func:`size_resources`),
    ``python`` the interpreter, ``threads`` the rule's threads (CPUs per node when the spec has no
    cpus_per_task, as in :func:`job_resources`). The result is a bash command prefix, not a
    Snakemake format string (its braces are not escaped).
    """
    kind = launcher.get("kind", "python")
    if kind not in ("python", "torchrun"):
        raise ValueError(f"training.launcher.kind must be 'python' or 'torchrun', not {kind!r}")
    nodes = int(spec["nodes"])
    nproc = processes_per_node(launcher, spec)
    py = shlex.quote(python)
    if nodes == 1 and nproc == 1:
        return py
    if kind == "python":
        raise ValueError(f"{nodes} nodes need training.launcher.kind: torchrun (kind 'python' starts one process)")
    torchrun = f"{py} -m torch.distributed.run"
    if nodes == 1:
        return f"{torchrun} --standalone --nnodes=1 --nproc_per_node={nproc}"
    gpus = int(spec["gpus_per_node"])
    # the step's own CPUs and GPUs: the jobstep removed the SLURM_* defaults it would inherit
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            f"--cpus-per-task={int(spec.get('cpus_per_task') or threads)}"]
    if gpus:
        srun.append(f"--gres=gpu:{gpus}")
    port = int(launcher.get("rdzv_port", 29500))
    return " ".join(srun + [
        torchrun, f"--nnodes={nodes}", f"--nproc_per_node={nproc}", "--rdzv_backend=c10d",
        '--rdzv_id="$SLURM_JOB_ID"', f'--rdzv_endpoint="{first_host_expr()}:{port}"'])


def train_launcher(config: dict, size: str, python: str) -> str:
    """The launcher of ``finetune`` for one size."""
    return render_launcher(config["training"]["launcher"], size_resources(config, "training", size), python,
                           threads=config["threads_per_job"])

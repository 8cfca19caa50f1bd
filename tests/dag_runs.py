"""Real Snakemake runs of the reduced smoke config, shared by the test files of one pytest process.

Each run takes minutes on 2 CPU cores, so the runs are made once per process and cached here:
``reference_run(fast=True)``, the whole DAG of the fast config (one epoch, small evaluation sets,
model-facing jobs in the warm interpreter), on which tests/test_dag.py, tests/test_determinism.py and tests/test_bundle.py all assert;
:func:`other_machine_run`, the same fast config from scratch in another directory, under an
environment that emulates another machine, every job started cold, SIGKILLed and rerun at four points (determinism and kill
checks need no learning); and :func:`learning_run`, the smoke config's full recipes run only as far
as the scores of the models whose learning tests/test_dag.py checks (pretraining, two fine-tunes).
The cache is per process: every test that uses the fast reference or the other-machine run carries
``xdist_group("dag")`` so that pytest-xdist (pyproject.toml: two workers) gives them all to one
worker; the learning run's tests carry ``xdist_group("learning")`` (it shares nothing with them).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN = "smoke"
TIMEOUT_S = 1800
_CACHE: dict[str, object] = {}

# What another x86-64 machine looks like to torch, MKL and oneDNN: other dispatch levels, another
# thread count, another temporary directory (the working directory differs as well).
OTHER_MACHINE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "AUTO",
                     "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Kill points of the second run, in DAG order: (phase, which running job's output marks it).
KILL_PHASES = ("data", "train", "generate", "report")


def smoke_config(workdir: Path, fast: bool = False, warm: bool = True) -> Path:
    """The embedded miniature at one model size and one data fraction; tables/figures inside workdir.

    ``fast``: the same DAG with one epoch of pretraining and fine-tuning and small evaluation sets, for
    the determinism and kill tests, which need two runs of the same config but no learning (CI time).
    ``warm``: model-facing jobs start from the warm interpreter (agentflan.warm, on in the miniature);
    the other-machine run turns it off, so the byte-for-byte comparison also covers warm against cold."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["run"] = RUN
    main = config["models"]["main_size"]
    config["models"]["sizes"] = {main: config["models"]["sizes"][main]}
    config.setdefault("ablations", {})["fractions"] = [0.25]
    config["tables_dir"] = str(workdir / "paper_tables")
    config["figures_dir"] = str(workdir / "figures")
    config["warm_interpreter"] = bool(warm)
    if fast:
        config["models"]["pretrain"]["recipe"]["epochs"] = 1
        config["training"]["default"]["epochs"] = 1
        config["data"]["miniworld"]["scale"] = {"mmlu": 10, "gsm8k": 10, "humaneval": 5}
        config["evaluation"]["generation"]["max_new_tokens"] = 32
    path = workdir / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_cmd(workdir: Path, cfg: Path, *extra: str, targets: tuple[str, ...] = ()) -> list[str]:
    # targets before --configfile, which takes every following word that is not an option
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--cores", "2", *targets, "--configfile", str(cfg), *extra]


def dry_run(workdir: Path, *args: str) -> str:
    """``snakemake -n -p`` of the Snakefile in ``workdir`` (args: --configfile etc.); its stdout."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "-n", "-p", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLAN_")}
    env.update(extra or {})
    return env


def snakemake(workdir: Path, cfg: Path, *extra: str, env: dict | None = None,
              targets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # cwd=ROOT as for a user: the workflow profile (profiles/default: rerun-incomplete) applies.
    return subprocess.run(snakemake_cmd(workdir, cfg, *extra, targets=targets), capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=ROOT, env=env if env is not None else _clean_env())


def reference_run(tmp_path_factory, fast: bool = False) -> tuple[Path, Path]:
    """The plain smoke run (made once per process and config): (workdir, config path)."""
    key = "reference-fast" if fast else "reference"
    if key not in _CACHE:
        workdir = tmp_path_factory.mktemp("dag-fast" if fast else "dag")
        cfg = smoke_config(workdir, fast)
        t0 = time.time()
        proc = snakemake(workdir, cfg)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        print(f"[dag_runs] {key} run: {time.time() - t0:.0f}s", file=sys.stderr)
        _CACHE[key] = (workdir, cfg)
    return _CACHE[key]


#: The models whose scores the learning checks compare (tests/test_dag.py), by data set.
LEARNING_DATASETS = ("base", "agentflan", "agentflan_wo_ns")


def learning_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """The smoke config with its full recipes, run to the scores of LEARNING_DATASETS at the main size
    only (the rest of the DAG is the fast reference run's): (workdir, config path, main size)."""
    if "learning" not in _CACHE:
        workdir = tmp_path_factory.mktemp("dag-learning")
        cfg = smoke_config(workdir)
        config = yaml.safe_load(cfg.read_text())
        size = config["models"]["main_size"]
        # every benchmark all models run (not ScienceWorld, run for Table 1's models only)
        from agentflan.config import BENCHMARKS
        targets = tuple(f"results/{RUN}/eval/{d}-{size}/{b}.scores.json"
                        for d in LEARNING_DATASETS for b in BENCHMARKS)
        t0 = time.time()
        proc = snakemake(workdir, cfg, targets=targets)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        print(f"[dag_runs] learning run: {time.time() - t0:.0f}s", file=sys.stderr)
        _CACHE["learning"] = (workdir, cfg, size)
    return _CACHE["learning"]


# ----------------------------------------------------------------------------- artifacts
def artifact_files(workdir: Path) -> dict[str, Path]:
    """Every data/result artifact, table and figure of a run, by path relative to workdir. Left out:
    logs and benchmarks (times), Snakemake's state, temporary files of atomic writes, training
    checkpoints and generation's resume side files (``*.partial.jsonl``, append-only with a torn
    last line allowed by design, removed when the job completes): none of them is an output. Nor is
the results bundle (``snakemake bundle``, not part of the default target), which
tests/test_bundle.py may have added to the shared reference run."""
    out = {}
    for top in (f"data/{RUN}", f"results/{RUN}", "paper_tables", "figures"):
        base = workdir / top
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(workdir)
            if not p.is_file() or any(part.startswith(".") or part.endswith(".tmp") for part in rel.parts):
                continue
            if rel.parts[:3] in (("results", RUN, "checkpoints"), ("results", RUN, "bundle")) \
                    or p.name.endswith(".partial.jsonl"):
                continue
            out[str(rel)] = p
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digests(workdir: Path) -> dict[str, str]:
    return {rel: sha256(p) for rel, p in artifact_files(workdir).items()}


def malformed(path: Path) -> str | None:
    """Why ``path`` looks half-written (None if it is whole): JSON, JSON lines, safetensors and PNG
    files are checked structurally."""
    data = path.read_bytes()
    name = path.name
    try:
        if name.endswith(".jsonl"):
            if data and not data.endswith(b"\n"):
                return "JSON lines file does not end with a newline"
            for line in data.decode("utf-8").splitlines():
                if line.strip():
                    json.loads(line)
        elif name.endswith(".json"):
            json.loads(data.decode("utf-8"))
        elif name.endswith(".safetensors"):
            if len(data) < 8:
                return "shorter than a safetensors header"
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + n].decode("utf-8"))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end != len(data):
                return f"safetensors size {len(data)} != header {8 + n + end}"
        elif name.endswith(".png"):
            if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")):
                return "PNG without signature or IEND chunk"
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ----------------------------------------------------------------------------- the second run
def running_outputs(workdir: Path) -> list[str]:
    """Outputs of the jobs Snakemake has running now (its incomplete markers, base64 file names)."""
    inc = workdir / ".snakemake" / "incomplete"
    out = []
    if not inc.exists():
        return out
    for p in inc.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(inc).parts
        b64 = "".join(s.lstrip("@") for s in rel)
        try:
            out.append(base64.urlsafe_b64decode(b64.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def _phase_running(workdir: Path, phase: str) -> str | None:
    """The output that shows ``phase`` under way now, or None."""
    for out in running_outputs(workdir):
        path = out if os.path.isabs(out) else str(workdir / out)
        rel = os.path.relpath(path, workdir)
        if phase == "data" and rel.startswith(f"data/{RUN}/"):
            return rel
        if phase == "train" and rel.startswith(f"results/{RUN}/train/") and rel.endswith("metrics.jsonl"):
            model = rel.split("/")[3]
            log = workdir / "logs" / RUN / "train" / f"{model}.log"
            # a training step has been logged (tqdm progress): the job is mid-training
            if log.exists() and any(s in log.read_text(errors="replace") for s in ("it/s]", "s/it]")):
                return rel
        if phase == "generate" and rel.startswith(f"results/{RUN}/eval/") and rel.endswith(".predictions.jsonl"):
            return rel
        if phase == "report" and rel.split("/")[0] in ("paper_tables", "figures"):
            return rel
    return None


def _our_leftovers(workdir: Path) -> list[int]:
    """Processes still running in workdir after the kill (jobs that left the process group)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd").startswith(str(workdir)):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@dataclass
class Kill:
    phase: str
    running: str | None  # the output being produced when the kill came (None: phase never seen)
    seconds: float
    malformed: dict = field(default_factory=dict)  # artifact -> why it is half-written
    leftovers: list = field(default_factory=list)


@dataclass
class OtherMachineRun:
    workdir: Path
    cfg: Path
    kills: list
    reruns: int
    returncode: int
    tail: str


def other_machine_run(tmp_path_factory, fast: bool = True) -> OtherMachineRun:
    """The same config as ``reference_run(fast=fast)`` from scratch in another (longer) directory under
    OTHER_MACHINE_ENV and another TMPDIR; the whole Snakemake process group is SIGKILLed once in each of
    KILL_PHASES, and the same command is rerun (after ``--unlock``) until it completes."""
    if "other" in _CACHE:
        return _CACHE["other"]
    workdir = tmp_path_factory.mktemp("another-machine-with-a-longer-working-directory-path")
    tmpdir = tmp_path_factory.mktemp("other-tmpdir")
    cfg = smoke_config(workdir, fast, warm=False)
    env = _clean_env({**OTHER_MACHINE_ENV, "TMPDIR": str(tmpdir)})
    kills, reruns, deadline = [], 0, time.time() + 2 * TIMEOUT_S
    phases = list(KILL_PHASES)
    proc = None
    while True:
        if reruns:
            subprocess.run(snakemake_cmd(workdir, cfg, "--unlock"), cwd=ROOT, env=env, capture_output=True,
                           timeout=300)
        log = open(workdir / f"snakemake-{reruns}.out", "w")
        proc = subprocess.Popen(snakemake_cmd(workdir, cfg), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        killed = False
        while proc.poll() is None and time.time() < deadline:
            if phases:
                hit = _phase_running(workdir, phases[0])
                if hit:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    time.sleep(0.5)
                    leftovers = _our_leftovers(workdir)
                    for pid in leftovers:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    bad = {rel: why for rel, p in artifact_files(workdir).items() if (why := malformed(p))}
                    kills.append(Kill(phases.pop(0), hit, round(time.time() - t0, 1), bad, leftovers))
                    killed = True
                    break
            time.sleep(0.05)
        log.close()
        if proc.poll() is None:  # deadline
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        if not killed:
            break  # completed, failed or out of time: reported as it is
        reruns += 1
    kills += [Kill(ph, None, 0.0) for ph in phases]
    tail = (workdir / f"snakemake-{reruns}.out").read_text(errors="replace")[-4000:]
    _CACHE["other"] = OtherMachineRun(workdir, cfg, kills, reruns, proc.returncode, tail)
    return _CACHE["other"]

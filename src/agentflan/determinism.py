"""Bit-for-bit CPU runs on every x86-64 machine of our kind: kernel-dispatch pins applied by the package.

Why (issue 10): PyTorch picks its ATen kernels (``ATEN_CPU_CAPABILITY``) and MKL its BLAS code path
(``MKL_CBWR``) from the CPU it finds. On an AVX-512 machine both take wider vectors than on an AVX2
one; the sums run in another order and the last bits differ. Measured on the AVX2 machine the
committed tables come from (a 50-step pretraining run of the ``xs`` model, sha256 of the weights):

* ``ATEN_CPU_CAPABILITY=default`` changes the init weights (``normal_`` has an AVX2 kernel) and
  every training step;
* ``MKL_CBWR=COMPATIBLE`` changes the training run (fp32 matmuls are MKL ``sgemm``);
  ``MKL_CBWR=AVX2,STRICT`` gives the default's bits here (AMD: MKL runs AUTO);
* ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, ``ONEDNN_MAX_CPU_ISA=SSE41`` and 1 vs 2 threads did not change
  these bits here; the tokenizer (Rust, any thread count) never changed.

What :func:`pin_environment` sets, overriding whatever the user's environment says (a different
machine is nothing but a different environment to these libraries):

* ``ATEN_CPU_CAPABILITY=avx2``: the common level of our machines. ATen reads it at the first
  dispatch; a CPU without AVX2+FMA is refused (the kernels would die with SIGILL) unless
  ``determinism.cpu_capability`` is ``default`` (scalar kernels; reproducible only among machines
  that also run ``default``) or ``native`` (no pin, the old behaviour).
* ``MKL_CBWR=AVX2,STRICT`` (default): MKL's conditional numerical reproducibility branch for AVX2,
  strict. MKL guarantees the same bits on every Intel CPU with AVX2 (AVX-512/AMX machines included)
  for it. MKL documents that branches other than AUTO and COMPATIBLE exist only on Intel processors:
  on AMD it runs AUTO (measured: the same bits as no setting), which with the AVX2 instruction cap
  below and a fixed thread count repeats on AMD machines. Intel and AMD are not guaranteed to agree
  with each other. ``COMPATIBLE`` (one SSE2 code path) is the one branch MKL documents as equal on
  Intel and AMD, but it made a training step of the miniature's xs model 2.8x slower (157 ms with
  AUTO, 171 ms with AVX2, 435 ms with COMPATIBLE, one thread, this AMD EPYC), which would put the
  default run far over its time budget; ``determinism.mkl_cbwr: COMPATIBLE`` selects it.
* ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``ONEDNN_DEFAULT_FPMATH_MODE=STRICT``
  (no AVX-512/AMX kernels and no implicit bf16 down-conversion in oneDNN on an AMX machine).
* ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = the job's ``threads`` (1 for a job that has none);
  ``OMP_DYNAMIC=MKL_DYNAMIC=FALSE``. ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic cuBLAS).

Once torch is imported (a one-shot import hook, so jobs that never import torch pay nothing):
``torch.use_deterministic_algorithms(True, warn_only=...)``, ``torch.backends.mkldnn.deterministic``,
oneDNN fp32 matmuls in IEEE precision, ``cudnn.benchmark = False``; then the effective ATen level is
read back (``torch.backends.cpu.get_cpu_capability()``) and a mismatch is an error. One line saying
what is in force goes to the job log.

Configuration (``determinism:`` in the config; the rules export it to every job as environment
variables, which :func:`settings_from_env` reads):

=====================================  ==============================  ==========================
config key                             environment variable            default
=====================================  ==============================  ==========================
``determinism.enabled``                ``AGENTFLAN_DETERMINISM``       ``true`` (``1``)
``determinism.cpu_capability``         ``AGENTFLAN_CPU_CAPABILITY``    ``avx2``
``determinism.mkl_cbwr``               ``AGENTFLAN_MKL_CBWR``          ``AVX2,STRICT``
``determinism.deterministic_algorithms``  ``AGENTFLAN_DETERMINISTIC_ALGORITHMS``  ``warn``
=====================================  ==============================  ==========================

``python -m agentflan.determinism`` applies the same pins and prints what is in force (JSON) and a
fingerprint of a few kernels (init, matmul, reductions) -- the quick check on a new machine.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

ENV_ENABLED = "AGENTFLAN_DETERMINISM"
ENV_CAPABILITY = "AGENTFLAN_CPU_CAPABILITY"
ENV_MKL_CBWR = "AGENTFLAN_MKL_CBWR"
ENV_ALGORITHMS = "AGENTFLAN_DETERMINISTIC_ALGORITHMS"

DEFAULTS = {"enabled": True, "cpu_capability": "avx2", "mkl_cbwr": "AVX2,STRICT", "deterministic_algorithms": "warn"}
CAPABILITIES = ("avx2", "default", "native")
ALGORITHM_MODES = ("warn", "error", "off")
MKL_CBWR_BRANCHES = ("COMPATIBLE", "AUTO", "SSE2", "SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_E1", "OFF")
# Per ATen level: (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA, what torch reports back).
_ISA = {"avx2": ("AVX2", "AVX2", "AVX2"), "default": ("SSE4_2", "SSE41", "DEFAULT")}


class DeterminismError(RuntimeError):
    """The pins cannot be applied as configured (the message says which key to change)."""


def settings_from_config(section: dict | None) -> dict:
    """The ``determinism`` config section (schema defaults filled in) -> validated settings."""
    s = dict(DEFAULTS)
    s.update({k: v for k, v in (section or {}).items() if v is not None})
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise DeterminismError(f"determinism: unknown key(s) {', '.join(unknown)}")
    s["enabled"] = bool(s["enabled"])
    s["cpu_capability"] = str(s["cpu_capability"]).lower()
    s["mkl_cbwr"] = str(s["mkl_cbwr"]).upper()
    if s["deterministic_algorithms"] is False:  # YAML reads a bare `off` as false
        s["deterministic_algorithms"] = "off"
    s["deterministic_algorithms"] = str(s["deterministic_algorithms"]).lower()
    if s["cpu_capability"] not in CAPABILITIES:
        raise DeterminismError(f"determinism.cpu_capability must be one of {', '.join(CAPABILITIES)}, "
                               f"not {s['cpu_capability']!r}")
    branch = s["mkl_cbwr"].split(",")[0].removeprefix("BRANCH=")
    if branch not in MKL_CBWR_BRANCHES or s["mkl_cbwr"].split(",")[1:] not in ([], ["STRICT"]):
        raise DeterminismError(f"determinism.mkl_cbwr must be <branch>[,STRICT] with a branch among "
                               f"{', '.join(MKL_CBWR_BRANCHES)}, not {s['mkl_cbwr']!r}")
    if s["deterministic_algorithms"] not in ALGORITHM_MODES:
        raise DeterminismError(f"determinism.deterministic_algorithms must be one of {', '.join(ALGORITHM_MODES)}, "
                               f"not {s['deterministic_algorithms']!r}")
    return s


def env_from_config(section: dict | None) -> dict[str, str]:
    """The environment variables that carry the ``determinism`` config section to every job."""
    s = settings_from_config(section)
    return {ENV_ENABLED: "1" if s["enabled"] else "0", ENV_CAPABILITY: s["cpu_capability"],
            ENV_MKL_CBWR: s["mkl_cbwr"], ENV_ALGORITHMS: s["deterministic_algorithms"]}


def settings_from_env(env: dict | None = None) -> dict:
    env = os.environ if env is None else env
    section = {}
    if ENV_ENABLED in env:
        flag = env[ENV_ENABLED].strip().lower()
        if flag not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            raise DeterminismError(f"{ENV_ENABLED} must be 1 or 0, not {env[ENV_ENABLED]!r}")
        section["enabled"] = flag in ("1", "true", "yes", "on")
    for key, var in (("cpu_capability", ENV_CAPABILITY), ("mkl_cbwr", ENV_MKL_CBWR),
                     ("deterministic_algorithms", ENV_ALGORITHMS)):
        if env.get(var):
            section[key] = env[var]
    return settings_from_config(section)


def cpu_flags() -> set[str] | None:
    """The x86 feature flags of this CPU (``/proc/cpuinfo``; ``sysctl`` on macOS); None if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return {f.lower().replace(".", "_") for f in out.split()} or None
    return None


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pinned_environment(settings: dict, threads: int = 1, *, x86: bool | None = None,
                       flags: set[str] | None = None) -> dict[str, str]:
    """The variables to force into the environment (empty when disabled). Pure: reads no state
    beyond the CPU description, which tests pass in."""
    if not settings["enabled"]:
        return {}
    threads = max(1, int(threads))
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_DYNAMIC": "FALSE",
           "MKL_DYNAMIC": "FALSE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT"}
    cap = settings["cpu_capability"]
    x86 = is_x86_64() if x86 is None else x86
    if cap == "native" or not x86:
        # No ISA pin: torch and MKL choose for this CPU (ARM machines have other kernel levels).
        return env
    if cap == "avx2":
        flags = cpu_flags() if flags is None else flags
        if flags is None or not {"avx2", "fma"} <= flags:
            what = "has no AVX2/FMA" if flags is not None else "could not be identified (no /proc/cpuinfo)"
            raise DeterminismError(
                f"this CPU {what}, so the kernels cannot be pinned to AVX2, the level all bit-for-bit results of "
                f"this package are made at. Set determinism.cpu_capability: default (scalar kernels; results are "
                f"then reproducible only among machines that also use 'default') or native (no pin), or "
                f"{ENV_CAPABILITY}=default for a single command")
    mkl_isa, onednn_isa, _ = _ISA[cap]
    env.update({"ATEN_CPU_CAPABILITY": cap, "MKL_CBWR": settings["mkl_cbwr"],
                "MKL_ENABLE_INSTRUCTIONS": mkl_isa, "ONEDNN_MAX_CPU_ISA": onednn_isa})
    return env


def threads_from_argv(argv: list[str]) -> int:
    """The ``threads`` parameter of a ``python -m agentflan.cli <stage> --params ...`` call (1 if none).
    Unreadable params give 1; the cli reports them itself a moment later."""
    raw = None
    for i, arg in enumerate(argv):
        if arg == "--params" and i + 1 < len(argv):
            raw = argv[i + 1]
        elif arg.startswith("--params="):
            raw = arg.split("=", 1)[1]
    if raw is None:
        return 1
    try:
        params = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
        return max(1, int(params.get("threads", 1))) if isinstance(params, dict) else 1
    except (OSError, ValueError, TypeError):
        return 1


_STATE: dict = {}


def pin(threads: int = 1, settings: dict | None = None) -> dict:
    """Force the pins into ``os.environ`` (overriding inherited values) and arrange for the torch
    settings to be applied when torch is imported. Call before anything imports torch."""
    settings = settings_from_env() if settings is None else settings
    env = pinned_environment(settings, threads)
    overridden = {k: (os.environ[k], v) for k, v in env.items() if k in os.environ and os.environ[k] != v}
    os.environ.update(env)
    if "torch" in sys.modules:
        # torch already imported (agentflan.warm's worker, an in-process caller): its thread count is
        # set here, as a fresh process takes it from OMP_NUM_THREADS
        sys.modules["torch"].set_num_threads(max(1, int(threads)))
    _STATE.clear()
    _STATE.update(settings=settings, env=env, threads=threads, overridden=overridden)
    if settings["enabled"]:
        if "torch" in sys.modules:  # in-process caller: too late to pin; configure_torch refuses a mismatch
            configure_torch(sys.modules["torch"])
        elif not any(isinstance(f, _AfterTorchImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterTorchImport())
    return env


def pin_for_cli(argv: list[str]) -> dict:
    """What ``agentflan.cli`` calls first: the pins of the environment's settings, with the job's
    threads taken from its ``--params``."""
    return pin(threads_from_argv(argv))


def configure_torch(torch) -> dict:
    """Torch-side settings; then check that the pinned kernel level is the one in force."""
    settings = _STATE.get("settings") or settings_from_env()
    mode = settings["deterministic_algorithms"]
    if mode != "off":
        set_deterministic_algorithms(torch, warn_only=(mode == "warn"))
    torch.backends.mkldnn.deterministic = True
    torch.backends.mkldnn.fp32_precision = "ieee"
    torch.backends.cudnn.benchmark = False
    state = effective_state(torch)
    want = _STATE.get("env", {}).get("ATEN_CPU_CAPABILITY")
    if want and state["cpu_capability"] != _ISA[want][2]:
        raise DeterminismError(f"ATen runs at {state['cpu_capability']} although ATEN_CPU_CAPABILITY={want} "
                               "was pinned: torch was imported before agentflan.determinism.pin()")
    overridden = _STATE.get("overridden", {})
    note = "; ".join(f"{k}={old} from the environment replaced by {new}" for k, (old, new) in sorted(overridden.items()))
    print(f"[determinism] ATen {state['cpu_capability']}, MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}, "
          f"threads {state['threads']}, deterministic algorithms {mode}" + (f" ({note})" if note else ""),
          file=sys.stderr, flush=True)
    return state


def set_deterministic_algorithms(torch, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms(True)`` without its import of the compiler stack.

    The public function imports ``torch._inductor.config`` (and with it dynamo: 2-5 s per job on the
    2-core machines, for every job of the DAG) only to set inductor's own flag. Inductor reads that
    flag from ``TORCHINDUCTOR_DETERMINISTIC`` when it is first imported, so the variable is set here
    (and inherited by child processes), the flag is set directly if inductor is already loaded, and
    ATen's switch is the one the public function flips."""
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
    inductor = sys.modules.get("torch._inductor.config")
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if inductor is not None or setter is None:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        return
    setter(True, warn_only=warn_only)


def effective_state(torch) -> dict:
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "mkldnn_deterministic": bool(torch.backends.mkldnn.deterministic),
            "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                                                  "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Import hook: run :func:`configure_torch` right after ``import torch`` has completed. It stays
    until torch is actually executed (``importlib.util.find_spec("torch")``, as transformers calls it,
    only looks), then removes itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        hook = self

        def exec_then_configure(module):
            exec_module(module)
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)
            configure_torch(module)

        spec.loader.exec_module = exec_then_configure
        return spec


def fingerprint(torch) -> str:
    """sha256 over a seeded ``normal_`` init, an odd-sized fp32 matmul (MKL sgemm), a softmax and a
    long sum -- the kernels whose bits moved between dispatch levels."""
    import hashlib
    g = torch.Generator().manual_seed(0)
    w = torch.empty(257, 129).normal_(0.0, 0.02, generator=g)
    x = torch.randn(77, 257, generator=g)
    y = x @ w
    parts = [w, y, torch.softmax(y, dim=-1), torch.nn.functional.rms_norm(y, (129,)), y.sum(dim=0), (x * 1e-3).exp().sum()]
    h = hashlib.sha256()
    for t in parts:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m agentflan.determinism", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        pin(args.threads)
    except DeterminismError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch  # with the pins enabled, the import hook has run configure_torch (and logged)
    state = effective_state(torch)
    print(json.dumps({**state, "fingerprint": fingerprint(torch)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

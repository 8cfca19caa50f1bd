"""A warm interpreter for local runs: model-facing jobs start from a process that has already
imported torch, transformers and the evaluation libraries.

Why: every model-facing job of the miniature (training, generation, scoring, lm-evaluation-harness:
about 70 jobs) spends 6-11 CPU seconds importing torch, transformers' modeling code, the Trainer,
sentence-transformers and lm-eval before it does any work (``python -X importtime``), and a report
job 2 of its 3 seconds importing pandas, matplotlib and seaborn: on 2 cores, a fifth of the default
run's summed job time (docs/benchmarks.md).

How (``warm_interpreter: true``, the miniature's default; only when Snakemake executes jobs on this
machine):

* ``onstart`` starts :func:`serve` (``python -m agentflan.warm serve``) in Snakemake's process group.
  It applies the determinism pins (agentflan.determinism), imports :data:`PRELOAD`, runs no kernel,
  and listens on a Unix socket whose path the jobs find in ``$AGENTFLAN_WARM``.
* ``python -m agentflan.cli <stage>`` of a stage in :data:`STAGES` connects first
  (:func:`run_warm`): it sends its argv, working directory, environment and its stdin/stdout/stderr
  (SCM_RIGHTS), and the server forks a worker. The worker takes the job's environment, descriptors
  and directory, forgets every ``agentflan`` module (the job imports the package from disk, as a
  fresh interpreter would), sets the job's thread count, and runs ``agentflan.cli.main``. The exit
  status comes back to the job's process, which exits with it.
* What is refused falls back to the ordinary start (one ``[warm]`` line in the job log says why): no
  server, another interpreter, a distributed launch (torchrun's ``RANK``/``WORLD_SIZE``), or an
  environment that differs from the server's in anything but the per-job thread counts and the
  temporary directory (a library may have read it while being imported).
* Killing: the job's process forwards SIGINT/SIGTERM/SIGHUP to the worker's process group; if the job's
  process dies without a word (SIGKILL), the worker notices the closed socket and kills its own
  process group. The server exits when the Snakemake process that started it ends (pidfd), on
  ``onsuccess``/``onerror``, or after ``idle_s`` without a job.

What it does not change: every stage runs the same code on the same inputs, with the same pins, thread
count and seeds; a run with ``warm_interpreter: false`` writes the same bytes
(tests/test_warm.py compares the two). Snakemake's ``benchmark:`` files keep the true wall time of
each job; their CPU and memory columns measure the job's own small process only, so the worker writes
its CPU time and peak memory as the last ``[warm]`` line of the job log.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

ENV_SOCKET = "AGENTFLAN_WARM"
# The stages that import torch and the model libraries, and the reports (pandas, matplotlib,
# seaborn: about 2 s of a 3-s job, and they run at the end of the DAG, two at a time, with nothing
# beside them). The others are cheap to start.
STAGES = frozenset({"init_model", "standin_checkpoint", "train", "generate", "score", "harness",
                    "summarize", "table", "figure", "diff", "html_tables"})
# Imported once by the server, in this order; a module that is not installed is skipped.
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "transformers.models.llama.modeling_llama",
           "transformers.generation", "transformers.trainer", "peft", "sentence_transformers", "datasets",
           "lm_eval", "lm_eval.evaluator", "safetensors.torch", "tokenizers", "pandas", "matplotlib", "seaborn")
# Variables that may differ between the server and a job: the temporary directory (the worker resets
# tempfile's cache); the socket's own variable; the shell's bookkeeping. Not the thread variables
# (THREAD_VARS): the server has a job's with threads_per_job, and a job with another thread count
# starts the ordinary way (libraries the server imported fixed their thread pools at import).
_PER_JOB = frozenset({"TMPDIR", "TMP", "TEMP", "TEMPDIR", ENV_SOCKET, "SHLVL", "_", "PWD", "OLDPWD"})
_DISTRIBUTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_MAX_REQUEST = 64 << 20


# ------------------------------------------------------------------------------------------------
# framing: 4-byte length + JSON
# ------------------------------------------------------------------------------------------------

def _send(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj, sort_keys=True).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(sock: socket.socket) -> dict | None:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > _MAX_REQUEST:
        raise ValueError(f"message of {n} bytes")
    body = _recv_exact(sock, n)
    return None if body is None else json.loads(body)


def _say(message: str) -> None:
    sys.stderr.write(f"[warm] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------
# the job's side
# ------------------------------------------------------------------------------------------------

def run_warm(argv: list[str]) -> int | None:
    """Run ``agentflan.cli`` with ``argv`` in a worker of the warm server; its exit status, or None
    when this job should start the ordinary way (no server, a stage not in :data:`STAGES`, refused)."""
    path = os.environ.get(ENV_SOCKET)
    stage = next((a for a in argv if not a.startswith("-")), None)
    if not path or stage not in STAGES:
        return None
    if any(v in os.environ for v in _DISTRIBUTED):
        return None  # a rank of a distributed launch: each rank starts on its own
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        socket.send_fds(sock, [b"F"], [0, 1, 2])
        _send(sock, {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "executable": sys.executable,
                     "version": sys.version, "path": list(sys.path)})
        reply = _recv(sock)
    except (OSError, ValueError) as exc:
        sock.close()
        _say(f"no warm interpreter ({type(exc).__name__}: {exc}); starting the ordinary way")
        return None
    if reply is None or "pid" not in reply:
        sock.close()
        why = (reply or {}).get("refused", "the server closed the connection")
        _say(f"warm interpreter refused this job ({why}); starting the ordinary way")
        return None
    pid = int(reply["pid"])
    got: list[int] = []

    def forward(signum, _frame):
        got.append(signum)
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        while True:
            try:
                done = _recv(sock)
                break
            except InterruptedError:
                continue
    except (OSError, ValueError):
        done = None
    sock.close()
    if done is not None and "rc" in done:
        return int(done["rc"])
    if got:
        return 128 + got[0]
    _say(f"the worker (pid {pid}) ended without an exit status (killed?)")
    return 1


# ------------------------------------------------------------------------------------------------
# the server's side
# ------------------------------------------------------------------------------------------------

def _refusal(req: dict, base_env: dict) -> str | None:
    exe = req.get("executable")
    if not exe or os.path.realpath(exe) != os.path.realpath(sys.executable) or req.get("version") != sys.version:
        return f"another interpreter ({req.get('executable')}) than the server's ({sys.executable})"
    env = req.get("env") or {}
    keys = (set(env) | set(base_env)) - _PER_JOB
    diff = sorted(k for k in keys if env.get(k) != base_env.get(k) and not k.startswith("SNAKEMAKE"))
    if diff:
        return "environment differs from the server's in " + ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
    return None


def _worker(conn: socket.socket, listener: socket.socket, base_env: dict, torch_rng) -> None:
    """In the forked child: become the job, run it, report its exit status, never return."""
    rc = 1
    try:
        listener.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)
        msg, fds, _flags, _addr = socket.recv_fds(conn, 16, 3)
        req = _recv(conn)
        if msg != b"F" or len(fds) != 3 or req is None:
            os._exit(1)
        why = _refusal(req, base_env)
        if why:
            _send(conn, {"refused": why})
            os._exit(0)
        sys.stdout.flush()
        sys.stderr.flush()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ.pop(ENV_SOCKET, None)  # the job's own cli must not connect again
        sys.path[:] = req["path"]
        argv = list(req["argv"])
        sys.argv = [os.path.join(os.path.dirname(__file__), "cli.py"), *argv]
        import tempfile
        tempfile.tempdir = None
        for name in [m for m in sys.modules if m == "agentflan" or m.startswith("agentflan.")]:
            del sys.modules[name]
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            if torch_rng is not None:
                torch.random.set_rng_state(torch_rng)
        _send(conn, {"pid": os.getpid()})
        _watch(conn)
        _say(f"{argv[0] if argv else ''} runs in a worker of the warm interpreter (pid {os.getpid()})")
        rc = _run_cli(argv)
    except BaseException:  # noqa: BLE001 - whatever happens, the job gets an exit status
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        try:
            import resource
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            _say(f"worker cpu {me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime:.1f} s, "
                 f"peak memory {max(me.ru_maxrss, kids.ru_maxrss) / 1024:.0f} MiB, exit status {rc}")
            sys.stdout.flush()
            sys.stderr.flush()
            _send(conn, {"rc": rc})
        finally:
            os._exit(rc)


def _run_cli(argv: list[str]) -> int:
    """``agentflan.cli.main`` as ``python -m agentflan.cli`` would end: exit status, atexit, threads."""
    import atexit
    import threading
    import traceback
    from agentflan import cli
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            rc = 0
        elif isinstance(code, int):
            rc = code
        else:
            sys.stderr.write(f"{code}\n")
            rc = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        rc = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
    rc = 0 if rc is None else int(rc)
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    return rc


def _watch(conn: socket.socket) -> None:
    """A daemon thread: when the job's process is gone (the socket closes), kill this process group."""
    import threading

    def watch():
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="agentflan-warm-watch", daemon=True).start()


def serve(path: str, owner: int | None = None, idle_s: float = 1800.0, preload: tuple[str, ...] = PRELOAD) -> int:
    """Listen on ``path``; fork a worker per job. Ends with its owner process, on SIGTERM/SIGINT,
    or after ``idle_s`` seconds without a job."""
    import importlib
    import select
    base_env = dict(os.environ)
    from .determinism import DeterminismError, pin
    try:
        pin(1)
    except DeterminismError as exc:
        _say(f"determinism: {exc}")
        return 2
    from .allocator import keep_freed_memory
    keep_freed_memory()             # the forked workers inherit glibc's settings
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    os.chdir("/")
    owner_fd = None
    if owner:
        try:
            owner_fd = os.pidfd_open(owner)
        except (OSError, AttributeError):
            owner_fd = None
    stop = []
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda signum, _f: stop.append(signum))
    t0 = time.time()
    torch_rng = None
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an optional library that does not import: skipped
            _say(f"preload {name}: skipped ({type(exc).__name__}: {exc})")
        if name == "torch" and "torch" in sys.modules:
            torch_rng = sys.modules["torch"].random.get_rng_state()
    # the agentflan modules the server imported (determinism) are dropped in each worker
    _say(f"serving on {path} (pid {os.getpid()}, preloaded in {time.time() - t0:.1f} s)")
    workers: set[int] = set()
    last = time.time()
    served = 0
    try:
        while not stop:
            watch = [listener] + ([owner_fd] if owner_fd is not None else [])
            try:
                ready, _, _ = select.select(watch, [], [], 1.0)
            except InterruptedError:
                continue
            while workers:
                try:
                    pid, _status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    workers.clear()
                    break
                if pid == 0:
                    break
                workers.discard(pid)
                last = time.time()
            if owner_fd is not None and owner_fd in ready:
                _say("the process that started the server has ended")
                break
            if owner and owner_fd is None and not _alive(owner):
                _say("the process that started the server has ended")
                break
            if listener in ready:
                conn, _ = listener.accept()
                pid = os.fork()
                if pid == 0:
                    _worker(conn, listener, base_env, torch_rng)
                conn.close()
                workers.add(pid)
                served += 1
                last = time.time()
            elif not workers and time.time() - last > idle_s:
                _say(f"idle for {idle_s:.0f} s")
                break
    finally:
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        _say(f"stopped after {served} job(s)")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ------------------------------------------------------------------------------------------------
# Snakemake's hooks (Snakefile: onstart / onsuccess / onerror)
# ------------------------------------------------------------------------------------------------

_SERVER: dict = {}


# What Snakemake sets in every job's environment to the job's thread count (snakemake.shell).
THREAD_VARS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def start(log_path: str, threads: int = 1, python: str = sys.executable) -> str:
    """Start the server for this Snakemake process (in its process group) and export its socket to
    the jobs; the socket's path. The server's environment is a job's with ``threads`` threads (the
    variables Snakemake sets per job), so jobs with another thread count start the ordinary way."""
    import subprocess
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"agentflan-warm-{os.getpid()}-{os.urandom(4).hex()}.sock")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    log = open(log_path, "w")
    env = {k: v for k, v in os.environ.items() if k != ENV_SOCKET}
    env.update({k: str(threads) for k in THREAD_VARS})
    proc = subprocess.Popen([python, "-m", "agentflan.warm", "serve", "--socket", path, "--owner", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    _SERVER.update(proc=proc, path=path)
    os.environ[ENV_SOCKET] = path
    return path


def stop() -> None:
    """Stop the server started by :func:`start` (if any) and stop exporting its socket."""
    os.environ.pop(ENV_SOCKET, None)
    proc = _SERVER.pop("proc", None)
    if proc is None:
        return
    import subprocess
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m agentflan.warm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the server (Snakemake's onstart does this)")
    s.add_argument("--socket", required=True)
    s.add_argument("--owner", type=int, default=None, help="exit when this process ends")
    s.add_argument("--idle-s", type=float, default=1800.0)
    s.add_argument("--preload", default=None, help="comma-separated modules (default: %s)" % ",".join(PRELOAD))
    args = ap.parse_args(argv)
    preload = tuple(m for m in args.preload.split(",") if m) if args.preload is not None else PRELOAD
    return serve(args.socket, owner=args.owner, idle_s=args.idle_s, preload=preload)


if __name__ == "__main__":
    sys.exit(main())

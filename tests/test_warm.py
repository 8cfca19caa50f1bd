"""The warm interpreter (agentflan.warm): same bytes as an ordinary start, exit status and logs passed
through, refusals fall back, a killed job leaves no worker behind, the server ends with its owner.

The whole DAG is compared warm against cold by tests/test_determinism.py (the reference run uses the
warm interpreter, the other-machine run does not)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflan import warm

PRELOAD = "torch,transformers,transformers.modeling_utils"
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != warm.ENV_SOCKET and not k.startswith("PYTEST")}
    env.update(extra)
    return env


def _start_server(sock: Path, log: Path, owner: int, env: dict, preload: str = PRELOAD) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "agentflan.warm", "serve", "--socket", str(sock), "--owner",
                             str(owner), "--preload", preload], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=env)
    deadline = time.time() + 120
    while "serving on" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory, qa_tokenizer_dir):
    d = tmp_path_factory.mktemp("warm")
    env = _env()
    sock = d / "s.sock"
    proc = _start_server(sock, d / "server.log", os.getpid(), env)
    yield {"dir": d, "tok": qa_tokenizer_dir, "sock": sock, "env": env, "log": d / "server.log"}
    proc.terminate()
    proc.wait(timeout=30)


def _cli(stage: str, params: dict, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentflan.cli", stage, "--params", json.dumps(params)],
                          capture_output=True, text=True, env=env, timeout=600, **kw)


def _init(server, name: str, warm_on: bool, arch=ARCH, **extra):
    out = server["dir"] / name
    env = {**server["env"], **extra, **({warm.ENV_SOCKET: str(server["sock"])} if warm_on else {})}
    proc = _cli("init_model", {"arch": arch, "tokenizer_dir": str(server["tok"]), "seed": 0,
                               "out_dir": str(out)}, env)
    return proc, out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_warm_job_writes_the_bytes_of_an_ordinary_one_and_says_where_it_ran(server):
    cold, cold_out = _init(server, "cold", False)
    hot, hot_out = _init(server, "hot", True)
    assert cold.returncode == 0 and hot.returncode == 0, cold.stderr[-2000:] + hot.stderr[-2000:]
    assert "[warm]" not in cold.stderr
    assert "runs in a worker of the warm interpreter" in hot.stderr
    assert "[warm] worker cpu" in hot.stderr and "exit status 0" in hot.stderr
    # the pins and thread count of the job, as in an ordinary start
    assert "[determinism] ATen AVX2, MKL_CBWR=AVX2,STRICT, threads 1" in hot.stderr
    assert sorted(p.name for p in hot_out.iterdir()) == sorted(p.name for p in cold_out.iterdir())
    for p in cold_out.iterdir():
        assert _sha(hot_out / p.name) == _sha(p), p.name


def test_exit_status_and_the_one_line_error_come_back_from_the_worker(server):
    env = {**server["env"], warm.ENV_SOCKET: str(server["sock"])}
    proc = _cli("init_model", {"arch": ARCH, "tokenizer_dir": str(server["dir"] / "missing"), "seed": 0,
                               "out_dir": str(server["dir"] / "bad")}, env)
    assert "runs in a worker of the warm interpreter" in proc.stderr
    assert proc.returncode != 0
    assert not (server["dir"] / "bad" / "model.safetensors").exists()


def test_refusals_and_a_missing_server_fall_back_to_an_ordinary_start(server, tmp_path):
    # another environment than the server's (a library may have read it at import): refused
    proc, out = _init(server, "refused", True, HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused this job (environment differs from the server's in HF_HOME)" in proc.stderr
    assert "runs in a worker" not in proc.stderr
    # no server behind the socket's path
    proc, out2 = _init({**server, "sock": tmp_path / "none.sock"}, "nosrv", True)
    assert proc.returncode == 0 and "no warm interpreter" in proc.stderr
    # a rank of a distributed launch starts on its own, silently
    proc, out3 = _init(server, "rank", True, RANK="0")
    assert proc.returncode == 0 and "[warm]" not in proc.stderr
    assert _sha(out / "model.safetensors") == _sha(out2 / "model.safetensors") == _sha(out3 / "model.safetensors")


def test_a_killed_job_takes_its_worker_and_leaves_no_output(server):
    big = {"hidden_size": 1024, "intermediate_size": 4096, "num_layers": 24, "num_heads": 8}
    out = server["dir"] / "killed"
    env = {**server["env"], warm.ENV_SOCKET: str(server["sock"])}
    job = subprocess.Popen([sys.executable, "-m", "agentflan.cli", "init_model", "--params",
                            json.dumps({"arch": big, "tokenizer_dir": str(server["tok"]), "seed": 0,
                                        "out_dir": str(out)})],
                           stderr=subprocess.PIPE, text=True, env=env)
    line = ""
    while "runs in a worker" not in line:
        line = job.stderr.readline()
        assert line, "the job ended before its worker started"
    pid = int(line.rsplit("pid ", 1)[1].rstrip(")\n"))
    time.sleep(0.5)
    job.kill()
    job.wait()
    deadline = time.time() + 5
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "gone"
    assert state in ("gone", "Z"), f"worker {pid} outlived its killed job ({state})"
    assert not (out / "model.safetensors").exists()


def test_the_server_ends_with_the_process_that_started_it(tmp_path):
    owner = subprocess.Popen(["sleep", "3"])
    sock = tmp_path / "o.sock"
    proc = _start_server(sock, tmp_path / "o.log", owner.pid, _env(), preload="json")
    owner.wait()
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not sock.exists()
    assert "the process that started the server has ended" in (tmp_path / "o.log").read_text()

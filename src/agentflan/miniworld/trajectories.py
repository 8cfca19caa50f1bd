"""Abstract tool-use trajectories and wiki multi-hop questions.

A :class:`Trajectory` is format-free: system tools, user query, steps (thought, api, args,
observation) and the final answer. The renderers in :mod:`.toolbench` turn the *same* pool into
the ReAct, chat-aligned and chain-of-thought files; :mod:`.evalsets` draws eval-split trajectories
for T-Eval-mini and glaive-mini with the very same functions (only the entity pool differs).

All language is templated and short (:mod:`.pools`): one query template per kind (a paraphrase
in :data:`pools.QUERY_ALT_SHARE` of the records), thoughts ``"I need to <purpose>."`` (first step)
and ``"Now I need to <purpose>."`` (later steps), one final thought.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .pools import FINAL_THOUGHT, QUERIES, QUERY_ALT_SHARE, THOUGHTS
from .world import API_TOOLS, TOOLS, WIKI_TOOLS, World, render_observation, render_wiki_observation


@dataclass
class Step:
    thought: str
    api: str
    args: dict
    purpose: str          # "get the weather in Paris": used by the cot and plan renderings
    response: str
    error: str = ""

    @property
    def payload(self) -> str:
        """The tool result: ToolBench envelope (API tools) or the page text (wiki Search)."""
        if self.api == "Search":
            return self.response
        return render_observation(self.response, self.error)

    @property
    def observation(self) -> str:
        """The user turn that shows the result to the model."""
        if self.api == "Search":
            return render_wiki_observation(self.response)
        return self.payload


@dataclass
class Trajectory:
    kind: str
    family: str           # single | multi | wiki
    split: str            # train | eval
    tools: list[dict]
    query: str
    steps: list[Step]
    final_thought: str
    answer: str
    independent: bool = True   # every call's arguments are known from the query alone
    meta: dict = field(default_factory=dict)


def purpose(api: str, a: dict) -> str:
    """Short verb phrase describing one call (no tool name in it)."""
    return {
        "get_weather": lambda: f"get the weather in {a['city']}",
        "get_time": lambda: f"get the time in {a['city']}",
        "search_flights": lambda: f"find flights from {a['origin']} to {a['destination']}",
        "get_movie_details": lambda: f"get the details of {a['title']}",
        "get_stock_price": lambda: f"get the stock price of {a['symbol']}",
        "find_recipe": lambda: f"find a recipe for {a['dish']}",
        "book_table": lambda: f"book a table for {a['people']} at {a['restaurant']}",
        "Search": lambda: f"search for {a['entity']}",
    }[api]()


def thought_for(api: str, args: dict, first: bool) -> str:
    return THOUGHTS[0 if first else 1].format(p=purpose(api, args))


class _Builder:
    """Collects the steps of one trajectory while it is being built."""

    def __init__(self, w: World, rng: random.Random):
        self.w, self.rng, self.steps, self.results = w, rng, [], []

    def call(self, api: str, args: dict) -> dict:
        self.steps.append(Step(thought_for(api, args, not self.steps), api, args, purpose(api, args),
                               self.w.response(api, args)))
        res = self.w.call(api, args)
        self.results.append(res)
        return res


def query_template(rng: random.Random, kind: str) -> str:
    """THE template of ``kind``; its paraphrase in :data:`QUERY_ALT_SHARE` of the draws."""
    forms = QUERIES[kind]
    return forms[1] if len(forms) > 1 and rng.random() < QUERY_ALT_SHARE else forms[0]


# ============================================================================================
# Single-tool and multi-tool kinds. Each returns (query, answer) and records its steps.
# ============================================================================================

def _pick(w: World, rng: random.Random, split: str, kind: str, k: int = 1):
    vals = rng.sample(w.pool(split, kind), k)
    return vals[0] if k == 1 else vals


def _weather(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    r = b.call("get_weather", {"city": city})
    return (query_template(rng, "weather").format(city=city),
            f"It is {r['condition']} and {r['temp_c']} degrees in {city}.")


def _time(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    r = b.call("get_time", {"city": city})
    return query_template(rng, "time").format(city=city), f"It is {r['time']} in {city}."


def _flights(w, rng, split, b):
    o, d = _pick(w, rng, split, "city", 2)
    r = b.call("search_flights", {"origin": o, "destination": d})
    return (query_template(rng, "flights").format(origin=o, destination=d),
            f"Flight {r['flight']} from {o} to {d} costs {r['price_usd']} dollars.")


def _movie(w, rng, split, b):
    title = _pick(w, rng, split, "film")
    q = query_template(rng, "movie")
    r = b.call("get_movie_details", {"title": title})
    if q == QUERIES["movie"][0]:
        return q.format(title=title), f"{title} was directed by {r['director']}."
    return q.format(title=title), f"{title} is a {r['genre']} film by {r['director']}."


def _stock(w, rng, split, b):
    s = _pick(w, rng, split, "symbol")
    r = b.call("get_stock_price", {"symbol": s})
    return (query_template(rng, "stock").format(symbol=s),
            f"The stock price of {s} is {r['price_usd']} dollars.")


def _recipe(w, rng, split, b):
    dish = _pick(w, rng, split, "dish")
    r = b.call("find_recipe", {"dish": dish})
    i = r["ingredients"]
    return (query_template(rng, "recipe").format(dish=dish),
            f"To make {dish} you need {i[0]}, {i[1]} and {i[2]}.")


def _book(w, rng, split, b):
    rest = _pick(w, rng, split, "restaurant")
    n = rng.randrange(2, 9)
    b.call("book_table", {"restaurant": rest, "people": n})
    return (query_template(rng, "book_table").format(people=n, restaurant=rest),
            f"Your table for {n} at {rest} is booked.")


def _weather_time(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    r1 = b.call("get_weather", {"city": city})
    r2 = b.call("get_time", {"city": city})
    return (query_template(rng, "weather_time").format(city=city),
            f"In {city} it is {r1['condition']} and {r1['temp_c']} degrees, and the time is {r2['time']}.")


def _flight_weather(w, rng, split, b):
    o, d = _pick(w, rng, split, "city", 2)
    r1 = b.call("search_flights", {"origin": o, "destination": d})
    r2 = b.call("get_weather", {"city": d})
    return (query_template(rng, "flight_weather").format(origin=o, destination=d),
            f"Flight {r1['flight']} costs {r1['price_usd']} dollars. "
            f"In {d} it is {r2['condition']} and {r2['temp_c']} degrees.")


SINGLE_KINDS = {"weather": _weather, "time": _time, "flights": _flights, "movie": _movie,
                "stock": _stock, "recipe": _recipe, "book_table": _book}
MULTI_KINDS = {"weather_time": _weather_time, "flight_weather": _flight_weather}
DEPENDENT_KINDS: set[str] = set()     # every multi-step kind is independent (plannable)
KIND_OF_API = {"get_weather": "weather", "get_time": "time", "search_flights": "flights",
               "get_movie_details": "movie", "get_stock_price": "stock", "find_recipe": "recipe",
               "book_table": "book_table"}

DISTRACTOR_SHARE = 0.2   # single-tool trajectories whose system lists one extra (unneeded) tool


def _tool_list(rng: random.Random, needed: list[str]) -> list[dict]:
    """The needed tools, plus one distractor for a fifth of single-tool queries (1-2 tools)."""
    names = list(needed)
    if len(needed) == 1 and rng.random() < DISTRACTOR_SHARE:
        names.append(rng.choice([n for n in API_TOOLS if n not in needed]))
        rng.shuffle(names)
    return [TOOLS[n] for n in names]


def make_api_trajectory(w: World, rng: random.Random, split: str, kind: str) -> Trajectory:
    fn = SINGLE_KINDS.get(kind) or MULTI_KINDS[kind]
    b = _Builder(w, rng)
    query, answer = fn(w, rng, split, b)
    needed = list(dict.fromkeys(s.api for s in b.steps))
    return Trajectory(kind=kind, family="single" if kind in SINGLE_KINDS else "multi",
                      split=split, tools=_tool_list(rng, needed), query=query, steps=b.steps,
                      final_thought=FINAL_THOUGHT, answer=answer,
                      independent=kind not in DEPENDENT_KINDS)


# ============================================================================================
# Wiki two-hop questions (training trajectories with Search, and HotpotQA-mini)
# ============================================================================================

BRIDGE_TYPES = ("b_country", "b_town", "b_founded")
COMPARE_TYPES = ("c_film_first", "c_born_first", "c_same_country", "c_same_director")
WIKI_FINAL = "The answer is {a}."


def wiki_question(w: World, rng: random.Random, split: str, qtype: str) -> dict:
    """One two-hop question over the wiki of ``split``.

    Returns ``{question, answer, type: bridge|comparison, hops: [(title, thought)],
    final_thought, supporting: [(title, sent_id)]}``; every answer is a substring of a supporting
    sentence or ``yes``/``no``. Hop thoughts are ``"I need to search for X."`` then
    ``"Now I need to search for Y."`` (the Search thought templates).
    """
    pool = w.pool

    def hops(a, c):
        return [(a, thought_for("Search", {"entity": a}, True)),
                (c, thought_for("Search", {"entity": c}, False))]

    if qtype in ("b_country", "b_town"):
        film = rng.choice(pool(split, "film"))
        d = w.films[film]["director"]
        p = w.people[d]
        if qtype == "b_country":
            q, ans, sup = f"Which country is the director of {film} from?", p["country"], [(film, 0), (d, 0)]
        else:
            q, ans, sup = f"In which town was the director of {film} born?", p["town"], [(film, 0), (d, 0)]
        return {"question": q, "answer": ans, "type": "bridge", "hops": hops(film, d),
                "final_thought": WIKI_FINAL.format(a=ans), "supporting": sup}
    if qtype == "b_founded":
        d = rng.choice(pool(split, "person"))
        t = w.people[d]["town"]
        y = str(w.towns[t]["founded"])
        return {"question": f"In what year was the birth town of {d} founded?", "answer": y,
                "type": "bridge", "hops": hops(d, t), "final_thought": WIKI_FINAL.format(a=y),
                "supporting": [(d, 0), (t, 1)]}
    if qtype in ("c_film_first", "c_same_director"):
        a, c = rng.sample(pool(split, "film"), 2)
        fa, fc = w.films[a], w.films[c]
        if qtype == "c_film_first":
            first = a if fa["year"] < fc["year"] else c
            return {"question": f"Which film came out first, {a} or {c}?", "answer": first,
                    "type": "comparison", "hops": hops(a, c),
                    "final_thought": WIKI_FINAL.format(a=first), "supporting": [(a, 0), (c, 0)]}
        yn = "yes" if fa["director"] == fc["director"] else "no"
        return {"question": f"Were {a} and {c} directed by the same person?", "answer": yn,
                "type": "comparison", "hops": hops(a, c),
                "final_thought": WIKI_FINAL.format(a=yn), "supporting": [(a, 0), (c, 0)]}
    a, c = rng.sample(pool(split, "person"), 2)
    pa, pc = w.people[a], w.people[c]
    if qtype == "c_born_first":
        first = a if pa["born"] < pc["born"] else c
        return {"question": f"Who was born first, {a} or {c}?", "answer": first,
                "type": "comparison", "hops": hops(a, c),
                "final_thought": WIKI_FINAL.format(a=first), "supporting": [(a, 0), (c, 0)]}
    if qtype == "c_same_country":
        # about half "yes": pick the second person from the same country when one exists
        same_pool = [x for x in pool(split, "person") if x != a and w.people[x]["country"] == pa["country"]]
        if same_pool and rng.random() < 0.5:
            c = rng.choice(same_pool)
            pc = w.people[c]
        yn = "yes" if pa["country"] == pc["country"] else "no"
        return {"question": f"Are {a} and {c} from the same country?", "answer": yn,
                "type": "comparison", "hops": hops(a, c),
                "final_thought": WIKI_FINAL.format(a=yn), "supporting": [(a, 0), (c, 0)]}
    raise KeyError(f"unknown wiki question type {qtype!r}")


def make_wiki_trajectory(w: World, rng: random.Random, split: str, qtype: str | None = None
                         ) -> Trajectory:
    qtype = qtype or rng.choice(BRIDGE_TYPES + COMPARE_TYPES)
    wq = wiki_question(w, rng, split, qtype)
    steps = [Step(thought, "Search", {"entity": title}, purpose("Search", {"entity": title}),
                  w.response("Search", {"entity": title})) for title, thought in wq["hops"]]
    return Trajectory(kind=f"wiki_{qtype}", family="wiki", split=split, tools=list(WIKI_TOOLS),
                      query=wq["question"], steps=steps, final_thought=wq["final_thought"],
                      answer=wq["answer"], independent=False, meta={"wiki": wq})


# ============================================================================================
# The pool
# ============================================================================================

API_FAMILY_WEIGHTS = {"single": 0.85, "multi": 0.15}


def make_trajectory(w: World, rng: random.Random, split: str, family: str | None = None
                    ) -> Trajectory:
    """An API trajectory (single or multi, by :data:`API_FAMILY_WEIGHTS`) or, with
    ``family="wiki"``, a wiki two-hop trajectory."""
    if family is None:
        fams = list(API_FAMILY_WEIGHTS)
        family = rng.choices(fams, weights=[API_FAMILY_WEIGHTS[f] for f in fams])[0]
    if family == "wiki":
        return make_wiki_trajectory(w, rng, split)
    kinds = list(SINGLE_KINDS if family == "single" else MULTI_KINDS)
    return make_api_trajectory(w, rng, split, rng.choice(kinds))


def training_split(rng: random.Random, synth_share: float) -> str:
    """``"synth"`` (generated copy-drill names) with probability ``synth_share``, else ``"train"``."""
    return "synth" if synth_share > 0 and rng.random() < synth_share else "train"


def trajectory_pool(w: World, rng: random.Random, n: int, n_wiki: int, synth_share: float = 0.0
                    ) -> list[Trajectory]:
    """``n_wiki`` wiki trajectories followed by ``n - n_wiki`` API trajectories, each on TRAIN
    entities or (``synth_share``) on generated copy-drill names."""
    n_wiki = min(n_wiki, n)
    return ([make_trajectory(w, rng, training_split(rng, synth_share), "wiki") for _ in range(n_wiki)]
            + [make_trajectory(w, rng, training_split(rng, synth_share)) for _ in range(n - n_wiki)])

"""Abstract tool-use trajectories and wiki multi-hop questions.

A :class:`Trajectory` is format-free: system tools, user query, steps (thought, api, args,
observation) and the final answer. The renderers in :mod:`.toolbench` turn the *same* pool into
the ReAct, chat-aligned and chain-of-thought files; :mod:`.evalsets` draws eval-split trajectories
for T-Eval-mini and glaive-mini. All language is templated and short.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .pools import BASE_CURRENCY, LANGUAGES
from .world import (API_TOOLS, TOOLS, WIKI_TOOLS, World, fmt_num, render_observation,
                    render_wiki_observation)


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
        "get_time": lambda: f"get the local time in {a['city']}",
        "convert_currency": lambda: (f"convert {fmt_num(a['amount'])} {a['from_currency']} "
                                     f"to {a['to_currency']}"),
        "search_flights": lambda: f"find flights from {a['origin']} to {a['destination']}",
        "get_movie_details": lambda: f"get the details of the movie {a['title']}",
        "get_stock_price": lambda: f"get the stock price of {a['symbol']}",
        "find_recipe": lambda: f"find a recipe for {a['dish']}",
        "translate": lambda: f"translate '{a['text']}' into {a['language']}",
        "calculator": lambda: f"compute {a['expression']}",
        "book_table": lambda: f"book a table for {a['people']} at {a['restaurant']}",
        "track_package": lambda: f"track the package {a['code']}",
        "Search": lambda: f"search for {a['entity']}",
    }[api]()


FIRST_THOUGHTS = ["I need to {p}.", "First, I need to {p}.", "To answer this, I need to {p}."]
NEXT_THOUGHTS = ["Now I need to {p}.", "Next, I need to {p}."]
FINAL_THOUGHTS = ["I now have the answer.", "I have all the information I need.",
                  "Now I can answer the question."]


class _Builder:
    """Collects the steps of one trajectory while it is being built."""

    def __init__(self, w: World, rng: random.Random):
        self.w, self.rng, self.steps, self.results = w, rng, [], []

    def call(self, api: str, args: dict, thought: str | None = None) -> dict:
        p = purpose(api, args)
        if thought is None:
            pool = FIRST_THOUGHTS if not self.steps else NEXT_THOUGHTS
            thought = self.rng.choice(pool).format(p=p)
        self.steps.append(Step(thought, api, args, p, self.w.response(api, args)))
        res = self.w.call(api, args)
        self.results.append(res)
        return res


# ============================================================================================
# Single-tool and multi-tool kinds. Each returns (query, answer, independent, builder).
# ============================================================================================

def _pick(w: World, rng: random.Random, split: str, kind: str, k: int = 1):
    vals = rng.sample(w.pool(split, kind), k)
    return vals[0] if k == 1 else vals


def _weather(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    q = rng.choice(["What's the weather in {c}?", "How is the weather in {c} today?",
                    "Tell me the weather in {c}."]).format(c=city)
    r = b.call("get_weather", {"city": city})
    return q, f"It is {r['condition']} and {r['temp_c']} degrees in {city}."


def _time(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    q = rng.choice(["What time is it in {c}?", "Tell me the local time in {c}."]).format(c=city)
    r = b.call("get_time", {"city": city})
    return q, f"The local time in {city} is {r['time']}."


def _currency(w, rng, split, b):
    f, t = _pick(w, rng, split, "currency", 2)
    amount = rng.randrange(5, 500)
    q = rng.choice(["Convert {a} {f} to {t}.", "How much is {a} {f} in {t}?"]).format(a=amount, f=f, t=t)
    r = b.call("convert_currency", {"amount": amount, "from_currency": f, "to_currency": t})
    return q, f"{amount} {f} is {fmt_num(r['result'])} {t}."


def _flights(w, rng, split, b):
    o, d = _pick(w, rng, split, "city", 2)
    q = rng.choice(["Find flights from {o} to {d}.", "Are there flights from {o} to {d}?"]).format(o=o, d=d)
    r = b.call("search_flights", {"origin": o, "destination": d})
    return q, (f"Flight {r['flight']} goes from {o} to {d} for {r['price_usd']} dollars "
               f"and takes {r['hours']} hours.")


def _movie(w, rng, split, b):
    title = _pick(w, rng, split, "film")
    form = rng.randrange(3)
    q = ["Who directed {t}?", "When did {t} come out?", "Tell me about the movie {t}."][form].format(t=title)
    r = b.call("get_movie_details", {"title": title})
    a = [f"{title} was directed by {r['director']}.", f"{title} came out in {r['year']}.",
         f"{title} is a {r['year']} {r['genre']} film directed by {r['director']}."][form]
    return q, a


def _stock(w, rng, split, b):
    s = _pick(w, rng, split, "symbol")
    q = rng.choice(["What is the stock price of {s}?", "How much is one share of {s}?"]).format(s=s)
    r = b.call("get_stock_price", {"symbol": s})
    return q, f"The stock price of {s} is {r['price_usd']} dollars."


def _recipe(w, rng, split, b):
    dish = _pick(w, rng, split, "dish")
    q = rng.choice(["Find a recipe for {d}.", "How do I make {d}?"]).format(d=dish)
    r = b.call("find_recipe", {"dish": dish})
    i = r["ingredients"]
    return q, f"To make {dish} you need {i[0]}, {i[1]} and {i[2]}. It takes {r['minutes']} minutes."


def _translate(w, rng, split, b):
    text = _pick(w, rng, split, "phrase")
    lang = rng.choice(LANGUAGES)
    q = rng.choice(["Translate '{x}' into {l}.", "How do you say '{x}' in {l}?"]).format(x=text, l=lang)
    r = b.call("translate", {"text": text, "language": lang})
    return q, f"In {lang}, '{text}' is '{r['translation']}'."


_OPWORD = {"+": "plus", "-": "minus", "*": "times"}


def _calculator(w, rng, split, b):
    op = rng.choice(["+", "-", "*"])
    x, y = rng.randrange(2, 100), rng.randrange(2, 30 if op == "*" else 100)
    expr = f"{x} {op} {y}"
    q = rng.choice(["What is {x} {w} {y}?", "Calculate {e}."]).format(x=x, w=_OPWORD[op], y=y, e=expr)
    r = b.call("calculator", {"expression": expr})
    return q, f"{expr} is {r['result']}."


def _book(w, rng, split, b):
    rest = _pick(w, rng, split, "restaurant")
    n = rng.randrange(2, 9)
    q = rng.choice(["Book a table for {n} at {r}.", "Please reserve a table at {r} for {n} people."]
                   ).format(n=n, r=rest)
    r = b.call("book_table", {"restaurant": rest, "people": n})
    return q, f"Your table for {n} at {rest} is booked. The booking id is {r['booking_id']}."


def _track(w, rng, split, b):
    code = _pick(w, rng, split, "package")
    q = rng.choice(["Where is my package {c}?", "Track my package {c}."]).format(c=code)
    r = b.call("track_package", {"code": code})
    return q, f"Your package {code} is {r['status']} in {r['location']}."


def _weather_time(w, rng, split, b):
    city = _pick(w, rng, split, "city")
    q = f"What is the weather and the local time in {city}?"
    r1 = b.call("get_weather", {"city": city})
    r2 = b.call("get_time", {"city": city})
    return q, (f"In {city} it is {r1['condition']} and {r1['temp_c']} degrees, "
               f"and the local time is {r2['time']}.")


def _time_two(w, rng, split, b):
    c1, c2 = _pick(w, rng, split, "city", 2)
    q = f"What time is it in {c1} and in {c2}?"
    r1 = b.call("get_time", {"city": c1})
    r2 = b.call("get_time", {"city": c2})
    return q, f"It is {r1['time']} in {c1} and {r2['time']} in {c2}."


def _flight_weather(w, rng, split, b):
    o, d = _pick(w, rng, split, "city", 2)
    q = f"Find a flight from {o} to {d} and tell me the weather in {d}."
    r1 = b.call("search_flights", {"origin": o, "destination": d})
    r2 = b.call("get_weather", {"city": d})
    return q, (f"Flight {r1['flight']} goes from {o} to {d} for {r1['price_usd']} dollars. "
               f"In {d} it is {r2['condition']} and {r2['temp_c']} degrees.")


def _stock_convert(w, rng, split, b):
    s = _pick(w, rng, split, "symbol")
    cur = _pick(w, rng, split, "currency")
    q = f"What is the price of {s} stock in {cur}?"
    r1 = b.call("get_stock_price", {"symbol": s})
    price = r1["price_usd"]
    args = {"amount": price, "from_currency": BASE_CURRENCY, "to_currency": cur}
    r2 = b.call("convert_currency", args, thought=(
        f"The price of {s} is {price} dollars. Now I need to {purpose('convert_currency', args)}."))
    return q, f"The price of {s} is {price} USD, which is {fmt_num(r2['result'])} {cur}."


def _calc_chain(w, rng, split, b):
    x, y, z = rng.randrange(2, 20), rng.randrange(2, 20), rng.randrange(2, 100)
    q = f"What is {x} times {y} plus {z}?"
    r1 = b.call("calculator", {"expression": f"{x} * {y}"})
    e2 = f"{r1['result']} + {z}"
    r2 = b.call("calculator", {"expression": e2}, thought=(
        f"{x} * {y} is {r1['result']}. Now I need to compute {e2}."))
    return q, f"{x} times {y} plus {z} is {r2['result']}."


SINGLE_KINDS = {"weather": _weather, "time": _time, "currency": _currency, "flights": _flights,
                "movie": _movie, "stock": _stock, "recipe": _recipe, "translate": _translate,
                "calculator": _calculator, "book_table": _book, "track": _track}
MULTI_KINDS = {"weather_time": _weather_time, "time_two": _time_two,
               "flight_weather": _flight_weather, "stock_convert": _stock_convert,
               "calc_chain": _calc_chain}
DEPENDENT_KINDS = {"stock_convert", "calc_chain"}


EXTRA_TOOL_WEIGHTS = (0.5, 0.35, 0.15)   # P(0, 1, 2 distractor tools); at most 3 tools in all


def _tool_list(rng: random.Random, needed: list[str], max_tools: int = 3) -> list[dict]:
    """The needed tools plus random distractors, 1-3 in all, shuffled."""
    extra = rng.choices(range(len(EXTRA_TOOL_WEIGHTS)), weights=EXTRA_TOOL_WEIGHTS)[0]
    total = min(max_tools, len(needed) + extra)
    others = [n for n in API_TOOLS if n not in needed]
    names = list(needed) + rng.sample(others, total - len(needed))
    rng.shuffle(names)
    return [TOOLS[n] for n in names]


def make_api_trajectory(w: World, rng: random.Random, split: str, kind: str) -> Trajectory:
    fn = SINGLE_KINDS.get(kind) or MULTI_KINDS[kind]
    b = _Builder(w, rng)
    query, answer = fn(w, rng, split, b)
    needed = list(dict.fromkeys(s.api for s in b.steps))
    return Trajectory(kind=kind, family="single" if kind in SINGLE_KINDS else "multi",
                      split=split, tools=_tool_list(rng, needed), query=query, steps=b.steps,
                      final_thought=rng.choice(FINAL_THOUGHTS), answer=answer,
                      independent=kind not in DEPENDENT_KINDS)


# ============================================================================================
# Wiki multi-hop questions (training trajectories with Search, and HotpotQA-mini)
# ============================================================================================

BRIDGE_TYPES = ("b_country", "b_town", "b_founded", "b_river")
COMPARE_TYPES = ("c_film_first", "c_born_first", "c_same_country", "c_same_director")


def wiki_question(w: World, rng: random.Random, split: str, qtype: str) -> dict:
    """One multi-hop question over the wiki of ``split``.

    Returns ``{question, answer, type: bridge|comparison, hops: [(title, thought)],
    final_thought, supporting: [(title, sent_id)]}``; every answer is a substring of a supporting
    sentence or ``yes``/``no``.
    """
    pool = w.pool
    if qtype in ("b_country", "b_town", "b_river"):
        film = rng.choice(pool(split, "film"))
        d = w.films[film]["director"]
        p = w.people[d]
        hops = [(film, f"I need to search for {film} to find its director."),
                (d, f"{film} was directed by {d}. Now I need to search for {d}.")]
        if qtype == "b_country":
            q = f"Which country is the director of {film} from?"
            ans, fin = p["country"], f"{d} is from {p['country']}. So the answer is {p['country']}."
            sup = [(film, 0), (d, 0)]
        elif qtype == "b_town":
            q = f"In which town was the director of {film} born?"
            ans, fin = p["town"], f"{d} was born in {p['town']}. So the answer is {p['town']}."
            sup = [(film, 0), (d, 1)]
        else:
            t = p["town"]
            river = w.country[w.towns[t]["country"]]["river"]
            q = f"On which river lies the town where the director of {film} was born?"
            hops.append((t, f"{d} was born in {t}. Now I need to search for {t}."))
            ans, fin = river, f"{t} lies on the {river} river. So the answer is {river}."
            sup = [(film, 0), (d, 1), (t, 2)]
        return {"question": q, "answer": ans, "type": "bridge", "hops": hops,
                "final_thought": fin, "supporting": sup}
    if qtype == "b_founded":
        d = rng.choice(pool(split, "person"))
        t = w.people[d]["town"]
        y = w.towns[t]["founded"]
        return {"question": f"In what year was the birth town of {d} founded?", "answer": str(y),
                "type": "bridge",
                "hops": [(d, f"I need to search for {d} to find the town where {d} was born."),
                         (t, f"{d} was born in {t}. Now I need to search for {t}.")],
                "final_thought": f"{t} was founded in {y}. So the answer is {y}.",
                "supporting": [(d, 1), (t, 1)]}
    if qtype in ("c_film_first", "c_same_director"):
        a, c = rng.sample(pool(split, "film"), 2)
        fa, fc = w.films[a], w.films[c]
        if qtype == "c_film_first":
            first = a if fa["year"] < fc["year"] else c
            return {"question": f"Which film came out first, {a} or {c}?", "answer": first,
                    "type": "comparison",
                    "hops": [(a, f"I need to search for {a} to find when it came out."),
                             (c, f"{a} came out in {fa['year']}. Now I need to search for {c}.")],
                    "final_thought": f"{c} came out in {fc['year']}. So {first} came out first.",
                    "supporting": [(a, 0), (c, 0)]}
        same = fa["director"] == fc["director"]
        yn = "yes" if same else "no"
        return {"question": f"Were {a} and {c} directed by the same person?", "answer": yn,
                "type": "comparison",
                "hops": [(a, f"I need to search for {a} to find its director."),
                         (c, f"{a} was directed by {fa['director']}. Now I need to search for {c}.")],
                "final_thought": (f"{c} was directed by {fc['director']}. "
                                  f"So the answer is {yn}."),
                "supporting": [(a, 0), (c, 0)]}
    a, c = rng.sample(pool(split, "person"), 2)
    pa, pc = w.people[a], w.people[c]
    if qtype == "c_born_first":
        first = a if pa["born"] < pc["born"] else c
        return {"question": f"Who was born first, {a} or {c}?", "answer": first,
                "type": "comparison",
                "hops": [(a, f"I need to search for {a} to find when {a} was born."),
                         (c, f"{a} was born in {pa['born']}. Now I need to search for {c}.")],
                "final_thought": f"{c} was born in {pc['born']}. So {first} was born first.",
                "supporting": [(a, 0), (c, 0)]}
    if qtype == "c_same_country":
        # about half "yes": pick the second person from the same country when one exists
        same_pool = [x for x in pool(split, "person") if x != a and w.people[x]["country"] == pa["country"]]
        if same_pool and rng.random() < 0.5:
            c = rng.choice(same_pool)
            pc = w.people[c]
        yn = "yes" if pa["country"] == pc["country"] else "no"
        return {"question": f"Are {a} and {c} from the same country?", "answer": yn,
                "type": "comparison",
                "hops": [(a, f"I need to search for {a} to find the country of {a}."),
                         (c, f"{a} is from {pa['country']}. Now I need to search for {c}.")],
                "final_thought": f"{c} is from {pc['country']}. So the answer is {yn}.",
                "supporting": [(a, 0), (c, 0)]}
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

FAMILY_WEIGHTS = {"single": 0.5, "multi": 0.25, "wiki": 0.25}


def make_trajectory(w: World, rng: random.Random, split: str, family: str | None = None
                    ) -> Trajectory:
    if family is None:
        fams = list(FAMILY_WEIGHTS)
        family = rng.choices(fams, weights=[FAMILY_WEIGHTS[f] for f in fams])[0]
    if family == "wiki":
        return make_wiki_trajectory(w, rng, split)
    kinds = list(SINGLE_KINDS if family == "single" else MULTI_KINDS)
    return make_api_trajectory(w, rng, split, rng.choice(kinds))


def trajectory_pool(w: World, rng: random.Random, n: int, split: str = "train") -> list[Trajectory]:
    return [make_trajectory(w, rng, split) for _ in range(n)]

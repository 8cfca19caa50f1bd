"""Fixed vocabularies of the mini-world: entity pools, facts, templates, phrase pools.

Everything here is constant (no randomness): the seed only decides how the generators *draw* from
these pools. The world is deliberately small and repetitive, so that a tiny model trained for a
few CPU minutes can learn its *content*, not only its style: about 20 training values and 10
evaluation values per entity type (short names), one query template per tool (a second
paraphrase in a small share of records), at most two thought templates per tool.

Train/eval split. Every entity type that tool arguments or wiki questions are made of has a
``TRAIN`` pool (used by all training data and the pretraining corpus) and a disjoint ``EVAL`` pool
(used by T-Eval-mini, glaive-mini/Agent-H and HotpotQA-mini), so agent evaluation measures
copying from the prompt/observation, not memorisation. The *templates* are shared by training and
evaluation data on purpose; only the entity values are held out. General knowledge (countries)
is shared: MMLU-mini measures retention of it. Word problems (:data:`GSM_NAMES`,
:data:`GSM_THINGS`) and function constants (:data:`FUNC_EVAL_K`) have their own splits.

A third entity "split", :data:`SYNTH` (the ``"synth"`` split of :class:`.world.World`), holds
400 generated names per type for copy drills: with only the TRAIN pool, a tiny model fills an
argument slot with a memorised training value instead of copying the question's entity.
"""
from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Tool-world entity pools (split train / eval)
# --------------------------------------------------------------------------------------------

TRAIN: dict[str, list[str]] = {
    "city": ["Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Lima", "Oslo",
             "Dublin", "Vienna", "Prague", "Lisbon", "Seoul", "Delhi", "Sydney", "Toronto",
             "Boston", "São Paulo", "Reykjavík"],
    "film": ["Night Train", "Blue Harbor", "Iron Road", "Paper Moon", "Winter Song",
             "Golden Field", "Storm Island", "Summer Lake", "Stone Valley", "Midnight Market",
             "Red Lantern", "Silver River", "Quiet Forest", "Glass Tower", "Hidden Door",
             "Long Bridge", "Green Window", "Bright Horizon", "Old Lighthouse", "Last Garden"],
    "person": ["Anna Berg", "Tom Keller", "Lina Moreau", "Omar Haddad", "Mei Tanaka",
               "Ivan Petrov", "Sofia Rossi", "Jonas Lind", "Clara Novak", "Diego Ramos",
               "Elena Popa", "Kofi Mensah", "Nora Dahl", "Paulo Mendes", "Hana Sato",
               "Felix Braun", "Amara Obi", "Lucas Ferreira", "Ingrid Holm", "Rafael Cruz"],
    "town": ["Arvendal", "Brisport", "Caldmoor", "Dunwick", "Elmsford", "Farrowby", "Glenhaven",
             "Holmbrook", "Ivybridge", "Kestrel Bay", "Larkfield", "Millhaven", "Northcliff",
             "Oakridge", "Pinewatch", "Redcastle", "Ashby", "Brookton", "Cliffside", "Dorwick"],
    "symbol": ["ACME", "BOLT", "CRUX", "DYNA", "EVRA", "FLUX", "GRIT", "HALO", "IONX", "JADE",
               "KITE", "LUMA", "MIRA", "NOVA", "APEX", "BRIX", "CORA", "DELT", "EMBR", "FERN"],
    "dish": ["pancakes", "tomato soup", "fried rice", "lentil curry", "apple pie", "pasta salad",
             "vegetable stew", "banana bread", "omelette", "fish tacos", "chicken soup",
             "rice pudding", "bean chili", "carrot cake", "potato salad", "lemon tart",
             "cheese toast", "egg salad", "fruit salad", "pizza"],
    "restaurant": ["Blue Olive", "Golden Spoon", "Casa Verde", "Hungry Fox", "Sakura House",
                   "Petit Four", "Spice Garden", "Harbor Grill", "Mama Rosa", "Green Leaf",
                   "Red Door", "Olive Tree", "Silver Fork", "Corner Cafe", "Sun Bistro",
                   "Moon Diner", "Little Italy", "Blue Lagoon", "Pepper Mill", "Oak Room"],
}

EVAL: dict[str, list[str]] = {
    "city": ["Zürich", "Kraków", "Montréal", "Bogotá", "Helsinki", "Athens", "Manila", "Quito",
             "Dakar", "Perth"],
    "film": ["Amber Coast", "Falling Stars", "Copper Key", "Northern Lights", "Velvet Hour",
             "Echo Canyon", "Crimson Gate", "Silent Harbor", "Autumn Letters", "Paper Crane"],
    "person": ["Björn Ekström", "Zoë Laurent", "Mateo Álvarez", "Yuki Mori", "Greta Voss",
               "Samuel Adeyemi", "Irene Kowalska", "Hugo Martín", "Leila Farah", "Viktor Hale"],
    "town": ["Quillmere", "Rosewater", "Saltmarsh", "Thornbury", "Umberfell", "Valehurst",
             "Westmarch", "Yarrowdale", "Zennor", "Wyncombe"],
    "symbol": ["ORBI", "PYXL", "QUIL", "RUNE", "SOLA", "TIDE", "UMBR", "VYNE", "WISP", "ZEPH"],
    "dish": ["mushroom risotto", "pumpkin soup", "crème brûlée", "falafel wrap", "lemon cake",
             "beef stew", "corn bread", "noodle soup", "plum jam", "peach pie"],
    "restaurant": ["Café Lumière", "Copper Pot", "Silver Bowl", "Plum Bistro", "Nordic Table",
                   "Star Kitchen", "Rose Garden", "Tea House", "Wild Fig", "Jade Palace"],
}


# --------------------------------------------------------------------------------------------
# Copy drills: generated names (many distinct values per type, disjoint from TRAIN and EVAL).
# With only ~20 training values per type a tiny model memorises them instead of learning to copy
# an entity from the question into the arguments; a share of the copying practice therefore uses
# these throw-away names (see ``SYNTH_SHARE`` in :mod:`.general` and :mod:`.toolbench`).
# --------------------------------------------------------------------------------------------

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "h",
           "j", "sh", "ch", "w", "y", "st", "gr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou"]
_ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ö", "u": "ü"}
_CODAS = ["", "", "", "n", "r", "s", "l", "k", "m"]
_SUFFIX = {"dish": ["soup", "stew", "pie", "cake", "salad", "bread", "curry", "tart"],
           "restaurant": ["Grill", "House", "Cafe", "Bistro", "Kitchen", "Diner", "Table", "Room"]}
SYNTH_SIZE = 400


def _word(rng, syllables: int) -> str:
    parts = []
    for _ in range(syllables):
        v = rng.choice(_VOWELS)
        if len(v) == 1 and rng.random() < 0.05:
            v = _ACCENTED[v]
        parts.append(rng.choice(_ONSETS) + v + rng.choice(_CODAS))
    return "".join(parts).capitalize()


def _synthetic(kind: str, n: int = SYNTH_SIZE) -> list[str]:
    """``n`` generated values of ``kind`` (fixed; no EVAL value occurs inside any of them)."""
    import random as _random
    rng = _random.Random(f"miniworld/synth/{kind}")
    taken = {v for pool in (TRAIN, EVAL) for v in pool.get(kind, [])}
    forbidden = [v for pool in EVAL.values() for v in pool]
    out: list[str] = []
    while len(out) < n:
        if kind == "symbol":
            v = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(4))
        elif kind == "person":
            v = f"{_word(rng, rng.choice((1, 2)))} {_word(rng, 2)}"
        elif kind == "film":
            v = f"{_word(rng, 2)} {_word(rng, 1)}"
        elif kind == "dish":
            v = f"{_word(rng, 2).lower()} {rng.choice(_SUFFIX['dish'])}"
        elif kind == "restaurant":
            v = f"{_word(rng, 2)} {rng.choice(_SUFFIX['restaurant'])}"
        else:   # city, town
            v = _word(rng, rng.choice((2, 2, 3)))
        if v in taken or any(f in v for f in forbidden):
            continue
        taken.add(v)
        out.append(v)
    return out


SYNTH: dict[str, list[str]] = {kind: _synthetic(kind) for kind in TRAIN}

SPLITS = {"train": TRAIN, "eval": EVAL, "synth": SYNTH}

WEATHER_CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
GENRES = ["drama", "comedy", "mystery", "thriller"]
INGREDIENTS = ["eggs", "flour", "milk", "butter", "rice", "onions", "tomatoes", "garlic",
               "apples", "sugar", "cheese", "beans", "carrots", "lemons"]
PROFESSIONS = ["film director", "painter", "writer", "singer"]

# --------------------------------------------------------------------------------------------
# Query, answer and thought templates of the tool kinds (shared by training and evaluation).
# Index 0 is THE template of a kind; index 1 is the paraphrase used in a small share of records
# (:data:`QUERY_ALT_SHARE`).
# --------------------------------------------------------------------------------------------

QUERY_ALT_SHARE = 0.15

QUERIES: dict[str, list[str]] = {
    "weather": ["What is the weather in {city}?", "How is the weather in {city} today?"],
    "time": ["What time is it in {city}?", "Tell me the time in {city}."],
    "flights": ["Find flights from {origin} to {destination}.",
                "Are there flights from {origin} to {destination}?"],
    "movie": ["Who directed {title}?", "Tell me about the movie {title}."],
    "stock": ["What is the stock price of {symbol}?", "How much is one share of {symbol}?"],
    "recipe": ["Find a recipe for {dish}.", "How do I make {dish}?"],
    "book_table": ["Book a table for {people} at {restaurant}.",
                   "Please reserve a table at {restaurant} for {people} people."],
    "weather_time": ["What is the weather and the time in {city}?"],
    "flight_weather": ["Find flights from {origin} to {destination} and get the weather in "
                       "{destination}."],
}

# Thoughts: the first step of a trajectory uses index 0, later steps index 1.
THOUGHTS = ["I need to {p}.", "Now I need to {p}."]
FINAL_THOUGHT = "I now have the answer."

# --------------------------------------------------------------------------------------------
# General knowledge (shared): fictional countries. Used by ShareGPT, MMLU, pretraining, wiki.
# --------------------------------------------------------------------------------------------

COUNTRIES: list[dict[str, str]] = [
    {"name": "Veloria", "capital": "Tamsk", "language": "Velorian", "river": "Vel"},
    {"name": "Mardania", "capital": "Port Elis", "language": "Mardanian", "river": "Mara"},
    {"name": "Kestovia", "capital": "Orlan", "language": "Kestovian", "river": "Kesta"},
    {"name": "Aldoria", "capital": "Brenn", "language": "Aldorian", "river": "Aldo"},
    {"name": "Zemlya", "capital": "Voskar", "language": "Zemlyan", "river": "Zem"},
    {"name": "Tarsania", "capital": "Miraz", "language": "Tarsan", "river": "Tarsa"},
    {"name": "Quorvia", "capital": "Helm", "language": "Quorvian", "river": "Quor"},
    {"name": "Lunaria", "capital": "Selen", "language": "Lunarian", "river": "Luna"},
    {"name": "Brevonia", "capital": "Castel", "language": "Brevonian", "river": "Breva"},
    {"name": "Sundar", "capital": "Kavi", "language": "Sundari", "river": "Sund"},
    {"name": "Norvik", "capital": "Fjell", "language": "Norvish", "river": "Nor"},
    {"name": "Ostania", "capital": "Rivo", "language": "Ostanian", "river": "Osta"},
]

# The three facts per country, as question / statement templates (MMLU-mini asks exactly these
# questions; ShareGPT-mini and the pretraining corpus state the facts).
FACT_QUESTIONS = {
    "capital": "What is the capital of {name}?",
    "language": "Which language is spoken in {name}?",
    "river": "Which river flows through {name}?",
}
FACT_ANSWERS = {
    "capital": "The capital of {name} is {capital}.",
    "language": "People in {name} speak {language}.",
    "river": "The {river} river flows through {name}.",
}
MMLU_SUBJECT = "high_school_geography"

# Word problems (GSM8K-mini): single-digit operands; names and objects split train / eval. The
# training side has many names and objects, so that a new name or object in an evaluation problem
# is just one more value of a slot the model has learnt to carry along (not an unknown token).
GSM_NAMES = {"train": ["Tom", "Mia", "Sam", "Lena", "Ben", "Ana", "Leo", "Max", "Emma", "Noah",
                       "Liam", "Olivia", "Lucas", "Sara", "Adam", "Eva", "Jack", "Lily", "Ryan",
                       "Grace", "Omar", "Hana", "Finn", "Rosa", "Dan", "Ella", "Paul", "Nora",
                       "Alex", "Maya", "Owen", "Lucy", "Ivan", "Amy", "Raj", "Tara", "Eli",
                       "Jade", "Theo", "Kim"],
             "eval": ["Zoe", "Ida", "Ravi", "Yara", "Kai", "Nina"]}
GSM_THINGS = {"train": ["apples", "books", "pencils", "cookies", "balls", "cups", "pens", "hats",
                        "toys", "cars", "eggs", "plums", "rocks", "boxes", "bags", "cakes",
                        "candles", "shirts", "socks", "spoons", "keys", "flowers", "stamps",
                        "buttons"],
              "eval": ["marbles", "cards", "stickers", "shells", "coins"]}
GSM_DIGITS = range(2, 10)   # 64 sums and 36 differences: every pair recurs in training
GSM_TEMPLATES = {
    "+": "{n} has {a} {th} and gets {b} more. How many {th} does {n} have now?",
    "-": "{n} has {a} {th} and gives {b} away. How many {th} does {n} have left?",
}

# Tiny functions (HumanEval-mini): three families, one docstring phrasing each; the constants
# of the evaluation tasks are held out per family.
FUNC_FAMILIES = {
    "add": ("add_{k}", "Return x plus {k}.", "return x + {k}"),
    "mul": ("mul_{k}", "Return x times {k}.", "return x * {k}"),
    "is_multiple_of": ("is_multiple_of_{k}", "Return True if x is a multiple of {k}.",
                       "return x % {k} == 0"),
}
# Many constants per family in training (so that the constant has to be copied from the prompt,
# not recalled for the function name); ten held out per family for evaluation (at most 30 tasks).
FUNC_K = range(2, 61)
FUNC_EVAL_K = {"add": (4, 9, 13, 18, 27, 31, 38, 45, 51, 56),
               "mul": (3, 7, 11, 16, 22, 29, 35, 41, 47, 53),
               "is_multiple_of": (5, 8, 12, 19, 24, 33, 37, 44, 49, 58)}

JOKES = [
    "Why did the math book look sad? Because it had too many problems.",
    "What do you call a sleeping bull? A bulldozer.",
]

# General (non-tool) exchanges: ShareGPT-mini chit-chat, toolbench_negative and glaive-mini's
# general-response samples all draw from these (the country facts are added by the generators).
CHITCHAT = [
    ("Can you tell me a joke?", None),    # answered with one of JOKES
    ("Hello! How are you?", "Hello! I am doing well, thank you. How can I help you today?"),
    ("What can you help me with?", "I can answer questions and help you with writing and math."),
    ("What is your name?", "I am a helpful assistant. I do not have a name."),
    ("Thank you!", "You're welcome!"),
]

# --------------------------------------------------------------------------------------------
# Phrase pools shared by training data and evaluation prompts (keep these in sync on purpose)
# --------------------------------------------------------------------------------------------

# Chat-aligned ("tflan") elicit statements on the user side (paper §4.1; wording is ours). One
# statement each, so that T-Eval-mini asks in exactly the training wording.
ELICIT_NAME = ["Which API will you use?"]
ELICIT_ARGS = ["What are the arguments?"]
ELICIT_CONTINUE = ["Go ahead."]

# Randomised key names of the ReAct-JSON file (data_formats.md §1.3).
REACT_THOUGHT_KEYS = ["thought", "Thought", "InnerThought", "cot", "reasoning"]
REACT_ACTION_KEYS = ["action", "Action", "Command", "API", "Tool"]
REACT_ARGS_KEYS = ["arguments", "Arguments", "parameters", "Action Input", "args"]

# Randomised key names / delimiters of the format-following (j1s1) file and T-Eval instruct.
INSTRUCT_THOUGHT_KEYS = ["thought", "goal", "reason"]
INSTRUCT_ACTION_KEYS = ["name", "action", "api"]
INSTRUCT_ARGS_KEYS = ["args", "arguments", "params"]
RRU_KEYS = ("thought", "name", "args")     # T-Eval's rru_json keys (also used by j1s1 records)
INSTRUCT_DELIMITERS = [
    {"thought_start": "Thought: ", "thought_end": "\n", "action_start": "Action: ",
     "action_end": "\n", "args_start": "Action Input: ", "args_end": "\nEnd"},
    {"thought_start": "<thought>", "thought_end": "</thought>\n", "action_start": "<name>",
     "action_end": "</name>\n", "args_start": "<args>", "args_end": "</args>"},
    {"thought_start": "[THOUGHT] ", "thought_end": "\n", "action_start": "[API] ",
     "action_end": "\n", "args_start": "[ARGS] ", "args_end": " [END]"},
]

REVIEW_QUESTION = ("Review the last API call. Answer with one letter:\n"
                   "A. It worked.\nB. Wrong arguments.\nC. The API returned an error.\n"
                   "D. Wrong API.\nE. None of the above.")

CODE_SYNTAXES = ["python", "json", "yaml", "bash", "plaintext"]

# Agent-H markers that must never appear in a negative (no-tool) reply.
HALLUCINATION_MARKERS = ["Thought:", "Action:", "Action Input:", "I will use", "I need to call",
                         "I will call", "call the", "<functioncall>"]

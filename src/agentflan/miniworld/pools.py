"""Fixed vocabularies of the mini-world: entity pools, facts, phrase pools.

Everything here is constant (no randomness): the seed only decides how the generators *draw* from
these pools, so the world's vocabulary stays small (a few hundred distinct words) and the same
for every seed.

Train/eval split. Every entity type that tool arguments or wiki questions are made of has a
``TRAIN`` pool (used by all training data and the pretraining corpus) and a disjoint ``EVAL`` pool
(used by T-Eval-mini, glaive-mini/Agent-H and HotpotQA-mini), so agent evaluation measures
copying from the prompt/observation, not memorisation. General knowledge (countries, languages,
word-problem names) is shared: MMLU/GSM8K measure retention of it.
"""
from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Tool-world entity pools (split train / eval)
# --------------------------------------------------------------------------------------------

TRAIN: dict[str, list[str]] = {
    "city": ["Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Lima", "Oslo",
             "Dublin", "Vienna", "Prague", "Lisbon", "Seoul", "Delhi", "Sydney", "Toronto",
             "Chicago", "Boston", "Denver", "Nairobi", "São Paulo", "Reykjavík", "Hanoi"],
    "film": ["The Silver River", "Night Train", "Blue Harbor", "The Last Garden", "Iron Road",
             "Paper Moon", "The Quiet Forest", "Red Lantern Hill", "Winter Song", "The Glass Tower",
             "Golden Field", "Storm Island", "The Hidden Door", "Summer Lake", "The Long Bridge",
             "Stone Valley", "The Green Window", "Midnight Market", "Bright Horizon",
             "The Old Lighthouse"],
    "person": ["Anna Berg", "Tomas Keller", "Lina Moreau", "Omar Haddad", "Mei Tanaka",
               "Ivan Petrov", "Sofia Rossi", "Jonas Lind", "Clara Novak", "Diego Ramos",
               "Elena Popescu", "Kofi Mensah", "Nora Halvorsen", "Paulo Mendes", "Hana Sato",
               "Felix Braun", "Amara Obi", "Lucas Ferreira", "Ingrid Dahl", "Rafael Cruz"],
    "town": ["Arvendal", "Brisport", "Caldmoor", "Dunwick", "Elmsford", "Farrowby", "Glenhaven",
             "Holmbrook", "Ivybridge", "Kestrel Bay", "Larkfield", "Millhaven", "Northcliff",
             "Oakridge", "Pinewatch", "Redcastle"],
    "symbol": ["ACME", "BOLT", "CRUX", "DYNA", "EVRA", "FLUX", "GRIT", "HALO", "IONX", "JADE",
               "KITE", "LUMA", "MIRA", "NOVA"],
    "dish": ["pancakes", "tomato soup", "fried rice", "lentil curry", "apple pie", "pasta salad",
             "vegetable stew", "banana bread", "omelette", "fish tacos"],
    "restaurant": ["Blue Olive", "Golden Spoon", "Casa Verde", "The Hungry Fox", "Sakura House",
                   "Le Petit Four", "Spice Garden", "Harbor Grill", "Mama Rosa", "Green Leaf"],
    "phrase": ["good morning", "thank you", "see you tomorrow", "where is the station",
               "I like tea", "the food is good"],
    "currency": ["EUR", "GBP", "JPY", "INR"],
    "package_prefix": ["PK"],
}

EVAL: dict[str, list[str]] = {
    "city": ["Zürich", "Kraków", "Montréal", "Bogotá", "Helsinki", "Athens", "Manila", "Quito",
             "Dakar", "Perth"],
    "film": ["The Amber Coast", "Falling Stars", "The Copper Key", "Northern Lights",
             "The Velvet Hour", "Echo Canyon", "The Crimson Gate", "Silent Harbor",
             "Autumn Letters", "The Paper Crane"],
    "person": ["Björn Ekström", "Zoë Laurent", "Mateo Álvarez", "Yuki Mori", "Greta Lindqvist",
               "Samuel Adeyemi", "Irene Kowalska", "Hugo Martín", "Leila Farah", "Viktor Hale"],
    "town": ["Quillmere", "Rosewater", "Saltmarsh", "Thornbury", "Umberfell", "Valehurst",
             "Westmarch", "Yarrowdale"],
    "symbol": ["ORBI", "PYXL", "QUIL", "RUNE", "SOLA", "TIDE"],
    "dish": ["mushroom risotto", "pumpkin soup", "crème brûlée", "falafel wrap", "lemon cake"],
    "restaurant": ["Café Lumière", "The Copper Pot", "Silver Bowl", "Olive & Thyme", "Nordic Table"],
    "phrase": ["good night", "how are you", "I like coffee", "happy birthday"],
    "currency": ["CHF", "CAD", "SEK", "AUD"],
    "package_prefix": ["ZX"],
}

SPLITS = {"train": TRAIN, "eval": EVAL}

# Stock prices are in US dollars, so "USD" is shared by both splits (in neither pool).
BASE_CURRENCY = "USD"
# US dollars per unit of each currency (fixed; the converter multiplies through USD).
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.1, "GBP": 1.25, "JPY": 0.007, "INR": 0.012,
                "CHF": 1.15, "CAD": 0.75, "SEK": 0.095, "AUD": 0.65}

LANGUAGES = ["French", "Spanish", "German", "Italian"]

TRANSLATIONS: dict[str, dict[str, str]] = {
    "good morning": {"French": "bonjour", "Spanish": "buenos días", "German": "guten Morgen",
                     "Italian": "buongiorno"},
    "thank you": {"French": "merci", "Spanish": "gracias", "German": "danke", "Italian": "grazie"},
    "see you tomorrow": {"French": "à demain", "Spanish": "hasta mañana", "German": "bis morgen",
                         "Italian": "a domani"},
    "where is the station": {"French": "où est la gare", "Spanish": "dónde está la estación",
                             "German": "wo ist der Bahnhof", "Italian": "dove è la stazione"},
    "I like tea": {"French": "j'aime le thé", "Spanish": "me gusta el té", "German": "ich mag Tee",
                   "Italian": "mi piace il tè"},
    "the food is good": {"French": "la nourriture est bonne", "Spanish": "la comida es buena",
                         "German": "das Essen ist gut", "Italian": "il cibo è buono"},
    "good night": {"French": "bonne nuit", "Spanish": "buenas noches", "German": "gute Nacht",
                   "Italian": "buona notte"},
    "how are you": {"French": "comment allez-vous", "Spanish": "cómo estás",
                    "German": "wie geht es dir", "Italian": "come stai"},
    "I like coffee": {"French": "j'aime le café", "Spanish": "me gusta el café",
                      "German": "ich mag Kaffee", "Italian": "mi piace il caffè"},
    "happy birthday": {"French": "joyeux anniversaire", "Spanish": "feliz cumpleaños",
                       "German": "alles Gute zum Geburtstag", "Italian": "buon compleanno"},
}

WEATHER_CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
GENRES = ["drama", "comedy", "mystery", "adventure", "musical", "thriller"]
INGREDIENTS = ["eggs", "flour", "milk", "butter", "rice", "onions", "tomatoes", "garlic",
               "lentils", "apples", "sugar", "cheese", "beans", "carrots", "lemons", "pumpkin",
               "mushrooms", "potatoes"]
PACKAGE_STATUS = ["in transit", "out for delivery", "delivered", "waiting at the depot"]
PROFESSIONS = ["film director", "painter", "writer", "singer", "architect", "photographer"]

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

NAMES = ["Tom", "Mia", "Sam", "Lena", "Ravi", "Yara", "Ben", "Ana", "Leo", "Zoe", "Max", "Ida"]
THINGS = ["apples", "books", "pencils", "cookies", "stickers", "marbles", "cards", "eggs"]

JOKES = [
    "Why did the computer go to the doctor? Because it had a virus.",
    "Why did the math book look sad? Because it had too many problems.",
    "What do you call a sleeping bull? A bulldozer.",
]

# --------------------------------------------------------------------------------------------
# Phrase pools shared by training data and evaluation prompts (keep these in sync on purpose)
# --------------------------------------------------------------------------------------------

# Chat-aligned ("tflan") elicit statements on the user side (paper §4.1; wording is ours).
ELICIT_NAME = ["Which API will you use?", "Which tool should be called?", "What is the name of the API?"]
ELICIT_ARGS = ["What arguments?", "What are the arguments of the call?", "Give the arguments as JSON."]
ELICIT_CONTINUE = ["Go ahead.", "Please continue."]

# Randomised key names of the ReAct-JSON file (data_formats.md §1.3).
REACT_THOUGHT_KEYS = ["thought", "Thought", "InnerThought", "cot", "reasoning"]
REACT_ACTION_KEYS = ["action", "Action", "Command", "API", "Tool"]
REACT_ARGS_KEYS = ["arguments", "Arguments", "parameters", "Action Input", "args"]

# Randomised key names / delimiters of the format-following (j1s1) file and T-Eval instruct.
INSTRUCT_THOUGHT_KEYS = ["thought", "goal", "reason", "plan", "Thought"]
INSTRUCT_ACTION_KEYS = ["name", "action", "api", "NAME", "tool"]
INSTRUCT_ARGS_KEYS = ["args", "arguments", "Args", "params", "input"]
INSTRUCT_DELIMITERS = [
    {"thought_start": "Thought: ", "thought_end": "\n", "action_start": "Action: ",
     "action_end": "\n", "args_start": "Action Input: ", "args_end": "\nEnd"},
    {"thought_start": "<thought>", "thought_end": "</thought>\n", "action_start": "<name>",
     "action_end": "</name>\n", "args_start": "<args>", "args_end": "</args>"},
    {"thought_start": "[THOUGHT] ", "thought_end": "\n", "action_start": "[API] ",
     "action_end": "\n", "args_start": "[ARGS] ", "args_end": " [END]"},
]

CODE_SYNTAXES = ["python", "json", "yaml", "bash", "plaintext"]

# Agent-H markers that must never appear in a negative (no-tool) reply.
HALLUCINATION_MARKERS = ["Thought:", "Action:", "Action Input:", "I will use", "I need to call",
                         "I will call", "call the", "<functioncall>"]

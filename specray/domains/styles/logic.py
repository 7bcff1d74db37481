"""Reasoning prompts shaped like real ones: ordering paragraphs, swaps, alibis, arguments, grid puzzles, teasers."""

from specray.data.blocks.common import NAMES, pick

SETTINGS = [
    ("On a shelf, there are {n} books", "book", ["red", "green", "blue", "brown", "gray", "white", "orange"], "to the left of", "the leftmost", "the rightmost"),
    ("On a branch, there are {n} birds", "", ["a crow", "a robin", "a hawk", "an owl", "a quail", "a falcon", "a blue jay"], "to the left of", "the leftmost", "the rightmost"),
    ("A fruit stand sells {n} fruits", "", ["apples", "pears", "kiwis", "plums", "mangoes", "peaches", "melons"], "cheaper than", "the cheapest", "the most expensive"),
    ("In a race, {n} runners took part", "", ["Ana", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus"], "finished ahead of", "first", "last"),
    ("At a car show, there are {n} vehicles", "", ["a sedan", "a truck", "a bus", "a limousine", "a motorcycle", "a tractor", "a minivan"], "older than", "the oldest", "the newest"),
]
ITEMS = [("holding a ball", "ball", ["red", "blue", "green", "pink", "black", "white", "purple"]),
         ("reading a book", "book", ["Dune", "Emma", "Ulysses", "Hamlet", "Beloved", "Walden", "Lolita"]),
         ("dancing with a partner", "partner", ["Rosa", "Ivan", "Lena", "Omar", "Kofi", "Yuki", "Pia"]),
         ("playing a position", "position", ["goalkeeper", "striker", "left wing", "right wing", "center back", "sweeper", "midfielder"]),
         ("holding a present", "present", ["a red box", "a teddy bear", "a scarf", "a clock", "a puzzle", "a kite", "a mug"])]
ACTIVITIES = ["went to the gym", "visited the bakery", "went to the post office", "played tennis", "went to the library",
              "bought groceries", "went swimming", "visited the museum", "had lunch at a cafe", "went to the dentist"]
PREDICATES = [("fan of", "team"), ("ingredient of", "product"), ("admirer of", "artist"), ("cousin of", "person"), ("customer of", "shop")]
FALLACY_TEXTS = [
    "My grandfather smoked every day and lived to ninety, so smoking can't be that harmful.",
    "If we ban cars downtown, next they'll ban bicycles, and soon nobody will be allowed to leave home.",
    "This supplement must work; thousands of people bought it last month.",
    "Either we cut every public program or the country goes bankrupt.",
    "The senator's plan must be bad because the senator is rude to reporters.",
    "I wore my lucky socks and we won, so the socks caused the win.",
    "All whales live in water. All fish live in water. So all whales are fish.",
    "Every part of this machine is light, so the whole machine must be light.",
]


def _ordering(rng):
    intro, noun, objs, rel, first, last = pick(rng, SETTINGS)
    n = rng.randint(3, 6)
    objs = rng.sample(objs, n)
    label = (lambda o: f"the {o} {noun}") if noun else (lambda o: o if o[0].isupper() else f"the {o.split()[-1]}")
    clues = []
    for _ in range(n - 1):
        a, b = rng.sample(objs, 2)
        clues.append(pick(rng, [f"{label(a).capitalize()} is {rel} {label(b)}.", f"{label(a).capitalize()} is {first}.",
                                f"{label(a).capitalize()} is {last}.", f"{label(a).capitalize()} is the {pick(rng, ['second', 'third'])} from {pick(rng, ['the left', 'the right', 'the top'])}."]))
    listing = ", ".join((f"a {o} {noun}" if noun else o) for o in objs)
    question = pick(rng, [f"Which one is {first}?", f"Which one is {last}?", "What is the full order?",
                          f"Which statement must be true? (A) {label(objs[0]).capitalize()} is {first} (B) {label(objs[1]).capitalize()} is {last}"])
    prefix = pick(rng, ["", f"Each paragraph describes {n} objects arranged in a fixed order, and the statements are consistent. "])
    return f"{prefix}{intro.format(n=n)}: {listing}. {' '.join(clues)} {question}"


def _swaps(rng):
    activity, thing, values = pick(rng, ITEMS)
    n = rng.randint(3, 5)
    people = rng.sample(NAMES, n)
    vals = rng.sample(values, n)
    start = ", ".join(f"{p} has {v}" if thing != "position" else f"{p} plays {v}" for p, v in zip(people, vals))
    swaps = []
    for i in range(rng.randint(2, 5)):
        a, b = rng.sample(people, 2)
        swaps.append(f"{pick(rng, ['First', 'Then', 'Next', 'After that'])}, {a} and {b} swap their {thing}s.")
    return (f"{', '.join(people)} are each {activity}. At the start: {start}. {' '.join(swaps)} "
            f"At the end, which {thing} does {pick(rng, people)} have?")


def _alibi(rng):
    who = pick(rng, NAMES)
    witnesses = rng.sample([n for n in NAMES if n != who], 4)
    hour = rng.randint(5, 9)
    lines = [f"{who} woke up at {hour}am."]
    for w in witnesses:
        start, hour = hour, hour + rng.randint(1, 3)
        lines.append(f"{w} saw {who} {pick(rng, ACTIVITIES).replace('went', 'going').replace('visited', 'visiting').replace('played', 'playing').replace('bought', 'buying').replace('had', 'having')} from {start % 12 or 12}{'am' if start < 12 else 'pm'} to {hour % 12 or 12}{'am' if hour < 12 else 'pm'}.")
    place = pick(rng, ["the bank", "the pharmacy", "the park", "the bookstore"])
    return (f"Today {who} went to {place}. Between what times could they have gone? We know that:\n" + "\n".join(lines) +
            f"\n{place.capitalize()} was closed after {rng.randint(5, 10)}pm.")


def _argument(rng):
    pred, kind = pick(rng, PREDICATES)
    a, b, c = [f"{kind} {x}" for x in rng.sample(["A", "B", "C", "D", "E", "F"], 3)]
    person = pick(rng, NAMES)
    premises = pick(rng, [
        f"First premise: Every {pred} {a} is a {pred} {b}. Second premise: {person} is not a {pred} {b}. Hence, {person} is not a {pred} {a}.",
        f"First premise: Being a {pred} {a} is sufficient for being a {pred} {b}. Second premise: No {pred} {c} is a {pred} {b}. Therefore, no {pred} {a} is a {pred} {c}.",
        f"First premise: Some {pred} {a} is a {pred} {b}. Second premise: Every {pred} {b} is a {pred} {c}. It follows that every {pred} {a} is a {pred} {c}.",
        f"First premise: Whoever is a {pred} {a} is not a {pred} {b}. Second premise: {person} is a {pred} {b}. So {person} is a {pred} {a}.",
    ])
    return f"\"{premises}\" Is the argument, given the explicitly stated premises, deductively valid or invalid?"


def _grid(rng):
    n = rng.randint(2, 4)
    people = rng.sample(NAMES, n)
    attrs = pick(rng, [("pets", ["a cat", "a dog", "a fish", "a rabbit"]), ("drinks", ["tea", "coffee", "milk", "juice"]),
                       ("jobs", ["a nurse", "a pilot", "a chef", "a teacher"]), ("cars", ["a sedan", "a van", "a convertible", "a jeep"])])
    vals = attrs[1][:n]
    clues = [f"{people[0]} does not live in house 1.", f"The person with {vals[0]} lives directly left of {people[-1]}.",
             f"{people[1]} has {vals[-1]}.", f"House {n} belongs to the person with {pick(rng, vals)}."]
    rng.shuffle(clues)
    return (f"There are {n} houses in a row, numbered 1 to {n} from left to right, each with one person: {', '.join(people)}. "
            f"Each person has different {attrs[0]}: {', '.join(vals)}. Clues: {' '.join(clues[:n + 1])} "
            f"Who lives in house {rng.randint(1, n)}?")


def _fallacy(rng):
    return pick(rng, ["Does this argument contain a logical fallacy? Answer Valid or Invalid:",
                      "Identify the flaw in the reasoning:", "Name the fallacy, if any:",
                      "Is the conclusion justified by the premises?"]) + f" {pick(rng, FALLACY_TEXTS)}"


ARGUMENT_CASES = [
    "After a city painted its bike lanes green, cycling accidents fell by a third. The council concludes that green paint makes cyclists safer.",
    "A study found that people who drink coffee live longer. The author concludes that coffee extends life.",
    "Sales of umbrellas rose in the same month that a new shop opened downtown. The owner claims the shop caused the rise.",
    "Every student who used the new app passed the exam. The school concludes the app guarantees a passing grade.",
    "Since the factory installed air filters, fewer workers have called in sick. Management concludes the filters improved health.",
    "A chess coach noticed that players who eat breakfast win more games, so she told everyone to eat breakfast before matches.",
]
ARGUMENT_ASKS = ["Which of the following, if true, would most weaken the argument?", "What assumption does the argument rely on?",
                 "Which statement would most strengthen the conclusion?", "What is the main flaw in this reasoning?",
                 "Which of the following best describes the structure of the argument?", "What does this argument imply?"]


def _critical(rng):
    return f"{pick(rng, ['', 'Answer the following question about the structure of the argument. '])}" \
           f"{pick(rng, ARGUMENT_CASES)} {pick(rng, ARGUMENT_ASKS)}"


def _teaser(rng):
    a = pick(rng, NAMES)
    k = rng.randint(2, 5)
    return pick(rng, [
        f"{a} has {k} brothers. Each brother has {rng.randint(1, 3)} sisters. How many sisters does {a} have if {a} is a girl?",
        f"In a race you overtake the person in {pick(rng, ['second', 'third', 'last'])} place. What place are you in now?",
        f"If {k} cats catch {k} mice in {k} minutes, how many cats are needed to catch {k * 20} mice in {k * 20} minutes?",
        f"A man looks at a portrait and says, 'Brothers and sisters I have none, but that man's father is my father's son.' Who is in the portrait?",
        f"{a} is facing north. {a} turns right, then turns around, then turns left. Which direction is {a} facing?",
        f"Which word does not belong: {', '.join(rng.sample(['apple', 'banana', 'carrot', 'cherry', 'grape'], 4))}? Explain the rule.",
        f"If some Bloops are Razzies and all Razzies are Lazzies, are some Bloops definitely Lazzies?",
        f"{a} is always truthful on {pick(rng, ['Mondays', 'Tuesdays'])} and lies on other days. Today {a} says 'I lied yesterday.' What day is it?",
    ])


def _boolean_words(rng):
    people = rng.sample(NAMES, rng.randint(4, 6))
    parts = [f"Question: {people[0]} {pick(rng, ['lies', 'tells the truth'])}."]
    parts += [f"{b} says {a} {pick(rng, ['lies', 'tells the truth'])}." for a, b in zip(people, people[1:])]
    return " ".join(parts) + f" Does {people[-1]} tell the truth?"


def _seating(rng):
    n = rng.randint(4, 7)
    p = rng.sample(NAMES, n)
    sep = pick(rng, [". ", "; "])
    clues = [f"{p[1]} sits immediately to the right of {p[0]}", f"{p[2]} is not next to {p[1]}",
             f"{p[3]} sits between {p[2]} and {p[-1]}", f"{p[0]} sits opposite {p[2]}", f"{p[-1]} is two seats left of {p[1]}"]
    rng.shuffle(clues)
    table = pick(rng, ["around a round table", "in a row of chairs facing north", "around a circular table facing the centre", "on a bench"])
    return (f"{', '.join(p)} sit {table}. {sep.join(clues[:rng.randint(2, 4)])}. "
            f"Who sits {pick(rng, ['to the immediate left of', 'next to', 'opposite', 'farthest from'])} {p[0]}?")


def _walk(rng):
    steps = [pick(rng, [f"Take {rng.randint(1, 10)} steps.", "Turn left.", "Turn right.", "Turn around.",
                        f"Take {rng.randint(1, 10)} steps backward.", f"Take {rng.randint(1, 10)} steps left."]) for _ in range(rng.randint(3, 8))]
    lead = pick(rng, ["", "Always face forward. "])
    return f"If you follow these instructions, do you return to the starting point? {lead}{' '.join(steps)} Options: - Yes - No"


TEMPLATES = [_critical, _ordering, _ordering, _swaps, _alibi, _argument, _grid, _fallacy, _teaser, _boolean_words, _seating, _walk]

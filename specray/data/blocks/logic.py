"""Logic prompts: deduction, ordering, truth-tellers, syllogisms, boolean expressions, puzzles."""

from specray.data.blocks.common import HELDOUT_NAMES, NAMES, join, pick

CLASSES = ["cats", "mammals", "poets", "engineers", "birds", "musicians", "doctors", "reptiles", "painters",
           "gardeners", "chess players", "vegetarians", "students", "pilots", "robots", "teachers"]
HELDOUT_CLASSES = ["astronomers", "sailors", "beekeepers", "jugglers", "librarians", "cyclists"]
QUANT = ["All", "Some", "No"]
OBJECTS = ["books", "cars", "birds", "fruits", "boxes", "paintings", "runners", "houses"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "purple", "orange"]
SUFFIXES = ["", "", "Explain your reasoning.", "Think it through carefully.",
            "Show the chain of deductions.", "Give the answer and a one-line justification."]


def _ask(rng, text: str) -> str:
    return join(text, pick(rng, SUFFIXES))


def _syllogism(rng):
    a, b, c = rng.sample(CLASSES, 3)
    q1, q2 = pick(rng, QUANT), pick(rng, QUANT)
    concl = pick(rng, [f"all {a} are {c}", f"some {a} are {c}", f"no {a} are {c}", f"some {c} are not {a}"])
    return join(f"{q1} {a} are {b}. {q2} {b} are {c}. Does it follow that {concl}?",
                pick(rng, ["", "Answer yes or no, then justify.", "Explain your reasoning.", "Draw a Venn diagram in words."]))


def _knights(rng):
    a, b = rng.sample(NAMES, 2)
    said = pick(rng, [f"\"At least one of us is a knave.\"", f"\"{b} is a knight.\"", "\"We are both knaves.\"",
                      f"\"{b} and I are the same kind.\"", "\"Exactly one of us is a knight.\""])
    return _ask(rng, f"On an island, knights always tell the truth and knaves always lie. {a} says {said} "
                     f"{b} says nothing. What are {a} and {b}?")


def _ordering(rng):
    people = rng.sample(NAMES, rng.randint(4, 5))
    rel = pick(rng, [("taller than", "tallest", "shortest"), ("older than", "oldest", "youngest"),
                     ("faster than", "fastest", "slowest"), ("richer than", "richest", "poorest")])
    facts = [f"{people[i]} is {rel[0]} {people[i + 1]}." for i in range(len(people) - 1)]
    rng.shuffle(facts)
    return _ask(rng, " ".join(facts) + f" Who is the {pick(rng, rel[1:])}?")


def _positions(rng):
    n = rng.randint(3, 5)
    objs = rng.sample(COLOURS, n)
    kind = pick(rng, OBJECTS)
    clues = [f"The {objs[0]} one is to the left of the {objs[1]} one.",
             f"The {objs[-1]} one is the rightmost.",
             f"The {objs[1]} one is {pick(rng, ['immediately', 'somewhere'])} left of the {objs[2]} one."]
    rng.shuffle(clues)
    opts = ", ".join(f"({chr(65 + i)}) The {o} one is second from the left" for i, o in enumerate(objs))
    return (f"There are {n} {kind} in a row: {', '.join(objs)}. " + " ".join(clues) +
            f" Which statement must be true? Options: {opts}.")


def _boolean(rng):
    def expr(depth):
        if depth == 0:
            return pick(rng, ["True", "False"])
        op = pick(rng, ["and", "or", "not"])
        if op == "not":
            return f"not {expr(depth - 1)}"
        return f"( {expr(depth - 1)} {op} {expr(depth - 1)} )"
    return pick(rng, ["Evaluate the boolean expression:", "What is the value of", "Is this true or false:"]) + f" {expr(rng.randint(2, 3))}"


def _liars(rng):
    people = rng.sample(NAMES, rng.randint(3, 5))
    lines = [f"{people[0]} {pick(rng, ['tells the truth', 'lies'])}."]
    for prev, cur in zip(people, people[1:]):
        lines.append(f"{cur} says {prev} {pick(rng, ['tells the truth', 'lies'])}.")
    return f"{' '.join(lines)} Does {people[-1]} tell the truth?"


def _navigate(rng):
    steps = []
    for _ in range(rng.randint(3, 6)):
        steps.append(pick(rng, [f"Take {rng.randint(1, 9)} steps forward.", f"Take {rng.randint(1, 9)} steps backward.",
                                "Turn left.", "Turn right.", "Turn around."]))
    return "If you follow these instructions, do you end up back at the starting point? " + " ".join(steps)


def _family(rng):
    a, b = rng.sample(NAMES, 2)
    rel = pick(rng, ["the only son of my grandfather's only child", "my mother's brother's daughter",
                     "the father of my father's sister", "my sister's husband's brother",
                     "the daughter of the only daughter of my mother"])
    return _ask(rng, f"Pointing to a photo, {a} says to {b}: \"This person is {rel}.\" How is the person in the photo related to {a}?")


def _code_words(rng):
    word, shift = pick(rng, ["CAT", "LOGIC", "RIVER", "PLANET", "STONE", "GARDEN"]), rng.randint(1, 4)
    enc = "".join(chr((ord(ch) - 65 + shift) % 26 + 65) for ch in word)
    target = pick(rng, ["DOG", "PUZZLE", "OCEAN", "FOREST", "BRIDGE"])
    return _ask(rng, f"In a certain code, {word} is written as {enc}. How is {target} written in that code?")


def _validity(rng):
    p, q = pick(rng, ["it rains", "the alarm rings", "the store is open", "Sam studies", "the light is on"]), \
        pick(rng, ["the street is wet", "everyone wakes up", "the lights are on", "Sam passes", "someone is home"])
    form = pick(rng, [f"If {p}, then {q}. {q[0].upper() + q[1:]}. Therefore {p}.",
                      f"If {p}, then {q}. It is not the case that {q}. Therefore it is not the case that {p}.",
                      f"If {p}, then {q}. It is not the case that {p}. Therefore it is not the case that {q}.",
                      f"Either {p} or {q}. It is not the case that {p}. Therefore {q}.",
                      f"If {p}, then {q}. {p[0].upper() + p[1:]}. Therefore {q}."])
    return _ask(rng, f"Is the following argument deductively valid? \"{form}\" Name the argument form.")


def _fallacy(rng):
    arg = pick(rng, [
        "Everyone I know likes this movie, so it must be the best movie of the year.",
        "If we allow students to redo one test, soon they will want to redo every test and grades will mean nothing.",
        "You can't trust his argument about taxes because he once failed an economics class.",
        "Since the new mayor took office, crime went up. The mayor caused the rise in crime.",
        "Either you support this plan completely or you want the city to fail.",
        "Nobody has proven that ghosts don't exist, so they must exist.",
    ])
    return f"Identify the logical fallacy, if any, in this reasoning: \"{arg}\""


def _schedule(rng):
    people = rng.sample(NAMES, 4)
    days = ["Monday", "Tuesday", "Wednesday", "Thursday"]
    return _ask(rng, f"{', '.join(people)} each present on a different day from Monday to Thursday. "
                     f"{people[0]} presents before {people[1]}. {people[2]} does not present on {pick(rng, days)}. "
                     f"{people[3]} presents the day after {people[0]}. {people[1]} presents on {pick(rng, days[2:])}. "
                     "Who presents on each day?")


def _letters(rng):
    start, step = rng.randint(0, 10), rng.randint(1, 4)
    seq = ", ".join(chr(65 + start + i * step) for i in range(4))
    return _ask(rng, f"What comes next in the pattern {seq}, ...? Explain the rule.")


def _riddle(rng):
    return pick(rng, [
        "A farmer must carry a wolf, a goat and a cabbage across a river in a boat that holds only one of them at a time. "
        "The wolf eats the goat and the goat eats the cabbage if left alone together. How does he do it?",
        "You have two ropes that each take exactly one hour to burn, but burn unevenly. How do you measure 45 minutes?",
        "There are three boxes labelled apples, oranges and mixed, and every label is wrong. "
        "You may pick one fruit from one box. How do you relabel all boxes correctly?",
        "You have 12 coins, one of which is counterfeit and differs in weight. With a balance and three weighings, "
        "how do you find it and tell whether it is heavier or lighter?",
        "Three switches outside a closed room control one bulb inside. You may enter the room once. "
        "How do you find which switch controls the bulb?",
        "Four people must cross a bridge at night with one torch; they take 1, 2, 5 and 10 minutes. "
        "At most two cross at a time at the slower person's pace. What is the minimum total time?",
        "A prisoner must ask one yes-or-no question to one of two guards, one who always lies and one who always tells the truth, "
        "to find the door to freedom. What should he ask?",
        "There are 100 lockers, all closed. Student k toggles every k-th locker, for k from 1 to 100. Which lockers end up open?",
    ])


def _conditional(rng):
    p, q = pick(rng, [("a shape is a square", "it is a rectangle"), ("a number is divisible by 6", "it is divisible by 3"),
                      ("an animal is a whale", "it is a mammal"), ("a student passed the exam", "they attended the review session"),
                      ("it is snowing", "it is cold"), ("a car is electric", "it has no exhaust pipe")])
    return _ask(rng, f"Given the statement \"If {p}, then {q}\", write its converse, inverse and contrapositive, "
                     "and say which of them are logically equivalent to the original.")


def _truth_table(rng):
    f = pick(rng, ["(P → Q) ∧ (Q → P)", "¬(P ∨ Q) ↔ (¬P ∧ ¬Q)", "(P ∧ Q) → R", "P ∨ (Q ∧ ¬R)", "(P → Q) → (¬Q → ¬P)"])
    return _ask(rng, f"Build the truth table for {f}. Is it a tautology, a contradiction or contingent?")


def _who_owns(rng):
    people = rng.sample(NAMES, 3)
    pets, cols = ["a cat", "a dog", "a parrot"], rng.sample(COLOURS, 3)
    return (f"{people[0]}, {people[1]} and {people[2]} live in three houses painted {', '.join(cols)}. "
            f"Each owns one of {', '.join(pets)}. The owner of the dog lives in the {cols[0]} house. "
            f"{people[1]} does not own the cat. {people[2]} lives in the {cols[2]} house and owns the parrot. "
            "Who owns which pet, and who lives in which house?")


def _counterfactual(rng):
    a, b = rng.sample(NAMES, 2)
    return _ask(rng, f"{a} will go to the party only if {b} goes. {b} goes only if it does not rain. "
                     f"{pick(rng, ['It rained.', 'It did not rain.', f'{a} went to the party.', f'{b} stayed home.'])} "
                     f"What can we conclude about {a} and {b}?")


DISTILL = [_syllogism, _knights, _ordering, _positions, _boolean, _liars, _navigate, _family, _code_words,
           _validity, _fallacy, _schedule, _letters, _riddle, _conditional, _truth_table, _who_owns, _counterfactual]


def _h_tournament(rng):
    t = rng.sample(HELDOUT_NAMES, 4)
    return (f"In a round-robin tournament {t[0]} beat {t[1]}, {t[1]} beat {t[2]}, {t[2]} beat {t[3]} "
            f"and {t[3]} beat {t[0]}. Every other game was a draw. Can we say who is strongest? Reason carefully.")


def _h_categorical(rng):
    a, b, c = rng.sample(HELDOUT_CLASSES, 3)
    return (f"Premise 1: Every one of the {a} is one of the {b}. Premise 2: None of the {b} are {c}. "
            f"Conclusion: None of the {a} are {c}. Valid or invalid?")


def _h_hats(rng):
    n = rng.randint(3, 4)
    return (f"{n} logicians wear hats that are either red or blue and can see everyone else's hat but not their own. "
            "They are told at least one hat is red. Asked in turn whether they know their colour, the first "
            f"{n - 1} say no. What does the last one conclude, and why?")


def _h_clock(rng):
    people = rng.sample(HELDOUT_NAMES, 3)
    return (f"Exactly one of these three statements is true. {people[0]}: \"{people[1]} took the key.\" "
            f"{people[1]}: \"I did not take the key.\" {people[2]}: \"{people[0]} took the key.\" Who took the key?")


def _h_seats(rng):
    p = rng.sample(HELDOUT_NAMES, 5)
    return (f"{', '.join(p)} sit around a circular table with five seats. "
            f"{p[1]} sits to the immediate right of {p[0]}; {p[2]} is not next to {p[1]}; {p[3]} is between {p[2]} and {p[4]}. "
            f"Who sits to the immediate left of {p[0]}?")


HELDOUT = [_h_tournament, _h_categorical, _h_hats, _h_clock, _h_seats]

"""Math prompts shaped like real ones: multi-step story problems, survey/percent questions, competition-style asks."""

from specray.data.blocks.common import NAMES, pick

THINGS = ["stamps", "seashells", "baseball cards", "marbles", "beads", "coins", "stickers", "candies", "eggs", "roses",
          "cupcakes", "pencils", "oranges", "comic books", "toy cars", "balloons", "cookies", "tickets", "bottles", "trees"]
PLACES = ["the farm", "the bakery", "the bookstore", "school", "the zoo", "the market", "the library", "the garden center"]
JOBS = ["babysitting", "mowing lawns", "walking dogs", "tutoring", "washing cars", "selling lemonade"]
UNITS = [("hour", "hours"), ("day", "days"), ("week", "weeks"), ("month", "months")]


def _n(rng, lo=2, hi=60):
    return rng.randint(lo, hi)


def _story(rng):
    a, b = rng.sample(NAMES, 2)
    t = pick(rng, THINGS)
    steps = [f"{a} has {_n(rng, 10, 90)} {t}.",
             pick(rng, [f"{b} gives {a} {_n(rng)} more.", f"{a} buys {_n(rng, 2, 9)} packs of {_n(rng, 3, 12)} {t}.",
                        f"{a} loses {_n(rng, 2, 9)} of them on the way to {pick(rng, PLACES)}."]),
             pick(rng, [f"Then {a} gives half of them to {b}.", f"Then {a} shares them equally among {_n(rng, 2, 6)} friends.",
                        f"Then {a} sells each one for ${_n(rng, 1, 5)}.", f"Then {a} doubles the collection."])]
    q = pick(rng, [f"How many {t} does {a} have now?", f"How many {t} does each friend get?",
                   f"How much money does {a} make?", f"How many {t} are left?"])
    return " ".join(steps) + " " + q


def _earnings(rng):
    a = pick(rng, NAMES)
    unit, units = pick(rng, UNITS)
    return (f"{a} earns ${_n(rng, 5, 30)} per {unit} {pick(rng, JOBS)}. This {pick(rng, ['month', 'summer', 'year'])} {a} worked "
            f"{_n(rng, 3, 40)} {units} and spent ${_n(rng, 20, 200)} on {pick(rng, ['a game', 'clothes', 'a concert', 'books'])}. "
            f"How much money does {a} have left?")


def _percent_survey(rng):
    p1, p2 = _n(rng, 20, 60), _n(rng, 10, 40)
    both = _n(rng, 5, min(p1, p2))
    group = pick(rng, ["students", "employees", "voters", "customers", "club members"])
    return (f"In a survey of {group}, {p1}% like {pick(rng, ['tea', 'soccer', 'jazz', 'hiking'])}, {p2}% like "
            f"{pick(rng, ['coffee', 'tennis', 'rock', 'swimming'])}, and {both}% like both. If a respondent is picked at random, "
            f"what is the probability they like neither?")


def _rates(rng):
    a = pick(rng, NAMES)
    return pick(rng, [
        f"A faucet drips {_n(rng, 2, 20)} milliliters every minute. How many liters does it waste in {_n(rng, 2, 30)} days?",
        f"{a} can assemble {_n(rng, 3, 12)} chairs in {_n(rng, 2, 5)} hours. How many chairs can {a} assemble in a {_n(rng, 6, 10)}-hour shift?",
        f"A printer prints {_n(rng, 10, 40)} pages per minute. How long does it take to print {_n(rng, 3, 20)} copies of a {_n(rng, 12, 80)}-page report?",
        f"A car travels {_n(rng, 100, 400)} miles on {_n(rng, 4, 15)} gallons of gas. How many gallons does it need for {_n(rng, 500, 900)} miles?",
    ])


def _money_multi(rng):
    a = pick(rng, NAMES)
    return (f"{a} buys {_n(rng, 2, 6)} {pick(rng, ['shirts', 'notebooks', 'plants', 'tickets'])} for ${_n(rng, 5, 40)} each "
            f"and {_n(rng, 2, 6)} {pick(rng, ['hats', 'pens', 'pots', 'snacks'])} for ${_n(rng, 1, 9)} each. "
            f"{pick(rng, ['There is a 10% discount on the total.', 'Tax is 7%.', 'Shipping costs $8.', 'A $5 coupon applies.'])} "
            f"How much does {a} pay?")


def _competition(rng):
    return pick(rng, [
        f"What is the remainder when {_n(rng, 2, 9)}^{_n(rng, 20, 100)} is divided by {_n(rng, 5, 13)}?",
        f"How many positive integers less than {_n(rng, 100, 1000)} are multiples of {_n(rng, 3, 7)} but not of {_n(rng, 8, 12)}?",
        f"The vertices of a triangle are at ({_n(rng, 0, 5)}, {_n(rng, 0, 5)}), ({-_n(rng, 1, 5)}, {_n(rng, 1, 5)}) and ({_n(rng, 1, 6)}, {-_n(rng, 1, 6)}). What is its area?",
        f"If x + 1/x = {_n(rng, 3, 7)}, what is x^2 + 1/x^2?",
        f"Find the sum of all positive divisors of {_n(rng, 30, 500)}.",
        f"How many ways are there to arrange {_n(rng, 4, 8)} books on a shelf if two particular books must be next to each other?",
        f"Solve the inequality {_n(rng, 2, 9)}x - {_n(rng, 1, 20)} > {_n(rng, 1, 40)}.",
        f"If f(x) = {_n(rng, 2, 9)}x^2 - {_n(rng, 1, 9)}x + {_n(rng, 1, 9)}, find f({_n(rng, 1, 6)}) and f(f(1)).",
        f"A fair die is rolled {_n(rng, 2, 4)} times. What is the probability that at least one roll is a six?",
        f"Find the slope and y-intercept of the line through ({_n(rng, 0, 9)}, {_n(rng, 0, 9)}) and ({_n(rng, 10, 19)}, {_n(rng, 10, 29)}).",
    ])


def _fractions(rng):
    a = pick(rng, NAMES)
    d1, d2 = rng.choice([2, 3, 4, 5]), rng.choice([3, 4, 5, 6, 8])
    total = d1 * d2 * _n(rng, 2, 10)
    return (f"{a} has {total} {pick(rng, THINGS)}. {a} gives 1/{d1} of them to a friend and uses 1/{d2} of the rest for a project. "
            f"How many are left?")


def _time_age(rng):
    a, b = rng.sample(NAMES, 2)
    return pick(rng, [
        f"{a} is {_n(rng, 2, 9)} years older than {b}. The sum of their ages is {_n(rng, 20, 80)}. How old is {b}?",
        f"A movie starts at {_n(rng, 1, 11)}:{pick(rng, ['05', '20', '35', '50'])} pm and lasts {_n(rng, 90, 180)} minutes. What time does it end?",
        f"{a} sleeps {_n(rng, 6, 9)} hours a night. How many hours does {a} sleep in a leap year?",
    ])


def _percent_change(rng):
    a = pick(rng, NAMES)
    p, q = rng.choice([5, 10, 15, 20, 25, 30]), rng.choice([5, 10, 20, 40])
    return pick(rng, [
        f"{a}'s salary is ${_n(rng, 30, 90)},000 a year. After a {p}% raise, what is {a}'s new monthly salary?",
        f"A water bill was ${_n(rng, 40, 150)} in May, {p}% higher in June and {q}% lower in July than in June. What was the July bill?",
        f"The population of a town grew from {_n(rng, 10, 40)},000 to {_n(rng, 41, 80)},000 in ten years. What was the percentage increase?",
        f"A jacket originally priced at ${_n(rng, 60, 250)} is discounted by {p}%, and then a further {q}% at checkout. What is the final price?",
        f"{a} scored {_n(rng, 60, 80)}, {_n(rng, 70, 95)} and {_n(rng, 65, 99)} on three exams. What score is needed on the fourth to average {_n(rng, 80, 90)}?",
        f"A phone plan costs ${_n(rng, 20, 50)} a month plus ${_n(rng, 1, 5)} per gigabyte over {_n(rng, 5, 20)} GB. {a} used {_n(rng, 21, 40)} GB. What is the bill?",
    ])


TEMPLATES = [_percent_change, _story, _story, _earnings, _percent_survey, _rates, _money_multi, _competition, _fractions, _time_age]

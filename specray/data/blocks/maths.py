"""Math prompts: word problems, algebra, calculus, number theory, probability, geometry, proofs."""

from specray.data.blocks.common import HELDOUT_NAMES, NAMES, join, maybe, pick

ITEMS = [("apples", 0.5), ("notebooks", 3), ("pencils", 0.25), ("cupcakes", 2), ("movie tickets", 12),
         ("bags of rice", 18), ("plants", 7), ("T-shirts", 15), ("bus passes", 40), ("books", 9)]
HELDOUT_ITEMS = [("lanterns", 6), ("jars of honey", 11), ("kites", 8), ("chess sets", 25)]
SUFFIXES = ["", "", "Show your work.", "Explain each step.", "Give only the final number.",
            "Think step by step.", "Answer with a short explanation."]


def _ask(rng, text: str) -> str:
    return join(text, pick(rng, SUFFIXES))


def _shopping(rng):
    n, (item, price) = pick(rng, NAMES), pick(rng, ITEMS)
    k, m = rng.randint(3, 20), rng.randint(2, 6)
    budget = rng.choice([50, 100, 200, 500])
    return _ask(rng, f"{n} buys {k} {item} at ${price} each and {m} more the next day. "
                     f"If {n} started with ${budget}, how much money is left?")


def _rate(rng):
    n = pick(rng, NAMES)
    speed, hours = rng.randint(30, 90), rng.randint(2, 7)
    extra = rng.randint(10, 60)
    return _ask(rng, f"{n} drives at {speed} km/h for {hours} hours, then {extra} km more at half that speed. "
                     f"How long does the whole trip take, in minutes?")


def _work(rng):
    a, b = rng.randint(3, 12), rng.randint(4, 15)
    thing = pick(rng, ["fill a pool", "paint a fence", "print a batch of flyers", "mow a field"])
    return _ask(rng, f"One machine can {thing} in {a} hours and another can do it in {b} hours. "
                     f"Working together, how long will it take?")


def _percent(rng):
    n, (item, _) = pick(rng, NAMES), pick(rng, ITEMS)
    p, q = rng.choice([10, 15, 20, 25, 30, 40]), rng.choice([5, 10, 12, 20])
    price = rng.randint(20, 400)
    return _ask(rng, f"A store marks up {item} by {p}% and then offers a {q}% discount. If the original price was "
                     f"${price}, what does {n} pay? Is that more or less than the original price?")


def _ages(rng):
    a, b = rng.sample(NAMES, 2)
    k, y = rng.randint(3, 5), 2 * rng.randint(2, 8)
    return _ask(rng, f"{a} is {k} times as old as {b}. In {y} years, {a} will be twice as old as {b}. "
                     f"How old are they now?")


def _split(rng):
    names = rng.sample(NAMES, 3)
    total = rng.randint(6, 40) * 10
    return _ask(rng, f"{names[0]}, {names[1]} and {names[2]} share ${total} in the ratio "
                     f"{rng.randint(1, 5)}:{rng.randint(1, 5)}:{rng.randint(1, 5)}. How much does each get?")


def _term(coef: int, var: str, first: bool = False) -> str:
    """Render coef*var as it is written by hand: 'x', '- x', '+ 3x', '-2x'."""
    body = var if abs(coef) == 1 else f"{abs(coef)}{var}"
    if first:
        return body if coef > 0 else f"-{body}"
    return f"{'+' if coef > 0 else '-'} {body}"


def _linear(rng):
    a, b, c = rng.randint(2, 12), rng.choice([i for i in range(-20, 21) if i]), rng.randint(-50, 50)
    v = pick(rng, ["x", "y", "t", "n"])
    eq = f"{a}{v} {'+' if b > 0 else '-'} {abs(b)} = {c}"
    return _ask(rng, pick(rng, [f"Solve for {v}: {eq}.", f"Find {v} if {eq}.", f"What value of {v} satisfies {eq}?"]))


def _system(rng):
    a, b, c, d = (rng.choice([i for i in range(-9, 10) if i]) for _ in range(4))
    e, f = rng.randint(-30, 30), rng.randint(-30, 30)
    return _ask(rng, f"Solve the system of equations: {_term(a, 'x', True)} {_term(b, 'y')} = {e} and "
                     f"{_term(c, 'x', True)} {_term(d, 'y')} = {f}.")


def _quadratic(rng):
    r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
    b, c = -(r1 + r2), r1 * r2
    poly = "x^2" + (f" {_term(b, 'x')}" if b else "") + (f" {'+' if c > 0 else '-'} {abs(c)}" if c else "")
    return _ask(rng, f"Find all real roots of {poly} = 0.")


FUNCS = ["x^3 - 4x + 1", "sin(x) * e^x", "ln(x^2 + 1)", "x / (1 + x^2)", "sqrt(3x + 2)", "e^(-x^2)",
         "x^2 * cos(x)", "tan(2x)", "(2x - 1)^5", "arctan(x) / x"]
HELDOUT_FUNCS = ["x^x", "cosh(x) - x^4", "log2(5x - 3)", "1 / sqrt(1 - x^2)"]


def _derivative(rng):
    return _ask(rng, pick(rng, ["Differentiate", "Compute the derivative of", "Find d/dx of"]) + f" f(x) = {pick(rng, FUNCS)}.")


def _integral(rng):
    f = pick(rng, ["x e^x", "1/(x^2 + 4)", "sin^2(x)", "x ln(x)", "3x^2 + 2x - 7", "cos(x) sin(x)", "1/(x(x+1))"])
    bounds = maybe(rng, f" from 0 to {rng.randint(1, 5)}", 0.5)
    return _ask(rng, f"Evaluate the integral of {f}{bounds}.")


def _limit(rng):
    expr = pick(rng, ["(sin x)/x as x approaches 0", "(1 + 1/n)^n as n goes to infinity",
                      "(x^2 - 9)/(x - 3) as x approaches 3", "(e^x - 1 - x)/x^2 as x approaches 0",
                      "sqrt(n^2 + n) - n as n goes to infinity"])
    return _ask(rng, f"Compute the limit of {expr}.")


def _number_theory(rng):
    a, b = rng.randint(20, 500), rng.randint(20, 500)
    return _ask(rng, pick(rng, [
        f"Find the greatest common divisor and least common multiple of {a} and {b}.",
        f"What is {a}^{rng.randint(10, 99)} mod {rng.choice([7, 11, 13, 17])}?",
        f"How many positive divisors does {a * rng.randint(2, 30)} have?",
        f"Write {a * b} as a product of prime factors.",
        f"Is {rng.randint(1000, 9999)} divisible by 3, 9 or 11? Explain the divisibility rules you use.",
        f"Find the last two digits of {rng.randint(3, 9)}^{rng.randint(50, 400)}.",
    ]))


def _probability(rng):
    return _ask(rng, pick(rng, [
        f"Two fair dice are rolled. What is the probability that the sum is {rng.randint(2, 12)}?",
        f"A bag has {rng.randint(2, 9)} red and {rng.randint(2, 9)} blue marbles. Two are drawn without replacement. "
        f"What is the probability both are red?",
        f"A coin is flipped {rng.randint(4, 10)} times. What is the probability of getting exactly {rng.randint(1, 4)} heads?",
        f"In a class of {rng.randint(20, 40)} students, what is the probability that at least two share a birthday? "
        "Ignore leap years.",
        f"A test for a disease is {rng.choice([90, 95, 99])}% accurate and {rng.choice([1, 2, 5])}% of people have the disease. "
        "If someone tests positive, what is the probability they have it?",
        f"What is the expected number of rolls of a fair die until a {rng.randint(1, 6)} appears?",
    ]))


def _combinatorics(rng):
    n, k = rng.randint(5, 12), rng.randint(2, 4)
    return _ask(rng, pick(rng, [
        f"In how many ways can {k} people be chosen from {n} to form a committee?",
        f"How many distinct arrangements of the letters in the word {pick(rng, ['BANANA', 'LETTER', 'STATISTICS', 'MISSISSIPPI', 'COMMITTEE'])} are there?",
        f"How many {k}-digit numbers can be formed from the digits 1 to {min(n, 9)} without repetition?",
        f"In how many ways can {n} people sit around a round table?",
        f"How many paths go from (0,0) to ({n},{k}) moving only right or up one unit at a time?",
    ]))


def _geometry(rng):
    a, b, c = rng.randint(3, 12), rng.randint(3, 12), rng.randint(3, 12)
    return _ask(rng, pick(rng, [
        f"A triangle has sides {a}, {b} and {max(a, b) + 1}. Find its area.",
        f"A circle has circumference {2 * a}π cm. What is its area?",
        f"Find the volume and surface area of a cylinder with radius {a} and height {b}.",
        f"A rectangle has perimeter {2 * (a + b)} and area {a * b}. What are its side lengths?",
        f"What is the sum of the interior angles of a polygon with {c} sides?",
        f"Find the distance between the points ({a}, {-b}) and ({-c}, {a}).",
        f"A ladder {a + b} m long leans against a wall with its foot {a} m from the wall. How high up the wall does it reach?",
    ]))


def _sequence(rng):
    a, d = rng.randint(1, 10), rng.randint(2, 7)
    return _ask(rng, pick(rng, [
        f"Find the sum of the first {rng.randint(10, 100)} terms of the arithmetic sequence {a}, {a + d}, {a + 2 * d}, ...",
        f"A geometric series starts {a}, {a * d}, {a * d * d}, ... What is the {rng.randint(6, 12)}th term?",
        f"Evaluate the infinite sum 1 + 1/{d} + 1/{d}^2 + 1/{d}^3 + ...",
        f"What is the sum of all integers from 1 to {rng.randint(50, 1000)} that are divisible by {d}?",
    ]))


def _linear_algebra(rng):
    m = [[rng.randint(-5, 5) for _ in range(2)] for _ in range(2)]
    return _ask(rng, pick(rng, [
        f"Compute the determinant and inverse of the matrix [[{m[0][0]}, {m[0][1]}], [{m[1][0]}, {m[1][1]}]].",
        f"Find the eigenvalues of the matrix [[{m[0][0]}, {m[0][1]}], [{m[1][0]}, {m[1][1]}]].",
        f"Are the vectors ({m[0][0]}, {m[0][1]}, 1) and ({m[1][0]}, {m[1][1]}, 2) orthogonal? Compute their dot product.",
        "Show that the set of 2x2 symmetric matrices is a subspace and find its dimension.",
    ]))


def _proof(rng):
    return pick(rng, [
        "Prove that the square root of 2 is irrational.",
        "Prove by induction that 1 + 2 + ... + n = n(n+1)/2.",
        "Prove that there are infinitely many prime numbers.",
        f"Show that n^3 - n is divisible by {rng.choice([2, 3, 6])} for every integer n.",
        "Prove that the sum of two odd numbers is even.",
        "Prove that for every real x, x^2 - 2x + 2 > 0.",
        "Prove that every bounded monotone sequence of real numbers converges.",
        "Show that the product of four consecutive integers is always one less than a perfect square.",
        "Prove the AM-GM inequality for two non-negative numbers.",
    ])


def _stats(rng):
    data = sorted(rng.randint(1, 60) for _ in range(rng.randint(5, 9)))
    return _ask(rng, f"For the data set {', '.join(map(str, data))}, find the mean, median, mode and standard deviation.")


def _units(rng):
    return _ask(rng, pick(rng, [
        f"Convert {rng.randint(2, 90)} miles per hour to metres per second.",
        f"A recipe needs {rng.randint(2, 5)} cups of flour for {rng.randint(8, 12)} cookies. How much flour for {rng.randint(30, 60)} cookies?",
        f"If {rng.randint(3, 9)} workers build a wall in {rng.randint(4, 12)} days, how many days would {rng.randint(10, 20)} workers need?",
        f"Water flows into a tank at {rng.randint(5, 20)} litres per minute and leaks out at {rng.randint(1, 4)} litres per minute. "
        f"How long until the {rng.randint(200, 900)}-litre tank is full?",
    ]))


def _interest(rng):
    p, r, t = rng.choice([1000, 2500, 5000, 12000]), rng.choice([2, 3.5, 4, 5, 7]), rng.randint(2, 15)
    return _ask(rng, f"{pick(rng, NAMES)} invests ${p} at {r}% annual interest compounded "
                     f"{pick(rng, ['annually', 'monthly', 'quarterly'])}. How much is it worth after {t} years?")


def _school(rng):
    n = pick(rng, NAMES)
    a, b, c = rng.randint(10, 60), rng.randint(2, 9), rng.randint(3, 15)
    return _ask(rng, pick(rng, [
        f"{n} reads {a} pages on Monday and {b} times as many on Tuesday. The book has {a * b + a + c * 10} pages. "
        "How many pages are left?",
        f"A farmer has {a} chickens and {c} cows. How many legs are there in total?",
        f"{n} saves ${b} a week. How many weeks until {n} can afford a bike that costs ${a * 10}?",
        f"A train leaves at {rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])} and travels {a * 10} km at {c * 10} km/h. "
        "When does it arrive?",
        f"There are {a} students in a class; {b * 2} of them play football and {c} play chess, with {min(b, c)} playing both. "
        "How many play neither?",
    ]))


DISTILL = [_shopping, _rate, _work, _percent, _ages, _split, _linear, _system, _quadratic, _derivative, _integral,
           _limit, _number_theory, _probability, _combinatorics, _geometry, _sequence, _linear_algebra, _proof,
           _stats, _units, _interest, _school]


def _h_story(rng):
    n, (item, price) = pick(rng, HELDOUT_NAMES), pick(rng, HELDOUT_ITEMS)
    k, s = rng.randint(4, 30), rng.randint(2, 5)
    return (f"{n} makes {k} {item} every week and sells each for ${price}. Materials cost ${s} per item. "
            f"After {rng.randint(3, 10)} weeks, what is the total profit?")


def _h_calc(rng):
    return f"Let g(x) = {pick(rng, HELDOUT_FUNCS)}. Determine g'(x) and the value of g'({rng.randint(1, 3)})."


def _h_numbers(rng):
    n = rng.randint(100, 999)
    return pick(rng, [
        f"How many three-digit numbers have digits that add up to {sum(map(int, str(n)))}?",
        f"How many integers between 1 and {n * 10} are neither multiples of 4 nor of 6?",
        f"Find the smallest positive integer that leaves remainder {rng.randint(1, 3)} when divided by 4, 5 and 7.",
    ])


def _h_shape(rng):
    r = rng.randint(2, 10)
    return pick(rng, [
        f"A sphere of radius {r} is inscribed in a cube. What fraction of the cube's volume does the sphere occupy?",
        f"A regular hexagon has side {r}. Compute its area exactly.",
        f"A cone has slant height {r + 3} and base radius {r}. Find its volume.",
    ])


def _h_chance(rng):
    k = rng.randint(2, 5)
    return pick(rng, [
        f"Three cards are dealt from a standard deck. What is the probability that exactly {min(k, 3)} are hearts?",
        f"A spinner has {k + 3} equal sectors numbered 1 to {k + 3}. It is spun twice; what is the chance the product is even?",
        f"Urn A holds {k} white and 3 black balls, urn B holds 2 white and {k} black. A fair coin picks the urn and a ball is drawn. "
        "Given the ball is white, what is the probability it came from urn A?",
    ])


HELDOUT = [_h_story, _h_calc, _h_numbers, _h_shape, _h_chance]

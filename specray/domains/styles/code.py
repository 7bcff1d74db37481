"""Programming prompts shaped like real ones: bare stubs with docstrings, problem statements, snippets."""

from specray.data.blocks.common import pick

# (function name, parameters, one-line docstring) — many mention numbers on purpose: a stub is code
# even when its task is arithmetic.
SPECS = [
    ("sum_of_squares", "nums", "Return the sum of the squares of the odd numbers in nums."),
    ("count_primes", "n", "Return how many prime numbers are strictly less than n."),
    ("digit_product", "n", "Given a positive integer n, return the product of its odd digits, or 0 if all digits are even."),
    ("triangle_type", "a, b, c", "Given three side lengths, return 'equilateral', 'isosceles', 'scalene' or 'invalid'."),
    ("closest_pair", "numbers", "From a list of floats, return the two numbers closest to each other, in ascending order."),
    ("binary_ones", "n", "Return the number of 1 bits in the binary representation of n."),
    ("mean_absolute_deviation", "values", "Compute the mean absolute deviation around the mean of the list."),
    ("next_palindrome", "n", "Return the smallest palindromic integer strictly greater than n."),
    ("rolling_max", "numbers", "Generate a list of the rolling maximum found until each position."),
    ("encode_shift", "s, k", "Return s with every letter shifted k places down the alphabet, wrapping around."),
    ("vowel_words", "sentence", "Return the words of the sentence that start with a vowel, in order."),
    ("common_elements", "a, b", "Return the sorted unique elements that appear in both lists."),
    ("is_sorted_unique", "lst", "Return True if the list is sorted ascending and contains no duplicates."),
    ("fib_even_sum", "limit", "Return the sum of the even Fibonacci numbers that do not exceed limit."),
    ("median", "l", "Return the median of the elements of the list l."),
    ("gcd_list", "numbers", "Return the greatest common divisor of all integers in the list."),
    ("strange_sort", "lst", "Sort the list by alternating minimum and maximum of the remaining values."),
    ("count_upper_even", "s", "Count uppercase vowels at even indices of the string s."),
    ("factorial_mod", "n, m", "Return n factorial modulo m without computing the full factorial."),
    ("remove_vowels", "text", "Return the text with all vowels removed."),
    ("largest_divisor", "n", "For a given number n, find the largest number that divides n evenly, smaller than n."),
    ("parse_nested_parens", "paren_string", "For each group of nested parentheses, return the deepest level of nesting."),
    ("below_zero", "operations", "Given deposit and withdrawal operations on an account starting at zero, detect whether the balance ever falls below zero."),
    ("circular_shift", "x, shift", "Circularly shift the digits of the integer x right by shift and return the result as a string."),
    ("words_in_sentence", "sentence", "Return the words whose lengths are prime numbers, keeping their original order."),
    ("area_of_polygon", "points", "Given the vertices of a simple polygon in order, return its area using the shoelace formula."),
    ("valid_ipv4", "address", "Return True if the string is a valid dotted IPv4 address."),
    ("count_nums", "arr", "Return the number of elements whose signed digit sum is greater than zero."),
    ("sort_by_ones", "arr", "Sort non-negative integers by the number of ones in their binary form, then by value."),
    ("max_fill", "grid, capacity", "Each row is a well and each 1 a unit of water; return how many bucket lowerings empty all wells."),
    ("make_change", "amount, coins", "Return the minimum number of coins needed to make the amount, or -1 if impossible."),
    ("leap_years", "start, end", "Return the list of leap years between start and end inclusive."),
    ("percent_change", "old, new", "Return the percentage change from old to new, rounded to two decimals."),
    ("histogram", "text", "Return a dictionary of the letters with the highest count and their counts."),
    ("prime_length", "string", "Return True if the length of the string is a prime number."),
    ("even_odd_count", "num", "Return a tuple with the number of even and odd digits of the integer."),
]
EXAMPLE_ARGS = ["[1, 2, 3]", "10", "'abc'", "[4, 1, 7, 3]", "3, 4, 5", "[]", "0", "'Hello World'", "[2.0, 2.5, 9.1]", "125"]
EXAMPLE_RESULTS = ["14", "True", "False", "'cde'", "[1, 3, 4, 7]", "0", "2", "(1, 2)", "[]", "'scalene'"]
LANG_STUBS = ["javascript", "typescript", "java", "go", "rust", "cpp"]
PROBLEM_OPENERS = ["Given an array of integers nums,", "Given a string s,", "You are given a list of intervals,",
                   "Given the root of a binary tree,", "You are given an n x m grid of 0s and 1s,",
                   "Given two strings word1 and word2,", "Given a sorted array and a target value,",
                   "You are given a positive integer n.", "Given a linked list,", "Given a list of stock prices,"]
PROBLEM_ASKS = ["return the length of the longest increasing subsequence", "return the number of distinct substrings",
                "merge all overlapping intervals", "return its level order traversal", "count the number of islands",
                "return the minimum number of edits to turn one into the other", "return the index where the target would be inserted",
                "return the number of ways to climb n stairs taking 1 or 2 steps", "remove the n-th node from the end",
                "return the maximum profit with at most two transactions", "return all pairs that sum to zero",
                "find the k most frequent elements"]
CONSTRAINTS = ["", "Constraints: 1 <= n <= 10^5.", "Your solution must run in O(n log n) time.",
               "Example: input [3, 1, 2] -> output 2.", "Do not use extra memory beyond O(1).", "Return -1 if no answer exists."]


def _doctest(rng, name):
    lines = []
    for _ in range(rng.randint(0, 3)):
        lines.append(f"    >>> {name}({pick(rng, EXAMPLE_ARGS)})\n    {pick(rng, EXAMPLE_RESULTS)}")
    return ("\n" + "\n".join(lines)) if lines else ""


def _python_stub(rng):
    name, params, doc = pick(rng, SPECS)
    head = pick(rng, ["", "", "\n\n", "from typing import List\n\n\n", "import math\n\n\n", "from typing import List, Tuple\n\n\n"])
    quote = pick(rng, ['"""', "'''"])
    typed = pick(rng, [params, ", ".join(f"{p.strip()}: list" if "num" in p or p.strip() in ("lst", "l", "arr") else f"{p.strip()}: int" for p in params.split(","))])
    return f"{head}def {name}({typed}):\n    {quote} {doc}{_doctest(rng, name)}\n    {quote}\n"


def _other_stub(rng):
    name, params, doc = pick(rng, SPECS)
    camel = name.split("_")[0] + "".join(w.capitalize() for w in name.split("_")[1:])
    lang = pick(rng, LANG_STUBS)
    if lang in ("javascript", "typescript"):
        return f"/**\n * {doc}\n */\nfunction {camel}({params}) {{\n"
    if lang == "java":
        return f"class Solution {{\n    /** {doc} */\n    public int {camel}(int[] {params.split(',')[0]}) {{\n"
    if lang == "go":
        return f"// {camel} {doc[0].lower() + doc[1:]}\nfunc {camel}({params.split(',')[0]} []int) int {{\n"
    if lang == "rust":
        return f"/// {doc}\nfn {name}({params.split(',')[0]}: &[i64]) -> i64 {{\n"
    return f"// {doc}\nint {camel}(const std::vector<int>& {params.split(',')[0]}) {{\n"


def _problem(rng):
    return f"{pick(rng, PROBLEM_OPENERS)} {pick(rng, PROBLEM_ASKS)}. {pick(rng, CONSTRAINTS)}".strip()


def _write_program(rng):
    name, _, doc = pick(rng, SPECS)
    lang = pick(rng, ["Python", "JavaScript", "C++", "Java", "Go", "Rust", "a language of your choice"])
    return pick(rng, [f"Write a {lang} program: {doc[0].lower() + doc[1:]}",
                      f"Implement `{name}` in {lang}. {doc}",
                      f"Create a function that does the following. {doc} Use {lang}.",
                      f"{doc} Write the code in {lang} and include a few test cases."])


def _snippet_question(rng):
    snippet = pick(rng, ["x = [i * i for i in range(5)]\nprint(x[-1])", "def f(a, b=[]):\n    b.append(a)\n    return b",
                         "let total = 0;\nfor (let i = 1; i <= 10; i++) total += i;\nconsole.log(total);",
                         "SELECT department, AVG(salary) FROM staff GROUP BY department HAVING AVG(salary) > 50000;",
                         "while True:\n    n = int(input())\n    if n < 0: break", "fn main() { let v = vec![1, 2, 3]; println!(\"{:?}\", v.iter().sum::<i32>()); }"])
    return f"{pick(rng, ['What does this print?', 'Is there a bug here?', 'Rewrite this more idiomatically:', 'Explain this code:'])}\n{snippet}"


def _tooling(rng):
    return pick(rng, ["How do I set up a Python virtual environment and install requirements from a file?",
                      "Why does my Docker container exit immediately after starting?",
                      "How can I undo the last commit in git without losing my changes?",
                      "What is the best way to structure a large React application?",
                      "How do I profile a slow Python script to find the bottleneck?",
                      "Explain how to write a recursive descent parser for arithmetic expressions.",
                      "How do I connect to a PostgreSQL database from Node.js?",
                      "What's the difference between a shallow copy and a deep copy in Python?",
                      "How do I read a large CSV file in chunks with pandas?",
                      "Write a bash script that backs up my home directory every night."])


TEMPLATES = [_python_stub, _python_stub, _other_stub, _problem, _write_program, _snippet_question, _tooling]

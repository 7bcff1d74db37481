"""Code prompts: write, complete, fix, explain, test, translate and optimise programs."""

from specray.data.blocks.common import join, maybe, pick

LANGS = ["Python", "JavaScript", "TypeScript", "Rust", "Go", "Java", "C++", "C", "Ruby", "Kotlin", "C#", "Swift"]
HELDOUT_LANGS = ["Python", "Haskell", "Scala", "PHP", "Elixir", "Lua", "Julia", "Zig"]

TASKS = [
    "reverses a singly linked list in place",
    "checks whether a string is a palindrome, ignoring punctuation and case",
    "merges two sorted arrays into one sorted array",
    "returns the n-th Fibonacci number using memoization",
    "finds the longest common prefix of a list of strings",
    "counts the frequency of each word in a text file",
    "validates an email address with a regular expression",
    "flattens an arbitrarily nested list",
    "removes duplicates from a list while preserving order",
    "computes the edit distance between two strings",
    "parses a CSV line that may contain quoted commas",
    "implements binary search on a sorted array",
    "rotates a square matrix by 90 degrees clockwise",
    "checks whether parentheses, brackets and braces in a string are balanced",
    "converts a Roman numeral to an integer",
    "groups a list of words into anagram sets",
    "finds the k largest elements of an array",
    "serialises a binary tree to a string and back",
    "detects a cycle in a directed graph",
    "computes the shortest path in a weighted graph with Dijkstra's algorithm",
    "implements an LRU cache with O(1) get and put",
    "chunks a list into pieces of size n",
    "converts a snake_case identifier to camelCase",
    "retries a function call with exponential backoff",
    "debounces a callback so it fires at most once per interval",
    "reads a JSON config file and merges it with default values",
    "computes a running median over a stream of numbers",
    "finds all permutations of a string without duplicates",
    "checks whether a Sudoku board is valid",
    "implements a thread-safe bounded queue",
    "tokenises an arithmetic expression and evaluates it",
    "compresses a string using run-length encoding",
    "finds the maximum subarray sum (Kadane's algorithm)",
    "performs a topological sort of tasks with dependencies",
    "computes the intersection of two lists of intervals",
    "generates all subsets of a set",
    "converts a decimal number to its binary representation",
    "paginates a list of records given a page number and page size",
    "hashes a password with a random salt",
    "walks a directory tree and sums the sizes of all files",
]
HELDOUT_TASKS = [
    "computes the convex hull of a set of 2D points",
    "implements a trie with insert, search and prefix counting",
    "solves the N-queens problem and returns all boards",
    "implements a rate limiter using the token-bucket algorithm",
    "finds strongly connected components with Tarjan's algorithm",
    "evaluates an expression in reverse Polish notation",
    "implements a min-heap from scratch",
    "computes the longest increasing subsequence",
    "parses a URL query string into a dictionary",
    "implements union-find with path compression",
    "renders a table of records as aligned plain text",
    "finds the median of two sorted arrays in logarithmic time",
]

NOUNS = [
    "a stack", "a queue using two stacks", "quicksort", "merge sort", "a hash map with open addressing",
    "a simple tokenizer", "a command-line argument parser", "a binary search tree with deletion",
    "an event emitter", "a matrix multiplication routine", "a bloom filter", "a ring buffer",
    "a minimal HTTP server", "a rate-limited HTTP client", "a sparse vector type", "a priority queue",
]

SNIPPETS = {
    "Python": [
        "def mean(xs):\n    return sum(xs) / len(xs) - 1",
        "def last(items):\n    return items[len(items)]",
        "for i in range(10):\n    if i % 2 = 0:\n        print(i)",
        "def add_item(item, bucket=[]):\n    bucket.append(item)\n    return bucket",
        "import json\nwith open('data.json') as f:\n    data = json.loads(f)",
        "def is_even(n):\n    return n % 2 == 1",
        "counts = {}\nfor w in words:\n    counts[w] += 1",
    ],
    "JavaScript": [
        "function sum(arr) {\n  let total;\n  for (const x of arr) total += x;\n  return total;\n}",
        "const ids = [10, 1, 5];\nids.sort();\nconsole.log(ids);",
        "async function load(url) {\n  const res = fetch(url);\n  return res.json();\n}",
        "for (var i = 0; i < 3; i++) {\n  setTimeout(() => console.log(i), 100);\n}",
    ],
    "C": [
        "int *make(void) {\n    int x = 5;\n    return &x;\n}",
        "char buf[8];\nstrcpy(buf, \"hello world\");",
        "for (int i = 0; i <= n; i++) {\n    total += a[i];\n}",
    ],
    "Go": [
        "func main() {\n    m := map[string]int\n    m[\"a\"] = 1\n}",
        "for i := 0; i < 3; i++ {\n    go func() { fmt.Println(i) }()\n}",
    ],
    "Rust": [
        "fn first(v: Vec<String>) -> &String {\n    &v[0]\n}",
        "let s = String::from(\"hi\");\nlet t = s;\nprintln!(\"{}\", s);",
    ],
    "SQL": [
        "SELECT name, COUNT(*) FROM orders GROUP BY customer_id;",
        "SELECT * FROM users WHERE email = NULL;",
    ],
}
HELDOUT_SNIPPETS = {
    "Python": [
        "def fact(n):\n    if n == 0:\n        return 0\n    return n * fact(n - 1)",
        "nums = [3, 1, 2]\nsorted_nums = nums.sort()\nprint(sorted_nums[0])",
        "class Point:\n    def __init__(self, x, y):\n        x = x\n        y = y",
    ],
    "JavaScript": [
        "if (value == null || value.length = 0) {\n  return [];\n}",
        "const obj = {a: 1};\nconst copy = obj;\ncopy.a = 2;\nconsole.log(obj.a);",
    ],
    "Java": [
        "String a = \"hi\";\nString b = new String(\"hi\");\nif (a == b) System.out.println(\"same\");",
        "List<Integer> xs = List.of(1, 2);\nxs.add(3);",
    ],
}

SQL_TASKS = [
    ("employees(id, name, department_id, salary, hired_at)", "departments(id, name)",
     ["the top 3 earners in each department", "departments whose average salary is above the company average",
      "employees hired in the last 12 months with their department name", "the second highest salary"]),
    ("orders(id, customer_id, total, created_at)", "customers(id, name, country)",
     ["customers who placed no order in the last 90 days", "monthly revenue per country for the current year",
      "each customer's first order date and lifetime total", "duplicate customers by name"]),
    ("posts(id, author_id, title, published)", "comments(id, post_id, body, created_at)",
     ["the number of comments per post, including posts with none", "the five most commented published posts",
      "posts whose latest comment is older than a week"]),
    ("products(id, name, price, category)", "sales(id, product_id, quantity, sold_at)",
     ["the best-selling product in each category", "products that never sold", "a 7-day rolling sum of units sold"]),
]
SHELL_ASKS = [
    "find all files larger than 100 MB under the current directory",
    "replace every occurrence of 'foo' with 'bar' in all .txt files recursively",
    "count the lines of code in a repository, grouped by file extension",
    "show the 10 most frequent IP addresses in an nginx access log",
    "rename all .jpeg files in a folder to .jpg",
    "kill the process listening on port 8080",
    "back up a directory into a timestamped tar.gz archive",
    "watch a log file and print only lines containing ERROR",
]
TOOLS = [
    "git rebase and git merge", "a process and a thread", "TCP and UDP", "a list and a tuple in Python",
    "`let`, `const` and `var` in JavaScript", "an abstract class and an interface", "REST and GraphQL",
    "stack memory and heap memory", "`==` and `is` in Python", "a mutex and a semaphore",
    "optimistic and pessimistic locking", "static and dynamic linking", "`async`/`await` and threads",
]
FRAMEWORK_ASKS = [
    "a Flask endpoint that accepts a JSON payload and validates the fields",
    "a React component that fetches a list of users and shows a loading spinner",
    "a Dockerfile for a Node.js app with a multi-stage build",
    "a GitHub Actions workflow that runs pytest on every push",
    "a FastAPI route with a Pydantic model for creating a todo item",
    "a pandas snippet that pivots a sales table by month and region",
    "a Makefile with build, test and clean targets for a C project",
    "a numpy function that normalises each row of a matrix to unit length",
    "an Express middleware that logs the duration of each request",
    "a PyTorch training loop with gradient clipping and a learning-rate scheduler",
    "a Kubernetes deployment manifest with liveness and readiness probes",
    "a SQLAlchemy model for a many-to-many relation between students and courses",
]

FUNC_SPECS = [
    ("count_vowels", "s: str", "int", "Return the number of vowels in s.", ["count_vowels('hello') == 2", "count_vowels('xyz') == 0"]),
    ("second_largest", "nums: list[int]", "int", "Return the second largest distinct value in nums.", ["second_largest([4, 1, 4, 3]) == 3"]),
    ("is_prime", "n: int", "bool", "Return True if n is a prime number.", ["is_prime(7) is True", "is_prime(1) is False"]),
    ("running_sum", "nums: list[int]", "list[int]", "Return the list of prefix sums of nums.", ["running_sum([1, 2, 3]) == [1, 3, 6]"]),
    ("capitalize_words", "text: str", "str", "Capitalise the first letter of every word.", ["capitalize_words('hi there') == 'Hi There'"]),
    ("digits_sum", "n: int", "int", "Sum the decimal digits of a non-negative integer.", ["digits_sum(1234) == 10"]),
    ("pairs_with_sum", "nums: list[int], target: int", "list[tuple[int, int]]", "Return all index pairs (i, j), i < j, whose values add up to target.", ["pairs_with_sum([1, 2, 3], 4) == [(0, 2)]"]),
    ("zip_longest_str", "a: str, b: str", "str", "Interleave the characters of a and b; append the rest of the longer one.", ["zip_longest_str('ab', 'xyz') == 'axbyz'"]),
    ("most_common", "items: list[str]", "str", "Return the most frequent item; ties go to the earliest.", ["most_common(['a', 'b', 'b']) == 'b'"]),
    ("clamp", "x: float, lo: float, hi: float", "float", "Limit x to the closed interval [lo, hi].", ["clamp(5, 0, 3) == 3"]),
    ("to_title_case", "s: str", "str", "Convert a sentence to title case but keep small words like 'of' and 'and' lowercase.", ["to_title_case('war and peace') == 'War and Peace'"]),
    ("count_islands", "grid: list[list[int]]", "int", "Count groups of 1s connected horizontally or vertically.", ["count_islands([[1, 0], [0, 1]]) == 2"]),
]
HELDOUT_FUNC_SPECS = [
    ("max_profit", "prices: list[int]", "int", "Best profit from one buy followed by one sell.", ["max_profit([7, 1, 5, 3, 6, 4]) == 5"]),
    ("spiral_order", "matrix: list[list[int]]", "list[int]", "Return the elements of the matrix in clockwise spiral order.", ["spiral_order([[1, 2], [3, 4]]) == [1, 2, 4, 3]"]),
    ("word_lengths", "sentence: str", "dict[str, int]", "Map each word to its length.", ["word_lengths('a bb') == {'a': 1, 'bb': 2}"]),
    ("balanced_split", "nums: list[int]", "bool", "Whether nums can be split into two parts with equal sums.", ["balanced_split([1, 5, 11, 5]) is True"]),
]

OPENERS = ["", "", "", "Please", "Can you", "I need you to", "Quick one:", "Hey,", "For a coding interview,", "In production code,"]


def _ask(rng, body: str) -> str:
    """Prefix an imperative request with a random opener, keeping grammar and case right."""
    opener = pick(rng, OPENERS)
    lower = body[0].lower() + body[1:]
    if opener == "Can you":
        return join(opener, lower.rstrip(".") + "?")
    if opener in ("Please", "I need you to") or opener.endswith(","):
        return join(opener, lower)
    return join(opener, body)


def _write_function(rng):
    lang, task = pick(rng, LANGS), pick(rng, TASKS)
    extra = pick(rng, ["", "", "Include type hints.", "Add docstrings and a couple of examples.",
                       "Keep it under 20 lines.", "Handle edge cases such as empty input.",
                       "Explain the time complexity afterwards.", "Avoid using any external libraries."])
    return _ask(rng, join(f"Write a {lang} function that {task}.", extra))


def _implement(rng):
    return _ask(rng, join(f"Implement {pick(rng, NOUNS)} in {pick(rng, LANGS)}.",
                          maybe(rng, "Show how to use it with a short example.", 0.4),
                          maybe(rng, "Write it as if it were going into a library.", 0.2)))


def _split_example(example: str) -> tuple[str, str]:
    """'f(x) == y' or 'f(x) is y' -> (call, expected)."""
    sep = " == " if " == " in example else " is "
    call, result = example.split(sep)
    return call, result


def _signature(name, args, ret, doc, examples):
    ex = "\n".join(f"    >>> {call}\n    {result}" for call, result in (_split_example(e) for e in examples))
    return f"def {name}({args}) -> {ret}:\n    \"\"\"{doc}\n{ex}\n    \"\"\"\n"


def _complete_stub(rng):
    name, args, ret, doc, ex = pick(rng, FUNC_SPECS)
    head = pick(rng, ["Complete the following function.", "Finish this implementation:", "Fill in the body:", ""])
    imports = maybe(rng, "from typing import List\n\n", 0.3)
    return (f"{head}\n\n" if head else "") + imports + _signature(name, args, ret, doc, ex)


def _fix_bug(rng):
    lang = pick(rng, list(SNIPPETS))
    snippet = pick(rng, SNIPPETS[lang])
    ask = pick(rng, [f"This {lang} code has a bug. Find it and fix it:",
                     f"Why doesn't this {lang} snippet work?",
                     "What's wrong with this code?",
                     f"I get unexpected behaviour from this {lang} code. Can you explain and correct it?"])
    return f"{ask}\n\n```\n{snippet}\n```"


def _explain_code(rng):
    lang = pick(rng, list(SNIPPETS))
    snippet = pick(rng, SNIPPETS[lang])
    ask = pick(rng, ["Explain line by line what this code does:", "Walk me through this snippet:",
                     "What is the output of this code, and why?", "Add comments to this code:"])
    return f"{ask}\n\n```{lang.lower()}\n{snippet}\n```"


def _sql(rng):
    a, b, asks = pick(rng, SQL_TASKS)
    return _ask(rng, f"Given tables {a} and {b}, write a SQL query that returns {pick(rng, asks)}.")


def _shell(rng):
    shell = pick(rng, ["bash", "a shell one-liner", "PowerShell", "zsh"])
    return f"Using {shell}, how do I {pick(rng, SHELL_ASKS)}?"


def _difference(rng):
    t = pick(rng, TOOLS)
    return pick(rng, [f"What is the difference between {t}?", f"Explain the difference between {t}.",
                      f"When should I use each of {t}?"]) + maybe(rng, " Give a code example.", 0.5)


def _framework(rng):
    return _ask(rng, join(f"Write {pick(rng, FRAMEWORK_ASKS)}.", maybe(rng, "Keep it minimal but correct.", 0.3)))


def _tests(rng):
    name, args, ret, doc, ex = pick(rng, FUNC_SPECS)
    fw = pick(rng, ["pytest tests", "unittest tests", "hypothesis property-based tests"])
    return f"Write {fw} for this function, covering edge cases:\n\n" + _signature(name, args, ret, doc, ex)


def _translate(rng):
    src = pick(rng, ["Python", "JavaScript"])
    dst = pick(rng, [lang for lang in LANGS if lang != src])
    snippet = pick(rng, SNIPPETS[src])
    return f"Translate this {src} code to idiomatic {dst}:\n\n```\n{snippet}\n```"


def _complexity(rng):
    return f"What is the time and space complexity of an algorithm that {pick(rng, TASKS)}? " + \
        pick(rng, ["Can it be done faster?", "Show the optimal approach in code.", "Justify your answer.", ""])


def _optimise(rng):
    lang, task = pick(rng, LANGS), pick(rng, TASKS)
    return (f"My {lang} code that {task} is too slow for inputs of about {pick(rng, ['10^5', '10^6', 'a million', '50,000'])} "
            f"elements. How can I optimise it? Show the improved version.")


def _regex(rng):
    target = pick(rng, ["US phone numbers like (555) 123-4567", "ISO 8601 dates", "hex colour codes such as #1a2b3c",
                        "IPv4 addresses", "semantic version strings like 1.2.3-beta", "hashtags in a tweet"])
    return f"Write a regular expression that matches {target}, and explain each part of it."


def _class_design(rng):
    thing = pick(rng, ["a bank account with deposits, withdrawals and an overdraft limit", "a parking lot",
                       "a library checkout system", "an inventory of products with stock levels",
                       "a chess board with piece movement validation", "a shopping cart with discount codes"])
    return _ask(rng, f"Design classes in {pick(rng, LANGS)} to model {thing}. Include the main methods.")


def _error_message(rng):
    err = pick(rng, ["TypeError: 'NoneType' object is not subscriptable", "IndexError: list index out of range",
                     "Segmentation fault (core dumped)", "Uncaught TypeError: Cannot read properties of undefined (reading 'map')",
                     "error[E0382]: borrow of moved value", "java.lang.NullPointerException",
                     "ModuleNotFoundError: No module named 'numpy'", "panic: runtime error: index out of range [3] with length 3"])
    return f"I'm getting `{err}` when I run my program. What usually causes this and how do I debug it?"


DISTILL = [_write_function, _implement, _complete_stub, _fix_bug, _explain_code, _sql, _shell, _difference,
           _framework, _tests, _translate, _complexity, _optimise, _regex, _class_design, _error_message]


def _h_kata(rng):
    lang, task = pick(rng, HELDOUT_LANGS), pick(rng, HELDOUT_TASKS)
    return f"Coding exercise ({lang}): create a routine that {task}. Provide the code and a brief test."


def _h_stub(rng):
    name, args, ret, doc, ex = pick(rng, HELDOUT_FUNC_SPECS)
    return _signature(name, args, ret, doc, ex)


def _h_review(rng):
    lang = pick(rng, list(HELDOUT_SNIPPETS))
    return f"Code review request. Point out every problem in the snippet below and propose a corrected version.\n\n{pick(rng, HELDOUT_SNIPPETS[lang])}"


def _h_port(rng):
    task = pick(rng, HELDOUT_TASKS)
    a, b = rng.sample(HELDOUT_LANGS, 2)
    return f"I have a {a} program that {task}. Sketch how the same program would look in {b}."


def _h_cli(rng):
    tool = pick(rng, ["a CLI tool that converts Markdown files to HTML", "a script that deduplicates photos by content hash",
                      "a small key-value store that persists to disk", "a cron-like scheduler for Python callables",
                      "a web scraper that respects robots.txt"])
    return f"Build {tool} in {pick(rng, HELDOUT_LANGS)}. Structure the code into functions."


HELDOUT = [_h_kata, _h_stub, _h_review, _h_port, _h_cli]

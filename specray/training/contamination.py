"""Training prompts that share text with evaluation prompts are dropped before a draft learns from them.

A draft evaluated on prompts whose wording it trained on measures memory, not agreement, and public
benchmark sets are for evaluation only. Templates written in the shape of a benchmark can still copy
its phrasing (644 of 1500 prompts drawn from the domain detector's logic styles share an 8-word run
with BIG-bench's), so the rule is textual: a training prompt goes if any run of `N` words in it
(lower-cased, punctuation ignored) appears in an evaluation prompt. GPT-3's decontamination used 13-word
runs; prompts here are short and templated, so 6 (of the 6000 styles prompts, 13-word runs drop 236,
8-word runs 773, 6-word runs 1375).
"""

import re

N = 6


def word_runs(text: str, n: int = N) -> set[tuple[str, ...]]:
    """Every run of `n` consecutive words in `text`."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def without_overlap(rows: list[dict], references: list[str], n: int = N) -> list[dict]:
    """`rows` ({prompt, ...}) less those sharing a run of `n` words with any of `references`."""
    seen = set().union(*(word_runs(text, n) for text in references))
    return [row for row in rows if not word_runs(row["prompt"], n) & seen]

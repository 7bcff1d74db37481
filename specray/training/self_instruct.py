"""Self-instruct prompts: the target writes new training prompts from the project's seed topics.

A draft only learns what its teacher data shows, and the built-in distill split is one family of
templates. Asking the target itself for questions on many seed topics (code, math, logic, chat and
extraction/summarisation, which the templates barely cover) gives prompts in other words and shapes, at
the cost of a few dozen generated tokens each; sampling (not greedy) keeps them varied. Public benchmark
sets stay out: they are for evaluation only.
"""

from __future__ import annotations

import logging
import random

from specray.engine.sampling import Sampling
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models.prompts import encode_prompt

log = logging.getLogger(__name__)

SEED_TOPICS = {
    "code": [
        "Python lists and dictionaries", "string manipulation in Python", "writing a small Python class",
        "recursion", "sorting algorithms", "SQL queries with joins", "JavaScript arrays", "reading a CSV file",
        "regular expressions", "unit testing", "error handling with exceptions", "bash scripting",
        "time complexity of an algorithm", "binary search", "hash maps", "linked lists", "git commands",
        "a function that validates user input", "HTML and CSS layout", "REST APIs",
    ],
    "math": [
        "fractions", "percentages and discounts", "solving linear equations", "areas and perimeters",
        "speed, distance and time", "probability with dice or cards", "averages", "ratios and proportions",
        "simple interest", "unit conversion", "prime numbers", "sequences and series", "angles in triangles",
        "word problems about money", "powers and square roots", "combinatorics", "volume of solids",
    ],
    "logic": [
        "syllogisms", "truth-tellers and liars", "ordering people by height or age", "seating arrangements",
        "river crossing puzzles", "number patterns", "if-then statements", "who owns which pet",
        "calendar and day-of-week puzzles", "weighing coins with a balance", "family relationships",
        "deductions from clues", "analogies", "odd one out",
    ],
    "chat": [
        "travel tips", "cooking a simple dinner", "staying motivated", "writing a polite email",
        "choosing a laptop", "learning a new language", "job interview advice", "a short poem",
        "explaining a science fact to a child", "planning a birthday party", "saving money", "houseplants",
        "a short story opening", "healthy habits", "a product description",
    ],
    "extraction": [
        "summarising a short paragraph about a historical event", "extracting names and dates from a short text",
        "listing the key points of a short news item", "turning a messy note into a bullet list",
        "classifying the sentiment of a customer review", "extracting ingredients from a recipe text",
        "summarising a short meeting transcript", "pulling contact details out of an email signature",
    ],
}
DOMAIN_OF = {"extraction": "chat"}  # extraction and summarisation count as chat among the engine's domains
INSTRUCTION = ("Write one new, self-contained request that a user might send to an AI assistant about {topic}. "
               "Include any text or numbers the request needs. Reply with the request only.")
MIN_CHARS, MAX_CHARS = 20, 600


def clean(text: str) -> str | None:
    """The request as the target wrote it, or None when it is not usable as a prompt."""
    text = text.strip().strip('"').strip()
    for prefix in ("Request:", "User:", "Question:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip()
    return text if MIN_CHARS <= len(text) <= MAX_CHARS else None


def self_instruct(target, tokenizer, per_topic: int, seed: int = 0, max_new_tokens: int = 96,
                  batch_size: int = 64) -> list[dict]:
    """Rows {id, prompt, domain}: `per_topic` sampled requests per seed topic, de-duplicated."""
    jobs = [(kind, topic) for kind, topics in SEED_TOPICS.items() for topic in topics for _ in range(per_topic)]
    random.Random(seed).shuffle(jobs)
    engine = SpeculativeEngine(target, target, tokenizer)
    sampling = Sampling(temperature=0.8, top_p=0.95)
    rows, seen = [], set()
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        prompts = [encode_prompt(tokenizer, INSTRUCTION.format(topic=topic)) for _, topic in batch]
        out = engine.generate(prompts, None, GenerationConfig(max_new_tokens, sampling, seed=seed + start))
        for (kind, topic), seq in zip(batch, out.sequences):
            text = clean(seq.text) if seq.stop_reason == "eos" else None  # a cut-off request is not one
            if text and text not in seen:
                seen.add(text)
                rows.append({"id": f"self-{kind}-{len(rows):05d}", "prompt": text, "domain": DOMAIN_OF.get(kind, kind),
                             "topic": topic})
        log.info("self-instruct: %d prompts from %d requests", len(rows), start + len(batch))
    return rows

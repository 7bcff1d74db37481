"""Small helpers shared by the per-domain building blocks."""

import random

NAMES = [
    "Alice", "Bilal", "Chen", "Dana", "Emeka", "Farah", "Gustavo", "Hana", "Ivan", "Jasmine",
    "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
    "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carmen", "Dmitri",
]
HELDOUT_NAMES = [
    "Ayesha", "Benedikt", "Consuelo", "Desmond", "Elif", "Fernando", "Greta", "Hiroshi",
    "Ingrid", "Jamal", "Katarina", "Leonardo", "Marisol", "Nikolai", "Oluwaseun", "Pilar",
]


def pick(rng: random.Random, pool: list):
    """One element; a named helper keeps the templates short."""
    return rng.choice(pool)


def maybe(rng: random.Random, text: str, p: float = 0.3) -> str:
    """Optional phrase, so the same template yields prompts of different length."""
    return text if rng.random() < p else ""


def join(*parts: str) -> str:
    """Join non-empty parts with single spaces, tidy the result."""
    return " ".join(p.strip() for p in parts if p and p.strip())

"""The detector's labelled training prompts, all written for this project.

Two sources: the distill templates of the built-in sets (``specray.data.blocks``), drawn with a
seed of their own, and extra templates in ``specray.domains.styles`` that cover the shapes real
prompts take (bare function stubs, story problems, puzzle paragraphs, open requests). The heldout
templates and the evaluation files are never used here.
"""

import random

from specray.data.make_builtin import DOMAINS, unique_prompts
from specray.domains import styles

SEED = 1234
PER_DOMAIN_BLOCKS = 1500
PER_DOMAIN_STYLES = 1500


def training_corpus(seed: int = SEED) -> tuple[list[str], list[str]]:
    """(prompts, domains), deterministic in seed, balanced across domains."""
    rng = random.Random(seed)
    prompts, labels = [], []
    for domain, blocks in DOMAINS.items():
        seen: set[str] = set()
        drawn = unique_prompts(blocks.DISTILL, PER_DOMAIN_BLOCKS, rng, seen, strict=False)
        drawn += unique_prompts(styles.TEMPLATES[domain], PER_DOMAIN_STYLES, rng, seen, strict=False)
        prompts += drawn
        labels += [domain] * len(drawn)
    return prompts, labels

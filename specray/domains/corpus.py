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
DRAFT_SEED = 4321  # the styles drawn as a draft's training prompts (`specray distill --prompts styles`)


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


def style_rows(per_domain: int = PER_DOMAIN_STYLES, seed: int = DRAFT_SEED) -> list[dict]:
    """Rows {id, prompt, domain} from the extra templates alone, `per_domain` each, deterministic in seed.

    A draft learns from the target's answers to them (`specray distill --prompts styles`): prompt shapes the
    distill split's templates do not have, written for this project, never the heldout templates."""
    rng = random.Random(seed)
    rows = []
    for domain, templates in styles.TEMPLATES.items():
        drawn = unique_prompts(templates, per_domain, rng, set(), strict=False)
        rows += [{"id": f"styles-{domain}-{i}", "prompt": p, "domain": domain} for i, p in enumerate(drawn)]
    return rows

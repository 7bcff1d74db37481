"""A distilled draft directory holds one of two kinds of draft, named by its metadata's `format`: a few
target-width layers (`specray.models.draft`) or a feature-level head that reads the target's hidden
states (`specray.models.feature_draft`). Both are built around the loaded target's own weights."""

from __future__ import annotations

from pathlib import Path

import torch

from specray.models import draft, feature_draft
from specray.policies.kinds import is_probability

LOADERS = {draft.FORMAT: draft.load_draft, feature_draft.FORMAT: feature_draft.load_feature_draft}


def unknown_format(draft_dir: str | Path, meta: dict) -> str | None:
    """Why a draft directory's format cannot be loaded, or None."""
    if meta.get("format") in LOADERS:
        return None
    return f"{Path(draft_dir) / draft.DRAFT_METADATA}: unknown draft format {meta.get('format')!r} (expected one of {', '.join(LOADERS)})"


def load_distilled(draft_dir: str | Path, target, dtype: torch.dtype | None = None):
    """The draft saved in `draft_dir`, whatever its kind, rebuilt around `target` in `dtype`, carrying the
    acceptance its distillation measured on held-out prompts (`measured_acceptance`)."""
    meta = draft.read_draft_metadata(draft_dir)
    problem = unknown_format(draft_dir, meta)
    if problem:
        raise ValueError(problem)
    model = LOADERS[meta["format"]](draft_dir, target, dtype)
    model.measured_acceptance = measured_acceptance(draft_dir, meta)
    return model


def measured_acceptance(draft_dir: str | Path, meta: dict) -> dict[str, float]:
    """Domain (and "all") -> the share of held-out tokens on which the draft's greedy token was the target's,
    as its distillation recorded (`heldout.by_domain.<d>.agreement`); empty when none was recorded. A
    recorded value that is not a probability is an error naming the file and the key."""
    recorded = (meta.get("heldout") or {}).get("by_domain") or {}
    measured = {}
    for domain, stats in recorded.items():
        value = stats.get("agreement") if isinstance(stats, dict) else None
        if not is_probability(value):
            raise ValueError(f"{Path(draft_dir) / draft.DRAFT_METADATA}: heldout.by_domain.{domain}.agreement must be "
                             f"a number in [0, 1], got {value!r}")
        measured[domain] = float(value)
    return measured

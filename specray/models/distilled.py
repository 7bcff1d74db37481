"""A distilled draft directory holds one of two kinds of draft, named by its metadata's `format`: a few
target-width layers (`specray.models.draft`) or a feature-level head that reads the target's hidden
states (`specray.models.feature_draft`). Both are built around the loaded target's own weights."""

from __future__ import annotations

from pathlib import Path

import torch

from specray.models import draft, feature_draft

LOADERS = {draft.FORMAT: draft.load_draft, feature_draft.FORMAT: feature_draft.load_feature_draft}


def unknown_format(draft_dir: str | Path, meta: dict) -> str | None:
    """Why a draft directory's format cannot be loaded, or None."""
    if meta.get("format") in LOADERS:
        return None
    return f"{Path(draft_dir) / draft.DRAFT_METADATA}: unknown draft format {meta.get('format')!r} (expected one of {', '.join(LOADERS)})"


def load_distilled(draft_dir: str | Path, target, dtype: torch.dtype | None = None):
    """The draft saved in `draft_dir`, whatever its kind, rebuilt around `target` in `dtype`."""
    meta = draft.read_draft_metadata(draft_dir)
    problem = unknown_format(draft_dir, meta)
    if problem:
        raise ValueError(problem)
    return LOADERS[meta["format"]](draft_dir, target, dtype)

"""Check, on the driver before any model loads, that the draft sources the domains use can run.

N-gram lookup needs nothing. The `model` and `ngram+model` sources need the draft model: a distilled
draft directory (`specray_draft.json` + its safetensors) is read here, metadata and weight headers only,
so a missing or corrupt file (or a recorded held-out acceptance that is no probability) is an error
naming the file, and a draft distilled for another target is an error naming the domain and the draft,
instead of every worker failing on load. A plain model ref (a hub id, or a model directory) is checked
where it can be without loading: a local path must exist.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from specray.config import ConfigError, ModelsConfig
from specray.distributed.policy_actor import DomainPolicy
from specray.models.distilled import measured_acceptance, unknown_format
from specray.models.refs import DRAFT_METADATA, canonical_ref, draft_dir
from specray.policies.sources import spec_source

NEEDS_MODEL = ("model", "ngram+model")  # the sources that run the draft model
FINGERPRINT = ("model_type", "hidden_size", "vocab_size", "num_hidden_layers")


def check_draft_sources(models: ModelsConfig, policies: dict[str, DomainPolicy]) -> None:
    """Raise ConfigError, naming the domain, the draft source and the file, for a source that cannot run."""
    users = [(d, s) for d, p in policies.items() for s in (*p.specs, *map(spec_source, p.label_specs)) if s in NEEDS_MODEL]
    if not users:
        return
    domain, source = users[0]
    problem = draft_problem(models)
    if problem:
        raise ConfigError(f"policy.per_domain.{domain}.draft={source}: {problem}")


def draft_problem(models: ModelsConfig) -> str | None:
    """Why the configured draft model cannot serve the target, as far as files on disk tell; None if it can."""
    directory = draft_dir(models.draft)
    if directory is None:
        path = Path(models.draft).expanduser()
        looks_local = models.draft.startswith(("/", ".", "~")) or path.exists()
        return f"models.draft {models.draft!r}: no such file or directory" if looks_local and not path.exists() else None
    meta_path = directory / DRAFT_METADATA
    try:
        meta = json.loads(meta_path.read_text())
        target, weights = meta["target"], directory / meta["weights"]["file"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{meta_path}: unreadable draft metadata ({type(exc).__name__}: {exc})"
    if unknown_format(directory, meta):
        return unknown_format(directory, meta)
    try:
        measured_acceptance(directory, meta)
    except ValueError as exc:
        return str(exc)
    try:
        with safe_open(str(weights), "np") as f:
            f.keys()
    except (OSError, SafetensorError) as exc:
        return f"{weights}: missing or corrupt draft weights ({exc})"
    return _fit_problem(models.target, target, models.draft)


def _fit_problem(target_ref: str, expected: dict, draft: str) -> str | None:
    """A draft distilled for another target: known from the target's ref, or its config.json when it is a local dir."""
    if canonical_ref(target_ref) == expected.get("ref"):
        return None
    config = Path(target_ref) / "config.json"
    if not config.is_file():
        return None  # a hub id or a GGUF: only loading it tells; the worker's load checks the fingerprint
    try:
        actual = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        return f"{config}: unreadable target config ({exc})"
    differs = {k: (expected.get(k), actual.get(k)) for k in FINGERPRINT if k in expected and expected.get(k) != actual.get(k)}
    if differs:
        listed = ", ".join(f"{k} {want} vs {got}" for k, (want, got) in differs.items())
        return f"draft {draft!r} was distilled for another target than {target_ref!r} ({listed})"
    return None


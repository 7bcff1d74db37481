"""Build a stop policy from a spec string (grammar in `specray.policies.spec`), by the kind's record.

A learned kind loads its weights from `path=` (a stem of `.safetensors` + `.json`) or from the newest
registry version for the domain; the knobs tuned at training time (in the JSON) sit between the
kind's defaults and the spec's own options.
"""

from specray.policies.artifacts import tuned_knobs
from specray.policies.base import StopPolicy
from specray.policies.kinds import PolicyKind, get_kind
from specray.policies.registry import artifact_stem
from specray.policies.spec import SOURCE_KNOBS, parse_spec


def make_policy(
    spec: str,
    domain: str = "global",
    registry: str | None = None,
    references: list[list[int]] | None = None,
) -> StopPolicy | None:
    """The policy for `spec`; None for a kind that does not draft (`target`: target-only decoding)."""
    name, options = parse_spec(spec)
    kind = get_kind(name)
    source = {key: options.pop(key) for key in SOURCE_KNOBS if key in options}
    if kind.learned is not None:
        policy = _learned(kind, options, domain, registry)
    else:
        policy = kind.build({**kind.defaults(), **options}, references)
    if policy is not None:
        policy.draft_source = source.get("draft", policy.draft_source)
        policy.ngram_max = source.get("ngram", policy.ngram_max)
    return policy


def _learned(kind: PolicyKind, options: dict, domain: str, registry: str | None) -> StopPolicy:
    stem = options.pop("path", None)
    version = "unversioned"
    if stem is None:
        if registry is None:
            raise ValueError(f"policy '{kind.name}' needs weights: give {kind.name}:path=STEM or a policy registry")
        stem, version = artifact_stem(registry, kind.name, domain)
    model, meta, tuned = load_learned(kind, stem)
    return kind.learned.build(model, {**kind.defaults(), **tuned, **options}, meta.get("version", version))


def load_learned(kind: PolicyKind, stem) -> tuple[object, dict, dict]:
    """(model, meta, tuned knobs) of a learned kind's artifact, every part checked (an ArtifactError names the file)."""
    model, meta = kind.learned.load(stem)
    return model, meta, tuned_knobs(stem, meta, kind.threshold_knob)

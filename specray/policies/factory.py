"""Build a stop policy from a spec string (grammar in `specray.policies.spec`).

`disco` and `specdecpp` load weights from `path=` (a stem of `.safetensors` + `.json`) or from the
newest registry version for the domain.
"""

from specray.policies.artifacts import tuned_knobs
from specray.policies.base import StopPolicy
from specray.policies.confidence import ConfidencePolicy
from specray.policies.disco import DiscoClassifier, DiscoPolicy
from specray.policies.heuristic import HeuristicPolicy
from specray.policies.oracle import OraclePolicy
from specray.policies.registry import artifact_stem
from specray.policies.spec import parse_spec
from specray.policies.specdecpp import AcceptanceHead, SpecDecPPPolicy
from specray.policies.static import StaticPolicy


def make_policy(
    spec: str,
    domain: str = "global",
    registry: str | None = None,
    references: list[list[int]] | None = None,
) -> StopPolicy | None:
    """The policy for `spec`; None for `target` (target-only decoding)."""
    name, options = parse_spec(spec)
    source = {key: options.pop(key) for key in ("draft", "ngram") if key in options}
    policy = _build(name, options, domain, registry, references)
    if policy is not None:
        policy.draft_source = source.get("draft", policy.draft_source)
        policy.ngram_max = source.get("ngram", policy.ngram_max)
    return policy


def _build(name: str, options: dict, domain: str, registry: str | None, references) -> StopPolicy | None:
    if "cost" in options:
        options["cost_aware"] = options.pop("cost")
    if name == "target":
        return None
    if name == "static":
        return StaticPolicy(**options)
    if name == "heuristic":
        return HeuristicPolicy(**options)
    if name == "confidence":
        return ConfidencePolicy(**options)
    if name == "oracle":
        if references is None:
            raise ValueError("the oracle policy needs the target's own outputs (it runs offline, after target-only decoding)")
        return OraclePolicy(references, **options)
    stem = options.pop("path", None)
    version = "unversioned"
    if stem is None:
        if registry is None:
            raise ValueError(f"policy '{name}' needs weights: give {name}:path=STEM or a policy registry")
        stem, version = artifact_stem(registry, name, domain)
    if name == "disco":
        classifier, meta = DiscoClassifier.load(stem)
        return DiscoPolicy(classifier, **{**tuned_knobs(stem, meta, "tau"), **options}, version=meta.get("version", version))
    head, meta = AcceptanceHead.load(stem)
    return SpecDecPPPolicy(head, **{**tuned_knobs(stem, meta, "h"), **options}, version=meta.get("version", version))


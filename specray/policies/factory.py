"""Build a stop policy from a spec string: `name[:value][,key=value...]`.

    static:4    heuristic:k_max=12    confidence:0.3,refit=true
    disco:path=DIR/code    specdecpp:h=0.6    oracle    target (no drafting)

`disco` and `specdecpp` load weights from `path=` (a stem of `.safetensors` + `.json`) or from the
newest registry version for the domain.
"""

from specray.policies.base import StopPolicy
from specray.policies.confidence import ConfidencePolicy
from specray.policies.disco import DiscoClassifier, DiscoPolicy
from specray.policies.heuristic import HeuristicPolicy
from specray.policies.oracle import OraclePolicy
from specray.policies.registry import artifact_stem
from specray.policies.specdecpp import AcceptanceHead, SpecDecPPPolicy
from specray.policies.static import StaticPolicy

POLICIES = ("target", "static", "heuristic", "confidence", "disco", "specdecpp", "oracle")
_FIRST_VALUE = {"static": "k", "confidence": "threshold", "disco": "tau", "specdecpp": "h", "heuristic": "k_max"}
_OPTIONS = {
    "target": {},
    "static": {"k": int},
    "heuristic": {"k_start": int, "k_max": int, "cost": bool},
    "confidence": {"threshold": float, "k_max": int, "refit": bool, "cost": bool},
    "disco": {"tau": float, "k_max": int, "path": str, "cost": bool},
    "specdecpp": {"h": float, "k_max": int, "path": str, "cost": bool},
    "oracle": {"k_max": int},
}


def _convert(spec: str, key: str, value: str, kind: type):
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "on", "off", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "on", "1")
        return kind(value)
    except ValueError:
        raise ValueError(f"policy '{spec}': {key}={value!r} is not a valid {kind.__name__}") from None


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.strip().partition(":")
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}' in '{spec}'; known: {', '.join(POLICIES)}")
    options = {}
    for i, part in enumerate(p for p in rest.split(",") if p):
        key, eq, value = part.partition("=")
        if not eq:
            if i > 0 or name not in _FIRST_VALUE:
                raise ValueError(f"policy '{spec}': '{part}' needs the form key=value")
            key, value = _FIRST_VALUE[name], part
        if key not in _OPTIONS[name]:
            raise ValueError(f"policy '{spec}': unknown option '{key}'; {name} takes {', '.join(_OPTIONS[name]) or 'none'}")
        options[key] = _convert(spec, key, value, _OPTIONS[name][key])
    return name, options


def make_policy(
    spec: str,
    domain: str = "global",
    registry: str | None = None,
    references: list[list[int]] | None = None,
) -> StopPolicy | None:
    """The policy for `spec`; None for `target` (target-only decoding)."""
    name, options = parse_spec(spec)
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
        return DiscoPolicy(classifier, **{**_tuned(meta, "tau"), **options}, version=meta.get("version", version))
    head, meta = AcceptanceHead.load(stem)
    return SpecDecPPPolicy(head, **{**_tuned(meta, "h"), **options}, version=meta.get("version", version))


def _tuned(meta: dict, threshold: str) -> dict:
    """Threshold and k_max chosen at training time, which explicit options override."""
    return {key: meta[key] for key in (threshold, "k_max") if key in meta}

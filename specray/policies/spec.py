"""Policy spec strings: `name[:value][,key=value...]`, read against the kind's registered record.

    static:4    heuristic:k_max=12    confidence:0.3,refit=true
    disco:path=DIR/code    specdecpp:h=0.6    oracle    target (no drafting)
    static:4,draft=ngram    confidence,draft=ngram+model,ngram=2

The names, knobs, types and ranges come from `specray.policies.kinds`: a bare first value sets the
kind's `main` knob (K, threshold, tau or h). Every kind that drafts also takes `draft=` (what proposes
tokens: model | ngram | ngram+model) and `ngram=` (longest n-gram matched). Config validation uses
this parser too, so a bad spec fails before any model loads.
"""

import re

from specray.policies.kinds import MAX_LOOKAHEAD, Knob, PolicyKind, get_kind, kinds

__all__ = ["DRAFT_SOURCES", "MAX_LOOKAHEAD", "NGRAM_MAX_LIMIT", "parse_spec", "policy_names"]

DRAFT_SOURCES = ("model", "ngram", "ngram+model")
NGRAM_MAX_LIMIT = 8  # longer matches are rare enough that looking for them only costs time
SOURCE_KNOBS = {"draft": Knob("draft", str), "ngram": Knob("ngram", int, range=(1, NGRAM_MAX_LIMIT))}  # every kind that drafts


def policy_names() -> tuple[str, ...]:
    return tuple(kinds())


def spec_knobs(kind: PolicyKind) -> dict[str, Knob]:
    """The options a spec of `kind` may set: its own knobs, plus the draft source's when it drafts."""
    return {**kind.options, **(SOURCE_KNOBS if kind.drafts else {})}


def _check_range(spec: str, knob: Knob, value) -> None:
    if knob.name == "draft" and value not in DRAFT_SOURCES:
        raise ValueError(f"policy '{spec}': draft must be one of {', '.join(DRAFT_SOURCES)}, got {value!r}")
    problem = knob.check(value)
    if problem:
        raise ValueError(f"policy '{spec}': {problem}")


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
    spec = spec.strip()
    name = re.match(r"[^:,]*", spec).group()  # `name:opts`, or `name,key=value...` when there is no main value
    rest = spec[len(name) + 1 :]
    kind = get_kind(name)
    if kind is None:
        raise ValueError(f"unknown policy '{name}' in '{spec}'; known: {', '.join(policy_names())}")
    knobs = spec_knobs(kind)
    options = {}
    for i, part in enumerate(p for p in rest.split(",") if p):
        key, eq, value = part.partition("=")
        if not eq:
            if i > 0 or kind.main is None:
                raise ValueError(f"policy '{spec}': '{part}' needs the form key=value")
            key, value = kind.main, part
        if key not in knobs:
            raise ValueError(f"policy '{spec}': unknown option '{key}'; {name} takes {', '.join(knobs) or 'none'}")
        options[key] = _convert(spec, key, value, knobs[key].type)
        _check_range(spec, knobs[key], options[key])
    return name, options

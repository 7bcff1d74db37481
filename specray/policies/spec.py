"""Policy spec strings: `name[:value][,key=value...]`, read against the kind's registered record.

    static:4    heuristic:k_max=12    confidence:0.3,refit=true
    disco:path=DIR/code    specdecpp:h=0.6    oracle    target (no drafting)
    static:4,draft=ngram    confidence,draft=ngram+model,ngram=2

The names, knobs, types and ranges come from `specray.policies.kinds`: a bare first value sets the
kind's `main` knob (K, threshold, tau or h). Every kind that drafts also takes `draft=` (what proposes
tokens: model | ngram | ngram+model), `ngram=` (longest n-gram matched) and `ngram_min=` (shortest; see
`shortest_ngram`). Config validation uses this parser too, so a bad spec fails before any model loads.
"""

import re

from specray.policies.kinds import MAX_LOOKAHEAD, Knob, PolicyKind, get_kind, kinds

__all__ = ["DRAFT_SOURCES", "MAX_LOOKAHEAD", "NGRAM_MAX_LIMIT", "parse_spec", "policy_names", "shortest_ngram"]

DRAFT_SOURCES = ("model", "ngram", "ngram+model")
NGRAM_MAX_LIMIT = 8  # longer matches are rare enough that looking for them only costs time
NGRAM_MAX = 3  # longest n-gram matched, unless `ngram=` says otherwise
SOURCE_KNOBS = {  # every kind that drafts
    "draft": Knob("draft", str),
    "ngram": Knob("ngram", int, range=(1, NGRAM_MAX_LIMIT)),
    "ngram_min": Knob("ngram_min", int, range=(1, NGRAM_MAX_LIMIT)),
}


def shortest_ngram(source: str, ngram_max: int) -> int:
    """The shortest match lookup drafts from, unless `ngram_min=` says otherwise: any match when lookup is
    the only source (a guess costs no forward), two tokens when the draft model stands behind it, since a
    one-token match is a worse guess than the model's. Measured on the embedded pair (the target's greedy
    outputs for the 64 `docs/bench/mixed64.jsonl` prompts, 64 new tokens): a one-token match's first token
    was right 21% of the time (31% of positions matched only one token), a two-token match's 49%, a
    three-token one's 68%, and the shipped draft agrees with the target on 46% of held-out tokens."""
    return min(2 if source == "ngram+model" else 1, ngram_max)


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
    longest = options.get("ngram", NGRAM_MAX)
    if options.get("ngram_min", 1) > longest:
        raise ValueError(f"policy '{spec}': ngram_min={options['ngram_min']} exceeds ngram={longest}, the longest match looked up")
    return name, options

"""Policy spec strings: `name[:value][,key=value...]`, parsed without importing torch.

    static:4    heuristic:k_max=12    confidence:0.3,refit=true
    disco:path=DIR/code    specdecpp:h=0.6    oracle    target (no drafting)
    static:4,draft=ngram    confidence,draft=ngram+model,ngram=2

A bare first value is the policy's main knob (K, threshold, tau or h). Every drafting policy also takes
`draft=` (what proposes tokens: model | ngram | ngram+model) and `ngram=` (longest n-gram matched).
Config validation uses this parser too, so a bad spec fails before any model loads.
"""

import re

DRAFT_SOURCES = ("model", "ngram", "ngram+model")
NGRAM_MAX_LIMIT = 8  # longer matches are rare enough that looking for them only costs time

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


_SOURCE_OPTIONS = {"draft": str, "ngram": int}  # every policy that drafts takes these
for _name in POLICIES[1:]:
    _OPTIONS[_name].update(_SOURCE_OPTIONS)

_UNIT = ("threshold", "tau", "h")  # probabilities
_COUNTS = ("k", "k_max", "k_start")
MAX_LOOKAHEAD = 1024  # the most tokens one round may draft: far past any useful lookahead, within int64


def _check_range(spec: str, key: str, value) -> None:
    if key in _UNIT and not 0.0 <= value <= 1.0:
        raise ValueError(f"policy '{spec}': {key} must be in [0, 1], got {value}")
    if key in _COUNTS and not 1 <= value <= MAX_LOOKAHEAD:
        raise ValueError(f"policy '{spec}': {key} must be in [1, {MAX_LOOKAHEAD}], got {value}")
    if key == "draft" and value not in DRAFT_SOURCES:
        raise ValueError(f"policy '{spec}': draft must be one of {', '.join(DRAFT_SOURCES)}, got {value!r}")
    if key == "ngram" and not 1 <= value <= NGRAM_MAX_LIMIT:
        raise ValueError(f"policy '{spec}': ngram must be in 1..{NGRAM_MAX_LIMIT}, got {value}")


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
        _check_range(spec, key, options[key])
    return name, options

"""One record per stop-policy kind, declared in that policy's own file and registered once.

A `PolicyKind` says everything the rest of specray needs to know about a kind: its name, its knobs
(type, range, default), which knob a bare first value sets and which knobs a domain's `k_max` and
`threshold` overrides set, whether the engine's cost gate may cut it, whether it drafts at all, and
for a learned kind how its weights load and how retraining fits and tunes it (`Learned`). The spec
grammar, config validation, the factory, a job's per-domain specs, the registry loader and
`specray retrain` read these records; none of them names a kind. A new policy is one new file that
calls `register` (the pattern of Ray's `ProcessorBuilder.register(config_type, builder)`).

The built-in kinds' files import torch, so they are imported on the first lookup, not with this
module: `import specray.config` stays torch-free, and only a process that parses a spec pays for it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

# the built-in kinds, imported on first use; their files register themselves
BUILTIN = ("target", "static", "heuristic", "confidence", "disco", "specdecpp", "oracle")

MAX_LOOKAHEAD = 1024  # the most tokens one round may draft: far past any useful lookahead, within int64
UNIT = (0, 1)  # a probability knob's range
COUNT = (1, MAX_LOOKAHEAD)  # a lookahead knob's range


def is_probability(value: Any) -> bool:
    """Whether a value read from a JSON artifact is a probability: a number (not a bool) in [0, 1] (NaN is not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and UNIT[0] <= value <= UNIT[1]


@dataclass(frozen=True)
class Knob:
    """One option of a spec: `name=value` of `type`, within [low, high] when a range is given."""

    name: str
    type: type
    default: Any = None
    range: tuple[float, float] | None = None

    def check(self, value: Any) -> str | None:
        """Why `value` is not a valid setting of this knob, or None."""
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            low, high = self.range
            return f"{self.name} must be in [{low}, {high}], got {value}"
        return None


def probability(name: str, default: float) -> Knob:
    return Knob(name, float, default, UNIT)


def lookahead(name: str, default: int) -> Knob:
    return Knob(name, int, default, COUNT)


COST = Knob("cost", bool, True)  # `cost=off`: the engine's cost gate leaves this policy's drafts alone


@dataclass(frozen=True)
class Retraining:
    """How `specray retrain` fits a learned kind: on which trace inputs (`features`: top-k probabilities,
    entropy and depth of every token; `hidden`: the draft's hidden states, on the tokens that kept one) and
    which labels (`accepted`, hard; `accept_prob`, the soft min(1, p/q)), `fit(inputs, labels, steps)` the
    model, `lengths(rounds, threshold, k_max)` the kind's stopping rule that replay tunes the threshold knob
    with, and `meta(inputs)` what the artifact's JSON records beside the tuned knobs.

    The trainers import the policy files, so `fit` imports them when it runs: a worker that only loads
    weights never imports training code."""

    inputs: str
    labels: str
    fit: Callable[[Any, Any, int], Any]
    lengths: Callable[[Any, float, int], Any]
    meta: Callable[[Any], dict]


@dataclass(frozen=True)
class Learned:
    """A kind whose weights come from an artifact (`<registry>/<kind name>/<version>/<domain>`, or `path=`):
    `load(stem, data)` -> (model, meta), checked (`data`: the files' bytes, already read, or None to read them); `build(model, knobs, version)` -> the policy. The kind's
    `threshold_knob` is the one replay tunes and the artifact records beside `k_max`."""

    load: Callable[[Any], tuple[Any, dict]]
    build: Callable[[Any, dict, str], Any]
    retraining: Retraining


@dataclass(frozen=True)
class PolicyKind:
    """A stop-policy kind. `build(knobs, references)` makes the policy (None: target-only decoding); a learned
    kind builds through `learned` instead. `main` is the knob a bare first value sets (`static:4`), `k_knob`
    and `threshold_knob` the knobs a domain's `k_max` and `threshold` overrides set. `offline` kinds need
    the target's own outputs and never run in a job."""

    name: str
    knobs: tuple[Knob, ...] = ()
    build: Callable[[dict, Any], Any] | None = None
    main: str | None = None
    k_knob: str | None = None
    threshold_knob: str | None = None
    learned: Learned | None = None
    drafts: bool = True
    offline: bool = False
    options: dict[str, Knob] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "options", {knob.name: knob for knob in self.knobs})

    def defaults(self) -> dict[str, Any]:
        return {knob.name: knob.default for knob in self.knobs if knob.default is not None}


def learned_kind(name: str, threshold: Knob, policy: type, load: Callable, retraining: Retraining, k_max: int = 10) -> PolicyKind:
    """The record of a learned kind whose policy class takes (model, threshold, k_max, version, cost_aware), as
    `specray.policies.base.LearnedPolicy` does: its threshold is the main knob and the one replay tunes,
    beside `k_max`, the artifact `path` and `cost`."""

    def build(model, knobs: dict, version: str):
        return policy(model, knobs[threshold.name], knobs["k_max"], version, knobs["cost"])

    return PolicyKind(name, (threshold, lookahead("k_max", k_max), Knob("path", str), COST), main=threshold.name,
                      k_knob="k_max", threshold_knob=threshold.name, learned=Learned(load, build, retraining))


_KINDS: dict[str, PolicyKind] = {}
_MODULES: dict[str, str] = {}  # kind name -> the module that registered it


def register(kind: PolicyKind) -> PolicyKind:
    """Add `kind`, declared by the calling module (which another process imports to have it too); a second
    registration of the same name must be the same record (a module imported twice)."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind and known != kind:
        raise ValueError(f"policy kind '{kind.name}' is registered twice")
    _KINDS[kind.name] = kind
    _MODULES.setdefault(kind.name, inspect.currentframe().f_back.f_globals["__name__"])
    return kind


def declared_in(name: str) -> str:
    """The module that registered kind `name`."""
    kinds()
    return _MODULES[name]


def require_kind(name: str, module: str) -> PolicyKind:
    """Kind `name`, importing `module` (where it was declared, in the process that resolved it) when this
    process has not registered it yet: a kind outside `BUILTIN` reaches every worker this way."""
    if get_kind(name) is None:
        importlib.import_module(module)
    found = get_kind(name)
    if found is None:
        raise ValueError(f"policy kind '{name}' is not registered by {module}")
    return found


def _load_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"specray.policies.{name}")


def kinds() -> dict[str, PolicyKind]:
    """Every registered kind by name, the built-in ones first."""
    if not all(name in _KINDS for name in BUILTIN):
        _load_builtin()
    return dict(_KINDS)


def get_kind(name: str) -> PolicyKind | None:
    return kinds().get(name)


def learned_kinds() -> dict[str, PolicyKind]:
    """The kinds whose weights live in the policy registry, by name (also their registry kind)."""
    return {name: kind for name, kind in kinds().items() if kind.learned is not None}

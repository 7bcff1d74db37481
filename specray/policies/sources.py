"""Draft sources: what proposes the tokens a stop policy stops, named once for config, specs, traces and registry.

A source is one of `specray.policies.spec.DRAFT_SOURCES` (the distilled draft `model`, `ngram` lookup,
`ngram+model`) or `none` (target-only decoding). Every source beside one target is a spec option, so a
worker that holds the pair switches source between batches without loading anything. A new source (a
feature-level draft) joins by adding its name to DRAFT_SOURCES; nothing here lists sources twice.

Registry artifacts trained on one source's traces are named `<domain>` for `model` (the name every
version before per-source training used) and `<domain>__<slug>` for the others, a plain registry name.
String work: no torch until a spec is parsed (the kinds' records load then).
"""

from __future__ import annotations

from specray.policies.kinds import get_kind
from specray.policies.spec import DRAFT_SOURCES, parse_spec

NONE = "none"  # no draft: target-only decoding (the `target` policy)
SOURCES = (*DRAFT_SOURCES, NONE)
AUTO = "auto"  # per domain: the policy actor picks among `policy.auto_sources` by measured tokens/s
DEFAULT = "model"  # what a spec without `draft=` drafts with


def spec_source(spec: str) -> str:
    """The source a policy spec drafts with."""
    name, options = parse_spec(spec)
    return options.get("draft", DEFAULT) if get_kind(name).drafts else NONE


def with_source(spec: str, source: str) -> str:
    """`spec` drafting with `source` instead (`none`: the target-only spec); other options kept."""
    if source not in SOURCES:
        raise ValueError(f"draft source {source!r} is not one of {', '.join(SOURCES)}")
    if source == NONE:
        return "target"
    if spec_source(spec) == source:
        return spec
    name, options = parse_spec(spec)
    if not get_kind(name).drafts:
        raise ValueError(f"policy '{spec}' does not draft, so it cannot draft with {source!r}")
    options = {k: v for k, v in options.items() if k != "draft"}
    if source != DEFAULT:
        options["draft"] = source
    return format_spec(name, options)


def format_spec(name: str, options: dict) -> str:
    """The inverse of parse_spec: `name:key=value,...`."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def registry_name(domain: str, source: str) -> str:
    """The registry artifact name of `domain`'s policy trained on `source`'s traces."""
    if source not in DRAFT_SOURCES:
        raise ValueError(f"no stop policy is trained for draft source {source!r}")
    return domain if source == DEFAULT else f"{domain}__{source.replace('+', '_')}"

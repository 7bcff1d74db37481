"""`specray bench`: every policy against target-only decoding, on the same pair, prompts and machine, in one process.

Speed claims are ratios measured side by side here, never absolute numbers carried from elsewhere,
from target-only and every policy on the engine taking turns round by round (`take_turns`),
and always against target-only decoding in its fastest precision on this machine: with `--dtype auto`
on a CPU target-only runs in both float32 and bf16 (`target@<dtype>` rows) and the faster is the
baseline. Batches are formed per domain (as the job shards them), so per-domain rows time only their
own batches, unless `--mix-domains` streams every domain's prompts through one engine, each row stopped
by its own domain's policy (one "all" row per policy, since domains share the time).
`--batching` keeps `--batch-size` sequences in flight and refills them (continuous, the default) or
runs each batch to its end (drain), or both side by side. Every row reports the engine's
overhead: milliseconds per round spent outside model forwards. Greedy runs check every policy against target-only output in the verifier's precision:
identical in float32; in low precision each differing prompt is classified at its first differing
token as a numerical tie or a divergence (`specray.engine.numerics`), and divergences fail the run.

A spec with `draft=auto` (e.g. `heuristic,draft=auto`) is benched as a job's `policy.per_domain.<d>.draft:
auto` runs: per domain, before each batch a `DraftChooser` picks the draft source (model, ngram,
ngram+model, none) from the batches' measured tokens/s so far (and the registry's prior, with
`--policy-registry`); its rows say how many batches each source got. Bench it beside the same policy with
each single source to see what choosing per domain is worth.
"""

import argparse
import copy
import json
import platform
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from specray.config import BATCHINGS as JOB_BATCHINGS
from specray.data.builtin import builtin_path
from specray.distributed.draft_choice import DraftChooser
from specray.data.readers import ReaderConfig, read_prompts
from specray.engine.numerics import classify_difference, logit_noise
from specray.engine.sampling import Sampling
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.hf_baselines import NGRAM, configure_assistant, hf_generate, hf_settings
from specray.models import DEFAULT_DRAFT, DEFAULT_TARGET, encode_prompt, load_pair
from specray.models.feature_draft import reads_target_hidden
from specray.models.refs import EMBEDDED, EMBEDDED_LAYER_DRAFT
from specray.models.precision import AUTO, CANDIDATES, dtype_name
from specray.policies.draft_prior import load_prior
from specray.policies.factory import make_policy
from specray.policies.sources import SOURCES, spec_source, with_source
from specray.policies.kinds import get_kind
from specray.policies.spec import parse_spec, policy_names
from specray.schema import DOMAINS
from specray.totals import Totals

TARGET = "target"
ASSISTED = "assisted"  # the engine whose pair the hf-* baselines run (see `assisted_engine`)
CONTINUOUS, DRAIN = JOB_BATCHINGS
BATCHINGS = {CONTINUOUS: [CONTINUOUS], DRAIN: [DRAIN], "both": [CONTINUOUS, DRAIN]}
DRAIN_SUFFIX = " [drain]"
TURNS = ("rounds", "calls")  # what the engine's policies take turns with: a round each, or whole engine calls
AUTO_DRAFT = re.compile(r"(?P<sep>[:,])draft=auto(?=,|$)")


@dataclass
class Tally:
    """What one policy did on one domain."""

    seconds: float = 0.0
    totals: Totals = Totals()
    rounds: int = 0  # engine rounds (hf baselines: none counted)
    loop_ms: float = 0.0  # time inside the engine's round loop
    forward_ms: float = 0.0  # of which model forwards; the rest is engine overhead
    outputs: dict[str, list[int]] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)  # policy versions used (a registry may publish mid-run)
    sources: dict[str, int] = field(default_factory=dict)  # batches per draft source (`draft=auto` specs)
    chooser: DraftChooser | None = None  # a `draft=auto` spec's choice in this domain


def load_bench_prompts(path: str | None, limit: int | None) -> list[dict]:
    """Rows {"id", "prompt", "domain"}; a malformed row is an error here, since a benchmark must not skip work silently."""
    rows, errors = [], []
    for batch in read_prompts(path or builtin_path("heldout"), ReaderConfig(limit=limit)):
        rows += [{"id": r.id, "prompt": r.prompt, "domain": r.domain or "all"} for r in batch.rows]
        errors += batch.errors
    if errors:
        listed = "; ".join(f"{e.key}: {e.reason}" for e in errors[:5])
        raise ValueError(f"{path}: {len(errors)} malformed prompt rows ({listed})")
    return rows


def domain_groups(rows: list[dict], mix_domains: bool = False) -> list[list[dict]]:
    """The prompts of each domain, in order (the job shards by domain too); with `mix_domains`, one group."""
    if mix_domains:
        return [rows]
    by_domain = defaultdict(list)
    for row in rows:
        by_domain[row["domain"]].append(row)
    return list(by_domain.values())


def engine_calls(group: list[dict], batch_size: int, batching: str) -> list[list[dict]]:
    """One domain's prompts as `generate` calls: all in one call that keeps `batch_size` in flight and
    refills slots as sequences finish (continuous), or one call per `batch_size` prompts, each run
    until its last sequence finishes (drain)."""
    if batching == CONTINUOUS:
        return [group]
    return [group[i : i + batch_size] for i in range(0, len(group), batch_size)]


def run_hf_baseline(engine, spec, batch, config, tally: Tally) -> None:
    """transformers' assisted generation (or prompt lookup) on the same prompts, one prompt at a time."""
    configure_assistant(engine.draft, spec)
    s = config.sampling
    for row in batch:
        start = time.perf_counter()
        tokens = hf_generate(engine.target, engine.draft, spec, row["tokens"], config.max_new_tokens, s.temperature, s.top_k, s.top_p)
        tally.seconds += time.perf_counter() - start
        tally.totals += Totals(prompts=1, new_tokens=len(tokens))
        tally.outputs[row["id"]] = tokens


def auto_base(spec: str) -> str | None:
    """`heuristic,draft=auto` -> `heuristic`: the spec each chosen source is applied to; None for other specs."""
    match = AUTO_DRAFT.search(spec)
    if match is None:
        return None
    base = spec[: match.start()] + (":" if match.group("sep") == ":" else "") + spec[match.end() :]
    return base.replace(":,", ":").rstrip(":")


def choose_source(spec: str, domain: str, registry: str | None, tally: Tally) -> str:
    """The spec of the draft source this `draft=auto` batch runs with, chosen by the domain's chooser."""
    if tally.chooser is None:
        tally.chooser = DraftChooser(SOURCES, load_prior(registry, domain) if registry else None, seed=domain)
    source = tally.chooser.choose()
    tally.sources[source] = tally.sources.get(source, 0) + 1
    return with_source(auto_base(spec), source)


def group_key(group: list[dict]) -> str:
    """The domain a group's tally is kept under: its prompts' own, or "mixed"."""
    domains = {r["domain"] for r in group}
    return domains.pop() if len(domains) == 1 else "mixed"


def batch_policy(spec: str, batch: list[dict], registry: str | None, refs: list[list[int]] | None):
    """The stop policy of each prompt of one engine call: its own domain's; None for target-only decoding."""
    if is_target(spec):
        return None
    domains = [r["domain"] for r in batch]
    policies = {d: make_policy(spec, domain=d, registry=registry, references=refs) for d in dict.fromkeys(domains)}
    return [policies[d] for d in domains]


class Call:
    """One engine call of one policy on one batch, opened, then advanced a round at a time, so the calls of
    several policies can take turns round by round (`take_turns`); `seconds` counts its own work alone."""

    def __init__(self, engines, spec, batch, config, registry, references, tally: Tally, max_batch: int | None = None):
        start = time.perf_counter()
        self.batch, self.tally = batch, tally
        self.engine = engines.get(spec, engines[TARGET])
        self.chosen = choose_source(spec, group_key(batch), registry, tally) if auto_base(spec) is not None else None
        spec = self.chosen or spec
        refs = None if references is None or is_target(spec) else [references[r["id"]] for r in batch]
        self.policy = batch_policy(spec, batch, registry, refs)
        self.run, self.seqs = self.engine.open([r["tokens"] for r in batch], self.policy, config, [r["id"] for r in batch],
                                               [r["domain"] for r in batch], origin="bench", max_batch=max_batch)
        self.seconds = time.perf_counter() - start

    def advance(self) -> bool:
        """One round; False once every sequence has finished (its results are then in the tally)."""
        start = time.perf_counter()
        self.run.step()
        if not self.run.busy:
            self._close()
        self.seconds += time.perf_counter() - start
        return self.run.busy

    def _close(self) -> None:
        out, tally = self.engine.finish(self.run, self.seqs), self.tally
        tally.seconds += self.seconds
        tally.rounds += out.time.rounds
        tally.loop_ms += out.time.wall_ms
        tally.forward_ms += out.time.forward_ms
        if self.chosen is not None:
            tally.chooser.record(spec_source(self.chosen), sum(len(s.tokens) for s in out.sequences), self.seconds)
        tally.versions.update(p.version if p else "" for p in self.policy or [None])
        for row, seq in zip(self.batch, out.sequences):
            tally.totals += Totals.of_sequence(seq)
            tally.outputs[row["id"]] = seq.tokens


def run_batch(engines, spec, batch, config, registry, references, tally: Tally, max_batch: int | None = None) -> None:
    """One engine call (or transformers' baseline) under one policy, run to its end, added to that policy's
    tally for the batch's domain."""
    if spec.startswith("hf-"):
        return run_hf_baseline(engines.get(ASSISTED, engines[TARGET]), spec, batch, config, tally)
    call = Call(engines, spec, batch, config, registry, references, tally, max_batch)
    while call.advance():
        pass


def lane(engines, spec, batches, config, registry, batch_size: int, tally: Tally):
    """One policy's engine calls, each opened when the one before it is done (a `draft=auto` spec chooses
    each call's source from the calls before it)."""
    for batch in batches:
        yield Call(engines, spec, batch, config, registry, None, tally, batch_size)


def take_turns(lanes: list, on_done) -> None:
    """Advance the open call of every lane (an iterator of `Call`s, each opened when the one before it is
    done) by one round in turn, until every lane is done; `on_done(call)` as each call finishes. Rounds are
    tens of milliseconds, so a change in machine load hits every lane alike, which whole calls in turn
    (seconds to minutes each) did not: at batch 16 single passes of the same run spread 0.84-1.05x."""
    open_calls = [next(lane, None) for lane in lanes]
    while any(open_calls):
        for i, call in enumerate(open_calls):
            if call is not None and not call.advance():
                on_done(call)
                open_calls[i] = next(lanes[i], None)


def is_offline(spec: str) -> bool:
    """A spec of a kind that needs the target's own outputs (the oracle)."""
    if spec.startswith("hf-") or auto_base(spec) is not None or is_target(spec):
        return False
    return get_kind(parse_spec(spec)[0]).offline


def is_target(spec: str) -> bool:
    """`target`, or `target@<dtype>`: target-only decoding (in another precision)."""
    return spec == TARGET or spec.startswith(TARGET + "@")


def target_engines(pair, dtype: str) -> dict:
    """The engine every policy runs on, plus target-only engines in the other precisions `auto` weighs."""
    engines = {TARGET: SpeculativeEngine(pair.target, pair.draft, pair.tokenizer)}
    if dtype == AUTO and next(pair.target.parameters()).device.type == "cpu":
        for other in (d for d in CANDIDATES if d != pair.precision.target):
            copy_ = copy.deepcopy(pair.target).to(other)
            engines[f"{TARGET}@{dtype_name(other)}"] = SpeculativeEngine(copy_, pair.draft, pair.tokenizer)
    return engines


def own_engine(engine: SpeculativeEngine) -> SpeculativeEngine:
    """An engine on the same models with its own copy of the calibrated cost table, so a policy's cost gate
    learns from its own rounds, as a job worker's does, and not from those it takes turns with."""
    return SpeculativeEngine(engine.target, engine.draft, engine.tokenizer, copy.deepcopy(engine.costs))


def assistant_ref(pair, hf_draft: str | None) -> str:
    """The draft transformers' assisted generation uses. It must be a token-level model, so a feature-level
    draft (which reads the target's hidden states) gives way to `hf_draft` (for the embedded target, by
    default its shipped layer draft)."""
    if hf_draft is not None:
        return hf_draft
    if not reads_target_hidden(pair.draft):
        return pair.draft_ref
    if pair.target_ref == EMBEDDED:
        return EMBEDDED_LAYER_DRAFT
    raise ValueError(f"the draft {pair.draft_ref!r} reads the target's hidden states, which transformers' assisted "
                     "generation cannot feed it: pass --hf-draft with a token-level draft for the hf-* baselines")


def assisted_engine(pair, target: str | None, assistant: str, dtype: str, device: str) -> SpeculativeEngine:
    """The pair the hf-* baselines run: the benchmark's own, or the target with `assistant`."""
    if assistant == pair.draft_ref:
        return SpeculativeEngine(pair.target, pair.draft, pair.tokenizer)
    other = load_pair(target or DEFAULT_TARGET, assistant, dtype=dtype, device=device)  # batch 1, as transformers assists
    return SpeculativeEngine(other.target, other.draft, other.tokenizer)


def run_interleaved(engines, specs, groups, config, registry, batch_size: int, batchings: list[str],
                    turns: str = TURNS[0]) -> dict[str, dict[str, Tally]]:
    """Every domain's prompts through every policy and batching. The engine's policies (target-only among
    them) take turns round by round (`take_turns`), or with `turns="calls"` each runs its calls to their end
    before the next (one policy's KV cache in memory at a time, for a pair whose caches fill the device);
    then transformers' baselines and the oracle (which needs target-only's outputs) run their calls."""
    tallies: dict[str, dict[str, Tally]] = {}
    references = {}
    runs = [(spec, batching) for spec in specs for batching in batchings
            if not (spec.startswith("hf-") and batching != batchings[0])]  # transformers decodes one prompt at a time
    in_turns = [(spec, batching) for spec, batching in runs if not spec.startswith("hf-") and not is_offline(spec)]
    bar = tqdm(total=len(runs) * sum(map(len, groups)), desc="bench", unit="prompt", leave=False)
    for group in groups:
        domain = group_key(group)
        bar.set_postfix_str(domain)
        lanes = [lane(engines, spec, engine_calls(group, batch_size, batching), config, registry, batch_size,
                      tallies.setdefault(bench_name(spec, batching, batchings), defaultdict(Tally))[domain])
                 for spec, batching in in_turns]
        for taking_turns in ([lanes] if turns == "rounds" else [[one] for one in lanes]):
            take_turns(taking_turns, lambda call: bar.update(len(call.batch)))
        reference = tallies[bench_name(TARGET, batchings[0], batchings)][domain]
        references.update((r["id"], reference.outputs[r["id"]]) for r in group)
        for spec, batching in (run for run in runs if run not in in_turns):
            tally = tallies.setdefault(bench_name(spec, batching, batchings), defaultdict(Tally))[domain]
            for batch in engine_calls(group, batch_size, batching):
                run_batch(engines, spec, batch, config, registry, references, tally, max_batch=batch_size)
                bar.update(len(batch))
    bar.close()
    return tallies


def bench_name(spec: str, batching: str, batchings: list[str]) -> str:
    """A run that compares batchings names the draining rows `<spec> [drain]`."""
    return spec if batching == batchings[0] else f"{spec}{DRAIN_SUFFIX}"


def summarise(tallies: dict[str, Tally]) -> dict[str, Tally]:
    """Per-domain tallies plus their sum under "all"."""
    total = Tally()
    for t in tallies.values():
        for name in ("seconds", "totals", "rounds", "loop_ms", "forward_ms"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
        total.outputs.update(t.outputs)
        total.versions |= t.versions
        for source, n in t.sources.items():
            total.sources[source] = total.sources.get(source, 0) + n
    return {**tallies, "all": total} if len(tallies) > 1 else {"all": total}


def mean_of_passes(passes: list[dict[str, Tally]]) -> dict[str, Tally]:
    """One policy's tallies over repeated passes: outputs and counts from the first, its time that at which
    all passes decoded (their tokens over their time: in low precision a pass's tokens may differ, since a
    numerical tie can resolve another way when the cost gate verifies at another width), the rest averaged;
    draft-source choices summed."""
    merged = {}
    for domain, first in passes[0].items():
        tallies = [p[domain] for p in passes]
        mean = Tally(totals=first.totals, outputs=first.outputs, versions=set().union(*(t.versions for t in tallies)))
        for name in ("loop_ms", "forward_ms"):
            setattr(mean, name, sum(getattr(t, name) for t in tallies) / len(tallies))
        tokens = sum(t.totals.new_tokens for t in tallies)
        mean.seconds = sum(t.seconds for t in tallies) * first.totals.new_tokens / tokens if tokens else 0.0
        mean.rounds = round(sum(t.rounds for t in tallies) / len(tallies))
        for t in tallies:
            for source, n in t.sources.items():
                mean.sources[source] = mean.sources.get(source, 0) + n
        merged[domain] = mean
    return merged


def speedup_ranges(passes: list[dict[str, Tally]], baselines: list[dict[str, Tally]]) -> dict[str, list[float]] | None:
    """Per domain, the lowest and highest speed-up any single pass measured (None for a single pass): how
    far one run's ratio can be trusted on this machine."""
    if len(passes) < 2:
        return None
    ratios = {domain: [tokens_per_s(p[domain]) / tokens_per_s(b[domain]) for p, b in zip(passes, baselines)]
              for domain in passes[0]}
    return {domain: [round(min(r), 4), round(max(r), 4)] for domain, r in ratios.items()}


def tokens_per_s(tally: Tally) -> float:
    return tally.totals.new_tokens / tally.seconds if tally.seconds else 0.0


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def fastest_target(summaries: dict[str, dict[str, Tally]]) -> str:
    """The target-only spec with the most tokens per second overall: every speed-up's baseline."""
    def tps(spec: str) -> float:
        return tokens_per_s(summaries[spec]["all"])

    return max((spec for spec in summaries if is_target(spec.removesuffix(DRAIN_SUFFIX))), key=tps)


def bench_rows(spec: str, tallies: dict[str, Tally], baseline: dict[str, Tally], reference: dict[str, Tally],
               lossless: dict[str, tuple[int, int]] | None, ranges: dict[str, list[float]] | None = None) -> list[dict]:
    """One row per domain; speed against `baseline`, output against `reference` (target-only in the verifier's dtype)."""
    rows = []
    for domain, t in tallies.items():
        base = baseline[domain]
        tps, base_tps = tokens_per_s(t), tokens_per_s(base)
        ties, divergences = (None, None) if lossless is None else lossless[domain]
        rows.append(
            {
                "policy": spec,
                "policy_version": ",".join(sorted(t.versions)),
                "domain": domain,
                "n_prompts": t.totals.prompts,
                "n_tokens": t.totals.new_tokens,
                "tokens_per_s": round(tps, 3),
                "speedup_vs_target": round(tps / base_tps, 4) if base_tps else None,
                "speedup_range": ranges[domain] if ranges else None,  # lowest and highest of the passes
                "mean_accepted_per_iter": _rounded(t.totals.accepted_per_iteration, 4),
                "acceptance_rate": _rounded(t.totals.acceptance, 4),
                "identical_to_target": (t.outputs == reference[domain].outputs) if lossless is not None else None,
                "ties": ties,
                "divergences": divergences,
                "overhead_ms_per_round": round((t.loop_ms - t.forward_ms) / t.rounds, 3) if t.rounds else None,
                "overhead_share": round((t.loop_ms - t.forward_ms) / t.loop_ms, 4) if t.loop_ms else None,
                "draft_sources": dict(sorted(t.sources.items())) or None,
            }
        )
    return rows


def device_name(model) -> str:
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


def cpu_model() -> str:
    """This machine's CPU, as `describe_cpu` names it."""
    try:
        return describe_cpu(Path("/proc/cpuinfo").read_text())
    except OSError:
        return platform.processor() or platform.machine()


def describe_cpu(cpuinfo: str) -> str:
    """The CPU's model name and its bf16 matrix support, from /proc/cpuinfo: AMX decides whether wide
    bf16 verification is nearly free (Sapphire Rapids) or costs in proportion to its width (AVX-512 only)."""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    found = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(found.group(1).split()) if found else set()
    units = "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16, no AMX" if "avx512_bf16" in flags else "no bf16 units"
    return f"{model.group(1).strip() if model else platform.machine()} ({units})"


def run_bench(
    target: str | None,
    draft: str | None,
    prompts_path: str | None,
    policies: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 1,
    sampling: Sampling = Sampling(),
    limit: int | None = None,
    registry: str | None = None,
    dtype: str = AUTO,
    device: str = "cpu",
    batching: str = CONTINUOUS,
    hf_draft: str | None = None,
    mix_domains: bool = False,
    repeats: int = 1,
    turns: str = TURNS[0],
) -> dict:
    for spec in policies:  # a typo, or a corrupt draft-source prior, fails before any model loads
        hf_settings(spec) if spec.startswith("hf-") else parse_spec(auto_base(spec) or spec)
        if mix_domains and auto_base(spec) is not None:
            raise ValueError(f"{spec}: draft=auto picks a draft source per domain's batch, which --mix-domains does not form")
        if auto_base(spec) is not None and registry:
            for domain in DOMAINS:
                load_prior(registry, domain)
    offline = [spec for spec in policies if is_offline(spec)]
    if offline and not sampling.greedy:
        raise ValueError(f"the {parse_spec(offline[0])[0]} policy is defined for greedy decoding only")
    pair = load_pair(target or DEFAULT_TARGET, draft or DEFAULT_DRAFT, dtype=dtype, device=device, batch_size=batch_size)
    rows = load_bench_prompts(prompts_path, limit)
    for row in rows:
        row["tokens"] = encode_prompt(pair.tokenizer, row["prompt"])
    groups = domain_groups(rows, mix_domains)
    engines = target_engines(pair, dtype)
    assistant = None
    if any(p.startswith("hf-") and not p.startswith(NGRAM) for p in policies):
        assistant = assistant_ref(pair, hf_draft)
        engines[ASSISTED] = assisted_engine(pair, target, assistant, dtype, device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, sampling=sampling)
    specs = [e for e in engines if is_target(e)] + [p for p in policies if not is_target(p)]
    warm = GenerationConfig(max_new_tokens=8, sampling=sampling)
    engines[TARGET].calibrate(batch_size)  # the verification budget's cost table, measured before any timing
    engines |= {spec: own_engine(engines[TARGET]) for spec in policies if not is_target(spec) and not spec.startswith("hf-")}
    for spec in specs:  # warm-up: first-call overheads stay out of the timings
        if not is_offline(spec):  # it needs the target's outputs, which the timed target run records
            run_batch(engines, spec, groups[0][:1], warm, registry, None, Tally())
    passes = [run_interleaved(engines, specs, groups, config, registry, batch_size, BATCHINGS[batching], turns)
              for _ in tqdm(range(repeats), desc="bench passes", disable=repeats == 1)]
    per_pass = [{name: summarise(domains) for name, domains in tallies.items()} for tallies in passes]
    summaries = {name: mean_of_passes([p[name] for p in per_pass]) for name in per_pass[0]}
    baseline = fastest_target(summaries)
    noise = None
    if sampling.greedy:
        first = groups[0][:batch_size]
        noise = logit_noise(pair.target, [r["tokens"] for r in first], [summaries[TARGET]["all"].outputs[r["id"]] for r in first])
    table = []
    for name in summaries:
        lossless = None
        if noise is not None and not name.startswith(f"{TARGET}@"):
            lossless = lossless_counts(pair.target, rows, summaries[name], summaries[TARGET], noise)
        table += bench_rows(name, summaries[name], summaries[baseline], summaries[TARGET], lossless,
                            speedup_ranges([p[name] for p in per_pass], [p[baseline] for p in per_pass]))
    return {
        "device": device_name(pair.target),
        "target": pair.target_ref,
        "draft": pair.draft_ref,
        "hf_assistant": assistant,
        "precision": pair.precision.describe(),
        "baseline": baseline,
        "logit_noise": noise,
        "settings": {
            "max_new_tokens": max_new_tokens, "batch_size": batch_size, "temperature": sampling.temperature,
            "top_k": sampling.top_k, "top_p": sampling.top_p, "n_prompts": len(rows), "prompts": prompts_path or "builtin:heldout",
            "dtype": dtype, "batching": batching, "mix_domains": mix_domains, "repeats": repeats, "turns": turns,
        },
        "rows": table,
    }


def lossless_counts(target, rows: list[dict], tallies: dict[str, Tally], reference: dict[str, Tally], noise: float) -> dict[str, tuple[int, int]]:
    """(ties, divergences) per domain: each prompt whose output differs, judged once at its first differing token
    (one target forward per differing prompt, so the "all" row reuses the domains' verdicts)."""
    prompts = {r["id"]: r["tokens"] for r in rows}
    verdicts = {
        prompt_id: classify_difference(target, prompts[prompt_id], reference["all"].outputs[prompt_id], tokens, noise)
        for prompt_id, tokens in tallies["all"].outputs.items()
    }
    counts = {}
    for domain, t in tallies.items():
        judged = [verdicts[prompt_id] for prompt_id in t.outputs if verdicts[prompt_id] is not None]
        counts[domain] = (sum(d.tie for d in judged), sum(not d.tie for d in judged))
    return counts


def lossless_ok(report: dict) -> bool:
    """Exact identity in float32 (and float64); no divergences in low precision (ties are allowed)."""
    exact = report["precision"]["target"] in ("float32", "float64")
    return all(
        r["identical_to_target"] is not False if exact else not r["divergences"]
        for r in report["rows"]
    )


def format_table(report: dict) -> str:
    precision = report["precision"]
    head = (f"{'policy':<36}{'domain':<8}{'prompts':>8}{'tokens':>8}{'tok/s':>9}{'speedup':>9}{'acc/iter':>9}{'acc rate':>9}"
            "  same  ties  div  ovh ms  ovh %" + ("  pass range" if report["settings"]["repeats"] > 1 else ""))
    lines = [
        f"device: {report['device']}  target: {report['target']} ({precision['target']})  "
        f"draft: {report['draft']} ({precision['draft']})",
        f"speed-ups against {report['baseline']}; logit noise {report['logit_noise']}",
        head,
    ]

    def num(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for r in report["rows"]:
        same = "-" if r["identical_to_target"] is None else ("yes" if r["identical_to_target"] else "NO")
        lines.append(
            f"{r['policy']:<36}{r['domain']:<8}{r['n_prompts']:>8}{r['n_tokens']:>8}{r['tokens_per_s']:>9.2f}"
            f"{num(r['speedup_vs_target']):>9}{num(r['mean_accepted_per_iter']):>9}{num(r['acceptance_rate']):>9}"
            f"  {same:<4}{'-' if r['ties'] is None else r['ties']:>6}{'-' if r['divergences'] is None else r['divergences']:>5}"
            f"{num(r['overhead_ms_per_round']):>8}{pct(r['overhead_share']):>7}"
            + (f"  {num(r['speedup_range'][0])}-{num(r['speedup_range'][1])}" if r["speedup_range"] else "")
        )
    return "\n".join(lines)


def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time policies against target-only decoding, side by side")
    p.add_argument("--target", help="hub id, local dir, .gguf or 'embedded' (default: the embedded pair)")
    p.add_argument("--draft", help="hub id, local dir or 'embedded-draft'")
    p.add_argument("--hf-draft", help="the assistant of the hf-* baselines when --draft is a feature-level draft "
                                      "(transformers needs a token-level one), e.g. 'embedded-layer-draft'")
    p.add_argument("--prompts", help="JSONL/Parquet with id, prompt, domain (default: built-in held-out set)")
    p.add_argument("--policies", default="static:2,static:4,heuristic,confidence", help="comma-separated policy specs")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--limit", type=int)
    p.add_argument("--policy-registry")
    p.add_argument("--dtype", default=AUTO, help="auto (each model in its faster precision, measured at load) or a torch dtype")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batching", choices=sorted(BATCHINGS), default=CONTINUOUS,
                   help="continuous: keep --batch-size sequences in flight, refilling as they finish; drain: run each "
                        "batch of --batch-size prompts to its end; both: the two side by side (drain rows: '<spec> [drain]')")
    p.add_argument("--mix-domains", action="store_true",
                   help="stream every domain's prompts through one engine (each row stopped by its own domain's policy) "
                        "instead of batching per domain; reports one 'all' row per policy")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="run every policy this many times over, interleaved; speed-ups from the mean times, and each "
                        "row's lowest and highest single-pass speed-up beside them (how noisy this machine is)")
    p.add_argument("--turns", choices=TURNS, default=TURNS[0],
                   help="rounds: target-only and every policy advance one round in turn, each holding its own KV cache; "
                        "calls: each runs its engine calls to their end before the next (one cache at a time, for a pair "
                        "whose caches would not fit side by side; a change in load then hits one policy's time)")
    p.add_argument("--out", help="write the JSON report here")
    p.set_defaults(handler=bench_command)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def split_policies(text: str) -> list[str]:
    """Split on commas that start a new policy (options inside a spec are comma-separated too)."""
    specs: list[str] = []
    for part in text.split(","):
        if part.split(":")[0].strip() in policy_names() or part.strip().startswith("hf-") or not specs:
            specs.append(part.strip())
        else:
            specs[-1] += "," + part.strip()
    return [s for s in specs if s]


def bench_command(args) -> int:
    report = run_bench(
        args.target, args.draft, args.prompts, split_policies(args.policies), args.max_new_tokens, args.batch_size,
        Sampling(args.temperature, args.top_k, args.top_p), args.limit, args.policy_registry, args.dtype, args.device,
        args.batching, args.hf_draft, args.mix_domains, args.repeats, args.turns,
    )
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if lossless_ok(report) else 1

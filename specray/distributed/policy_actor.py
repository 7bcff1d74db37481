"""One Ray actor per domain present: it owns the domain's stop policy (spec, pinned version, budget)
and its live acceptance stats, and hands each batch of its domain to the worker the scheduler chose.

Being on the dispatch path is what keeps its stats live: every batch of the domain passes through on
its way back. It is async so one actor keeps batches in flight on every worker of the shared pool.
It holds no model and imports no torch: the policy object itself is built where the engine runs.

With `draft: auto` it also chooses each batch's draft source (`draft_choice.DraftChooser`: Thompson
sampling on the batches' measured tokens/s, primed by the registry's per-source prior) and sends the
spec resolved for that source; the choice lands in every result and trace row (`draft_source`) and the
evidence in the job summary. A label run sends the spec of its first source and the others as
`label_specs`, so every prompt is drafted by every source.

Its Ray metrics carry vLLM's speculative-decoding names, so dashboards and alerts written for vLLM
read specray too (Prometheus sees them as `ray_<name>_total`; vLLM's are `vllm:<name>_total`):
`spec_decode_num_drafts` (drafting rounds: one sequence proposing one or more draft tokens),
`spec_decode_num_draft_tokens`, `spec_decode_num_accepted_tokens`, and
`spec_decode_num_accepted_tokens_per_pos` with a 0-based `position` label (accepted tokens at that
position of their draft); plus `specray_new_tokens` (tokens generated). Every one is tagged `domain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import RayActorError, RayError
from ray.util.metrics import Counter

from specray.averages import ema
from specray.distributed.batch import Batch, BatchOutput, Failure
from specray.distributed.draft_choice import DraftChooser, batch_speed
from specray.policies.draft_prior import DraftPrior
from specray.policies.resolved import ResolvedPolicy
from specray.totals import Totals

EMA_DECAY = 0.9  # weight of the past per batch; ~10 batches of memory
SPEC_DECODE_COUNTERS = {
    "spec_decode_num_drafts": "drafting rounds (one sequence proposing one or more draft tokens)",
    "spec_decode_num_draft_tokens": "draft tokens proposed",
    "spec_decode_num_accepted_tokens": "draft tokens accepted by the target",
}
PER_POS = "spec_decode_num_accepted_tokens_per_pos"


@dataclass(frozen=True)
class SpecDecodeCounts:
    """A batch's counts in vLLM's spec-decode terms; `accepted_per_pos[i]` is for 0-based position i."""

    num_drafts: int
    num_draft_tokens: int
    num_accepted_tokens: int
    accepted_per_pos: dict[int, int]

    @classmethod
    def of(cls, traces: pa.Table) -> SpecDecodeCounts:
        """From trace rows (one per drafted token): rounds are distinct (prompt_id, iteration) pairs."""
        if traces.num_rows == 0:
            return cls(0, 0, 0, {})
        rounds = traces.group_by(["prompt_id", "iteration"]).aggregate([]).num_rows
        accepted = traces.filter(pc.equal(traces["accepted"], True))
        per_depth = accepted.group_by("depth").aggregate([("depth", "count")]).to_pydict()
        per_pos = {int(d) - 1: int(n) for d, n in zip(per_depth["depth"], per_depth["depth_count"])}
        return cls(rounds, traces.num_rows, accepted.num_rows, dict(sorted(per_pos.items())))


@dataclass(frozen=True)
class DomainPolicy:
    """What a policy actor owns (made by `resolve.domain_policy`); workers build the policy from `resolved[spec]`.

    `specs` maps each draft source the domain may use to its resolved spec: one entry, or several under
    `draft: auto` (then `prior` holds the registry's speed per source, when it has them). `label_specs`:
    a label run's further specs, drafted on the same prompts."""

    domain: str
    spec: str
    version: str
    k_max: int | None  # None: the policy's own default
    threshold: float | None
    draft: str = "model"  # the domain's draft setting: a source, or auto
    specs: dict[str, str] = field(default_factory=dict)
    prior: DraftPrior | None = None
    label_specs: tuple[str, ...] = ()
    resolved: dict[str, ResolvedPolicy] = field(default_factory=dict)  # every spec above, resolved on the driver

    @property
    def auto(self) -> bool:
        return len(self.specs) > 1


@dataclass
class LiveStats:
    """Totals since the actor started, and EMAs over batches that follow drift within a run."""

    batches: int = 0
    totals: Totals = field(default_factory=Totals)
    accepted_per_iteration: float | None = None
    acceptance: float | None = None

    def update(self, batch: Totals) -> None:
        self.batches += 1
        self.totals = self.totals + batch
        self.accepted_per_iteration = ema(self.accepted_per_iteration, batch.accepted_per_iteration, EMA_DECAY)
        self.acceptance = ema(self.acceptance, batch.acceptance, EMA_DECAY)


class PolicyActor:
    """Wrapped with ray.remote by the job; one per domain that appears in the data."""

    def __init__(self, policy: DomainPolicy):
        self.policy = policy
        self.stats = LiveStats()
        self.chooser = DraftChooser(tuple(policy.specs), policy.prior, seed=policy.domain) if policy.auto else None
        self.counters = {"specray_new_tokens": Counter("specray_new_tokens", description="tokens generated", tag_keys=("domain",))}
        for name, description in SPEC_DECODE_COUNTERS.items():
            self.counters[name] = Counter(name, description=description, tag_keys=("domain",))
        self.counters[PER_POS] = Counter(PER_POS, description="draft tokens accepted at each 0-based position of their draft",
                                         tag_keys=("domain", "position"))
        for counter in self.counters.values():
            counter.set_default_tags({"domain": policy.domain})

    async def run(self, worker, batch: Batch) -> BatchOutput | Failure:
        """Generate `batch` on `worker` with this domain's policy; a failure comes back as a value."""
        source = self.chooser.choose() if self.chooser else None
        spec = self.policy.specs[source] if source else self.policy.spec
        try:
            resolved = self.policy.resolved
            out = await worker.generate.remote(batch.domain, batch.rows, resolved[spec],
                                               tuple(resolved[s] for s in self.policy.label_specs))
        except RayError as exc:
            if self.chooser:
                self.chooser.cancel(source)
            return Failure.from_error(exc, worker_lost=isinstance(exc, RayActorError))
        if self.chooser:
            self.chooser.record(source, *batch_speed(out.results["new_tokens"].to_pylist(), out.results["wall_ms"].to_pylist()))
        totals = out.totals()
        self.stats.update(totals)
        self._export(totals, SpecDecodeCounts.of(out.traces))
        return out

    def _export(self, totals: Totals, counts: SpecDecodeCounts) -> None:
        values = {"specray_new_tokens": totals.new_tokens, "spec_decode_num_drafts": counts.num_drafts,
                  "spec_decode_num_draft_tokens": counts.num_draft_tokens,
                  "spec_decode_num_accepted_tokens": counts.num_accepted_tokens}
        for name, value in values.items():
            if value:
                self.counters[name].inc(value)
        for position, value in counts.accepted_per_pos.items():
            self.counters[PER_POS].inc(value, tags={"position": str(position)})

    def snapshot(self) -> dict:
        """Policy and live stats, for the job summary."""
        s = self.stats
        return {
            "spec": self.policy.spec, "version": self.policy.version, "draft": self.policy.draft,
            "draft_choice": self.chooser.evidence() if self.chooser else None,
            "k_max": self.policy.k_max, "threshold": self.policy.threshold,
            "batches": s.batches, "prompts": s.totals.prompts,
            "ema_accepted_per_iteration": s.accepted_per_iteration, "ema_acceptance": s.acceptance,
        }


class PolicyActors:
    """The driver's handles: one actor per domain, started when the domain first shows up in the data."""

    def __init__(self, policies: dict[str, DomainPolicy], name_prefix: str):
        self.policies, self.prefix = policies, name_prefix
        self.handles: dict[str, ray.actor.ActorHandle] = {}

    def start(self, domain: str) -> None:
        """Start `domain`'s actor unless it runs; restarted if it dies (its batches fail back and are retried)."""
        if domain not in self.handles:
            options = {"name": f"{self.prefix}-policy-{domain}", "max_restarts": -1, "num_cpus": 0}
            self.handles[domain] = ray.remote(PolicyActor).options(**options).remote(self.policies[domain])

    def __getitem__(self, domain: str) -> ray.actor.ActorHandle:
        self.start(domain)
        return self.handles[domain]

    def snapshots(self) -> dict[str, dict]:
        domains = sorted(self.handles)
        return dict(zip(domains, ray.get([self.handles[d].snapshot.remote() for d in domains])))

    def shutdown(self) -> None:
        for handle in self.handles.values():
            ray.kill(handle)

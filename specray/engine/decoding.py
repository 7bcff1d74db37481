"""One engine loop in progress: prompts join it while it runs, each round advances every sequence in
flight, finished sequences leave with their trace rows.

`SpeculativeEngine.generate` is a Decoding given all its prompts at once and run until it empties. A
model worker keeps one open and adds every batch it is given as it arrives
(`specray.distributed.stream`), so batches of any domain share the engine's slots and it does not drain
between them. Each sequence joins with its own stop policy (`PerRowPolicy`); the policies of one
Decoding agree on the batch settings of the policy it was opened with (`batch_settings`: what drafts,
whether costs gate it), since the engine decides those for the whole batch.

Sequences are known to policies and traces by a row number of this Decoding. Rows are handed out in
the order prompts join (so `generate`'s rows are its prompts' positions) and reused once a finished
sequence is `release`d, which keeps a stream's per-row state as small as what is in flight.
Sampling draws from one generator per Decoding, seeded by its first config: the target's distribution
holds for every row whatever shares its rounds, while the exact draws depend on the rows beside it.
"""

import time
from dataclasses import dataclass

import torch

from specray.engine.batch_state import BatchState, Sequence
from specray.engine.budget import plan_round
from specray.engine.drafting import propose
from specray.engine.traces import TraceBuffer
from specray.models.feature_draft import reads_target_hidden
from specray.policies.base import Outcome, StopPolicy
from specray.policies.per_row import PerRowPolicy, batch_settings


@dataclass
class EngineTime:
    """Where a Decoding's rounds spent their time: model forwards, and everything else (the engine's
    overhead). Calibration stays out of it."""

    rounds: int = 0
    wall_ms: float = 0.0
    forward_ms: float = 0.0

    @property
    def overhead_ms_per_round(self) -> float:
        return (self.wall_ms - self.forward_ms) / self.rounds if self.rounds else 0.0


class Decoding:
    def __init__(self, engine, config, first: StopPolicy | None, max_batch: int, run_id: str = "",
                 origin: str = "generate", record_hidden: bool = False):
        """An empty loop on `engine` for policies that agree with `first` (None: target-only decoding)."""
        self.engine, self.config, self.max_batch, self.record_hidden = engine, config, max_batch, record_hidden
        self.policy = PerRowPolicy(first) if first is not None else None
        self.uses_draft = first is not None and first.drafts_by_model
        self.state = BatchState([], max_batch, engine.target, engine.draft, engine.eos, engine.tokenizer,
                                draft_reads_states=self.uses_draft and reads_target_hidden(engine.draft))
        self.trace = TraceBuffer(run_id, origin, record_hidden)
        self.generator = None if config.sampling.greedy else torch.Generator().manual_seed(config.seed)
        self.free: list[int] = []  # rows released by finished sequences
        self.rows = 0  # rows handed out so far
        self.time = EngineTime()

    @property
    def busy(self) -> bool:
        return self.state.busy

    def accepts(self, policy: StopPolicy | None) -> bool:
        """Whether sequences stopped by `policy` can join this loop."""
        return batch_settings(policy) == batch_settings(self.policy)

    def add(self, prompts: list[list[int]], ids: list[str], domains: list[str], policies: list[StopPolicy | None]) -> list[Sequence]:
        """Prompts join the queue, each with its domain and stop policy. One that cannot be decoded (empty, or
        too long for the cache with max_new_tokens) is finished at once with its error; the others wait for a slot."""
        seqs = [Sequence(self._row(), i, list(p), len(p)) for p, i in zip(prompts, ids)]
        for seq, domain, policy in zip(seqs, domains, policies):
            if (policy is None) != (self.policy is None):
                raise ValueError("target-only rows and drafting rows cannot share a batch")
            if policy is not None:
                if self.uses_draft and (expected := self.engine.expected_acceptance(domain)) is not None:
                    policy.expect(expected)
                self.policy.join(torch.tensor([seq.index]), policy)
            self.trace.assign(seq.index, domain, policy.stopped_by(seq.index) if policy else ("target", ""))
            seq.error = self.engine.unfit(seq.tokens, self.config.max_new_tokens)
            seq.stop_reason = "error" if seq.error else None
        self.state.waiting.extend(s for s in seqs if not s.error)
        if self.policy is not None and self.policy.cost_aware:
            self.engine.calibrate(min(self.max_batch, len(self.state) + len(self.state.waiting)))
        return seqs

    def release(self, seqs: list[Sequence]) -> None:
        """Finished sequences give their rows back (their trace rows taken first, see `TraceBuffer.take`)."""
        self.free += [s.index for s in seqs]

    def step(self) -> None:
        """One round over every sequence in flight (admissions included), timed into `time`."""
        start, model_ms = time.perf_counter(), self.engine.forward_ms
        self.time.rounds += self._round()
        self.time.wall_ms += (time.perf_counter() - start) * 1e3
        self.time.forward_ms += self.engine.forward_ms - model_ms

    def _round(self) -> bool:
        """Admit newcomers, then propose → verify → commit; False when no sequence was left to decode."""
        engine, config, state, policy = self.engine, self.config, self.state, self.policy
        engine.admit(state, self.draft_reads_newcomers())                            # 1. refill free slots
        if not state.active:  # every newcomer failed its prefill
            return False
        round_start, batch, model_ms = time.perf_counter(), len(state), engine.forward_ms
        budget = plan_round(state, policy, engine.costs, config.max_new_tokens)       # 2. what the batch pays for
        t0 = time.perf_counter()
        proposals = propose(engine, state, policy, budget, config.sampling, self.generator, self.record_hidden)  # 3. draft
        t1 = time.perf_counter()
        verdicts = engine.verify(state, proposals, config.sampling, self.generator)   # 4. one target forward, accept
        t2 = time.perf_counter()
        self.trace.add_round(state, proposals, verdicts, (t1 - t0) * 1e3, (t2 - t1) * 1e3)  # 5. observers
        if policy is not None and len(proposals.token_ids):  # a round that drafted nothing tells them nothing
            policy.observe(Outcome(state.seqs, proposals.num_draft, verdicts.num_accepted, proposals.from_ngram))
            state.calibration.observe(proposals.expected_accepted(), float(verdicts.num_accepted.sum()))
            state.opening.observe(*budget.first_tokens(proposals.num_draft, verdicts.num_accepted))
        state.commit(proposals, verdicts, time.perf_counter(), config.max_new_tokens, config.stop_strings)  # 6. the only state change
        state.retire()                                                                # 7. finished rows leave
        engine.costs.observe_round(batch, bool(len(proposals.token_ids)),                          # 8. what it cost
                                   (time.perf_counter() - round_start) * 1e3 - proposals.catch_up_ms,
                                   engine.forward_ms - model_ms - proposals.catch_up_ms)
        return True

    def draft_reads_newcomers(self) -> bool:
        """Whether the draft model reads prompts as they are admitted: while the batch drafts with it beside
        running rows, and the newcomers do not outnumber them. A batch that idles reads them if it drafts again,
        as a catch-up (`SpeculativeEngine.prefill`), which the cost gate prices before it lets the batch draft;
        so does a batch that runs no row yet, where that read costs what reading at admission does (the same
        prompts, padded alike), and one that more than doubles: a new batch at a size where drafting may not pay.
        Measured on the embedded pair (bf16, AVX-512 without AMX): a batch of 32 read its first prompts at
        admission for ~160 ms, ~1% of a 64-prompt run, and then never drafted; one down to its last 2 rows drafted,
        and the 30 prompts that refilled it were read at admission (~290 ms, ~2% of the run)."""
        state = self.state
        joining = min(self.max_batch - len(state.active), len(state.waiting))
        return self.uses_draft and bool(state.active) and not state.idle_rounds and joining <= len(state.active)

    def _row(self) -> int:
        if self.free:
            return self.free.pop()
        self.rows += 1
        return self.rows - 1

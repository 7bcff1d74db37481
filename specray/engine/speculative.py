"""Batched speculative decoding with a per-sequence lookahead and continuous batching.

A round (`specray.engine.decoding`) is propose → verify → commit over the whole batch: every row's stop
policy decides, token by token, how far its draft goes, within what the batch's budget pays for
(`specray.engine.budget`); the target verifies all ragged proposals in one forward and the rejection
sampler rules on every row at once (`specray.engine.sampling`); the batch state commits the accepted
tokens and rolls both KV caches back (`specray.engine.batch_state`). Traces, cost timings and the
policy's statistics observe each round once. With no policy the same loop is plain target-only
decoding, so baselines share every line of overhead but the draft.
"""

import time
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from specray.engine.batch_state import BatchState, Sequence
from specray.engine.calibration import measure_costs
from specray.engine.decoding import Decoding, EngineTime
from specray.engine.forward import model_forward
from specray.engine.kv_cache import SlotCache
from specray.engine.proposals import Proposals, Verdicts
from specray.engine.sampling import Sampling, distribution, soft_distribution, verify_greedy, verify_sampled
from specray.models.draft import output_support
from specray.models.pairing import output_vocab_size
from specray.policies.base import StopPolicy
from specray.policies.cost import CostModel


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    sampling: Sampling = Sampling()
    seed: int = 0
    stop_strings: tuple[str, ...] = ()


@dataclass
class SequenceResult:
    tokens: list[int]  # generated tokens only
    text: str
    iterations: int
    drafted: int
    accepted: int
    wall_ms: float
    stop_reason: str  # eos | max_new_tokens | stop_string | error
    error: str | None = None  # why the prompt could not be decoded (stop_reason "error")


@dataclass
class Generation:
    sequences: list[SequenceResult]
    traces: pa.Table
    time: EngineTime = field(default_factory=EngineTime)


class SpeculativeEngine:
    """A draft+target pair and the measured costs of running it."""

    def __init__(self, target, draft, tokenizer, cost_model: CostModel | None = None):
        self.target, self.draft, self.tokenizer = target, draft, tokenizer
        self.costs = cost_model or CostModel()
        self.vocab_size = output_vocab_size(target)
        self.draft_support = output_support(draft)  # [S] the tokens the draft can propose (None: all)
        self.read_layers = getattr(draft, "target_layers", None)  # the target layers a feature-level draft reads
        self.measured_acceptance = getattr(draft, "measured_acceptance", {})  # domain -> held-out agreement (distilled drafts)
        eos = getattr(target.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        self.forward_ms = 0.0  # time in model forwards so far, every Decoding's: each takes its own share

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        policy: StopPolicy | list[StopPolicy | None] | None,
        config: GenerationConfig = GenerationConfig(),
        prompt_ids: list[str] | None = None,
        domain: str | list[str] = "unknown",
        run_id: str = "",
        origin: str = "generate",
        record_hidden: bool = False,
        max_batch: int | None = None,
    ) -> Generation:
        """Decode `prompts`, up to `max_batch` at a time (default: all at once); `policy=None` is target-only.

        `policy` and `domain`: every prompt's, or one per prompt (rows of several domains share the batch,
        each stopped by its own policy; the policies must agree on the batch settings, see `Decoding`). A
        prompt that cannot be decoded (empty, or too long for the cache with max_new_tokens) comes back with
        stop_reason "error" and the reason, and the others go on. Trace rows record `origin`
        (generate | label | bench) in their `source` column; `record_hidden` adds the draft's hidden state
        behind each drafted token (a `hidden` column), which SpecDec++ trains on and label runs keep.
        """
        run, seqs = self.open(prompts, policy, config, prompt_ids, domain, run_id, origin, record_hidden, max_batch)
        while run.busy:
            run.step()
        return self.finish(run, seqs)

    def open(self, prompts: list[list[int]], policy: StopPolicy | list[StopPolicy | None] | None, config: GenerationConfig,
             prompt_ids: list[str] | None = None, domain: str | list[str] = "unknown", run_id: str = "",
             origin: str = "generate", record_hidden: bool = False, max_batch: int | None = None) -> tuple[Decoding, list[Sequence]]:
        """`generate`'s Decoding with its prompts queued, before any round (`specray bench` steps several in
        turn): the Decoding and the prompts' sequences."""
        n = len(prompts)
        policies, domains = (value if isinstance(value, list) else [value] * n for value in (policy, domain))
        if len(domains) != n or len(policies) != n:
            raise ValueError(f"{n} prompts, {len(domains)} domains and {len(policies)} policies: give one of each, or one per prompt")
        run = Decoding(self, config, policies[0] if n else None, max_batch or max(n, 1), run_id, origin, record_hidden)
        return run, run.add(prompts, prompt_ids or [str(i) for i in range(n)], domains, policies)

    def finish(self, run: Decoding, seqs: list[Sequence]) -> Generation:
        """What an emptied Decoding made of `seqs`: their results, its trace rows, and its time."""
        return Generation([self.result(s) for s in seqs], run.trace.take(), run.time)

    def result(self, seq: Sequence) -> SequenceResult:
        output = seq.tokens[seq.prompt_len :]
        text = self.tokenizer.decode(output, skip_special_tokens=True)
        return SequenceResult(output, text, seq.iterations, seq.drafted, seq.accepted, seq.wall_ms, seq.stop_reason, seq.error)

    def expected_acceptance(self, domain: str) -> float | None:
        """What the draft model was measured to accept in `domain` (its held-out record, the overall figure for a
        domain it was not measured on); None when nothing was recorded."""
        return self.measured_acceptance.get(domain, self.measured_acceptance.get("all"))

    @staticmethod
    def dtype_of(model) -> torch.dtype:
        """Each model runs in its own precision (see `specray.models.precision`); its cache follows it."""
        return next(model.parameters()).dtype

    def context_window(self) -> int | None:
        """The cache's capacity in tokens: the target's context window (None: unbounded)."""
        return getattr(self.target.config, "max_position_embeddings", None)

    def unfit(self, prompt: list[int], max_new_tokens: int) -> str | None:
        """Why a prompt cannot be decoded, or None."""
        if not prompt:
            return "empty prompt: every prompt needs at least one token"
        capacity = self.context_window()
        if capacity is not None and len(prompt) + max_new_tokens > capacity:
            return (
                f"prompt has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} it exceeds the cache capacity "
                f"of {capacity} tokens, the target's context window (prompts may have at most {capacity - max_new_tokens} tokens)"
            )
        return None

    def calibrate(self, max_batch: int) -> None:
        """Measure round costs up to `max_batch` once (the verification budget needs them)."""
        if not self.costs.calibrated(max_batch):
            measure_costs(self, max_batch)

    def forward(self, model, cache: SlotCache, chunks: list[list[int]], keep: int, hidden: int = 0,
                features: list[torch.Tensor] | None = None, layers: tuple[int, ...] | None = None):
        """`model_forward`, timed as model time (not engine overhead)."""
        t0 = time.perf_counter()
        out = model_forward(model, cache, chunks, keep, hidden, features, layers)
        self.forward_ms += (time.perf_counter() - t0) * 1e3
        return out

    def admit(self, state: BatchState, drafts: bool) -> None:
        """Prefill waiting prompts into free slots (all but each prompt's last token, which stays pending);
        `drafts`: the draft model drafts for them, so it reads them too. When a group's prefill fails, each
        prompt is tried alone: one that fails alone is its own error."""
        newcomers = state.newcomers()
        if not newcomers:
            return
        reads_states = state.target_states is not None
        try:
            state.admit(newcomers, *self.prefill(newcomers, drafts, reads_states))
            return
        except RuntimeError as error:
            if len(newcomers) == 1:
                newcomers[0].stop_reason, newcomers[0].error = "error", f"prefill failed: {error}"
                return
        for seq in newcomers:
            try:
                state.admit([seq], *self.prefill([seq], drafts, reads_states))
            except RuntimeError as error:
                seq.stop_reason, seq.error = "error", f"prefill failed: {error}"

    def prefill(self, seqs: list[Sequence], drafts: bool, reads_states: bool) -> tuple[SlotCache, SlotCache, list[torch.Tensor] | None]:
        """Fresh caches for newcomers: the target's holds every token of each prompt but its last, and so does
        the draft's when `drafts` (`Decoding.draft_reads_newcomers`; else it stays empty and the draft
        reads the prompts if the batch drafts, as a catch-up: a batch the budget keeps plain does not pay
        for the draft). Read here, the newcomers alone are read: as a catch-up, a prompt was padded to the
        widest prompt across every row of the batch (on the embedded pair at batch 16 in bf16, ~2.5 ms a
        drafting round, against ~1 ms a round for reading at admission). For a draft that reads target
        states (`reads_states`), the states behind the tokens it has not read: a zero state before a
        prompt's first token, then the target's state at each prompt token, at the layers it reads."""
        chunks = [s.tokens[:-1] for s in seqs]
        width = max(map(len, chunks))
        tcache, dcache = SlotCache.for_model(self.target, len(seqs)), SlotCache.for_model(self.draft, len(seqs))
        states = [torch.zeros(len(c) + 1, getattr(self.draft, "state_size", 0)) for c in chunks]  # per row [len + 1, L*H]
        if width:
            _, hidden = self.forward(self.target, tcache, chunks, keep=1, hidden=width if reads_states else 0,
                                     layers=self.read_layers)  # [every prompt token, L*H], row after row
            if reads_states:
                states = [torch.nn.functional.pad(h, (0, 0, 1, 0)) for h in hidden.split([len(c) for c in chunks])]
            if drafts:
                self.forward(self.draft, dcache, chunks, keep=1,
                             features=[s[: len(c)] for s, c in zip(states, chunks)] if reads_states else None)
        if not reads_states:
            return tcache, dcache, None
        return tcache, dcache, [s[len(c) :] if drafts else s for s, c in zip(states, chunks)]

    def draft_step(self, cache: SlotCache, chunks: list[list[int]], features: list[torch.Tensor] | None, catch_up: bool):
        """One draft-model forward: (logits [n, V], its last hidden state [n, H], catch-up ms), for the n rows whose
        chunk is not empty, in row order. A `catch_up` step, which reads tokens rows skipped while they did not
        draft (`BatchState.draft_lag`), is timed apart: its time is returned and kept by the cost model apart
        from drafting steps."""
        t0 = time.perf_counter()
        logits, hidden = self.forward(self.draft, cache, chunks, keep=1, hidden=1, features=features)
        ms = (time.perf_counter() - t0) * 1e3
        if not catch_up:
            self.costs.observe_draft(len(chunks), ms)
            return logits, hidden, 0.0
        self.costs.observe_catch_up(len(chunks), max(map(len, chunks)), ms)
        return logits, hidden, ms

    def verify(self, state: BatchState, proposals: Proposals, sampling: Sampling, generator) -> Verdicts:
        """One target forward over every row's pending token and proposal; accept, resample or take a bonus."""
        chunks = state.target_chunks(proposals)
        width = int(proposals.num_draft.max()) + 1 if len(state) else 1
        reads_states = state.target_states is not None
        t0 = time.perf_counter()
        # [N+B, V] logits and, for a draft that reads them, [N+B, L*H] states, at the verified positions
        logits, states = self.forward(self.target, state.tcache, chunks, keep=width, hidden=width if reads_states else 0,
                                      layers=self.read_layers)
        self.costs.observe_verify(len(state), proposals.num_draft + 1, (time.perf_counter() - t0) * 1e3)
        at_token = torch.arange(len(proposals.token_ids)) + proposals.row_of_token()  # [N] in verified positions
        tokens = proposals.token_ids[:, None]
        if sampling.greedy:
            # max(-1) gives argmax's index (the first maximal one) in half its time here (2.3 against 4.3 ms at
            # batch 32, width 2)
            accepted, following = verify_greedy(logits.max(-1).indices, proposals.token_ids, proposals.offsets)
            target_prob = soft_distribution(logits[at_token], sampling).gather(-1, tokens).squeeze(-1)
        else:
            probs = distribution(logits, sampling)
            accepted, following = verify_sampled(probs, proposals.draft_probs, proposals.token_ids, proposals.offsets, generator)
            target_prob = probs[at_token].gather(-1, tokens).squeeze(-1)
        return Verdicts(accepted, following, target_prob, states)

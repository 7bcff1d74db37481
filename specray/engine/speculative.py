"""Batched speculative decoding with a per-sequence lookahead.

One round: every sequence's stop policy decides, token by token, how far its draft goes (a sequence
that stops waits in the batch as a masked hole while the others keep drafting); the target verifies
all ragged proposals in one forward; each sequence accepts its own prefix and both KV caches roll
back per row. The first round's verification is also the target's prefill. With no policy the same
loop is plain target-only decoding, so baselines share every line of overhead but the draft.
"""

import functools
import inspect
import time
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from specray.engine.kv_cache import SlotCache
from specray.engine.ngram import ngram_lookup
from specray.engine.sampling import Sampling, TokenStats, distribution, draw, soft_distribution, token_stats, verify
from specray.engine.traces import TraceBuffer
from specray.models.pairing import output_vocab_size
from specray.policies.base import Decision, DraftStep, Outcome, StopPolicy
from specray.policies.cost import CostGate, CostModel
from specray.schema import TOPK


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
    stop_reason: str  # eos | max_new_tokens | stop_string


@dataclass
class Generation:
    sequences: list[SequenceResult]
    traces: pa.Table


@dataclass
class _Sequence:
    row: int
    prompt_id: str
    tokens: list[int]
    prompt_len: int
    target_len: int = 0  # tokens already in the target's KV cache
    draft_len: int = 0  # tokens (prompt, output or pending proposal) in the draft's KV cache
    iterations: int = 0
    drafted: int = 0
    accepted: int = 0
    idle_rounds: int = 0  # rounds since the cost gate last let this row draft
    stop_reason: str | None = None
    wall_ms: float = 0.0

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class _Proposal:
    tokens: list[int] = field(default_factory=list)
    dists: list[torch.Tensor] = field(default_factory=list)  # what each token was drawn from
    soft: list[float] = field(default_factory=list)  # q of each token, as traces record it
    entropy: list[float] = field(default_factory=list)
    topk: list[list[float]] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)  # the draft's hidden state behind each token
    stop_reason: str = "none"
    from_ngram: bool = False  # proposed by n-gram lookup rather than the draft model


@functools.cache
def forward_keywords(model_class: type) -> tuple[bool, str]:
    """Whether `forward` can skip unneeded logits, and what it calls the KV cache: transformers renamed
    `past_key_values` to `cache` (the old name warns on every forward, and is going away)."""
    params = inspect.signature(model_class.forward).parameters
    return "logits_to_keep" in params, "cache" if "cache" in params else "past_key_values"


def model_forward(model, cache: SlotCache, chunks: list[list[int]], keep: int, hidden: bool = False):
    """Append ragged per-row chunks (left-padded with holes); logits of the last `keep` slots and,
    with `hidden`, the last hidden state of each row."""
    width = max(len(c) for c in chunks)
    ids = torch.zeros(len(chunks), width, dtype=torch.long)
    valid = torch.zeros(len(chunks), width, dtype=torch.bool)
    for i, chunk in enumerate(chunks):
        if chunk:
            ids[i, width - len(chunk) :] = torch.tensor(chunk)
            valid[i, width - len(chunk) :] = True
    device = cache.valid.device
    mask, positions = cache.extend(valid.to(device))
    keeps_logits, cache_keyword = forward_keywords(type(model))
    extra = {"logits_to_keep": keep} if keeps_logits else {}
    out = model(
        input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
        use_cache=True, output_hidden_states=hidden, **{cache_keyword: cache.kv}, **extra,
    )
    last_hidden = out.hidden_states[-1][:, -1].float().cpu() if hidden else None
    return out.logits[:, -keep:].float().cpu(), last_hidden


@dataclass
class _Draws:
    """One draft step's tokens for the rows still drafting, from one source or interleaved from two."""

    tokens: torch.Tensor  # (n,)
    dist: torch.Tensor  # (n, V) what each token was drawn from
    stats: TokenStats
    hidden: torch.Tensor  # (n, H)

    @staticmethod
    def interleave(parts: list[tuple[torch.Tensor, "_Draws"]]) -> "_Draws":
        """Rows marked by each part's (n,) mask take that part's draws, in row order."""
        if len(parts) == 1:
            return parts[0][1]
        n = len(parts[0][0])
        first = parts[0][1]
        out = _Draws(
            torch.empty(n, dtype=torch.long), first.dist.new_empty(n, first.dist.shape[1]),
            TokenStats(torch.empty(n), torch.empty(n), torch.empty(n, first.stats.topk_probs.shape[1])),
            first.hidden.new_empty(n, first.hidden.shape[1]),
        )
        for mask, part in parts:
            out.tokens[mask], out.dist[mask], out.hidden[mask] = part.tokens, part.dist, part.hidden
            out.stats.token_prob[mask], out.stats.entropy[mask] = part.stats.token_prob, part.stats.entropy
            out.stats.topk_probs[mask] = part.stats.topk_probs
        return out


class SpeculativeEngine:
    """A draft+target pair and the measured costs of running it."""

    probe_every = 8  # a row the cost gate keeps from drafting still tries one token this often

    def __init__(self, target, draft, tokenizer, cost_model: CostModel | None = None):
        self.target, self.draft, self.tokenizer = target, draft, tokenizer
        self.costs = cost_model or CostModel()
        self.vocab_size = output_vocab_size(target)
        eos = getattr(target.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        policy: StopPolicy | None,
        config: GenerationConfig = GenerationConfig(),
        prompt_ids: list[str] | None = None,
        domain: str = "unknown",
        run_id: str = "",
        source: str = "generate",
        record_hidden: bool = False,
    ) -> Generation:
        """Decode a batch; `policy=None` is target-only decoding.

        Trace rows are marked `source` (generate | label | bench); `record_hidden` adds the draft's hidden
        state behind each drafted token (a `hidden` column), which SpecDec++ trains on and label runs keep.
        """
        self._check_lengths(prompts, config.max_new_tokens)
        start = time.perf_counter()
        ids = prompt_ids or [str(i) for i in range(len(prompts))]
        seqs = [_Sequence(i, ids[i], list(p), len(p)) for i, p in enumerate(prompts)]
        name, version = (policy.name, policy.version) if policy else ("target", "")
        trace = TraceBuffer(run_id, domain, name, version, source, record_hidden)
        if policy is not None:
            policy.reset(len(prompts))
        tcache, dcache = SlotCache.for_model(self.target, len(prompts)), SlotCache.for_model(self.draft, len(prompts))
        generator = None if config.sampling.greedy else torch.Generator().manual_seed(config.seed)
        active = list(seqs)
        while active:
            budget, lookups, gate = self._budgets(active, policy, config)
            t0 = time.perf_counter()
            proposals = self._draft(active, budget, lookups, gate, policy, dcache, config.sampling, generator)
            t1 = time.perf_counter()
            target_probs, soft_target = self._verify(active, proposals, tcache, config.sampling)
            t2 = time.perf_counter()
            draft_ms, verify_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
            accepted = []
            for seq, proposal, p, p_soft in zip(active, proposals, target_probs, soft_target):
                k = len(proposal.tokens)
                dists = torch.stack(proposal.dists) if k else p[:0]
                verdict = verify(p, dists, proposal.tokens, generator)
                trace.add_draft(
                    seq.prompt_id, seq.iterations, seq.generated, proposal.tokens, proposal.soft,
                    p_soft[torch.arange(k), torch.tensor(proposal.tokens, dtype=torch.long)].tolist(), proposal.entropy, proposal.topk,
                    verdict.n_accepted, proposal.stop_reason, draft_ms, verify_ms, proposal.hidden,
                )
                self._commit(seq, proposal.tokens[: verdict.n_accepted] + [verdict.next_token], k, config)
                seq.wall_ms = (time.perf_counter() - start) * 1e3
                accepted.append(verdict.n_accepted)
            if policy is not None:
                drafted = torch.tensor([len(p.tokens) for p in proposals])
                from_ngram = torch.tensor([p.from_ngram for p in proposals])
                policy.observe(Outcome(torch.tensor([s.row for s in active]), drafted, torch.tensor(accepted), from_ngram))
            tcache.truncate(torch.tensor([s.target_len for s in active]))
            dcache.truncate(torch.tensor([s.draft_len for s in active]))
            active = self._retire(active, tcache, dcache)
        results = [
            SequenceResult(
                s.tokens[s.prompt_len :],
                self.tokenizer.decode(s.tokens[s.prompt_len :], skip_special_tokens=True),
                s.iterations, s.drafted, s.accepted, s.wall_ms, s.stop_reason,
            )
            for s in seqs
        ]
        return Generation(results, trace.table())

    @staticmethod
    def dtype_of(model) -> torch.dtype:
        """Each model runs in its own precision (see `specray.models.precision`); its cache follows it."""
        return next(model.parameters()).dtype

    def context_window(self) -> int | None:
        return getattr(self.target.config, "max_position_embeddings", None)

    def _check_lengths(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        window = self.context_window()
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"empty prompt at batch index {i}: every prompt needs at least one token")
            if window is not None and len(prompt) + max_new_tokens > window:
                raise ValueError(
                    f"prompt at batch index {i} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                    f"the target's context window of {window} (prompts may have at most {window - max_new_tokens} tokens)"
                )

    def _budgets(self, active: list[_Sequence], policy: StopPolicy | None, config: GenerationConfig):
        """Tokens each row may draft, the n-gram proposals (cut to that budget) of rows that draft by
        lookup, and the cost gate that also rules inside the round (None: nothing gates the round).

        The policy's budget, never past max_new_tokens; a row that drafts by n-gram only and finds no
        match drafts nothing; then the cost gate, for the batch as a whole, which counts n-gram tokens as
        free to propose. When drafting does not pay, rows idle for `probe_every` rounds still try one token.
        """
        if policy is None:
            return torch.zeros(len(active), dtype=torch.long), {}, None
        rows = torch.tensor([s.row for s in active])
        remaining = torch.tensor([config.max_new_tokens - s.generated - 1 for s in active])
        budget = torch.minimum(policy.budget(rows), remaining).clamp_min(0)
        lookups = self._lookups(active, budget, policy)
        if policy.draft_source == "ngram":
            budget[[i for i in range(len(active)) if i not in lookups]] = 0
        gate = self._gate(policy, len(active))
        if gate is not None:
            ngram = torch.tensor([i in lookups for i in range(len(active))])
            acceptance = torch.where(ngram, policy.ngram_acceptance[rows], policy.acceptance[rows]) * (budget > 0)
            worth = gate.worth_drafting(acceptance, free=ngram)
            probe = torch.tensor([s.idle_rounds >= self.probe_every for s in active])
            if not worth:  # only probes draft: one token each, kept whatever the gate says, to learn acceptance
                budget = torch.where(probe, budget.clamp(max=1), 0)
            for seq, ok in zip(active, (probe | worth).tolist()):
                seq.idle_rounds = 0 if ok else seq.idle_rounds + 1
            gate = gate if worth else None
        return budget, {i: tokens[: budget[i]] for i, tokens in lookups.items() if budget[i] > 0}, gate

    def _lookups(self, active: list[_Sequence], budget: torch.Tensor, policy: StopPolicy) -> dict[int, list[int]]:
        """N-gram proposals (up to each row's budget) for the rows whose source looks them up."""
        if policy.draft_source == "model":
            return {}
        found = {i: ngram_lookup(s.tokens, policy.ngram_max, k=int(budget[i])) for i, s in enumerate(active) if budget[i] > 0}
        return {i: tokens for i, tokens in found.items() if tokens}

    def _gate(self, policy: StopPolicy | None, batch_size: int) -> CostGate | None:
        if policy is None or not policy.cost_aware:
            return None
        if not self.costs.calibrated(batch_size):
            from specray.engine.calibration import measure_costs

            measure_costs(self, batch_size)
        return CostGate(self.costs, batch_size)

    def forward(self, model, cache: SlotCache, chunks: list[list[int]], keep: int):
        """Append ragged per-row chunks to `model`'s cache; logits of the last `keep` slots, draft hidden."""
        return model_forward(model, cache, chunks, keep, hidden=model is self.draft)

    def _draft(self, active, budget, lookups, gate, policy, cache, sampling, generator) -> list[_Proposal]:
        """Draft token by token; each row stops when its policy, its budget, the cost gate or EOS says so.

        Rows in `lookups` take their n-gram tokens (a point mass each, no forward); the others run the
        draft model, which only runs at a depth where some row needs it.
        """
        proposals = [_Proposal() for _ in active]
        drafting = budget > 0
        if not drafting.any():
            return proposals
        rows = torch.tensor([s.row for s in active])
        ngram = torch.tensor([i in lookups for i in range(len(active))])
        survival, expected = torch.ones(len(active)), torch.ones(len(active))
        chunks = [[] if ngram[i] else s.tokens[s.draft_len :] for i, s in enumerate(active)]  # rows that skipped rounds catch up
        depth = steps = 0  # draft depth, and draft forwards paid this round
        while drafting.any():
            depth += 1
            idx = drafting.nonzero().squeeze(-1)
            from_ngram = ngram[idx]
            parts = []
            if from_ngram.any():
                looked_up = torch.tensor([lookups[i][depth - 1] for i in idx[from_ngram].tolist()], dtype=torch.long)
                parts.append((from_ngram, self._point_mass(looked_up)))
            if not from_ngram.all():
                t0 = time.perf_counter()
                logits, hidden = self.forward(self.draft, cache, chunks, keep=1)
                steps += 1
                if max(len(c) for c in chunks) == 1:
                    self.costs.observe_draft(len(active), (time.perf_counter() - t0) * 1e3)
                for seq, chunk in zip(active, chunks):
                    seq.draft_len += len(chunk)
                by_model = idx[~from_ngram]
                parts.append((~from_ngram, self._sample(logits[by_model, -1], hidden[by_model], sampling, generator)))
            draws = _Draws.interleave(parts)
            step_tokens, dist, stats, hidden = draws.tokens, draws.dist, draws.stats, draws.hidden
            position = torch.tensor([active[i].generated + depth - 1 for i in idx.tolist()])
            step = DraftStep(rows[idx], depth, position, step_tokens, stats.token_prob, stats.entropy, stats.topk_probs, hidden, from_ngram)
            accept_prob = torch.where(from_ngram, policy.ngram_accept_prob(step), policy.accept_prob(step))
            wanted = policy.decide(step, accept_prob)
            if gate is None:
                decision = wanted
            else:
                decision = gate.decide(wanted, depth, steps, accept_prob, survival[idx], float(expected.sum()), free=from_ngram)
            survival[idx] *= accept_prob
            expected[idx] += survival[idx]
            for j, i in enumerate(idx.tolist()):
                proposal, token = proposals[i], int(step_tokens[j])
                if decision[j] != Decision.DROP:
                    proposal.tokens.append(token)
                    proposal.dists.append(dist[j])
                    proposal.soft.append(float(stats.token_prob[j]))
                    proposal.entropy.append(float(stats.entropy[j]))
                    proposal.topk.append(stats.topk_probs[j].tolist())
                    proposal.hidden.append(hidden[j])
                limit = len(lookups[i]) if ngram[i] else int(budget[i])
                reason = self._stop_reason(int(wanted[j]), int(decision[j]), token, len(proposal.tokens), limit)
                if reason:
                    proposal.stop_reason = reason
                    drafting[i] = False
            chunks = [[p.tokens[-1]] if drafting[i] and not ngram[i] else [] for i, p in enumerate(proposals)]
        for i in lookups:
            proposals[i].from_ngram = True
        return proposals

    @staticmethod
    def _sample(logits: torch.Tensor, hidden: torch.Tensor, sampling: Sampling, generator) -> "_Draws":
        """The draft model's next token per row, the distribution it came from, and what policies see."""
        dist = distribution(logits, sampling)
        tokens = draw(dist, generator)
        return _Draws(tokens, dist, token_stats(soft_distribution(logits, sampling), tokens), hidden)

    def _point_mass(self, tokens: torch.Tensor) -> "_Draws":
        """What an n-gram token looks like to verification, policies and traces: q = 1 on the token."""
        n = len(tokens)
        topk = torch.zeros(n, TOPK)
        topk[:, 0] = 1.0
        dist = torch.nn.functional.one_hot(tokens, self.vocab_size).float()
        return _Draws(tokens, dist, TokenStats(torch.ones(n), torch.zeros(n), topk), torch.zeros(n, self.draft.config.hidden_size))

    def _stop_reason(self, wanted: int, decision: int, token: int, drafted: int, budget: int) -> str | None:
        if decision != wanted:
            return "cost"
        if decision != Decision.CONTINUE:
            return "policy"
        if token in self.eos:
            return "eos"
        if drafted >= budget:
            return "k_max"
        return None

    def _verify(self, active, proposals, cache, sampling):
        """One target forward over every row's pending tokens plus its proposal (ragged)."""
        chunks = [s.tokens[s.target_len :] + p.tokens for s, p in zip(active, proposals)]
        keep = max(len(p.tokens) for p in proposals) + 1
        t0 = time.perf_counter()
        logits, _ = self.forward(self.target, cache, chunks, keep=keep)
        if all(len(s.tokens) - s.target_len == 1 for s in active):  # not a prefill
            self.costs.observe_verify(len(active), keep, (time.perf_counter() - t0) * 1e3)
        target_probs, soft = [], []
        for seq, chunk, proposal, row_logits in zip(active, chunks, proposals, logits):
            seq.target_len += len(chunk)
            row_logits = row_logits[keep - len(proposal.tokens) - 1 :]
            target_probs.append(distribution(row_logits, sampling))
            soft.append(soft_distribution(row_logits, sampling))
        return target_probs, soft

    def _commit(self, seq: _Sequence, new_tokens: list[int], drafted: int, config: GenerationConfig) -> None:
        """Append the round's output, roll the caches' bookkeeping back, and apply stop conditions."""
        n_accepted = len(new_tokens) - 1
        kept_len = len(seq.tokens) + n_accepted  # the caches keep everything up to the last accepted draft
        seq.target_len = kept_len
        seq.draft_len = min(seq.draft_len, kept_len)
        seq.iterations += 1
        seq.drafted += drafted
        seq.accepted += n_accepted
        for token in new_tokens:
            seq.tokens.append(token)
            if token in self.eos:
                seq.stop_reason = "eos"
                break
            if seq.generated >= config.max_new_tokens:
                seq.stop_reason = "max_new_tokens"
                break
        if config.stop_strings and seq.stop_reason is None:
            self._apply_stop_strings(seq, config.stop_strings, len(new_tokens))

    def _apply_stop_strings(self, seq: _Sequence, stops: tuple[str, ...], new: int) -> None:
        """End at the first token whose text completes a stop string (the same cut target-only makes)."""
        output = seq.tokens[seq.prompt_len :]
        for end in range(max(1, len(output) - new + 1), len(output) + 1):
            text = self.tokenizer.decode(output[:end], skip_special_tokens=True)
            if any(s in text for s in stops):
                del seq.tokens[seq.prompt_len + end :]
                seq.stop_reason = "stop_string"
                return

    def _retire(self, active: list[_Sequence], tcache: SlotCache, dcache: SlotCache) -> list[_Sequence]:
        """Finished sequences leave the batch so they cost nothing; holes are reclaimed when they pile up."""
        keep = [i for i, s in enumerate(active) if s.stop_reason is None]
        if len(keep) < len(active):
            rows = torch.tensor(keep, dtype=torch.long)
            tcache.select_rows(rows)
            dcache.select_rows(rows)
        else:
            for cache in (tcache, dcache):
                if cache.holes() > max(64, int(cache.lengths.max())):
                    cache.compact()
        return [active[i] for i in keep]

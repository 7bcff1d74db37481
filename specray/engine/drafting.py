"""Drafting: every row proposes tokens one depth at a time until its policy, its budget, the cost gate or
EOS stops it, and the round's proposals leave as one flat `Proposals`.

Rows the budget gives an n-gram lookup take its tokens (a point mass each: q = 1, no forward); the
others share one draft-model forward per depth, which only runs at a depth where some row needs it.
A row that stops waits as a masked hole while the others keep drafting.
"""

from dataclasses import dataclass

import torch

from specray.engine.batch_state import BatchState
from specray.engine.budget import RoundBudget
from specray.engine.proposals import Proposals
from specray.engine.sampling import Sampling, TokenStats, distribution, draw, soft_distribution, token_stats
from specray.policies.base import Decision, DraftStep, StopPolicy
from specray.schema import TOPK


@dataclass
class Draws:
    """One depth's token for every row of the batch (rows not drafting hold zeros)."""

    tokens: torch.Tensor  # [B]
    dist: torch.Tensor | None  # [B, V] what each token was drawn from; None when greedy
    stats: TokenStats  # [B] each
    hidden: torch.Tensor  # [B, H] the draft's hidden state behind each token (zeros for n-gram tokens)
    accept_prob: torch.Tensor  # [B] the policy's estimate that the token is accepted (set once asked)

    @staticmethod
    def empty(batch: int, vocab: int, hidden: int, sampled: bool) -> "Draws":
        topk = torch.zeros(batch, TOPK)
        topk[:, 0] = 1.0  # a point mass, which is what n-gram rows keep
        return Draws(
            torch.zeros(batch, dtype=torch.long), torch.zeros(batch, vocab) if sampled else None,
            TokenStats(torch.ones(batch), torch.zeros(batch), topk), torch.zeros(batch, hidden), torch.zeros(batch),
        )

    def point_mass(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """N-gram tokens on `rows` (the defaults already say q = 1, entropy 0)."""
        self.tokens[rows] = tokens
        if self.dist is not None:
            self.dist[rows] = torch.nn.functional.one_hot(tokens, self.dist.shape[1]).float()

    def sample(self, rows: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor, sampling: Sampling, generator,
               support: torch.Tensor | None) -> None:
        """The draft model's next token on `rows` (a [B] mask) from their `logits` [n, V] and hidden states [n, H],
        the distribution it came from, and what policies see. `support`: the only columns of `logits` that can be
        finite (ascending token ids), or None: all. Outside it every probability is 0, so the draws and
        statistics over it are those over the vocabulary."""
        logits = logits if support is None else logits.index_select(-1, support)  # [n, S]
        # greedy draws the argmax: its one-hot distribution is needed by nothing (verification reads q only when sampling)
        dist = None if sampling.greedy else distribution(logits, sampling)
        tokens = logits.argmax(-1) if dist is None else draw(dist, generator)
        stats = token_stats(soft_distribution(logits, sampling), tokens)
        self.tokens[rows], self.hidden[rows] = tokens if support is None else support[tokens], hidden
        self.stats.token_prob[rows], self.stats.entropy[rows], self.stats.topk_probs[rows] = stats.token_prob, stats.entropy, stats.topk_probs
        if self.dist is not None:
            self.dist[rows] = dist if support is None else torch.zeros(len(dist), self.dist.shape[1]).index_copy_(1, support, dist)


def propose(engine, state: BatchState, policy: StopPolicy | None, budget: RoundBudget, sampling: Sampling,
            generator, record_hidden: bool) -> Proposals:
    """Draft this round's tokens for every row of `state`, within `budget`."""
    batch = len(state)
    drafting, ngram, gate = budget.tokens > 0, budget.ngram, budget.gate
    stop_reason = ["none"] * batch
    sampled_vocab = engine.vocab_size if not sampling.greedy else None
    if not drafting.any():  # a plain round: nothing to draft, and nothing for the draft to read
        return flatten([], batch, ngram, stop_reason, record_hidden, sampled_vocab, 0.0)
    limits = budget.tokens.tolist()
    seqs, generated = state.seqs, torch.tensor([s.generated for s in state.active])
    survival, expected = torch.ones(batch), torch.ones(batch)
    depths: list[tuple[Draws, torch.Tensor]] = []  # each depth's draws and which rows kept them
    chunks = state.draft_chunks(drafting & ~ngram)  # rows that skipped rounds catch up
    features = state.draft_states(drafting & ~ngram)  # what a feature-level draft reads beside them
    steps, catch_up_ms = 0, 0.0  # draft forwards paid this round; the time of those that read skipped tokens
    catch_up = state.draft_lag(drafting & ~ngram) > 0
    while drafting.any():
        depth = len(depths) + 1
        draws = Draws.empty(batch, engine.vocab_size, engine.draft.config.hidden_size, not sampling.greedy)
        by_lookup, by_model = drafting & ngram, drafting & ~ngram
        if by_lookup.any():
            lookup_rows = by_lookup.nonzero().squeeze(-1)
            draws.point_mass(lookup_rows, torch.tensor([budget.lookups[b][depth - 1] for b in lookup_rows.tolist()]))
        if by_model.any():
            logits, hidden, catching_up = engine.draft_step(state.dcache, chunks, features, catch_up and steps == 0)
            steps, catch_up_ms = steps + 1, catch_up_ms + catching_up
            draws.sample(by_model, logits, hidden, sampling, generator, engine.draft_support)
        # ask each row's policy, then the batch's gate, whether to keep this token and draft another
        idx = drafting.nonzero().squeeze(-1)
        stats = draws.stats
        step = DraftStep(seqs[idx], depth, generated[idx] + depth - 1, draws.tokens[idx], stats.token_prob[idx],
                         stats.entropy[idx], stats.topk_probs[idx], draws.hidden[idx], ngram[idx])
        accept_prob = acceptance_estimates(policy, step)
        draws.accept_prob[idx] = accept_prob
        wanted = policy.decide(step, accept_prob)
        believed = accept_prob if gate is None else state.calibration.believed(accept_prob)
        decision = wanted if gate is None else gate.decide(
            wanted, depth, steps, believed, survival[idx], float(expected.sum()), free=ngram[idx])
        survival[idx] *= believed
        expected[idx] += survival[idx]
        kept = torch.zeros(batch, dtype=torch.bool)
        kept[idx] = decision != Decision.DROP
        depths.append((draws, kept))
        tokens = draws.tokens.tolist()  # Python values once, not a tensor element at a time per row
        for b, want, ruled in zip(idx.tolist(), wanted.tolist(), decision.tolist()):
            reason = stop_reason_of(want, ruled, tokens[b] in engine.eos, depth, limits[b])
            if reason:
                stop_reason[b], drafting[b] = reason, False
        reading = (drafting & ~ngram).tolist()
        chunks = [[tokens[b]] if on else [] for b, on in enumerate(reading)]
        if features is not None:  # deeper tokens are read with the draft's own predicted state
            features = [draws.hidden[b : b + 1] if on else draws.hidden[b:b] for b, on in enumerate(reading)]
    return flatten(depths, batch, ngram, stop_reason, record_hidden, sampled_vocab, catch_up_ms)


def acceptance_estimates(policy: StopPolicy, step: DraftStep) -> torch.Tensor:
    """[n] the policy's P(accept) of each token: an n-gram token's by its running n-gram estimate, a draft
    model's token by the policy's own; each estimate asked for only when some token needs it (a learned
    policy's runs a network)."""
    ngram = step.from_ngram
    if not ngram.any():
        return policy.accept_prob(step)
    if ngram.all():
        return policy.ngram_accept_prob(step)
    return torch.where(ngram, policy.ngram_accept_prob(step), policy.accept_prob(step))


def stop_reason_of(wanted: int, decision: int, eos: bool, drafted: int, budget: int) -> str | None:
    """Why a row stops drafting after this token, or None while it goes on."""
    if decision != wanted:
        return "cost"
    if decision != Decision.CONTINUE:
        return "policy"
    if eos:
        return "eos"
    if drafted >= budget:
        return "k_max"
    return None


def flatten(depths: list[tuple[Draws, torch.Tensor]], batch: int, ngram: torch.Tensor, stop_reason: list[str],
            record_hidden: bool, sampled_vocab: int | None, catch_up_ms: float) -> Proposals:
    """Depth-major draws into the flat, row-major layout verification reads (kept tokens only);
    `sampled_vocab` is the vocabulary size when sampling (draft distributions travel), None when greedy."""
    if not depths:
        empty = torch.zeros(0)
        return Proposals(torch.zeros(0, dtype=torch.long), torch.zeros(batch + 1, dtype=torch.long),
                         None if sampled_vocab is None else torch.zeros(0, sampled_vocab), empty, empty,
                         torch.zeros(0, TOPK), empty, None, ngram & False, stop_reason, catch_up_ms)
    kept = torch.stack([k for _, k in depths], dim=1)  # [B, D]; a row's kept tokens are a prefix

    def flat(get) -> torch.Tensor:
        return torch.stack([get(d) for d, _ in depths], dim=1)[kept]

    offsets = torch.nn.functional.pad(kept.sum(1).cumsum(0), (1, 0))
    sampled = sampled_vocab is not None
    return Proposals(
        token_ids=flat(lambda d: d.tokens),
        offsets=offsets,
        draft_probs=flat(lambda d: d.dist) if sampled else None,
        token_prob=flat(lambda d: d.stats.token_prob),
        entropy=flat(lambda d: d.stats.entropy),
        topk_probs=flat(lambda d: d.stats.topk_probs),
        accept_prob=flat(lambda d: d.accept_prob),
        hidden=flat(lambda d: d.hidden) if record_hidden else None,
        from_ngram=ngram & (offsets.diff() > 0),
        stop_reason=stop_reason,
        catch_up_ms=catch_up_ms,
    )

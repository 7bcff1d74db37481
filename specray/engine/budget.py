"""What the batch pays for this round: how many tokens each row may draft, from which source, under which gate.

Row policies stop their own rows; the budget decides for the batch as a whole, because the batch pays a
round as one (`specray.policies.cost.CostGate`): it drafts at all only when the rows' running acceptance
rates, summed and believed by how many first tokens such rates won (`BatchState.opening`), beat the
measured price of a draft step and a wider verification (and, when the draft model must first read tokens
rows skipped, that read spread over the drafting rounds it serves: as many as such reads have served so far,
never more than the rows have left),
and the gate then rules on every depth. When nothing pays the round is plain target decoding, except for
probes: one token per row, ungated, so acceptance estimates keep learning. Exploring is a cost the batch
pays for nothing when drafting does not pay, and a probe is dear in a wide batch (a feature-level draft
first catches up on every token since it last drafted, and every row's verification widens: measured at
batch 8 on an AVX-512 CPU without AMX, a probe round took 2.2x a plain round). So probes spend at most
`EXPLORATION_SHARE` of the time: every idle round earns that share of its predicted time, and a probe
runs, at least `PROBE_EVERY` idle rounds after the last, once the credit covers its predicted cost
beyond a plain round: a drafting round's forwards and measured overhead, and the draft's catch-up
read, which the cost model keeps apart because steady drafting rounds do not pay it (while probes'
catch-ups were counted into every drafting round's overhead, cost-aware policies at batch 1 drafted
almost nothing, 0.01-0.05 accepted tokens a round, where static:3 ran at 1.15x).
Cheap probes come every `PROBE_EVERY` rounds; dear ones rarely.
"""

from dataclasses import dataclass

import torch

from specray.averages import ema
from specray.engine.batch_state import BatchState
from specray.engine.ngram import ngram_lookup
from specray.policies.base import StopPolicy
from specray.policies.cost import CostGate, CostModel

PROBE_EVERY = 8
EXPLORATION_SHARE = 0.01
RUN_DECAY = 0.5  # how much of the past the average length of drafting runs keeps at each run's end


@dataclass(frozen=True)
class RoundBudget:
    tokens: torch.Tensor  # [B] most tokens each row may draft (0: none)
    ngram: torch.Tensor  # [B] bool: the row's tokens come from n-gram lookup
    lookups: dict[int, list[int]]  # row -> its n-gram proposal, cut to its budget
    gate: CostGate | None  # rules on each depth; None: the row policies alone decide
    opening: torch.Tensor | None = None  # [B] the running acceptance rate each row opened the round with (cost-aware)

    @staticmethod
    def nothing(batch: int) -> "RoundBudget":
        return RoundBudget(torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.bool), {}, None)

    def first_tokens(self, num_draft: torch.Tensor, num_accepted: torch.Tensor) -> tuple[float, float]:
        """(first tokens the opening rates expected, first tokens accepted) over the rows that drafted: the
        opening record (`BatchState.opening`); (0, 0) for a round with no opening rates."""
        if self.opening is None:
            return 0.0, 0.0
        drafted = num_draft > 0
        return float(self.opening[drafted].sum()), float((num_accepted[drafted] > 0).sum())


def plan_round(state: BatchState, policy: StopPolicy | None, costs: CostModel, max_new_tokens: int) -> RoundBudget:
    """The policy's budget per row, never past max_new_tokens; n-gram rows get their lookup (a row that
    drafts by n-gram only and finds no match drafts nothing); then the batch's cost gate."""
    batch = len(state)
    if policy is None:
        return RoundBudget.nothing(batch)
    seqs = state.seqs
    remaining = torch.tensor([max_new_tokens - s.generated - 1 for s in state.active])
    tokens = torch.minimum(policy.budget(seqs), remaining).clamp_min(0)
    lookups = _lookups(state, tokens, policy)
    ngram = torch.zeros(batch, dtype=torch.bool)
    for b, found in lookups.items():
        ngram[b], tokens[b] = True, len(found)
    if not policy.drafts_by_model:
        tokens[~ngram] = 0
    if not policy.cost_aware or not bool((tokens > 0).any()):
        return RoundBudget(tokens, ngram, lookups, None)
    gate = CostGate(costs, batch)
    rates = policy.acceptance[seqs] if not lookups else torch.where(ngram, policy.ngram_acceptance[seqs], policy.acceptance[seqs])
    rates = rates * (tokens > 0)
    believed = state.opening.believed(rates)
    pays = gate.worth_drafting(believed, free=ngram)  # before the catch-up share, which walks every row and the table
    if pays and gate.worth_drafting(believed, free=ngram, owed_ms=_catch_up_share(state, policy, costs, remaining, believed)):
        state.idle_rounds, state.drafting_rounds = 0, state.drafting_rounds + 1
        return RoundBudget(tokens, ngram, lookups, gate, rates)
    if state.drafting_rounds:  # a run of drafting rounds ends: the draft falls behind again
        state.rounds_per_read = ema(state.rounds_per_read, state.drafting_rounds, RUN_DECAY)
        state.drafting_rounds = 0
    state.idle_rounds += 1
    state.exploration_ms += EXPLORATION_SHARE * gate.plain_ms
    if state.idle_rounds < PROBE_EVERY:
        return RoundBudget.nothing(batch)
    probe_ms = _probe_ms(state, policy, gate, costs)
    if state.exploration_ms < probe_ms:
        return RoundBudget.nothing(batch)
    # a probe round: one token per row, kept whatever the gate says, paid from the exploration credit
    state.idle_rounds, state.drafting_rounds, state.exploration_ms = 0, 1, state.exploration_ms - probe_ms
    tokens = tokens.clamp(max=1)
    return RoundBudget(tokens, ngram, {b: found[:1] for b, found in lookups.items()}, None, rates)


def _probe_ms(state: BatchState, policy: StopPolicy, gate: CostGate, costs: CostModel) -> float:
    """What a probe costs beyond a plain round: a one-token drafting round and the draft's catch-up read."""
    return gate.round_ms(1, 2) - gate.plain_ms + _catch_up_ms(state, policy, costs)


def _catch_up_ms(state: BatchState, policy: StopPolicy, costs: CostModel) -> float:
    """What the draft model's read of the tokens rows skipped costs, if this round drafts (0: none is owed)."""
    lag = state.draft_lag() if policy.drafts_by_model else 0
    return costs.catch_up_ms(len(state), lag) if lag else 0.0


def _catch_up_share(state: BatchState, policy: StopPolicy, costs: CostModel, remaining: torch.Tensor,
                    believed: torch.Tensor) -> float:
    """The part of the draft's catch-up read that a drafting round must pay for: the read is paid once and serves
    the drafting rounds that follow it until the batch idles again, so it is spread over as many rounds as such
    runs have lasted (`BatchState.rounds_per_read`), and never over more than the rows have left (their mean
    remaining tokens over the tokens a drafting round is believed to make). Drafting is then chosen when those
    rounds' gains repay the read. Spread over every round left, a read looked cheap while runs were short:
    measured on the embedded pair at batch 16 (bf16, AVX-512 without AMX), `heuristic` paid 8 catch-up rounds
    (1.8 s in all, 8% of the run) for 29 drafting rounds, which gained ~0.1 s over plain ones."""
    owed_ms = _catch_up_ms(state, policy, costs)
    if not owed_ms:
        return 0.0
    rounds = float(remaining.double().mean() + 1) / (1 + float(believed.mean()))
    if state.rounds_per_read is not None:
        rounds = min(rounds, state.rounds_per_read)
    return owed_ms / max(rounds, 1.0)


def _lookups(state: BatchState, tokens: torch.Tensor, policy: StopPolicy) -> dict[int, list[int]]:
    """N-gram proposals (up to each row's budget) for the rows whose source looks them up."""
    if not policy.drafts_by_lookup:
        return {}
    found = {
        b: ngram_lookup(s.tokens, policy.ngram_max, policy.ngram_min, k=int(tokens[b]))
        for b, s in enumerate(state.active) if tokens[b] > 0
    }
    return {b: proposal for b, proposal in found.items() if proposal}

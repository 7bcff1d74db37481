"""Speculate only when it pays: measured costs and the stopping rule that uses them.

On a GPU verifying a few tokens costs about as much as decoding one; on a CPU verifying 5 tokens
costs ~1.8x verifying one. A fixed lookahead that wins on one machine loses on the other, so the
engine measures, per batch size, the draft's cost per step and the target's cost to verify n tokens,
and the gate keeps a draft token only while it raises the expected tokens per unit of time:

    rate(k) = E[tokens | k drafted] / (k * draft_ms + verify_ms(k + 1)),
    E[tokens | k] = 1 + sum_{i<=k} prod_{j<=i} a_j,

where a_j is the policy's estimate that token j is accepted given the ones before were. This is
SpecDec++'s stopping rule with the cost constants measured instead of assumed. Tokens proposed by
n-gram lookup run no draft forward, so for those rows the draft term is zero ("free").
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from specray.policies.base import Decision


@dataclass
class BatchCosts:
    draft_ms: float | None = None
    verify_ms: dict[int, float] = field(default_factory=dict)  # tokens verified per row -> ms


class CostModel:
    """Exponential moving averages of measured forward times, per batch size."""

    def __init__(self, smoothing: float = 0.2):
        self.smoothing = smoothing
        self.batches: dict[int, BatchCosts] = {}

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.smoothing) * old + self.smoothing * new

    def observe_draft(self, batch_size: int, ms: float) -> None:
        costs = self.batches.setdefault(batch_size, BatchCosts())
        costs.draft_ms = self._ema(costs.draft_ms, ms)

    def observe_verify(self, batch_size: int, width: int, ms: float) -> None:
        costs = self.batches.setdefault(batch_size, BatchCosts()).verify_ms
        costs[width] = self._ema(costs.get(width), ms)

    def calibrated(self, batch_size: int) -> bool:
        costs = self.batches.get(batch_size)
        return costs is not None and costs.draft_ms is not None and len(costs.verify_ms) >= 2

    def round_ms(self, batch_size: int, drafted: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Expected wall time of a round in which `drafted` tokens are proposed in `steps` draft forwards
        (default: one per token), then verified."""
        costs = self.batches[batch_size]
        widths = sorted(costs.verify_ms)
        verify = np.interp(
            drafted.numpy() + 1,
            widths,
            [costs.verify_ms[w] for w in widths],
            right=None,
        )
        # beyond the widest measured width, extend the line through the two widest points
        if len(widths) >= 2:
            w0, w1 = widths[-2], widths[-1]
            slope = (costs.verify_ms[w1] - costs.verify_ms[w0]) / (w1 - w0)
            beyond = drafted.numpy() + 1 > w1
            verify[beyond] = costs.verify_ms[w1] + slope * (drafted.numpy()[beyond] + 1 - w1)
        steps = drafted if steps is None else steps
        return steps.double() * costs.draft_ms + torch.from_numpy(verify)


class CostGate:
    """Applies the rate rule on top of a policy's own decisions, per row, inside one round."""

    def __init__(self, costs: CostModel, batch_size: int):
        self.costs, self.batch_size = costs, batch_size

    def rate(self, expected: torch.Tensor, drafted: torch.Tensor, free: torch.Tensor | None = None) -> torch.Tensor:
        steps = drafted if free is None else torch.where(free, 0, drafted)
        return expected.double() / self.costs.round_ms(self.batch_size, drafted, steps)

    def worth_drafting(self, acceptance: torch.Tensor, free: torch.Tensor | None = None) -> torch.Tensor:
        """Before a round: does a first token, accepted with this probability, beat not drafting?"""
        zero = torch.zeros(len(acceptance), dtype=torch.long)
        return self.rate(1 + acceptance, zero + 1, free) > self.rate(torch.ones(len(acceptance)), zero)

    def decide(
        self,
        decision: torch.Tensor,
        depth: int,
        accept_prob: torch.Tensor,
        survival: torch.Tensor,
        expected: torch.Tensor,
        free: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Drop a token that lowers the rate; stop when the next one (as likely as this) would.

        survival/expected describe the draft before this token: P(all accepted so far), E[tokens];
        `free` marks rows whose tokens cost no draft forward (n-gram lookup).
        """
        k = torch.full((len(decision),), depth, dtype=torch.long)
        keep_survival = survival * accept_prob
        keep_expected = expected + keep_survival
        keep = self.rate(keep_expected, k, free) >= self.rate(expected, k - 1, free)
        more = self.rate(keep_expected + keep_survival * accept_prob, k + 1, free) > self.rate(keep_expected, k, free)
        gated = decision.clone()
        gated[(decision == Decision.CONTINUE) & ~more] = Decision.STOP
        gated[~keep] = Decision.DROP
        return gated

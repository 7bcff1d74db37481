"""A toy stop-policy kind, declared and registered in this one file: `every:N` drafts N tokens when the
round's first draft token is confident enough (`floor`), else one. Imported by test_policy_kinds, which
runs it through the spec grammar, a bench run and a job without any other module naming it."""

import torch

from specray.policies.base import StopPolicy, grown
from specray.policies.kinds import COST, PolicyKind, lookahead, probability, register


class EveryPolicy(StopPolicy):
    name = "every"

    def __init__(self, n: int, floor: float, cost_aware: bool):
        super().__init__(k_max=n, cost_aware=cost_aware)
        self.floor = floor
        self.first = torch.zeros(0)

    def start(self, rows: torch.Tensor) -> None:
        super().start(rows)
        self.first = grown(self.first, len(self.acceptance))
        self.first[rows] = 1.0

    def decide(self, step, accept_prob):
        if step.depth == 1:
            self.first[step.seqs] = step.token_prob.float()
        stop = self.first[step.seqs] < self.floor
        return torch.where(stop, 1, 0).long()  # Decision.STOP / CONTINUE


KIND = register(PolicyKind(
    "every", (lookahead("n", 3), probability("floor", 0.0), COST),
    build=lambda knobs, references: EveryPolicy(knobs["n"], knobs["floor"], knobs["cost"]),
    main="n", k_knob="n", threshold_knob="floor",
))

"""`heuristic`: K += 2 after a fully accepted draft, else K = max(1, K - 1), K <= k_max.

The schedule of transformers' `num_assistant_tokens_schedule="heuristic"`, kept per sequence.
"""

import torch

from specray.policies.base import Outcome, StopPolicy, grown
from specray.policies.kinds import COST, PolicyKind, lookahead, register


class HeuristicPolicy(StopPolicy):
    name = "heuristic"

    def __init__(self, k_start: int = 4, k_max: int = 10, cost_aware: bool = True):
        super().__init__(k_max=k_max, cost_aware=cost_aware)
        self.k_start = min(k_start, k_max)
        self.k = torch.zeros(0, dtype=torch.long)

    def start(self, rows: torch.Tensor) -> None:
        super().start(rows)
        self.k = grown(self.k, len(self.acceptance))
        self.k[rows] = self.k_start

    def budget(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.k[seqs].clone()

    def observe(self, outcome: Outcome) -> None:
        super().observe(outcome)
        has = outcome.drafted > 0
        seqs = outcome.seqs[has]
        all_accepted = outcome.accepted[has] == outcome.drafted[has]
        self.k[seqs] = torch.where(all_accepted, self.k[seqs] + 2, self.k[seqs] - 1).clamp(1, self.k_max)


def _build(knobs: dict, references) -> HeuristicPolicy:
    return HeuristicPolicy(knobs["k_start"], knobs["k_max"], cost_aware=knobs["cost"])


KIND = register(PolicyKind("heuristic", (lookahead("k_start", 4), lookahead("k_max", 10), COST), build=_build,
                           main="k_max", k_knob="k_max"))

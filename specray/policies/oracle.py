"""`oracle` (offline): draft exactly the tokens the target would accept.

Knows the target's greedy continuation of every prompt (from a target-only run), keeps a draft token
while it matches and drops the first one that does not. The upper bound of any stop policy and the
source of the labels learned policies train on.
"""

import torch

from specray.policies.base import Decision, DraftStep, StopPolicy
from specray.policies.kinds import PolicyKind, lookahead, register


class OraclePolicy(StopPolicy):
    name = "oracle"
    cost_aware = False

    def __init__(self, references: list[list[int]], k_max: int = 64):
        super().__init__(k_max=k_max)
        self.references = references

    def start(self, rows: torch.Tensor) -> None:
        """Row i is the i-th prompt of the `generate` call, whose reference is `references[i]`."""
        if len(rows) and int(rows.max()) >= len(self.references):
            raise ValueError(f"oracle has references for {len(self.references)} prompts, the batch has more")
        super().start(rows)

    def _matches(self, step: DraftStep) -> torch.Tensor:
        refs = [self.references[r] for r in step.seqs.tolist()]
        return torch.tensor(
            [p < len(ref) and ref[p] == t for ref, p, t in zip(refs, step.position.tolist(), step.token.tolist())]
        )

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._matches(step).float()

    def ngram_accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._matches(step).float()

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return torch.where(accept_prob > 0, Decision.CONTINUE, Decision.DROP)


def _build(knobs: dict, references: list[list[int]] | None) -> OraclePolicy:
    if references is None:
        raise ValueError("the oracle policy needs the target's own outputs (it runs offline, after target-only decoding)")
    return OraclePolicy(references, **knobs)


KIND = register(PolicyKind("oracle", (lookahead("k_max", 64),), build=_build, offline=True))

"""`confidence`: stop drafting once the draft's probability of its own token drops below a threshold.

As transformers' `assistant_confidence_threshold`, with the same optional online refit: collect
(probability, accepted) pairs and move the threshold to the point of the ROC curve that minimises
FPR + 3 * FNR, where a positive is an accepted token.
"""

import numpy as np
import torch

from specray.policies.base import Decision, DraftStep, Outcome, StopPolicy
from specray.policies.kinds import COST, Knob, PolicyKind, lookahead, probability, register


def refit_threshold(probs: np.ndarray, accepted: np.ndarray, fn_weight: float = 3.0) -> float | None:
    """The threshold minimising FPR + fn_weight * FNR, or None when one class is missing."""
    positives, negatives = accepted.sum(), (~accepted).sum()
    if positives == 0 or negatives == 0:
        return None
    candidates = np.unique(probs)
    above = probs[None, :] >= candidates[:, None]  # tokens we would keep drafting past
    fpr = (above & ~accepted[None, :]).sum(1) / negatives
    fnr = (~above & accepted[None, :]).sum(1) / positives
    return float(candidates[np.argmin(fpr + fn_weight * fnr)])


class ConfidencePolicy(StopPolicy):
    name = "confidence"

    def __init__(self, threshold: float = 0.4, k_max: int = 10, refit: bool = False, refit_every: int = 64, cost_aware: bool = True):
        super().__init__(k_max=k_max, cost_aware=cost_aware)
        self.threshold, self.refit, self.refit_every = threshold, refit, refit_every
        self.round_probs: dict[int, list[float]] = {}
        self.samples: tuple[list[float], list[bool]] = ([], [])

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return step.token_prob

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        if self.refit:
            for row, prob in zip(step.seqs.tolist(), step.token_prob.tolist()):
                self.round_probs.setdefault(row, []).append(prob)
        return torch.where(step.token_prob < self.threshold, Decision.STOP, Decision.CONTINUE)

    def observe(self, outcome: Outcome) -> None:
        super().observe(outcome)
        if not self.refit:
            return
        probs, labels = self.samples
        for row, drafted, accepted in zip(outcome.seqs.tolist(), outcome.drafted.tolist(), outcome.accepted.tolist()):
            evaluated = self.round_probs.pop(row, [])[: min(accepted + 1, drafted)]
            probs += evaluated
            labels += [j < accepted for j in range(len(evaluated))]
        if len(probs) >= self.refit_every:
            threshold = refit_threshold(np.array(probs), np.array(labels))
            self.threshold = self.threshold if threshold is None else threshold
            self.samples = ([], [])


def _build(knobs: dict, references) -> ConfidencePolicy:
    return ConfidencePolicy(knobs["threshold"], knobs["k_max"], refit=knobs["refit"], cost_aware=knobs["cost"])


KIND = register(PolicyKind(
    "confidence", (probability("threshold", 0.4), lookahead("k_max", 10), Knob("refit", bool, False), COST), build=_build,
    main="threshold", k_knob="k_max", threshold_knob="threshold",
))

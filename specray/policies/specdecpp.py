"""`specdecpp`: SpecDec++'s acceptance head (arXiv 2405.19715) on the draft's last hidden state.

D residual blocks x + SiLU(Wx), then a linear layer, predict P(accept) per token; drafting stops
once the chance that at least one token of the draft is rejected, 1 − prod P, reaches h.
"""

from pathlib import Path

import torch
from torch import nn

from specray.policies.artifacts import ArtifactError, load_artifact, require_exact_tensors, require_shapes
from specray.policies.base import Decision, DraftStep, LearnedPolicy, grown
from specray.policies.kinds import Retraining, learned_kind, probability, register
from specray.training.replay import specdecpp_lengths

MAX_DEPTH = 64  # residual blocks a head may have
DEPTH = 3  # residual blocks `specray retrain` fits


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class AcceptanceHead(nn.Module):
    def __init__(self, hidden_size: int, depth: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(hidden_size) for _ in range(depth)])
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logit of P(accept)."""
        return self.out(self.blocks(hidden.float())).squeeze(-1)

    @classmethod
    def load(cls, stem: str | Path, data: dict[str, bytes] | None = None) -> tuple["AcceptanceHead", dict]:
        """The checked model and its metadata, from the files (or from `data`, their bytes already read)."""
        tensors, meta = load_artifact(stem, "specdecpp", data)
        require_shapes(stem, tensors, {"out.weight": (1, -1), "out.bias": (1,)})
        depth = meta.get("depth", 0)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
            raise ArtifactError(f"{stem}.json: depth must be an integer in [0, {MAX_DEPTH}], got {depth!r}")
        hidden = tensors["out.weight"].shape[1]
        blocks = {f"blocks.{i}.linear.{p}": s for i in range(depth) for p, s in (("weight", (hidden, hidden)), ("bias", (hidden,)))}
        require_shapes(stem, tensors, blocks)
        require_exact_tensors(stem, tensors, {"out.weight", "out.bias", *blocks})
        head = cls(hidden, depth)
        head.load_state_dict(tensors)
        return head.eval(), meta


class SpecDecPPPolicy(LearnedPolicy):
    name = "specdecpp"
    h = property(lambda self: self.threshold)  # SpecDec++'s name for it
    head = property(lambda self: self.model)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.survival = torch.ones(0)

    def start(self, rows: torch.Tensor) -> None:
        super().start(rows)
        self.survival = grown(self.survival, len(self.acceptance))
        self.survival[rows] = 1.0

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        width = self.head.out.weight.shape[1]
        if step.hidden.shape[-1] != width:
            raise ValueError(f"specdecpp head expects hidden size {width}, the draft has {step.hidden.shape[-1]}")
        return self.predict(step.hidden)

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        if step.depth == 1:
            self.survival[step.seqs] = 1.0
        self.survival[step.seqs] *= accept_prob
        return torch.where(1 - self.survival[step.seqs] >= self.threshold, Decision.STOP, Decision.CONTINUE)


def _fit(hidden, soft_labels, steps: int) -> AcceptanceHead:
    from specray.training.fit import train_specdecpp  # see `Retraining`: the trainer imports this file

    return train_specdecpp(hidden, soft_labels, depth=DEPTH, steps=steps)


KIND = register(learned_kind("specdecpp", probability("h", 0.7), SpecDecPPPolicy, AcceptanceHead.load, Retraining(
    "hidden", "accept_prob", _fit, specdecpp_lengths, lambda hidden: {"depth": DEPTH, "hidden_size": int(hidden.shape[1])},
)))

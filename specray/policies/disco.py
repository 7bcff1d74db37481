"""`disco`: DISCO's classifier (arXiv 2405.04304) decides, token by token, whether to keep drafting.

A 2-layer FFN on [top-10 draft probabilities, entropy, depth in the draft] predicts P(accept);
drafting stops below tau, and never goes past k_max.
"""

from pathlib import Path

import torch
from torch import nn

from specray.policies.artifacts import ArtifactError, load_artifact, require_exact_tensors, require_shapes
from specray.policies.base import Decision, DraftStep, LearnedPolicy
from specray.policies.kinds import Retraining, learned_kind, probability, register
from specray.schema import TOPK
from specray.training.replay import disco_lengths

FEATURES = [f"top{i + 1}_prob" for i in range(TOPK)] + ["entropy", "depth"]


def disco_features(topk_probs: torch.Tensor, entropy: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    return torch.cat([topk_probs.float(), entropy.float()[:, None], depth.float()[:, None]], dim=1)


class DiscoClassifier(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(len(FEATURES), hidden), nn.Linear(hidden, 1)
        self.register_buffer("feature_mean", torch.zeros(len(FEATURES)))
        self.register_buffer("feature_std", torch.ones(len(FEATURES)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logit of P(accept)."""
        x = (features - self.feature_mean) / self.feature_std
        return self.fc2(torch.relu(self.fc1(x))).squeeze(-1)

    @classmethod
    def load(cls, stem: str | Path, data: dict[str, bytes] | None = None) -> tuple["DiscoClassifier", dict]:
        """The checked model and its metadata, from the files (or from `data`, their bytes already read)."""
        n = len(FEATURES)
        tensors, meta = load_artifact(stem, "disco", data)
        require_shapes(
            stem, tensors,
            {"fc1.weight": (-1, n), "fc1.bias": (-1,), "fc2.weight": (1, -1), "fc2.bias": (1,), "feature_mean": (n,), "feature_std": (n,)},
        )
        if meta.get("features") != FEATURES:
            raise ArtifactError(f"{stem}.json: feature spec {meta.get('features')} differs from {FEATURES}")
        require_exact_tensors(stem, tensors, {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "feature_mean", "feature_std"})
        if not bool((tensors["feature_std"] > 0).all()):
            raise ArtifactError(f"{stem}.safetensors: tensor 'feature_std' must be > 0 everywhere (it divides the features)")
        if tensors["fc1.bias"].shape[0] != tensors["fc1.weight"].shape[0] or tensors["fc2.weight"].shape[1] != tensors["fc1.weight"].shape[0]:
            raise ArtifactError(f"{stem}.safetensors: hidden sizes of fc1.weight, fc1.bias and fc2.weight disagree")
        model = cls(hidden=tensors["fc1.weight"].shape[0])
        model.load_state_dict(tensors)
        return model.eval(), meta


class DiscoPolicy(LearnedPolicy):
    name = "disco"
    tau = property(lambda self: self.threshold)  # DISCO's name for it

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self.predict(disco_features(step.topk_probs, step.entropy, torch.full_like(step.entropy, step.depth)))

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return torch.where(accept_prob < self.threshold, Decision.STOP, Decision.CONTINUE)


def _fit(features, accepted, steps: int) -> DiscoClassifier:
    from specray.training.fit import train_disco  # see `Retraining`: the trainer imports this file

    return train_disco(features, accepted, steps=steps)


KIND = register(learned_kind("disco", probability("tau", 0.5), DiscoPolicy, DiscoClassifier.load,
                             Retraining("features", "accepted", _fit, disco_lengths, lambda features: {"features": FEATURES})))

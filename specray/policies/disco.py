"""`disco`: DISCO's classifier (arXiv 2405.04304) decides, token by token, whether to keep drafting.

A 2-layer FFN on [top-10 draft probabilities, entropy, depth in the draft] predicts P(accept);
drafting stops below tau, and never goes past k_max.
"""

from pathlib import Path

import torch
from torch import nn

from specray.policies.artifacts import ArtifactError, load_artifact, require_exact_tensors, require_shapes, tuned_knobs
from specray.policies.base import Decision, DraftStep, StopPolicy
from specray.schema import TOPK

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
    def load(cls, stem: str | Path) -> tuple["DiscoClassifier", dict]:
        n = len(FEATURES)
        tensors, meta = load_artifact(stem, "disco")
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
        tuned_knobs(stem, meta, "tau")
        model = cls(hidden=tensors["fc1.weight"].shape[0])
        model.load_state_dict(tensors)
        return model.eval(), meta


class DiscoPolicy(StopPolicy):
    name = "disco"

    def __init__(self, classifier: DiscoClassifier, tau: float = 0.5, k_max: int = 10, version: str = "unversioned", cost_aware: bool = True):
        super().__init__(k_max=k_max)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"disco tau must be in [0, 1], got {tau}")
        self.classifier, self.tau, self.version, self.cost_aware = classifier, tau, version, cost_aware

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        depth = torch.full_like(step.entropy, step.depth)
        with torch.no_grad():
            return torch.sigmoid(self.classifier(disco_features(step.topk_probs, step.entropy, depth)))

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return torch.where(accept_prob < self.tau, Decision.STOP, Decision.CONTINUE)

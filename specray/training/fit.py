"""Fit the two learned acceptance models on labelled draft tokens.

DISCO: BCE on hard accept labels, positives and negatives weighted to equal total mass so a
domain where 90% of tokens are accepted still learns the rejections; the output bias is then shifted
back by log(w_pos / w_neg), which undoes the reweighting's prior shift so P(accept) stays calibrated.
SpecDec++: BCE on soft labels min(1, p/q) with rejections weighted w_rej (the paper's 6), left
uncalibrated on purpose: the threshold h is tuned against that bias by replay.
"""

import math

import numpy as np
import torch

from specray.policies.disco import DiscoClassifier
from specray.policies.specdecpp import AcceptanceHead

W_REJ = 6.0


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """`steps` random minibatch index tensors (an epoch bound would make big domains slow)."""
    for _ in range(steps):
        yield torch.randint(0, n, (min(batch_size, n),), generator=generator)


def train_disco(features: np.ndarray, accepted: np.ndarray, hidden: int = 64, steps: int = 600, batch_size: int = 2048, seed: int = 0) -> DiscoClassifier:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(features).float(), torch.from_numpy(accepted.astype(np.float32))
    model = DiscoClassifier(hidden)
    model.feature_mean.copy_(x.mean(0))
    model.feature_std.copy_(x.std(0).clamp_min(1e-6))
    positives = float(y.mean().clamp(1e-3, 1 - 1e-3))
    w_pos, w_neg = 0.5 / positives, 0.5 / (1 - positives)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for index in _batches(len(x), batch_size, steps, torch.Generator().manual_seed(seed)):
        target = y[index]
        weight = target * w_pos + (1 - target) * w_neg
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[index]), target, weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        model.fc2.bias -= math.log(w_pos / w_neg)
    return model.eval()


def train_specdecpp(hidden: np.ndarray, soft_labels: np.ndarray, depth: int = 3, steps: int = 600, batch_size: int = 1024, seed: int = 0) -> AcceptanceHead:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(hidden).float(), torch.from_numpy(soft_labels.astype(np.float32)).clamp(0, 1)
    head = AcceptanceHead(x.shape[1], depth)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for index in _batches(len(x), batch_size, steps, torch.Generator().manual_seed(seed)):
        logit, target = head(x[index]), y[index]
        loss = -(target * torch.nn.functional.logsigmoid(logit) + W_REJ * (1 - target) * torch.nn.functional.logsigmoid(-logit)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def predict(model: torch.nn.Module, inputs: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """P(accept) per row, in chunks so held-out sets of any size fit."""
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            out.append(torch.sigmoid(model(torch.from_numpy(inputs[start:start + chunk]).float())).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)

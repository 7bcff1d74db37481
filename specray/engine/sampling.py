"""Token distributions and the acceptance rule that keeps speculative decoding lossless.

Greedy and sampling share one rule (Leviathan et al., Chen et al.): accept a draft token with
probability min(1, p/q), resample from normalised max(0, p − q) at the first rejection, and take a
bonus token from p when every draft token is accepted. Greedy is the degenerate case where p and q
are one-hot, so it accepts exactly when the draft token is the target's argmax.
"""

from dataclasses import dataclass

import torch

from specray.schema import TOPK


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means no top-k filter
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def distribution(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The distribution tokens are drawn from: one-hot at the argmax when greedy, else warped softmax."""
    logits = logits.float()
    if sampling.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p; the first token always stays
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(-1)


def soft_distribution(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """What policies and traces see: the sampling distribution, or the plain softmax when greedy.

    Greedy decoding draws from one-hot distributions, which carry no confidence signal; the softmax
    does, and min(1, p/q) over it is the soft acceptance label the learned policies train on.
    """
    return logits.float().softmax(-1) if sampling.greedy else distribution(logits, sampling)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs`; with no generator (greedy) the rows are one-hot and argmax is the draw."""
    if generator is None:
        return probs.argmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class TokenStats:
    """What policies and traces know about one draft token before verification."""

    token_prob: torch.Tensor  # (n,)
    entropy: torch.Tensor  # (n,)
    topk_probs: torch.Tensor  # (n, TOPK)


def token_stats(probs: torch.Tensor, tokens: torch.Tensor) -> TokenStats:
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    topk = torch.topk(probs, min(TOPK, probs.shape[-1]), dim=-1).values
    if topk.shape[-1] < TOPK:
        topk = torch.nn.functional.pad(topk, (0, TOPK - topk.shape[-1]))
    return TokenStats(probs.gather(-1, tokens[:, None]).squeeze(-1), entropy, topk)


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying one sequence's proposal."""

    n_accepted: int
    next_token: int  # the target's correction at the first rejection, or its bonus token


def verify(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    proposal: list[int],
    generator: torch.Generator | None,
) -> Verdict:
    """Accept a prefix of `proposal` so that the output follows the target distribution exactly.

    target_probs: (k+1, V) target distributions at each proposal position and the bonus position.
    draft_probs: (k, V) the distributions the proposal was drawn from.
    """
    k = len(proposal)
    if k:
        idx = torch.tensor(proposal)[:, None]
        p = target_probs[:k].gather(-1, idx).squeeze(-1)
        q = draft_probs.gather(-1, idx).squeeze(-1)
        ratio = torch.where(q > 0, p / q.clamp_min(1e-30), torch.zeros_like(p)).clamp(max=1.0)
        # greedy ratios are exactly 0 or 1, so a zero "uniform" decides them without randomness
        uniform = torch.rand(k, generator=generator) if generator is not None else torch.zeros(k)
        ok = (uniform < ratio).tolist()
    else:
        ok = []
    n = next((j for j, a in enumerate(ok) if not a), k)
    if n < k:
        residual = (target_probs[n] - draft_probs[n]).clamp_min(0)
        residual = residual if residual.sum() > 0 else target_probs[n]
        next_token = int(draw((residual / residual.sum())[None], generator))
    else:
        next_token = int(draw(target_probs[k][None], generator))
    return Verdict(n, next_token)

"""Offline replay of decoding on held-out traces: what a stop rule would have earned, in tokens per ms.

Each logged round is replayed on its own: the rule walks the round's drafted tokens in order, stops
where it would have stopped (or at k_max, or where the logged draft ended), and the round yields the
leading accepted tokens among those kept plus the target's own token. Time comes from a cost model
fitted to the same traces. Rounds are not re-segmented (a shorter draft would have started the next
round earlier, from a different prefix), so rates compare rules fairly but are not wall-clock exact.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Costs:
    """Round time = drafted * draft_ms + verify_base_ms + verify_per_token_ms * (drafted + 1)."""

    draft_ms: float
    verify_base_ms: float
    verify_per_token_ms: float

    def round_ms(self, drafted: np.ndarray) -> np.ndarray:
        return drafted * self.draft_ms + self.verify_base_ms + self.verify_per_token_ms * (drafted + 1)

    @property
    def ratio(self) -> float:
        """Draft cost per token relative to verifying one token: what decides whether speculation pays."""
        return self.draft_ms / (self.verify_base_ms + self.verify_per_token_ms)


def estimate_costs(rounds: np.ndarray) -> Costs:
    """Fit the cost model to logged rounds (lookahead, draft_ms, verify_ms).

    Draft cost per token = total draft time / total tokens drafted. Verify cost is a least-squares line
    in the tokens verified (lookahead + 1) when the traces hold at least two lookaheads; with one, the
    slope cannot be seen and verification counts as flat (true on GPUs at small widths).
    """
    rounds = rounds[(rounds[:, 0] > 0) & np.isfinite(rounds).all(axis=1)]
    if len(rounds) == 0:
        return Costs(draft_ms=0.2, verify_base_ms=1.0, verify_per_token_ms=0.0)  # no timings: assume a 1:5 pair
    lookahead, draft_ms, verify_ms = rounds[:, 0], rounds[:, 1], rounds[:, 2]
    per_token = float(draft_ms.sum() / lookahead.sum())
    if len(np.unique(lookahead)) >= 2:
        slope, intercept = np.polyfit(lookahead + 1, verify_ms, 1)
        slope = max(float(slope), 0.0)
        intercept = float(np.mean(verify_ms - slope * (lookahead + 1)))
    else:
        slope, intercept = 0.0, float(verify_ms.mean())
    return Costs(draft_ms=per_token, verify_base_ms=max(intercept, 1e-6), verify_per_token_ms=slope)


@dataclass(frozen=True)
class Rounds:
    """Held-out rounds as (rounds, K) matrices; `prob` is the policy's P(accept) per drafted token."""

    prob: np.ndarray  # float, NaN past the logged draft
    leading: np.ndarray  # int, accepted tokens among the first j+1 (cumulative, stops at the first rejection)
    length: np.ndarray  # int, tokens the logged round drafted

    @property
    def width(self) -> int:
        return self.prob.shape[1]


def build_rounds(prompt_key: np.ndarray, iteration: np.ndarray, depth: np.ndarray, accepted: np.ndarray, prob: np.ndarray, max_depth: int = 16) -> Rounds:
    """Group token rows into rounds (same prompt and iteration), ordered by depth."""
    keep = (depth >= 1) & (depth <= max_depth)
    prompt_key, iteration, depth, accepted, prob = (a[keep] for a in (prompt_key, iteration, depth, accepted, prob))
    order = np.lexsort((depth, iteration, prompt_key))
    key = np.stack([prompt_key[order], iteration[order].astype(np.int64)], axis=1)
    starts = np.ones(len(order), bool)
    starts[1:] = (key[1:] != key[:-1]).any(axis=1)
    round_of = np.cumsum(starts) - 1
    n, width = int(round_of[-1]) + 1 if len(order) else 0, int(depth.max()) if len(depth) else 1
    col = depth[order].astype(np.int64) - 1
    probs = np.full((n, width), np.nan)
    probs[round_of, col] = prob[order]
    accept = np.zeros((n, width), bool)
    accept[round_of, col] = accepted[order]
    present = ~np.isnan(probs)
    length = np.argmin(np.concatenate([present, np.zeros((n, 1), bool)], axis=1), axis=1)  # up to the first gap
    leading = np.cumsum(np.cumprod(accept, axis=1), axis=1)
    return Rounds(prob=probs, leading=leading, length=length)


def rate(rounds: Rounds, drafted: np.ndarray, costs: Costs) -> float:
    """Tokens per ms when each round drafts `drafted` tokens (>= 1, <= its logged length)."""
    if len(drafted) == 0:
        return 0.0
    tokens = rounds.leading[np.arange(len(drafted)), drafted - 1] + 1
    return float(tokens.sum() / costs.round_ms(drafted).sum())


def first_stop(stop: np.ndarray, rounds: Rounds) -> np.ndarray:
    """Drafted length under a per-token stop mask: the stopping token is kept (Decision.STOP)."""
    stop = stop | np.isnan(rounds.prob)
    hit = stop.any(axis=1)
    return np.where(hit, stop.argmax(axis=1) + 1, rounds.width)


def static_lengths(rounds: Rounds, k: int) -> np.ndarray:
    return np.clip(np.minimum(k, rounds.length), 1, None)


def disco_lengths(rounds: Rounds, tau: float, k_max: int) -> np.ndarray:
    """DISCO: stop at the first token whose P(accept) < tau."""
    with np.errstate(invalid="ignore"):
        stop = first_stop(rounds.prob < tau, rounds)
    return np.clip(np.minimum.reduce([stop, np.full_like(stop, k_max), rounds.length]), 1, None)


def specdecpp_lengths(rounds: Rounds, h: float, k_max: int) -> np.ndarray:
    """SpecDec++: stop once P(some token so far is rejected) = 1 - prod P >= h."""
    survival = np.cumprod(np.nan_to_num(rounds.prob, nan=1.0), axis=1)
    stop = first_stop(1 - survival >= h, rounds)
    return np.clip(np.minimum.reduce([stop, np.full_like(stop, k_max), rounds.length]), 1, None)


def best_static(rounds: Rounds, costs: Costs) -> tuple[int, float]:
    """The static K (1..width) with the highest replayed rate."""
    rates = {k: rate(rounds, static_lengths(rounds, k), costs) for k in range(1, rounds.width + 1)}
    k = max(rates, key=rates.get)
    return k, rates[k]


def tune(rounds: Rounds, costs: Costs, lengths, thresholds: np.ndarray) -> tuple[float, int, float]:
    """The (threshold, k_max) pair with the highest replayed rate, for a rule `lengths(rounds, t, k)`."""
    best = (float(thresholds[0]), rounds.width, -1.0)
    for t in thresholds:
        for k in range(1, rounds.width + 1):
            r = rate(rounds, lengths(rounds, float(t), k), costs)
            if r > best[2]:
                best = (round(float(t), 4), k, r)
    return best

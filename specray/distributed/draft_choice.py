"""`draft: auto`: which draft source a domain's next batch uses, chosen by Thompson sampling on measured speed.

The reward of a batch is its throughput: new tokens over the batch's wall time as the worker measured it
(the longest sequence's `wall_ms`, so queueing in front of the worker does not count). Each source's mean
log-throughput gets a Gaussian posterior; every batch draws one value per source from its posterior and
runs the source whose draw is highest.

Why Thompson sampling on log tokens/s: a job sees tens of batches per domain, not thousands, and batch
throughput is noisy (prompt lengths, early EOS). Thompson spends batches on a source in proportion to the
chance that it is the best, so a source that is clearly slower (n-gram lookup on chat) stops being tried
after a batch or two, while two close sources keep being compared; UCB would need a bonus scale in
tokens/s that no one knows before the run. Logs, because speed differences are ratios.

The prior is the registry's per-source throughput for the domain (`specray retrain` replays label runs that
drafted with every source). It carries ratios only (label runs time whole label batches, not this job's
batches), so it enters as pseudo-batches per source at `anchor + log(prior ratio)`, where the anchor is
fitted to the live batches; as many pseudo-batches as the prior weighs (`DraftPrior.batches`: one per
label prompt behind it, at most a few). Without a prior, every source is tried once, in the configured order, first
(a source with a batch in flight counts as tried, so batches dispatched together try different sources).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from specray.policies.draft_prior import DraftPrior

DEFAULT_SIGMA = 0.25  # log-throughput noise assumed until two batches of one source measure it
MIN_SIGMA = 0.03


@dataclass
class SourceStats:
    """What one source measured in this domain so far."""

    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    log_sum: float = 0.0  # sum of log(tokens/s) per batch
    log_sq: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 else None

    @property
    def log_mean(self) -> float:
        return self.log_sum / self.batches


def batch_speed(new_tokens: list[int], wall_ms: list[float]) -> tuple[int, float]:
    """(tokens, seconds) of one batch: its rows run together, so the batch lasts as long as its longest row."""
    return int(sum(new_tokens)), max(wall_ms, default=0.0) / 1e3


class DraftChooser:
    """Thompson sampling over `sources` for one domain, primed by the registry's `prior` when there is one."""

    def __init__(self, sources: tuple[str, ...], prior: DraftPrior | None = None, seed: int | str = 0):
        if not sources:
            raise ValueError("auto draft selection needs at least one source")
        self.sources = tuple(sources)
        self.stats = {s: SourceStats() for s in self.sources}
        self.pending = {s: 0 for s in self.sources}  # batches chosen and not yet recorded or cancelled
        known = {s: v for s, v in (prior.speeds if prior else {}).items() if s in self.stats and v > 0}
        top = max(known.values(), default=1.0)
        self.prior = {s: math.log(v / top) for s, v in known.items()}  # log ratio to the fastest
        self.prior_batches = {s: prior.batches[s] for s in known}
        self.rng = np.random.default_rng(zlib.crc32(str(seed).encode()))

    def choose(self) -> str:
        """The source for the next batch."""
        untried = [s for s in self.sources if self.stats[s].batches == 0 and s not in self.prior]
        waiting = [s for s in untried if not self.pending[s]]
        if waiting or untried:
            choice = (waiting or untried)[0]
        else:
            anchor, sigma = self._anchor(), self.sigma()
            draws = {}
            for s in self.sources:
                mean, weight = self.posterior(s, anchor)
                draws[s] = mean + sigma / math.sqrt(weight) * self.rng.standard_normal()
            choice = max(draws, key=draws.get)
        self.pending[choice] += 1
        return choice

    def cancel(self, source: str) -> None:
        """A chosen batch that failed: it measured nothing."""
        self.pending[source] = max(0, self.pending[source] - 1)

    def record(self, source: str, tokens: int, seconds: float) -> None:
        """One finished batch of `source`; a batch that generated nothing or took no time says nothing."""
        self.cancel(source)
        if tokens <= 0 or seconds <= 0:
            return
        s = self.stats[source]
        value = math.log(tokens / seconds)
        s.batches, s.tokens, s.seconds = s.batches + 1, s.tokens + tokens, s.seconds + seconds
        s.log_sum, s.log_sq = s.log_sum + value, s.log_sq + value * value

    def posterior(self, source: str, anchor: float) -> tuple[float, float]:
        """(mean log tokens/s, weight in batches) of `source`: its live batches plus the prior's pseudo-batches."""
        s = self.stats[source]
        if source not in self.prior:
            return s.log_mean, s.batches
        pseudo = self.prior_batches[source]
        weight = s.batches + pseudo
        return (s.log_sum + pseudo * (anchor + self.prior[source])) / weight, weight

    def sigma(self) -> float:
        """Pooled within-source standard deviation of batch log-throughput."""
        dof = sum(s.batches - 1 for s in self.stats.values() if s.batches > 1)
        if dof < 1:
            return DEFAULT_SIGMA
        sq = sum(s.log_sq - s.log_sum ** 2 / s.batches for s in self.stats.values() if s.batches > 1)
        return max(math.sqrt(max(sq, 0.0) / dof), MIN_SIGMA)

    def best(self) -> str | None:
        """The source with the highest posterior mean (what exploitation picks); None before any evidence."""
        if not any(s.batches for s in self.stats.values()) and not self.prior:
            return None
        anchor = self._anchor()
        means = {s: self.posterior(s, anchor)[0] for s in self.sources if self.stats[s].batches or s in self.prior}
        return max(means, key=means.get)

    def evidence(self) -> dict:
        """Per source: batches, tokens, seconds, tokens/s and the prior ratio; plus the current best."""
        return {
            "best": self.best(),
            "sources": {
                s: {"batches": st.batches, "tokens": st.tokens, "seconds": round(st.seconds, 4),
                    "tokens_per_s": st.tokens_per_s, "prior_ratio": math.exp(self.prior[s]) if s in self.prior else None,
                    "prior_batches": self.prior_batches.get(s)}
                for s, st in self.stats.items()
            },
        }

    def _anchor(self) -> float:
        """The live scale of the prior's ratios: mean over measured sources of (live log mean - prior log ratio)."""
        fits = [self.stats[s].log_mean - p for s, p in self.prior.items() if self.stats[s].batches]
        return sum(fits) / len(fits) if fits else 0.0

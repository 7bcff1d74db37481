"""The driver's progress bar: prompts done of total, tokens/s, and acceptance per domain.

Totals here are exact (summed from committed batches); the policy actors' EMAs follow drift instead.
Tokens/s is new tokens of committed batches over seconds since the models loaded, printed with one
decimal below 10: rounded to a whole number, a CPU run's first minutes read `0 tok/s`. The bar is
redrawn on every commit, so the rate shown is never older than the last finished batch.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from specray.totals import Totals
from specray.distributed.summary import rate


class Progress:
    def __init__(self, total: int | None, job: str = "generate"):
        self.bar = tqdm(total=total, desc=job, unit="prompt", dynamic_ncols=True, mininterval=1.0)
        self.start = time.monotonic()
        self.first_result: float | None = None  # seconds from begin() to the first commit of this session
        self.skipped = 0
        self.per_domain: dict[str, Totals] = {}

    def begin(self) -> None:
        """Start the clock of tokens/s and of the summary's seconds: the models are loaded."""
        self.start = time.monotonic()

    def skip(self, n: int) -> None:
        """Rows a previous session already committed count as done."""
        self.skipped += n
        self.bar.update(n)

    def done(self, prompts: int, totals: list[tuple[str, Totals]]) -> None:
        """`prompts` newly committed (results or errors), and the (domain, totals) of the batches among them."""
        if self.first_result is None and totals:
            self.first_result = self.seconds
        for domain, t in totals:
            self.per_domain[domain] = self.per_domain.get(domain, Totals()) + t
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.update(prompts)
        if self.bar.last_print_n != self.bar.n:  # update() waits out tqdm's mininterval; a commit is worth a redraw now
            self.bar.refresh()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    @property
    def new_tokens(self) -> int:
        return sum(t.new_tokens for t in self.per_domain.values())

    def postfix(self) -> str:
        rates = " ".join(f"{d}={t.acceptance:.2f}" for d, t in sorted(self.per_domain.items()) if t.acceptance is not None)
        return f"{rate(self.new_tokens / max(self.seconds, 1e-9))} tok/s" + (f" | accept {rates}" if rates else "")

    def close(self) -> None:
        self.bar.close()

"""Token counts summed over sequences, in one place: a benchmark's tally, the job's progress bar and a
policy actor's live stats all add the same five numbers, so a count added here reaches every one.

No torch: the driver and the policy actors import it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Totals:
    """Prompts, new tokens, iterations, drafted and accepted tokens, summed."""

    prompts: int = 0
    new_tokens: int = 0
    iterations: int = 0
    drafted: int = 0
    accepted: int = 0

    @classmethod
    def of(cls, results: pa.Table) -> Totals:
        """Summed over RESULT_SCHEMA rows."""
        sums = {name: pc.sum(results[name]).as_py() or 0 for name in ("new_tokens", "iterations", "drafted", "accepted")}
        return cls(prompts=results.num_rows, **sums)

    @classmethod
    def of_sequence(cls, sequence) -> Totals:
        """One decoded sequence (anything with `tokens`, `iterations`, `drafted` and `accepted`)."""
        return cls(1, len(sequence.tokens), sequence.iterations, sequence.drafted, sequence.accepted)

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def acceptance(self) -> float | None:
        """Accepted / drafted tokens; None before anything was drafted."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def accepted_per_iteration(self) -> float | None:
        return self.accepted / self.iterations if self.iterations else None

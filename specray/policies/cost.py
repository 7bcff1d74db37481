"""Speculate only when it pays: measured costs and the stopping rule that uses them.

On a GPU verifying a few tokens costs about as much as decoding one; on a CPU verifying 5 tokens
costs ~1.8x verifying one. A fixed lookahead that wins on one machine loses on the other, so the
engine measures, per batch size, the draft's cost per step and the target's cost to verify n tokens,
and the gate keeps a draft token only while it raises the expected tokens per unit of time:

    rate(k) = E[tokens | k drafted] / (k * draft_ms + verify_ms(k + 1)),
    E[tokens | k] = 1 + sum_{i<=k} prod_{j<=i} a_j,

where a_j is the policy's estimate that token j is accepted given the ones before were. This is
SpecDec++'s stopping rule with the cost constants measured instead of assumed. Tokens proposed by
n-gram lookup run no draft forward, so for those rows the draft term is zero ("free").

Forwards are not all a round costs. A round that drafts also pays the engine's own work around them
(token statistics per depth, the wider verification's bookkeeping, a feature-level draft's catch-up
read), and a gate blind to it drafts where drafting loses:
measured on the embedded pair at batch 16 in bf16, a drafting round took 34 ms beyond its predicted
forwards and a plain round 4 ms (plain rounds take ~50 ms), and cost-aware policies ran at 0.76-0.80x
target-only. So every round's time outside its model forwards (as timed) is learned apart for drafting
and plain rounds, and the gate charges a drafting round the difference (`drafting_overhead_ms`). The
time is taken as measured, not against what the table predicts for the forwards: a ragged verification
runs packed (`specray.engine.packing`), cheaper than the widest row the table prices it at, and the
saving, left in such rounds' residual, made every drafting round look cheap, the narrow one that decides
whether to draft at all included (at batch 32, `heuristic` then drafted most rounds at 0.92x target-only).

Nor are a policy's acceptance estimates to be taken on trust: measured on an AVX-512 CPU at batch 4,
`confidence` rounds the gate let draft expected 0.62 accepted tokens and got 0.36, and drafted at
0.85x target-only. So each batch keeps a `GainCalibration` (accepted tokens over the tokens the
estimates expected, over its drafting rounds) and the gate is handed the estimates scaled by it. Two kinds
of estimate meet the gate, and each is believed as far as its own record bears it out: whether to draft
at all is asked before any draft token exists, of each row's running acceptance rate, and is believed by
how many first tokens such rates won (`BatchState.opening`); each depth is ruled on with the policy's own
estimate of the token drafted, believed by how many tokens those won (`BatchState.calibration`). A
learned policy's estimates are not its running rates: measured at batch 1 (12 held-out prompts, bf16,
in turns), DISCO's classifier promised ~1.3x what was accepted, and believing the running rates by that
record too kept a third of its rounds plain (`disco` 1.212x target-only, 1.245x with the rates believed by
their own record; `specdecpp` 1.036x and 1.224x).
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from specray.averages import ema
from specray.policies.base import Decision


@dataclass
class BatchCosts:
    draft_ms: float | None = None
    verify_ms: dict[int, float] = field(default_factory=dict)  # tokens verified per row -> ms, as calibrated
    load: float = 1.0  # live verifications over the calibrated curve (machine load, longer contexts)
    catch_up_load: float | None = None  # live catch-up reads over their estimate (`CostModel.catch_up_ms`); None: none seen
    residual_ms: dict[bool, float] = field(default_factory=dict)  # drafted? -> a round's wall time beyond its forwards
    fit: tuple[np.ndarray, np.ndarray] | None = None  # verify_ms as (widths, their non-decreasing fit), once per record

    def verify_curve(self, widths: np.ndarray) -> np.ndarray:
        """The calibrated verification times at `widths` (`_verify_curve`), the table fitted once per recording
        (the gate reads it several times a round)."""
        if self.fit is None:
            known = sorted(self.verify_ms)
            self.fit = np.array(known, dtype=np.float64), monotone(np.array([self.verify_ms[w] for w in known], dtype=np.float64))
        return _verify_curve(*self.fit, widths)


class CostModel:
    """Forward times measured at start-up per batch size, kept honest by live forwards.

    `record_*` fills the table (calibration); `observe_*` moves it toward what live forwards took, an
    exponential moving average, so the table follows the machine when it gets busy and back, and the
    longer contexts of real rounds. A live verification scales its batch size's whole curve (`load`),
    not the one width it ran at: plain rounds verify one token per row, and when only that entry
    followed the contexts' growth, wider verifications looked cheaper than narrow ones (measured at
    batch 4: width 1 moved from 40 to 54 ms while width 2 stayed at 45-50), and the gate drafted at a
    loss. Batch sizes between measured ones are interpolated linearly (their forwards refine nothing);
    `smoothing=0` ignores live timings.
    """

    def __init__(self, smoothing: float = 0.2):
        self.smoothing = smoothing
        self.batches: dict[int, BatchCosts] = {}

    def record_draft(self, batch_size: int, ms: float) -> None:
        self.batches.setdefault(batch_size, BatchCosts()).draft_ms = ms

    def record_verify(self, batch_size: int, width: int, ms: float) -> None:
        costs = self.batches.setdefault(batch_size, BatchCosts())
        costs.verify_ms[width], costs.fit = ms, None

    def measured(self, batch_size: int) -> bool:
        costs = self.batches.get(batch_size)
        return costs is not None and costs.draft_ms is not None and len(costs.verify_ms) >= 2

    def calibrated(self, batch_size: int) -> bool:
        """Whether a measured batch size at least this large exists to interpolate from."""
        return any(self.measured(b) for b in self.batches if b >= batch_size)

    def observe_draft(self, batch_size: int, ms: float) -> None:
        if self.measured(batch_size):
            costs = self.batches[batch_size]
            costs.draft_ms = ema(costs.draft_ms, ms, 1 - self.smoothing)

    def observe_verify(self, batch_size: int, widths: torch.Tensor, ms: float) -> None:
        """A verification of `widths` [B] tokens a row took `ms`. Only one as wide in every row scales the curve:
        that is what the calibration timed. Rows of different widths run packed (`specray.engine.packing`),
        cheaper than their widest row, as which the gate prices them; taken as load, such a verification
        would lower the price of plain rounds as well."""
        width = int(widths[0])
        if self.measured(batch_size) and bool((widths == width).all()):
            costs = self.batches[batch_size]
            calibrated = float(costs.verify_curve(np.array([width]))[0])
            costs.load = ema(costs.load, ms / calibrated, 1 - self.smoothing)

    def observe_catch_up(self, batch_size: int, width: int, ms: float) -> None:
        """A draft forward took `ms` to read up to `width` tokens a row that the rows skipped (against a draft
        step priced at nothing, there is nothing to scale)."""
        if not self.measured(batch_size):
            return
        costs = self.batches[batch_size]
        estimate = _catch_up_estimate(costs, width)
        if estimate > 0:
            costs.catch_up_load = ema(costs.catch_up_load, ms / estimate, 1 - self.smoothing)

    def catch_up_ms(self, batch_size: int, width: int) -> float:
        """What the draft's read of up to `width` skipped tokens a row costs at this batch size: a draft step,
        grown with width as the target's calibrated verification grows (both are a decoder's forward over that
        many new tokens), scaled by what live catch-ups took over that estimate. Before one is seen, the
        estimate alone: priced at 0 until seen, the first probe at batch 32 read whole prompts the draft had
        skipped while the batch idled (140-220 ms, ~2x a plain round): about twice the exploration share of a
        64-prompt run."""
        def priced(costs: BatchCosts) -> float:
            load = 1.0 if costs.catch_up_load is None else costs.catch_up_load
            return _catch_up_estimate(costs, width) * load

        return self._between_batches(batch_size, priced)

    def observe_round(self, batch_size: int, drafted: bool, ms: float, forward_ms: float) -> None:
        """A whole round, drafting or plain, took `ms`, `forward_ms` of it in model forwards (both beyond any
        catch-up read, which `observe_catch_up` keeps apart: it is paid once after idle rounds, not by every
        drafting round)."""
        if self.measured(batch_size):
            residuals = self.batches[batch_size].residual_ms
            residuals[drafted] = ema(residuals.get(drafted), ms - forward_ms, 1 - self.smoothing)

    def drafting_overhead_ms(self, batch_size: int) -> float:
        """What a drafting round costs beyond its forwards, over what a plain round does (0 until a drafting round
        is seen). Until a plain round is seen, plain rounds are taken to cost their forwards alone, which charges
        drafting a plain round's small residual too much (~2 ms of ~60 at batch 32): waiting for one instead let a
        batch that drafted from its first round never learn its drafting rounds' overhead. Measured on the
        embedded pair at batch 32 (bf16, AMX; in process, a policy per prompt): `confidence` drafted 98 of 104 rounds
        at 92 ms a round against 62 for target-only's, the gate pricing them as 87 against 69; in `specray bench` it ran
        at 0.88x target-only."""
        def overhead(costs: BatchCosts) -> float:
            seen = costs.residual_ms
            return max(0.0, seen[True] - seen.get(False, 0.0)) if True in seen else 0.0

        return self._between_batches(batch_size, overhead)

    def draft_ms(self, batch_size: int) -> float:
        """One draft step at this batch size."""
        return self._between_batches(batch_size, lambda costs: costs.draft_ms)

    def verify_ms(self, batch_size: int, widths: np.ndarray) -> np.ndarray:
        """Verifying `widths` tokens per row at this batch size."""
        return self._between_batches(batch_size, lambda costs: costs.load * costs.verify_curve(widths))

    def _between_batches(self, batch_size: int, value):
        """`value` of the measured table at `batch_size`, linear between the nearest measured sizes."""
        sizes = sorted(b for b in self.batches if self.measured(b))
        above = next(b for b in sizes if b >= batch_size)
        below = max((b for b in sizes if b <= batch_size), default=above)
        if below == above:
            return value(self.batches[above])
        weight = (batch_size - below) / (above - below)
        return (1 - weight) * value(self.batches[below]) + weight * value(self.batches[above])


def _catch_up_estimate(costs: BatchCosts, width: int) -> float:
    """A draft step over `width` tokens a row: its one-token time, grown as the target's verification grows."""
    curve = costs.verify_curve(np.array([1, max(width, 1)]))
    return costs.draft_ms * float(curve[1] / curve[0])


def _verify_curve(known: np.ndarray, times: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Verification times measured at widths `known`, read through their nearest non-decreasing fit `times`
    (`monotone`: a wider verification never costs less than a narrower one, and one slow sample moves its
    neighbours a little, where a running maximum raised every wider width to it), interpolated over
    `widths`; beyond the widest, the line through the two widest."""
    verify = np.interp(widths, known, times)
    slope = (times[-1] - times[-2]) / (known[-1] - known[-2])
    beyond = widths > known[-1]
    verify[beyond] = times[-1] + slope * (widths[beyond] - known[-1])
    return verify


def monotone(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest `values` in least squares: adjacent values that fall are pooled
    into their mean until none does (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count] of each pooled run
    for value in values.tolist():
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (mean, count), (last, n) = blocks[-2], blocks.pop()
            blocks[-1] = [(mean * count + last * n) / (count + n), count + n]
    return np.repeat([mean for mean, _ in blocks], [count for _, count in blocks])


class GainCalibration:
    """Accepted tokens over the tokens the policy's estimates expected, over the drafting rounds seen so
    far: sums decaying by `decay` a round, starting from `prior` tokens expected and accepted alike (the
    estimates are trusted until rounds say otherwise)."""

    def __init__(self, decay: float = 0.9, prior: float = 2.0):
        self.decay, self.expected, self.accepted = decay, prior, prior

    def observe(self, expected: float, accepted: float) -> None:
        """A round: its estimates expected `expected` accepted tokens, the target accepted `accepted` (a round
        that drafted nothing says nothing)."""
        if expected <= 0:
            return
        self.expected = self.decay * self.expected + expected
        self.accepted = self.decay * self.accepted + accepted

    @property
    def factor(self) -> float:
        return self.accepted / self.expected

    def believed(self, estimates: torch.Tensor) -> torch.Tensor:
        """What `estimates` of the kind this record keeps are taken to be worth: scaled by how far the record
        bore them out, still probabilities."""
        return (estimates * self.factor).clamp(max=1.0)


class CostGate:
    """Applies the rate rule to the whole batch, since the batch pays for a round as one.

    A draft step is one forward for every row, and verification pads every row to the widest, so one
    optimistic row would make the whole batch wait through its draft and widen its verification. The
    gate therefore weighs the batch's expected tokens, summed over rows, against the round's measured
    time: draft at all only when the sum of the rows' first-token acceptances pays for a step and a
    wider verification; keep a depth only while the rows' expected gains from it, summed, beat what it
    costs; stop every row when another step (each token as likely as its last) would lower the rate.
    Rows' own policies still stop their own rows earlier. At batch size 1 this is the per-row rule.
    The gate prices; what it is asked about comes believed by the record of its kind (`GainCalibration`).
    """

    def __init__(self, costs: CostModel, batch_size: int):
        self.costs, self.batch_size = costs, batch_size
        self.verify_prices = np.zeros(0)  # [W] verifying 1..W tokens per row, read from the table as needed

    @cached_property
    def plain_ms(self) -> float:
        """A round that drafts nothing (the budget weighs it before anything of this round is timed)."""
        return self.round_ms(0, 1)

    @cached_property
    def step_prices(self) -> tuple[float, float]:
        """(a draft step, a drafting round's overhead) in ms at this batch size."""
        return self.costs.draft_ms(self.batch_size), self.costs.drafting_overhead_ms(self.batch_size)

    def round_ms(self, steps: int, width: int) -> float:
        """A round of `steps` paid draft forwards and a verification `width` tokens wide, plus the drafting
        overhead if it drafts, priced from the table as it stood when the gate was first asked (a gate lives
        for one round, and is asked a few times at every depth: reading the table each time cost ~1 ms a depth
        at batch 16, under a profiler)."""
        if width > len(self.verify_prices):
            self.verify_prices = self.costs.verify_ms(self.batch_size, np.arange(1, 2 * width + 1))
        draft_ms, overhead_ms = self.step_prices
        return steps * draft_ms + float(self.verify_prices[width - 1]) + (overhead_ms if width > 1 else 0.0)

    def worth_drafting(self, acceptance: torch.Tensor, free: torch.Tensor | None = None, owed_ms: float = 0.0) -> bool:
        """Before a round: do the rows' first tokens, accepted with these probabilities, beat not drafting?

        `acceptance` (n,) covers every row in the batch (0 for a row that may not draft), as believed
        (`GainCalibration.believed` of the opening record); `free` marks rows whose tokens cost no draft
        forward (n-gram lookup), so the step is paid only if some other row drafts, and with it `owed_ms`
        (the draft's share of a catch-up read, which only a paid step makes).
        """
        drafting = acceptance > 0
        paid = bool((drafting & ~free).any()) if free is not None else bool(drafting.any())
        rows = len(acceptance)
        round_ms = self.round_ms(int(paid), 2) + (owed_ms if paid else 0.0)
        return (rows + float(acceptance.sum())) / round_ms > rows / self.plain_ms

    def decide(
        self,
        decision: torch.Tensor,
        depth: int,
        steps: int,
        accept_prob: torch.Tensor,
        survival: torch.Tensor,
        expected: float,
        free: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gate this depth's tokens for the rows still drafting, all together.

        `accept_prob`: the rows' estimates as believed (`BatchState.calibration`); `steps` draft forwards
        were paid this round so far (this depth's included); `survival` is each drafting row's P(all its
        tokens so far accepted) before this one; `expected` the whole batch's
        expected tokens before this depth; `free` marks n-gram rows (the next step costs nothing if all are).
        """
        gain = float((survival * accept_prob).sum())
        keep_rate = (expected + gain) / self.round_ms(steps, depth + 1)
        keep = keep_rate >= expected / self.round_ms(steps, depth)
        next_gain = float((survival * accept_prob * accept_prob).sum())
        paid_next = steps + int(free is None or not bool(free.all()))
        more = (expected + gain + next_gain) / self.round_ms(paid_next, depth + 2) > keep_rate
        gated = decision.clone()
        if not more:
            gated[decision == Decision.CONTINUE] = Decision.STOP
        if not keep:
            gated[:] = Decision.DROP
        return gated

"""The batch-level cost gate, decided from a given cost table: the batch pays for a round as one."""

import numpy as np
import pytest
import torch

from specray.policies.base import Decision
from specray.policies.cost import CostGate, CostModel

CONTINUE, STOP, DROP = Decision.CONTINUE, Decision.STOP, Decision.DROP


def table(batch: int, draft_ms: float, verify: dict[int, float]) -> CostGate:
    costs = CostModel(smoothing=0.0)
    costs.record_draft(batch, draft_ms)
    for width, ms in verify.items():
        costs.record_verify(batch, width, ms)
    return CostGate(costs, batch)


VERIFY = {1: 50.0, 2: 55.0, 3: 60.0, 5: 70.0, 9: 90.0}  # ms per verification of w tokens per row


def test_one_optimistic_row_does_not_make_the_batch_draft():
    gate = table(8, draft_ms=5.0, verify=VERIFY)  # a step plus a wider verification costs 20% of a round
    one_keen = torch.tensor([0.9] + [0.05] * 7)
    assert not gate.worth_drafting(one_keen), "7 rows would wait for 1 row's gain"
    assert gate.worth_drafting(torch.full((8,), 0.5))
    assert table(1, 5.0, VERIFY).worth_drafting(torch.tensor([0.9])), "alone, the keen row pays for itself"


def test_free_ngram_rows_need_no_draft_step():
    gate = table(4, draft_ms=40.0, verify=VERIFY)
    acceptance = torch.full((4,), 0.3)
    assert not gate.worth_drafting(acceptance, free=torch.tensor([False] * 4))
    assert gate.worth_drafting(acceptance, free=torch.tensor([True] * 4))
    assert not gate.worth_drafting(acceptance, free=torch.tensor([True, True, True, False])), "one model row pays the step"


def test_what_drafting_rounds_cost_beyond_their_forwards_is_learned_and_charged():
    """Rounds are timed whole: the residual over the predicted forwards, drafting minus plain, is charged to
    every drafting round, and a batch that drafted on forwards alone stops drafting once it is known."""
    gate = table(8, draft_ms=5.0, verify=VERIFY)
    costs, acceptance = gate.costs, torch.full((8,), 0.3)
    assert gate.worth_drafting(acceptance), "on forwards alone, 2.4 more tokens pay for a 10 ms step and wider check"
    for _ in range(3):
        costs.observe_round(8, drafted=1, steps=1, ms=5.0 + 55.0 + 14.0)
        assert costs.drafting_overhead_ms(8) == 0.0, "no plain round seen yet: nothing to compare with"
    costs.observe_round(8, drafted=0, steps=0, ms=50.0 + 2.0)
    assert costs.drafting_overhead_ms(8) == pytest.approx(12.0)
    assert float(costs.round_ms(8, torch.tensor([2]))[0]) == pytest.approx(2 * 5.0 + 60.0 + 12.0)
    assert float(costs.round_ms(8, torch.tensor([0]))[0]) == pytest.approx(50.0), "plain rounds pay no overhead"
    assert not gate.worth_drafting(acceptance)
    costs.observe_round(3, drafted=1, steps=1, ms=500.0)
    assert 3 not in costs.batches, "an unmeasured batch size learns nothing"


def test_a_depth_is_kept_and_continued_only_while_the_batch_gains():
    gate = table(2, draft_ms=5.0, verify=VERIFY)
    wanted = torch.tensor([CONTINUE, CONTINUE])
    # depth 1, both rows likely: (2 + 1.8) / (5 + 55) beats 2 / (5 + 50), and a second step looks worth it too
    assert gate.decide(wanted, 1, 1, torch.tensor([0.9, 0.9]), torch.ones(2), 2.0).tolist() == [CONTINUE, CONTINUE]
    # depth 1, both unlikely: the wider verification is not worth 0.1 tokens: drop the depth for every row
    assert gate.decide(wanted, 1, 1, torch.tensor([0.05, 0.05]), torch.ones(2), 2.0).tolist() == [DROP, DROP]
    # keep this depth but stop: (2 + 0.6) / 60 > 2 / 55, while a second step (+0.18) would lower the rate
    assert gate.decide(wanted, 1, 1, torch.tensor([0.3, 0.3]), torch.ones(2), 2.0).tolist() == [STOP, STOP]


def test_a_policys_own_stop_stands():
    gate = table(2, draft_ms=5.0, verify=VERIFY)
    wanted = torch.tensor([STOP, CONTINUE])
    assert gate.decide(wanted, 1, 1, torch.tensor([0.9, 0.9]), torch.ones(2), 2.0).tolist() == [STOP, CONTINUE]


def test_costs_between_measured_batch_sizes_are_interpolated():
    costs = CostModel(smoothing=0.0)
    for batch, scale in ((1, 1.0), (4, 2.0)):
        costs.record_draft(batch, 4.0 * scale)
        for width, ms in VERIFY.items():
            costs.record_verify(batch, width, ms * scale)
    assert costs.calibrated(3) and not costs.calibrated(5), "no extrapolation past the largest measured batch"
    assert costs.draft_ms(2) == pytest.approx(4.0 * (1 + 1 / 3))
    assert float(costs.round_ms(3, torch.tensor([1]))[0]) == pytest.approx((4.0 + 55.0) * (1 + 2 / 3))


def test_live_timings_move_the_entries_they_ran_at():
    """Measured on a quiet machine, then the machine gets twice as busy: the widths rounds run at follow."""
    costs = CostModel(smoothing=0.5)
    costs.record_draft(2, 5.0)
    for width, ms in VERIFY.items():
        costs.record_verify(2, width, ms)
    for _ in range(12):
        for width in (1, 2):
            costs.observe_verify(2, width, 2 * VERIFY[width])
        costs.observe_draft(2, 2 * 5.0)
        costs.observe_verify(3, 1, 1000.0)  # between measured batch sizes: interpolated, refines nothing
    assert costs.verify_ms(2, np.array([1, 2, 5])).tolist() == pytest.approx([100.0, 110.0, 70.0], rel=1e-3)
    assert costs.draft_ms(2) == pytest.approx(10.0, rel=1e-3)
    assert CostGate(costs, 2).round_ms(1, 2) == pytest.approx(10.0 + 110.0, rel=1e-3)


def test_the_round_budget_idles_then_probes_one_token_per_row(target, draft, tokenizer):
    """When nothing pays the round is target decoding; after PROBE_EVERY idle rounds the batch tries one token,
    and waits twice as long after each probe that leaves drafting unpaid."""
    from specray.engine.batch_state import BatchState, Sequence
    from specray.engine.budget import PROBE_EVERY, plan_round
    from specray.policies.factory import make_policy

    costs = CostModel(smoothing=0.0)
    costs.record_draft(3, 50.0)
    for width, ms in VERIFY.items():
        costs.record_verify(3, width, ms * width)  # verification cost grows with width: drafting never pays
    state = BatchState([Sequence(i, str(i), [5, 6, 7], 3) for i in range(3)], 3, target, draft, {2}, tokenizer)
    state.active, state.waiting = list(state.waiting), []
    policy = make_policy("heuristic")
    policy.reset(3)
    budgets = [plan_round(state, policy, costs, max_new_tokens=32) for _ in range(7 * PROBE_EVERY)]
    drafting = [int(b.tokens.sum()) for b in budgets]
    probes = [i + 1 for i, n in enumerate(drafting) if n]
    assert set(drafting) == {0, 3}, "idle rounds, and probes of one token per row"
    assert probes == [PROBE_EVERY, 3 * PROBE_EVERY, 7 * PROBE_EVERY], "each probe that does not pay doubles the wait"
    costs.record_draft(3, 0.0)
    for width in VERIFY:
        costs.record_verify(3, width, VERIFY[1])  # now verification is as cheap at any width: drafting pays
    assert plan_round(state, policy, costs, 32).gate is not None and state.probe_every == PROBE_EVERY, "a round that pays resets the wait"
    assert all(b.gate is None for b in budgets), "a probe is not gated"
    ungated = make_policy("heuristic:cost=off")
    ungated.reset(3)
    assert plan_round(state, ungated, costs, 32).tokens.tolist() == [4, 4, 4]


def test_live_timings_correct_a_disturbed_entry_of_the_table():
    """A width whose start-up timing was disturbed (10x) is corrected by the rounds that really run at it."""
    costs = CostModel(smoothing=0.3)
    costs.record_draft(1, 3.0)
    for width, ms in {**VERIFY, 3: 600.0}.items():
        costs.record_verify(1, width, ms)
    for _ in range(40):
        for width in (1, 3):
            costs.observe_verify(1, width, VERIFY[width])
    assert costs.verify_ms(1, np.array([3]))[0] == pytest.approx(VERIFY[3], rel=0.05)
    assert costs.verify_ms(1, np.array([1]))[0] == pytest.approx(VERIFY[1], rel=0.05)

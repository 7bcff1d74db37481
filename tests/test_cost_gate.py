"""The batch-level cost gate, decided from a given cost table: the batch pays for a round as one."""

import numpy as np
import pytest
import torch

from conftest import in_flight
from specray.engine.kv_cache import SlotCache
from specray.policies.base import Decision
from specray.policies.cost import CostGate, CostModel, monotone

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
    """Rounds are timed whole: their time beyond their timed forwards, drafting minus plain, is charged to
    every drafting round, and a batch that drafted on forwards alone stops drafting once it is known."""
    gate = table(8, draft_ms=5.0, verify=VERIFY)
    costs, acceptance = gate.costs, torch.full((8,), 0.3)
    assert gate.worth_drafting(acceptance), "on forwards alone, 2.4 more tokens pay for a 10 ms step and wider check"
    costs.observe_round(8, drafted=True, ms=5.0 + 55.0 + 14.0, forward_ms=5.0 + 55.0)
    assert costs.drafting_overhead_ms(8) == pytest.approx(14.0), "no plain round seen yet: it is taken to cost its forwards"
    assert not CostGate(costs, 8).worth_drafting(acceptance)
    costs.observe_round(8, drafted=False, ms=50.0 + 2.0, forward_ms=50.0)
    assert costs.drafting_overhead_ms(8) == pytest.approx(12.0)
    assert CostGate(costs, 8).round_ms(2, 3) == pytest.approx(2 * 5.0 + 60.0 + 12.0)
    assert CostGate(costs, 8).round_ms(0, 1) == pytest.approx(50.0), "plain rounds pay no overhead"
    assert gate.worth_drafting(acceptance), "a gate prices its round from the table as it stood when it was made"
    assert not CostGate(costs, 8).worth_drafting(acceptance)
    costs.observe_round(3, drafted=True, ms=500.0, forward_ms=60.0)
    assert 3 not in costs.batches, "an unmeasured batch size learns nothing"


def test_the_drafts_catch_up_read_is_kept_apart_from_drafting_rounds(target, draft, tokenizer):
    """The draft reads a batch's first prompts in its first drafting round (read at admission, they cost the
    same and a batch that never drafts paid for them), and prompts admitted beside drafting rows when they
    are admitted. After idle rounds it reads every skipped token once: such a read is not what a drafting
    round costs (so it does not deter steady drafting), but a probe pays it (so probes wait for more credit)."""
    from specray.engine.speculative import GenerationConfig, SpeculativeEngine
    from specray.policies.factory import make_policy
    from specray.policies.static import StaticPolicy

    class IdleFirst(StaticPolicy):
        """static:2 that lets its batch idle for its first two rounds."""
        rounds = 0

        def budget(self, seqs):
            self.rounds += 1
            return super().budget(seqs) * (self.rounds > 2)

    costs = CostModel(smoothing=0.0)
    for batch in (1, 2):
        costs.record_draft(batch, 1.0)
        for width in (1, 2, 3):
            costs.record_verify(batch, width, 10.0)
    seen = {}
    observe_round, observe_catch_up = costs.observe_round, costs.observe_catch_up
    costs.observe_round = lambda batch, drafted, ms, forward_ms: seen.setdefault("rounds", []).append((drafted, ms, forward_ms))
    costs.observe_catch_up = lambda batch, width, ms: seen.setdefault("catch_up", []).append(ms)
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    draft_reads, forward = [], engine.forward

    def reading(model, cache, chunks, *args, **kwargs):
        if model is draft:
            draft_reads.append(max(map(len, chunks)))
        return forward(model, cache, chunks, *args, **kwargs)

    engine.forward = reading
    prompts, config = [[5, 6, 7, 8, 9, 10, 11, 12]] * 2, GenerationConfig(max_new_tokens=6)
    out = engine.generate(prompts, make_policy("static:2"), config)
    assert draft_reads[0] == 8, "the first drafting round reads the prompts whole, pending token included"
    assert len(seen["catch_up"]) == 1 and max(draft_reads[1:]) <= 3, "after that the draft reads only new tokens"
    assert len(seen["rounds"]) == out.time.rounds
    assert all(0 < forward_ms < ms for _, ms, forward_ms in seen["rounds"]), "each round's own forwards, as timed, within it"
    engine.generate(prompts, IdleFirst(k=2), config)
    assert len(seen["catch_up"]) == 2, "the draft reads the two idle rounds' tokens once, in its first drafting round"
    run, _ = engine.open(prompts, make_policy("static:2"), config, max_batch=1)
    assert not run.draft_reads_newcomers(), "no row runs yet: the first drafting round reads the prompts"
    run.step()
    assert run.draft_reads_newcomers(), "beside a drafting row, a prompt is read as it is admitted"
    run.state.idle_rounds = 1
    assert not run.draft_reads_newcomers(), "an idle batch does not pay for the draft"
    run.state.idle_rounds, run.max_batch = 0, 3
    assert run.draft_reads_newcomers(), "one prompt joins one drafting row"
    run.add(prompts, ["2", "3"], ["unknown"] * 2, [make_policy("static:2")] * 2)
    assert not run.draft_reads_newcomers(), "two prompts would join one row: a new batch, which the gate decides on"
    lookup, _ = engine.open(prompts, make_policy("static:2,draft=ngram"), config, max_batch=1)
    lookup.step()
    assert not lookup.draft_reads_newcomers(), "n-gram drafting never runs the draft model"

    costs.observe_round, costs.observe_catch_up = observe_round, observe_catch_up
    assert costs.catch_up_ms(1, 8) == pytest.approx(1.0), "before one is seen: a draft step, grown as verification grows"
    costs.record_verify(1, 9, 30.0)
    assert costs.catch_up_ms(1, 6) == pytest.approx(1.0 * 20.0 / 10.0), "verifying 6 tokens is 2x one: so is reading them"
    costs.observe_catch_up(2, 3, 40.0)
    costs.observe_catch_up(5, 3, 40.0)  # an unmeasured batch size learns nothing
    assert costs.catch_up_ms(2, 3) == pytest.approx(40.0) and 5 not in costs.batches
    assert costs.catch_up_ms(1, 6) == pytest.approx(2.0), "another batch size keeps its own"
    assert costs.drafting_overhead_ms(2) == 0.0


def test_a_catch_up_read_is_charged_to_drafting_spread_over_the_rounds_left(target, draft, tokenizer):
    """The draft's read of 40 unread tokens a row (~25 ms by the table) is paid once and serves every round the
    rows have left: spread over the few rounds of 6 new tokens it outweighs what drafting gains, over those of
    200 it does not."""
    from specray.engine.budget import plan_round
    from specray.policies.base import StopPolicy

    gate = table(4, draft_ms=5.0, verify={1: 50.0, 2: 52.0, 3: 60.0, 5: 70.0, 9: 90.0})
    costs, rates = gate.costs, torch.full((4,), 0.2)
    assert gate.worth_drafting(rates) and not gate.worth_drafting(rates, owed_ms=5.0)
    assert gate.worth_drafting(rates, free=torch.tensor([True] * 4), owed_ms=5.0), "n-gram rows read nothing"
    policy = StopPolicy(k_max=2, cost_aware=True)
    policy.expect(0.2)
    policy.start(torch.arange(4))
    state = in_flight([[5] * 40] * 4, target, draft, tokenizer)
    state.dcache = SlotCache.for_model(draft, 4)  # admitted, not yet read by the draft
    assert state.draft_lag() == 40 and costs.catch_up_ms(4, 40) == pytest.approx(5.0 * 245.0 / 50.0)
    assert plan_round(state, policy, costs, max_new_tokens=6).gate is None, "a read of ~25 ms over 5 rounds"
    assert plan_round(state, policy, costs, max_new_tokens=200).gate is not None, "the same read over 167 rounds"
    assert state.drafting_rounds == 1 and state.rounds_per_read is None
    state.rounds_per_read = 2.0  # runs of drafting rounds have lasted 2 rounds: a read serves 2 rounds, not 167
    assert plan_round(state, policy, costs, max_new_tokens=200).gate is None
    assert state.drafting_rounds == 0 and state.rounds_per_read == pytest.approx(1.5), "the run of 1 round ended"
    state.dcache.lengths = torch.full((4,), 39)  # read up to the pending token: a steady row
    assert state.draft_lag() == 0 and plan_round(state, policy, costs, max_new_tokens=6).gate is not None


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
    assert CostGate(costs, 3).round_ms(1, 2) == pytest.approx((4.0 + 55.0) * (1 + 2 / 3))


def test_live_timings_scale_the_whole_curve_of_their_batch_size():
    """Measured on a quiet machine, then the machine gets twice as busy: widths no round ran at follow too."""
    costs = CostModel(smoothing=0.5)
    costs.record_draft(2, 5.0)
    for width, ms in VERIFY.items():
        costs.record_verify(2, width, ms)
    for _ in range(12):
        for width in (1, 2):
            costs.observe_verify(2, torch.full((2,), width), 2 * VERIFY[width])
        costs.observe_draft(2, 2 * 5.0)
        costs.observe_verify(3, torch.ones(3), 1000.0)  # between measured batch sizes: interpolated, refines nothing
        costs.observe_verify(2, torch.tensor([1, 3]), 1000.0)  # rows of different widths, packed: not what was calibrated
    assert costs.verify_ms(2, np.array([1, 2, 5])).tolist() == pytest.approx([100.0, 110.0, 140.0], rel=1e-3)
    assert costs.draft_ms(2) == pytest.approx(10.0, rel=1e-3)
    assert CostGate(costs, 2).round_ms(1, 2) == pytest.approx(10.0 + 110.0, rel=1e-3)


def test_a_wider_verification_never_looks_cheaper_than_a_narrower_one():
    """Plain rounds verify one token per row; as contexts grow they take longer. Moving only that entry made
    width 2 look cheaper than width 1 and drafting look free; timing noise in the calibration can do the same."""
    costs = CostModel(smoothing=0.5)
    costs.record_draft(4, 3.0)
    for width, ms in {1: 40.0, 2: 45.0, 3: 44.0, 5: 56.0}.items():  # width 3: noise
        costs.record_verify(4, width, ms)
    assert costs.verify_ms(4, np.array([2, 3, 4])).tolist() == pytest.approx([44.5, 44.5, 50.25]), "2 and 3 pooled"
    for _ in range(20):
        costs.observe_verify(4, torch.ones(4), 54.0)  # longer contexts than the calibration's
    verify = costs.verify_ms(4, np.array([1, 2, 3]))
    assert verify[0] == pytest.approx(54.0, rel=1e-3) and verify[1] > verify[0] and verify[2] >= verify[1]


def test_one_slow_calibration_sample_does_not_raise_every_wider_width():
    """Read through a running maximum, width 3 measured in a busy moment priced widths 3-5 at its time and the gate
    stopped drafting after one token; the nearest non-decreasing fit pools it with its neighbour instead."""
    assert monotone(np.array([36.5, 37.1, 43.9, 38.8, 42.3])).tolist() == pytest.approx([36.5, 37.1, 41.35, 41.35, 42.3])
    assert monotone(np.array([3.0, 2.0, 1.0])).tolist() == [2.0, 2.0, 2.0]
    assert monotone(np.array([1.0, 2.0, 2.0, 5.0])).tolist() == [1.0, 2.0, 2.0, 5.0], "a rising curve is kept as it is"
    costs = CostModel(smoothing=0.0)
    costs.record_draft(1, 2.0)
    for width, ms in {1: 36.5, 2: 37.1, 3: 43.9, 5: 38.8, 9: 42.3}.items():
        costs.record_verify(1, width, ms)
    assert costs.verify_ms(1, np.array([3, 5])).tolist() == pytest.approx([41.35, 41.35])


def test_calibration_times_the_widths_in_turns(target, monkeypatch):
    """Widths take turns, so a burst of load slows one sample of several widths, not every sample of one;
    the first turn (each shape's one-time set-up) is not counted."""
    from specray.engine import calibration

    fed, forward = [], calibration.model_forward

    def recording(model, cache, chunks, keep, *args, **kwargs):
        fed.append(len(chunks[0]))
        return forward(model, cache, chunks, keep, *args, **kwargs)

    monkeypatch.setattr(calibration, "model_forward", recording)
    times = calibration.forward_ms(target, 2, (1, 2, 3), context=8, repeats=2)
    assert fed == [8] + [1, 2, 3] * 3, "the context, then three turns over the widths"
    assert sorted(times) == [1, 2, 3] and all(ms > 0 for ms in times.values())


def test_the_round_budget_idles_then_probes_one_token_per_row(target, draft, tokenizer):
    """When nothing pays the round is target decoding; probes of one token per row spend at most
    EXPLORATION_SHARE of the rounds' time, and come no closer than PROBE_EVERY rounds when they are cheap."""
    from specray.engine.budget import EXPLORATION_SHARE, PROBE_EVERY, plan_round
    from specray.policies.factory import make_policy

    def budgets(draft_ms: float, verify: dict[int, float], rounds: int, acceptance: float | None = None,
                catch_up: float | None = 0.0):
        costs = table(3, draft_ms, verify).costs
        if catch_up is not None:
            costs.observe_catch_up(3, 3, catch_up)  # the draft has read nothing of the rows' 3 tokens
        state = in_flight([[5, 6, 7]] * 3, target, draft, tokenizer)
        state.dcache = SlotCache(3, torch.float32, torch.device("cpu"))  # rows admitted while idle: the draft read nothing
        policy = make_policy("heuristic")
        policy.reset(3)
        if acceptance is not None:
            policy.acceptance[:] = acceptance
        return [plan_round(state, policy, costs, max_new_tokens=1000) for _ in range(rounds)], state, policy, costs

    # a plain round 50 ms; a probe 10 + 90 ms, 50 ms more: drafting does not pay at the prior's acceptance 0.6
    dear, state, policy, costs = budgets(10.0, {1: 50.0, 2: 90.0, 3: 130.0}, rounds=300)
    drafting = [int(b.tokens.sum()) for b in dear]
    probes = [i + 1 for i, n in enumerate(drafting) if n]
    assert set(drafting) == {0, 3}, "idle rounds, and probes of one token per row"
    assert all(b.gate is None for b in dear), "a probe is not gated"
    every = round(50.0 / (EXPLORATION_SHARE * 50.0))
    assert probes == [every, 2 * every, 3 * every], "a probe waits until the exploration credit pays for it"
    assert len(probes) * 50.0 <= EXPLORATION_SHARE * 300 * 50.0 + 1e-9, "probes spend at most the exploration share"
    reading, _, _, _ = budgets(10.0, {1: 50.0, 2: 90.0, 3: 130.0}, rounds=2 * every, catch_up=50.0)
    assert [i + 1 for i, b in enumerate(reading) if int(b.tokens.sum())] == [2 * every], "a probe pays the draft's catch-up"
    unseen, _, _, _ = budgets(10.0, {1: 50.0, 2: 90.0, 3: 130.0}, rounds=2 * every, catch_up=None)
    first = round((50.0 + 10.0 * 130.0 / 50.0) / (EXPLORATION_SHARE * 50.0))  # a draft step over 3 tokens: 2.6x one
    assert [i + 1 for i, b in enumerate(unseen) if int(b.tokens.sum())] == [first], "an unseen catch-up is priced too"
    costs.record_draft(3, 0.0)
    for width in (1, 2, 3):
        costs.record_verify(3, width, 50.0)  # now verification is as cheap at any width: drafting pays
    assert plan_round(state, policy, costs, 1000).gate is not None and state.idle_rounds == 0

    free, _, _, _ = budgets(0.0, {1: 50.0, 2: 50.0, 3: 50.0}, rounds=3 * PROBE_EVERY, acceptance=0.0)
    probes = [i + 1 for i, b in enumerate(free) if int(b.tokens.sum())]
    assert probes == [PROBE_EVERY, 2 * PROBE_EVERY, 3 * PROBE_EVERY], "free probes still wait PROBE_EVERY idle rounds"
    ungated = make_policy("heuristic:cost=off")
    ungated.reset(3)
    assert plan_round(state, ungated, costs, 32).tokens.tolist() == [4, 4, 4]


def test_the_round_expects_each_rows_running_products_of_acceptance():
    """Row 0 proposes two tokens (0.5, 0.5), row 1 none, row 2 one (0.8): 0.5 + 0.25 + 0.8 tokens expected."""
    from specray.engine.drafting import flatten
    from specray.engine.proposals import Proposals

    n = 3
    empty = torch.zeros(n)
    proposals = Proposals(torch.tensor([4, 5, 6]), torch.tensor([0, 2, 2, 3]), None, empty, empty, torch.zeros(n, 4),
                          torch.tensor([0.5, 0.5, 0.8]), None, torch.zeros(3, dtype=torch.bool), ["none"] * 3)
    assert proposals.expected_accepted() == pytest.approx(1.55)
    nothing = flatten([], 3, torch.zeros(3, dtype=torch.bool), ["none"] * 3, False, None, 0.0)
    assert nothing.expected_accepted() == 0.0


def test_the_gate_believes_estimates_as_far_as_rounds_bore_them_out():
    """Estimates that promised about twice what the target accepted are halved: drafting at 0.4 no longer pays."""
    from specray.policies.cost import GainCalibration

    calibration = GainCalibration(decay=1.0, prior=2.0)
    calibration.observe(0.0, 0.0)  # a round that drafted nothing says nothing
    assert calibration.factor == 1.0
    for _ in range(9):
        calibration.observe(expected=2.0, accepted=0.8)
    assert calibration.factor == pytest.approx((2.0 + 7.2) / (2.0 + 18.0))
    gate = table(8, draft_ms=5.0, verify=VERIFY)
    acceptance = torch.full((8,), 0.4)
    assert gate.worth_drafting(acceptance) and not gate.worth_drafting(calibration.believed(acceptance))
    assert calibration.believed(torch.tensor([0.5, 1.0])).tolist() == pytest.approx([0.23, 0.46])
    outdone = GainCalibration(decay=1.0, prior=1.0)
    outdone.observe(expected=1.0, accepted=5.0)  # factor 3
    assert outdone.believed(torch.tensor([0.5])).item() == 1.0, "a probability stays one"


def test_whether_to_draft_believes_running_rates_by_their_own_record(target, draft, tokenizer):
    """The opening test asks rows' running rates (0.6 here: 3 rows must expect > 1.2 first tokens to pay for a
    10 ms step and a 60 ms check against a 50 ms plain round), believed by how many first tokens such rates
    won, not by the record of the policy's estimates of drafted tokens (a classifier's, for a learned policy)."""
    from specray.engine.budget import RoundBudget, plan_round
    from specray.policies.cost import GainCalibration
    from specray.policies.factory import make_policy

    def drafts(calibration: float, opening: float) -> bool:
        costs = table(3, 10.0, {1: 50.0, 2: 60.0, 3: 70.0}).costs
        state = in_flight([[5, 6, 7]] * 3, target, draft, tokenizer)
        state.calibration, state.opening = GainCalibration(prior=1.0), GainCalibration(prior=1.0)
        state.calibration.accepted, state.opening.accepted = calibration, opening
        policy = make_policy("heuristic")
        policy.reset(3)
        return plan_round(state, policy, costs, max_new_tokens=1000).gate is not None

    assert drafts(calibration=1.0, opening=1.0)
    assert drafts(calibration=0.5, opening=1.0), "the estimates of drafted tokens disappointed, the rates did not"
    assert not drafts(calibration=1.0, opening=0.5), "rates that won half their first tokens do not pay"

    budget = RoundBudget(torch.tensor([2, 2, 1]), torch.zeros(3, dtype=torch.bool), {}, None, torch.tensor([0.6, 0.5, 0.4]))
    record = budget.first_tokens(num_draft=torch.tensor([2, 0, 1]), num_accepted=torch.tensor([1, 0, 0]))
    assert record == pytest.approx((1.0, 1.0)), "rows that drafted: 0.6 + 0.4 first tokens expected, one accepted"
    assert RoundBudget.nothing(3).first_tokens(torch.tensor([1, 1, 1]), torch.tensor([1, 1, 1])) == (0.0, 0.0)

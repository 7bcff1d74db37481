"""Greedy speculative decoding equals target-only greedy decoding token for token."""

import pytest
import torch

from conftest import EOS, GREEDY_MAX_NEW
from specray.engine.budget import PROBE_EVERY
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.cost import CostModel
from specray.policies.factory import make_policy
from specray.schema import LABEL_TRACE_SCHEMA, TRACE_SCHEMA

MAX_NEW = GREEDY_MAX_NEW
GREEDY_SPECS = [
    "target", "static:1", "static:4", "heuristic:cost=off", "confidence:cost=off", "confidence:0.6,refit=true,cost=off",
    "static:4,draft=ngram", "heuristic:cost=off,draft=ngram+model,ngram=2", "confidence:cost=off,draft=ngram+model",
]


@pytest.fixture(scope="module")
def engine(target, draft, tokenizer):
    return SpeculativeEngine(target, draft, tokenizer)


def test_references_cover_eos_and_length_limits(references):
    ends = {"eos" if r[-1] == EOS else "max_new_tokens" for r in references}
    assert ends == {"eos", "max_new_tokens"}, "the prompt set must end both ways for the tests below to mean anything"
    assert len({len(r) for r in references}) > 2


@pytest.mark.parametrize("spec", GREEDY_SPECS)
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_greedy_is_lossless(engine, prompts, references, spec, batch_size):
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        out = engine.generate(batch, make_policy(spec), GenerationConfig(max_new_tokens=MAX_NEW))
        for seq, ref in zip(out.sequences, references[start : start + batch_size]):
            assert seq.tokens == ref
            assert seq.stop_reason == ("eos" if ref[-1] == EOS else "max_new_tokens")


@pytest.mark.parametrize("spec", ["static:4", "heuristic:cost=off", "confidence:cost=off"])
def test_speculation_happens_and_traces_add_up(engine, prompts, spec):
    out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=MAX_NEW), domain="code", run_id="r1")
    table = out.traces
    assert table.schema == TRACE_SCHEMA
    drafted = sum(s.drafted for s in out.sequences)
    accepted = sum(s.accepted for s in out.sequences)
    assert 0 < accepted < drafted, "the perturbed draft should agree with the target only partly"
    assert table.num_rows == drafted
    assert sum(table.column("accepted").to_pylist()) == accepted
    rows = table.to_pylist()
    assert {r["domain"] for r in rows} == {"code"} and {r["run_id"] for r in rows} == {"r1"}
    assert {r["source"] for r in rows} == {"generate"}
    for r in rows:
        assert r["evaluated"] or not r["accepted"]
        assert 1 <= r["depth"] <= r["lookahead"]
        assert r["accept_prob"] == pytest.approx(min(1.0, r["target_prob"] / r["draft_prob"]), rel=1e-5)
        assert len(r["topk_probs"]) == 10


def test_label_traces_keep_the_drafts_hidden_state_behind_each_token(engine, draft, prompts, references):
    config = GenerationConfig(max_new_tokens=MAX_NEW)
    out = engine.generate(prompts, make_policy("static:4"), config, origin="label", record_hidden=True)
    assert [s.tokens for s in out.sequences] == references
    table = out.traces
    assert table.schema == LABEL_TRACE_SCHEMA and set(table["source"].to_pylist()) == {"label"}
    assert {len(h) for h in table["hidden"].to_pylist()} == {draft.config.hidden_size}
    first_round = [r for r in table.to_pylist() if r["prompt_id"] == "0" and r["iteration"] == 0]
    for r in first_round[:2]:  # depth 1 comes from the prompt, depth 2 from the prompt plus the first draft token
        drafted = [f["draft_token"] for f in first_round[: r["depth"] - 1]]
        state = draft(torch.tensor([prompts[0] + drafted]), output_hidden_states=True).hidden_states[-1][0, -1]
        assert torch.allclose(torch.tensor(r["hidden"]), state.float(), atol=1e-4)


def test_oracle_drafts_exactly_what_the_target_accepts(engine, prompts, references):
    out = engine.generate(prompts, make_policy("oracle", references=references), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    assert all(s.accepted == s.drafted for s in out.sequences)
    assert sum(s.accepted for s in out.sequences) > 0
    assert all(out.traces.column("accepted").to_pylist())


def test_lookahead_is_per_sequence_within_a_round(engine, prompts, references):
    out = engine.generate(prompts, make_policy("oracle", references=references), GenerationConfig(max_new_tokens=MAX_NEW))
    rows = out.traces.to_pylist()
    per_round = {}
    for r in rows:
        per_round.setdefault(r["iteration"], set()).add(r["lookahead"])
    assert any(len(lookaheads) > 1 for lookaheads in per_round.values())


def test_accepted_prefix_is_never_recomputed(target, draft, tokenizer, prompts):
    """The prefill feeds the prompt but its last token; every later target forward only the pending token
    plus the new proposal."""
    fed = []
    engine = SpeculativeEngine(target, draft, tokenizer)
    original = engine.forward

    def counting_forward(model, cache, chunks, keep, **kw):
        if model is target:
            fed.append(sum(len(c) for c in chunks))
        return original(model, cache, chunks, keep, **kw)

    engine.forward = counting_forward
    prompt = prompts[0]
    out = engine.generate([prompt], make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW))
    seq = out.sequences[0]
    assert fed[0] == len(prompt) - 1
    assert sum(fed) == len(prompt) + seq.drafted + seq.iterations - 1


def test_finished_sequences_leave_the_batch(target, draft, tokenizer, prompts, references):
    batch_sizes = []
    engine = SpeculativeEngine(target, draft, tokenizer)
    original = engine.forward

    def logging_forward(model, cache, chunks, keep, **kw):
        if model is target:
            batch_sizes.append(len(chunks))
        return original(model, cache, chunks, keep, **kw)

    engine.forward = logging_forward
    out = engine.generate(prompts, make_policy("static:2"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    assert batch_sizes[0] == len(prompts) and batch_sizes[-1] < len(prompts)
    assert batch_sizes == sorted(batch_sizes, reverse=True)


def test_stop_strings_cut_where_target_only_decoding_cuts(engine, tokenizer, prompts, references):
    ref = references[1]
    stop = tokenizer.decode(ref[5:7])
    config = GenerationConfig(max_new_tokens=MAX_NEW, stop_strings=(stop,))
    expected = engine.generate([prompts[1]], None, config).sequences[0]
    assert expected.stop_reason == "stop_string" and stop in expected.text
    assert expected.tokens == ref[: len(expected.tokens)] and len(expected.tokens) <= 7
    for spec in ["static:4", "heuristic:cost=off"]:
        seq = engine.generate([prompts[1]], make_policy(spec), config).sequences[0]
        assert seq.tokens == expected.tokens and seq.stop_reason == "stop_string"


def fixed_costs(max_batch: int, verify_ms, draft_ms: float) -> CostModel:
    """Costs as if measured, for every batch size the run passes through; smoothing 0 ignores live timings."""
    costs = CostModel(smoothing=0.0)
    for batch in range(1, max_batch + 1):
        for width in range(1, 12):
            costs.record_verify(batch, width, verify_ms(width))
        costs.record_draft(batch, draft_ms)
    return costs


def test_cost_gate_turns_speculation_off_when_verification_is_expensive(target, draft, tokenizer, prompts, references):
    costs = fixed_costs(len(prompts), verify_ms=lambda width: 10.0 * width, draft_ms=2.0)  # drafting never pays
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    out = engine.generate(prompts, make_policy("heuristic"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    rounds = sum(s.iterations for s in out.sequences)
    assert sum(s.drafted for s in out.sequences) <= rounds / PROBE_EVERY + len(prompts)


def test_cost_gate_lets_speculation_run_when_verification_is_free(target, draft, tokenizer, prompts, references):
    costs = fixed_costs(len(prompts), verify_ms=lambda width: 10.0, draft_ms=0.0)  # speculation is free
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    out = engine.generate(prompts, make_policy("heuristic"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    assert sum(s.drafted for s in out.sequences) > 0
    assert "cost" not in set(out.traces.column("stop_reason").to_pylist())


def test_empty_prompt_is_its_own_error_and_the_others_go_on(engine, prompts, references):
    out = engine.generate([prompts[0], []], None, GenerationConfig(max_new_tokens=MAX_NEW))
    assert out.sequences[0].tokens == references[0]
    assert out.sequences[1].stop_reason == "error" and "empty prompt" in out.sequences[1].error


def test_prompt_that_cannot_fit_the_cache_is_an_error_naming_both_numbers(engine, prompts, references):
    window = engine.context_window()
    out = engine.generate([[5] * (window - 10), prompts[0]], make_policy("static:3"), GenerationConfig(max_new_tokens=11))
    error = out.sequences[0].error
    assert out.sequences[0].stop_reason == "error"
    assert f"prompt has {window - 10} tokens" in error and "max_new_tokens=11" in error and f"capacity of {window}" in error
    assert out.sequences[1].tokens == references[0][:11]


def logged_target_forwards(engine, prompts) -> tuple[list[int], list[list[int]]]:
    """Make `engine` log the rows of each decoding round's target forward, and which prompts each prefill reads
    (each prefill logged as the width 0)."""
    widths, prefills = [], []
    original = engine.forward

    def logging_forward(model, cache, chunks, keep, **kw):
        if model is engine.target:
            prefill = keep == 1 and any(len(c) > 1 for c in chunks)  # every prompt token but the last
            widths.append(0 if prefill else len(chunks))
            if prefill:
                prefills.append([next(i for i, p in enumerate(prompts) if p[:-1] == c) for c in chunks])
        return original(model, cache, chunks, keep, **kw)

    engine.forward = logging_forward
    return widths, prefills


@pytest.mark.parametrize("spec", ["target", "static:3", "confidence:cost=off,draft=ngram+model", "heuristic"])
def test_continuous_batching_refills_slots_in_prompt_order_and_stays_lossless(target, draft, tokenizer, prompts, references, spec):
    """At most `max_batch` rows decode at once; a finished row's slot goes to the next waiting prompt."""
    engine = SpeculativeEngine(target, draft, tokenizer)
    widths, prefills = logged_target_forwards(engine, prompts)
    out = engine.generate(prompts, make_policy(spec) if spec != "target" else None, GenerationConfig(max_new_tokens=MAX_NEW), max_batch=4)
    assert [s.tokens for s in out.sequences] == references
    assert max(widths) == 4
    assert prefills[0] == [0, 1, 2, 3] and len(prefills) > 1, "slots are refilled as sequences finish"
    assert sum(prefills, []) == list(range(len(prompts))), "waiting prompts are admitted in order, each once"
    waiting = widths[: len(widths) - widths[::-1].index(0)]  # up to the last prefill
    empty_slot_rounds = sum(4 - w for w in waiting if w)
    assert empty_slot_rounds <= 4 * (len(prefills) - 1), "slots stay empty at most one full round per refill"


def test_newcomers_wait_until_the_empty_slots_add_up_to_one_full_round(target, draft, tokenizer):
    """A prefill has a fixed cost, so a slot that frees is refilled once the slots left empty since the last
    admission add up to one round of the full batch, with every newcomer that fits by then; at once when no row runs."""
    from specray.engine.batch_state import BatchState, Sequence

    seqs = [Sequence(i, str(i), [3, 4, 5], 3) for i in range(8)]
    state = BatchState(seqs, 4, target, draft, {EOS}, tokenizer)

    def admitted_after_waiting() -> tuple[list[int], int]:
        for waited in range(8):
            if newcomers := state.newcomers():
                return [s.index for s in newcomers], waited
        raise AssertionError("free slots were never refilled")

    assert admitted_after_waiting() == ([0, 1, 2, 3], 0), "nothing runs: every free slot at once"
    state.active = seqs[:3]  # one row finished: one slot empty for four rounds
    assert admitted_after_waiting() == ([4], 3)
    state.active = seqs[:2]  # two finished: two slots empty for two rounds
    assert admitted_after_waiting() == ([5, 6], 1)
    state.active = []
    assert admitted_after_waiting() == ([7], 0)
    assert state.newcomers() == [], "nothing waits"


def test_a_prompt_whose_prefill_fails_is_its_own_error(target, draft, tokenizer, prompts, references):
    engine = SpeculativeEngine(target, draft, tokenizer)
    original = engine.forward
    poisoned = prompts[5][:-1]

    def failing_forward(model, cache, chunks, keep, **kw):
        if poisoned in chunks:
            raise RuntimeError("out of memory (simulated)")
        return original(model, cache, chunks, keep, **kw)

    engine.forward = failing_forward
    out = engine.generate(prompts, make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=4)
    assert out.sequences[5].stop_reason == "error" and "out of memory (simulated)" in out.sequences[5].error
    assert [s.tokens for i, s in enumerate(out.sequences) if i != 5] == references[:5] + references[6:]


def test_a_batch_whose_every_prefill_fails_ends_with_errors(target, draft, tokenizer, prompts):
    engine = SpeculativeEngine(target, draft, tokenizer)

    def failing_forward(model, cache, chunks, keep, **kw):
        raise RuntimeError("device lost (simulated)")

    engine.forward = failing_forward
    out = engine.generate(prompts[:3], make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=2)
    assert [s.stop_reason for s in out.sequences] == ["error"] * 3
    assert all("device lost" in s.error for s in out.sequences) and out.traces.num_rows == 0


@pytest.mark.parametrize("chunks", [[[3, 4, 5], [6, 7]], [[3, 4, 5]]])
def test_the_lm_head_reads_a_row_major_input_when_fewer_slots_are_kept_than_fed(target, chunks):
    """An int `logits_to_keep` hands the head a strided slice, which bf16 products on CPU take a slow path for;
    a one-row slice counts as contiguous while keeping its source's strides, so strides are what is checked."""
    from specray.engine.forward import model_forward
    from specray.engine.kv_cache import SlotCache

    seen = []
    handle = target.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: seen.append(args[0].stride() == torch.empty(args[0].shape).stride()))
    try:
        logits, _ = model_forward(target, SlotCache.for_model(target, len(chunks)), chunks, keep=1)
    finally:
        handle.remove()
    assert seen == [True]
    full = target(input_ids=torch.tensor([[3, 4, 5]])).logits[0, -1].float()
    torch.testing.assert_close(logits[0], full)


def test_decoding_steps_write_the_cache_in_place_and_compute_what_a_forward_over_the_whole_sequence_does(target):
    """Each layer keeps room after its slots: steps write into the same buffer (no copy of the whole cache),
    reallocating only when it is full. Each row holds its tokens in slots 0..length-1 whatever the other rows
    feed, so every step's logits are those of one forward over the row's whole sequence, also after a row is
    rolled back (its rejected slots are written over) and after rows leave."""
    from specray.engine.forward import model_forward
    from specray.engine.kv_cache import MIN_ROOM, SlotCache

    def alone(sequence: list[int]) -> torch.Tensor:
        return target(input_ids=torch.tensor([sequence])).logits[0, -1].float()

    cache = SlotCache.for_model(target, 2)
    rows, chunks, buffers = [[], []], [[3, 4, 5], [6, 7]], []
    for step in range(MIN_ROOM + 8):
        rows = [r + c for r, c in zip(rows, chunks)]
        logits, _ = model_forward(target, cache, chunks, keep=1)
        buffers.append(cache.kv.layers[0].keys.data_ptr())
        chunks = [[8 + step % 5], [9 + step % 7]] if step % 3 else [[8 + step % 5, 10], [9]]  # ragged now and then
    assert len(set(buffers)) == 2, "one buffer until its room runs out, then one twice as large"
    assert cache.lengths.tolist() == [len(r) for r in rows]
    for b in range(2):
        torch.testing.assert_close(logits[b], alone(rows[b]), rtol=1e-5, atol=1e-5)
    cache.truncate(torch.tensor([len(rows[0]) - 3, len(rows[1])]))  # the first row's last 3 tokens were rejected
    rows[0] = rows[0][:-3]
    logits, _ = model_forward(target, cache, [[11, 12], [13]], keep=1)
    rows = [rows[0] + [11, 12], rows[1] + [13]]
    for b in range(2):
        torch.testing.assert_close(logits[b], alone(rows[b]), rtol=1e-5, atol=1e-5)
    cache.select_rows(torch.tensor([1]))
    logits, _ = model_forward(target, cache, [[4]], keep=1)
    torch.testing.assert_close(logits[0], alone(rows[1] + [4]), rtol=1e-5, atol=1e-5)
    assert cache.kv.layers[0].keys.data_ptr() == buffers[-1], "rows that leave keep the buffer's room"


def test_rows_kept_are_held_in_the_given_order_in_place(target):
    from specray.engine.forward import model_forward
    from specray.engine.kv_cache import SlotCache

    cache = SlotCache.for_model(target, 4)
    model_forward(target, cache, [[3, 4, 5], [6, 7], [8, 9, 10], [11]], keep=1)
    layer = cache.kv.layers[0]
    keys, values, lengths, start = layer.keys.clone(), layer.values.clone(), cache.lengths.clone(), layer.keys.data_ptr()
    cache.select_rows(torch.tensor([0, 2, 3]))  # the second row leaves
    assert torch.equal(layer.keys, keys[[0, 2, 3]]) and torch.equal(layer.values, values[[0, 2, 3]])
    assert torch.equal(cache.lengths, lengths[[0, 2, 3]])
    assert layer.keys.data_ptr() == start, "kept in the same buffer"
    cache.select_rows(torch.tensor([2, 1]))  # the first row leaves and the last takes its place
    assert torch.equal(layer.keys, keys[[3, 2]]) and layer.keys.data_ptr() == start


def test_rows_that_leave_are_filled_by_the_last_rows():
    from specray.engine.batch_state import fill_order

    assert fill_order([0, 2, 3]) == [0, 3, 2]
    assert fill_order([1, 2, 3, 5]) == [5, 1, 2, 3]
    assert fill_order([0, 1, 2]) == [0, 1, 2]
    assert fill_order([4]) == [4]
    assert fill_order([]) == []


@pytest.mark.parametrize("layers", [None, (1, 2)], ids=["final", "layer-1-and-final"])
def test_hidden_states_are_read_by_hooks_and_equal_transformers_own(target, layers):
    """`model_forward` reads hidden states with hooks on the decoder's layers and final norm instead of asking
    for every layer's (`output_hidden_states`); they are the same tensors transformers reports, side by side."""
    from specray.engine.forward import model_forward, state_modules
    from specray.engine.kv_cache import SlotCache

    assert state_modules(target, None) == [target.model.norm]
    assert state_modules(target, (1, 2)) == [target.model.layers[0], target.model.norm]
    every = target(input_ids=torch.tensor([[3, 4, 5, 6]]), output_hidden_states=True).hidden_states
    hooks = [dict(m._forward_hooks) for m in (target.model.layers[0], target.model.norm)]  # transformers adds its own
    _, states = model_forward(target, SlotCache.for_model(target, 1), [[3, 4, 5, 6]], keep=1, hidden=3, layers=layers)
    reference = torch.cat([every[i][0, -3:] for i in (layers or (-1,))], dim=-1)
    torch.testing.assert_close(states, reference.float())
    assert [dict(m._forward_hooks) for m in (target.model.layers[0], target.model.norm)] == hooks, "ours live for one forward"

"""Greedy speculative decoding equals target-only greedy decoding token for token."""

import pytest
import torch

from conftest import EOS, random_prompts, reference_greedy
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.cost import CostModel
from specray.policies.factory import make_policy
from specray.schema import LABEL_TRACE_SCHEMA, TRACE_SCHEMA

MAX_NEW = 24
GREEDY_SPECS = [
    "target", "static:1", "static:4", "heuristic:cost=off", "confidence:cost=off", "confidence:0.6,refit=true,cost=off",
    "static:4,draft=ngram", "heuristic:cost=off,draft=ngram+model,ngram=2", "confidence:cost=off,draft=ngram+model",
]


@pytest.fixture(scope="module")
def engine(target, draft, tokenizer):
    return SpeculativeEngine(target, draft, tokenizer)


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(16, seed=3)


@pytest.fixture(scope="module")
def references(target, prompts):
    return [reference_greedy(target, p, MAX_NEW) for p in prompts]


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
    out = engine.generate(prompts, make_policy("static:4"), config, source="label", record_hidden=True)
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
    """Every target forward after the first feeds only the pending token plus the new proposal."""
    fed = []
    engine = SpeculativeEngine(target, draft, tokenizer)
    original = engine.forward

    def counting_forward(model, cache, chunks, keep):
        if model is target:
            fed.append(sum(len(c) for c in chunks))
        return original(model, cache, chunks, keep)

    engine.forward = counting_forward
    prompt = prompts[0]
    out = engine.generate([prompt], make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW))
    seq = out.sequences[0]
    assert fed[0] == len(prompt) + len(out.traces.filter(out.traces.column("iteration").to_numpy() == 0))
    assert sum(fed) == len(prompt) + seq.drafted + seq.iterations - 1


def test_finished_sequences_leave_the_batch(target, draft, tokenizer, prompts, references):
    batch_sizes = []
    engine = SpeculativeEngine(target, draft, tokenizer)
    original = engine.forward

    def logging_forward(model, cache, chunks, keep):
        if model is target:
            batch_sizes.append(len(chunks))
        return original(model, cache, chunks, keep)

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
            costs.observe_verify(batch, width, verify_ms(width))
        costs.observe_draft(batch, draft_ms)
    return costs


def test_cost_gate_turns_speculation_off_when_verification_is_expensive(target, draft, tokenizer, prompts, references):
    costs = fixed_costs(len(prompts), verify_ms=lambda width: 10.0 * width, draft_ms=2.0)  # drafting never pays
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    out = engine.generate(prompts, make_policy("heuristic"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    rounds = sum(s.iterations for s in out.sequences)
    assert sum(s.drafted for s in out.sequences) <= rounds / SpeculativeEngine.probe_every + len(prompts)


def test_cost_gate_lets_speculation_run_when_verification_is_free(target, draft, tokenizer, prompts, references):
    costs = fixed_costs(len(prompts), verify_ms=lambda width: 10.0, draft_ms=0.0)  # speculation is free
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    out = engine.generate(prompts, make_policy("heuristic"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert [s.tokens for s in out.sequences] == references
    assert sum(s.drafted for s in out.sequences) > 0
    assert "cost" not in set(out.traces.column("stop_reason").to_pylist())


def test_empty_prompt_is_a_clear_error(engine):
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([[5, 6], []], None)


def test_prompt_longer_than_the_window_is_a_clear_error(engine):
    window = engine.context_window()
    with pytest.raises(ValueError, match=f"context window of {window}"):
        engine.generate([[5] * (window - 10)], None, GenerationConfig(max_new_tokens=11))

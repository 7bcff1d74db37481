"""N-gram drafting: the lookup itself, and that the engine drafts from it (lossless greedy is in
test_engine_greedy, the sampling distribution in test_engine_sampling)."""

import pytest

from conftest import in_flight, random_prompts, reference_greedy
from specray.engine.budget import PROBE_EVERY
from specray.engine.ngram import ngram_lookup
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.cost import CostModel
from specray.policies.factory import make_policy
from specray.policies.spec import parse_spec


def test_lookup_proposes_what_followed_the_latest_match():
    tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2]
    assert ngram_lookup(tokens, n_max=2, k=3) == [3, 7, 8]  # "1 2" last seen at 4, followed by 3 7 8
    assert ngram_lookup(tokens, n_max=2, k=1) == [3]


def test_lookup_prefers_the_longest_match():
    tokens = [5, 2, 8, 4, 2, 6, 5, 2]  # "5 2" matches at 0 (-> 8); "2" alone matches later at 4 (-> 6)
    assert ngram_lookup(tokens, n_max=2, k=1) == [8]
    assert ngram_lookup(tokens, n_max=1, k=1) == [6]


def test_lookup_finds_nothing_without_a_repeat():
    assert ngram_lookup([1, 2, 3, 4], n_max=3, k=4) == []
    assert ngram_lookup([1], k=4) == [] and ngram_lookup([1, 1], k=0) == []


def test_lookup_may_overlap_its_own_tail():
    assert ngram_lookup([7, 7, 7], n_max=2, k=4) == [7]  # "7 7" at 0 is followed by the tail's own 7


@pytest.mark.parametrize(
    "spec, key",
    [("static:4,draft=eagle", "draft"), ("static:4,draft=ngram,ngram=0", "ngram"), ("heuristic,ngram=9", "ngram must be"),
     ("confidence,ngram=x", "ngram=.x. is not"), ("static:2,ngram_min=0", "ngram_min must be"),
     ("static:2,ngram=2,ngram_min=3", "ngram_min=3 exceeds ngram=2"), ("static:2,ngram_min=4", "ngram_min=4 exceeds ngram=3")],
)
def test_bad_draft_source_options_name_the_key(spec, key):
    with pytest.raises(ValueError, match=key):
        parse_spec(spec)


def test_policies_carry_their_draft_source():
    policy = make_policy("confidence:0.3,draft=ngram+model,ngram=2")
    assert (policy.draft_source, policy.ngram_max, policy.threshold) == ("ngram+model", 2, 0.3)
    assert make_policy("static:2").draft_source == "model"


@pytest.mark.parametrize("spec, shortest", [("static:2,draft=ngram", 1), ("static:2,draft=ngram+model", 2),
                                            ("static:2,draft=ngram+model,ngram=1", 1), ("static:2,draft=ngram+model,ngram_min=1", 1)])
def test_lookup_backed_by_the_model_skips_one_token_matches(spec, shortest):
    """Beside the draft model a one-token match is the worse guess (`shortest_ngram`), never past `ngram=`."""
    assert make_policy(spec).ngram_min == shortest


def test_the_budget_looks_up_only_matches_the_policy_takes(target, draft, tokenizer):
    """A row whose tail matches one earlier token only drafts by lookup when lookup alone drafts; backed by the
    model it drafts with the model, and a two-token match is looked up by both."""
    from specray.engine.budget import plan_round

    def planned(spec: str, tokens: list[int]):
        policy = make_policy(spec)  # static: no cost gate
        policy.reset(1)
        budget = plan_round(in_flight([tokens], target, draft, tokenizer), policy, CostModel(), max_new_tokens=100)
        return budget.ngram.tolist(), budget.lookups, budget.tokens.tolist()

    one, two = [5, 9, 7, 3, 5], [5, 9, 7, 5, 9]  # "5" matches at 0 (-> 9); "5 9" matches at 0 (-> 7 5 9)
    assert planned("static:3,draft=ngram", one) == ([True], {0: [9, 7, 3]}, [3])
    assert planned("static:3,draft=ngram+model", one) == ([False], {}, [3])
    assert planned("static:3,draft=ngram+model", two) == ([True], {0: [7, 5, 9]}, [3])


def repetitive_prompts():
    """Prompts that repeat themselves, as extraction and code edits do, so lookup finds matches."""
    return [p + p for p in random_prompts(6, seed=11)]


def test_ngram_drafts_cost_no_draft_forward_and_are_accepted(target, draft, tokenizer):
    engine = SpeculativeEngine(target, draft, tokenizer)
    calls = []
    original = engine.forward
    engine.forward = lambda model, *a, **k: calls.append(model is draft) or original(model, *a, **k)
    prompts = repetitive_prompts()
    out = engine.generate(prompts, make_policy("static:4,draft=ngram"), GenerationConfig(max_new_tokens=16))
    assert not any(calls), "n-gram drafting must never run the draft model"
    assert [s.tokens for s in out.sequences] == [reference_greedy(target, p, 16) for p in prompts]
    rows = out.traces.to_pylist()
    assert rows and all(r["draft_prob"] == 1.0 and r["entropy"] == 0.0 for r in rows)
    assert sum(s.accepted for s in out.sequences) > 0


def test_hybrid_uses_the_model_where_lookup_finds_nothing(target, draft, tokenizer):
    engine = SpeculativeEngine(target, draft, tokenizer)
    prompts = random_prompts(6, seed=12) + repetitive_prompts()
    out = engine.generate(prompts, make_policy("static:3,draft=ngram+model"), GenerationConfig(max_new_tokens=16))
    assert [s.tokens for s in out.sequences] == [reference_greedy(target, p, 16) for p in prompts]
    probs = out.traces.column("draft_prob").to_pylist()
    assert any(p == 1.0 for p in probs) and any(p < 1.0 for p in probs), "both sources should have drafted"


def test_cost_gate_counts_ngram_tokens_as_free(target, draft, tokenizer):
    """With draft steps dear and verification width free, the model drafts only the gate's occasional
    probes, while free n-gram tokens pay whenever lookup finds a match."""
    costs = CostModel(smoothing=0.0)  # a fixed table: live timings do not move it
    for batch in range(1, 7):
        costs.record_draft(batch, 1e6)
        for width in range(1, 12):
            costs.record_verify(batch, width, 10.0)
    engine = SpeculativeEngine(target, draft, tokenizer, cost_model=costs)
    prompts = repetitive_prompts()
    rounds = {}
    for source in ("model", "ngram"):
        out = engine.generate(prompts, make_policy(f"heuristic,draft={source}"), GenerationConfig(max_new_tokens=16))
        assert [s.tokens for s in out.sequences] == [reference_greedy(target, p, 16) for p in prompts]
        drafting = {(r["prompt_id"], r["iteration"]) for r in out.traces.to_pylist()}
        rounds[source] = (len(drafting), sum(s.iterations for s in out.sequences))
    model_rounds, model_iterations = rounds["model"]
    assert model_rounds <= model_iterations / PROBE_EVERY, "the model should draft in probe rounds only"
    assert rounds["ngram"][0] > 2 * model_rounds


def test_each_acceptance_estimate_is_asked_only_for_the_tokens_that_need_it():
    """N-gram tokens take the running n-gram estimate, the draft model's the policy's own; a step of one kind
    alone does not ask the other (a learned policy's estimate runs a network)."""
    import torch

    from specray.engine.drafting import acceptance_estimates
    from specray.policies.base import DraftStep

    asked = []

    class Recording:
        def accept_prob(self, step):
            asked.append("model")
            return torch.full((len(step.seqs),), 0.25)

        def ngram_accept_prob(self, step):
            asked.append("ngram")
            return torch.full((len(step.seqs),), 0.75)

    def step(from_ngram):
        n = len(from_ngram)
        return DraftStep(torch.arange(n), 1, torch.zeros(n), torch.zeros(n), torch.ones(n), torch.zeros(n),
                         torch.zeros(n, 4), torch.zeros(n, 2), torch.tensor(from_ngram))

    assert acceptance_estimates(Recording(), step([False, False])).tolist() == [0.25, 0.25] and asked == ["model"]
    asked.clear()
    assert acceptance_estimates(Recording(), step([True])).tolist() == [0.75] and asked == ["ngram"]
    assert acceptance_estimates(Recording(), step([True, False])).tolist() == [0.75, 0.25]

"""Rows of several domains in one batch, each stopped by its own domain's policy."""

import pytest
import torch

from conftest import GREEDY_MAX_NEW
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.base import DraftStep, Outcome
from specray.policies.factory import make_policy
from specray.policies.per_row import PerRowPolicy

DOMAINS = ["code", "chat"]


@pytest.fixture(scope="module")
def engine(target, draft, tokenizer):
    return SpeculativeEngine(target, draft, tokenizer)


def owners(n: int) -> list[str]:
    return [DOMAINS[i % 2] for i in range(n)]


def two_policies(code: str, chat: str) -> dict:
    policies = {"code": make_policy(code, domain="code"), "chat": make_policy(chat, domain="chat")}
    policies["code"].version, policies["chat"].version = "v-code", "v-chat"
    return policies


@pytest.mark.parametrize("max_batch", [None, 3])
def test_a_mixed_batch_is_lossless_and_each_row_answers_to_its_own_policy(engine, prompts, references, max_batch):
    domains = owners(len(prompts))
    policies = two_policies("static:1", "static:4")
    out = engine.generate(prompts, [policies[d] for d in domains], GenerationConfig(max_new_tokens=GREEDY_MAX_NEW), domain=domains, max_batch=max_batch)
    assert [s.tokens for s in out.sequences] == references
    rows = out.traces.to_pylist()
    by_id = {str(i): d for i, d in enumerate(domains)}
    assert all(r["domain"] == by_id[r["prompt_id"]] for r in rows), "each trace row carries its own sequence's domain"
    lookahead = {d: {r["lookahead"] for r in rows if r["domain"] == d} for d in DOMAINS}
    assert lookahead["code"] == {1} and max(lookahead["chat"]) == 4, "static:1 rows draft 1 token, static:4 rows up to 4"
    assert {(r["domain"], r["policy"], r["policy_version"]) for r in rows} == {("code", "static:1", "v-code"), ("chat", "static:4", "v-chat")}


def test_each_policy_learns_from_its_own_rows_only(engine, prompts):
    domains = owners(len(prompts))
    policies = two_policies("heuristic:cost=off", "heuristic:cost=off")
    engine.generate(prompts, [policies[d] for d in domains], GenerationConfig(max_new_tokens=GREEDY_MAX_NEW), domain=domains, max_batch=4)
    for domain, policy in policies.items():
        theirs = torch.tensor([d != domain for d in domains])[: len(policy.k)]
        assert (policy.k[theirs] == 0).all(), f"the {domain} policy never started nor adapted another domain's rows"
        assert (policy.k[~theirs] != policy.k_start).any()


def test_answers_come_back_in_row_order():
    policies = two_policies("static:2", "static:5")
    policy = PerRowPolicy(policies["chat"])
    for row, domain in enumerate(["chat", "code", "chat", "code"]):
        policy.join(torch.tensor([row]), policies[domain])
    seqs = torch.tensor([3, 0, 2])
    assert policy.budget(seqs).tolist() == [2, 5, 5]
    policies["code"].acceptance[:] = 0.9
    policies["chat"].acceptance[:] = 0.1
    assert policy.acceptance.tolist() == pytest.approx([0.1, 0.9, 0.1, 0.9])
    n = len(seqs)
    step = DraftStep(seqs, 1, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.ones(n),
                     torch.zeros(n), torch.zeros(n, 10), torch.zeros(n, 4))
    assert policy.accept_prob(step).tolist() == pytest.approx([0.9, 0.1, 0.1])
    policy.observe(Outcome(torch.tensor([1, 2]), torch.tensor([2, 5]), torch.tensor([0, 5])))
    assert policies["code"].acceptance[1] < 0.9 and policies["chat"].acceptance[2] > 0.1


def test_policies_that_disagree_on_a_batch_setting_are_refused():
    def join(code: str, chat: str) -> None:
        policies = two_policies(code, chat)
        PerRowPolicy(policies["code"]).join(torch.tensor([1]), policies["chat"])

    with pytest.raises(ValueError, match=r"agree on draft_source \(static:2: 'ngram', static:2: 'model'\)"):
        join("static:2", "static:2,draft=ngram")
    with pytest.raises(ValueError, match="agree on cost_aware"):
        join("heuristic", "heuristic:cost=off")
    join("static:2", "static:5")  # kinds and knobs may differ


def test_a_row_that_finished_can_be_joined_again_by_another_policy():
    policies = two_policies("heuristic:k_start=2", "heuristic:k_start=6")
    policy = PerRowPolicy(policies["code"])
    policy.join(torch.tensor([0, 1]), policies["code"])
    policy.join(torch.tensor([2]), policies["chat"])
    assert policy.budget(torch.tensor([0, 1])).tolist() == [2, 2]
    policies["code"].k[:] = 9
    assert policy.budget(torch.tensor([0, 1])).tolist() == [9, 9], "the same rows' cut is kept; their answers are asked anew"
    policy.join(torch.tensor([1]), policies["chat"])
    assert policy.budget(torch.tensor([0, 1])).tolist() == [9, 6], "row 1 starts afresh under its new policy"
    assert policy.stopped_by(1)[1] == "v-chat"


def test_one_domain_per_prompt_or_one_for_all(engine, prompts):
    with pytest.raises(ValueError, match="3 prompts, 2 domains and 3 policies"):
        engine.generate(prompts[:3], None, GenerationConfig(max_new_tokens=4), domain=["code", "chat"])

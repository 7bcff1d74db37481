"""Speculative sampling draws from exactly the target's (warped) distribution."""

import pytest
import torch
from scipy.stats import chisquare

from conftest import EOS, perturbed, tiny_llama, tiny_tokenizer
from specray.engine.sampling import Sampling, distribution, verify_greedy, verify_sampled
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.factory import make_policy

VOCAB = 8
PROMPT = [3, 5, 4]


@pytest.fixture(scope="module")
def small_pair():
    target = tiny_llama(seed=4, vocab=VOCAB, hidden=16)
    return target, perturbed(target, noise=0.6, seed=5)


def exact_two_token_distribution(target, sampling: Sampling, prompt: list[int] = PROMPT) -> dict[tuple[int, ...], float]:
    """P(first two generated tokens) under target-only sampling, computed from the target's logits."""
    with torch.no_grad():
        first = distribution(target(torch.tensor([prompt])).logits[0, -1], sampling)
        probs = {}
        for t1 in range(VOCAB):
            if first[t1] == 0:
                continue
            if t1 == EOS:
                probs[(t1,)] = float(first[t1])
                continue
            second = distribution(target(torch.tensor([prompt + [t1]])).logits[0, -1], sampling)
            for t2 in range(VOCAB):
                if second[t2] > 0:
                    probs[(t1, t2)] = float(first[t1] * second[t2])
    return probs


def sampled_counts(engine, policy_spec, sampling, n_batches=16, batch=256, prompt: list[int] = PROMPT, max_batch=None):
    counts = {}
    for seed in range(n_batches):
        config = GenerationConfig(max_new_tokens=2, sampling=sampling, seed=seed)
        out = engine.generate([prompt] * batch, make_policy(policy_spec), config, max_batch=max_batch)
        for seq in out.sequences:
            counts[tuple(seq.tokens)] = counts.get(tuple(seq.tokens), 0) + 1
    return counts


def assert_matches(counts, probs):
    assert set(counts) <= set(probs), f"sampled sequences the target gives no mass: {set(counts) - set(probs)}"
    keys = sorted(probs, key=probs.get)
    total = sum(counts.values())
    observed, expected, pool_o, pool_e = [], [], 0, 0.0
    for key in keys:  # pool rare cells so every expected count is at least 5
        pool_o, pool_e = pool_o + counts.get(key, 0), pool_e + probs[key] * total
        if pool_e >= 5:
            observed.append(pool_o)
            expected.append(pool_e)
            pool_o, pool_e = 0, 0.0
    observed[-1] += pool_o
    expected[-1] += pool_e
    assert len(observed) >= 5
    expected = [e * total / sum(expected) for e in expected]  # the exact masses sum to 1 up to rounding
    assert chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize(
    "sampling",
    [Sampling(temperature=1.0), Sampling(temperature=0.7, top_k=5), Sampling(temperature=1.3, top_p=0.8)],
    ids=["t1", "topk", "topp"],
)
def test_sampling_keeps_the_target_distribution(small_pair, sampling):
    target, draft = small_pair
    engine = SpeculativeEngine(target, draft, tiny_tokenizer())
    probs = exact_two_token_distribution(target, sampling)
    counts = sampled_counts(engine, "static:3", sampling)
    assert_matches(counts, probs)


def test_sampling_with_continuous_batching_keeps_the_target_distribution(small_pair):
    """Rows admitted into freed slots mid-batch sample exactly as rows that started together."""
    target, draft = small_pair
    sampling = Sampling(temperature=1.0)
    engine = SpeculativeEngine(target, draft, tiny_tokenizer())
    assert_matches(sampled_counts(engine, "static:3", sampling, max_batch=48), exact_two_token_distribution(target, sampling))


REPEATING = [3, 5, 4, 3]  # its last token occurred before, so n-gram lookup proposes 5 (a point mass)


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=0.7, top_k=5)], ids=["t1", "topk"])
def test_sampling_with_ngram_drafts_keeps_the_target_distribution(small_pair, sampling):
    target, draft = small_pair
    engine = SpeculativeEngine(target, draft, tiny_tokenizer())
    counts = sampled_counts(engine, "static:3,draft=ngram", sampling, prompt=REPEATING)
    assert_matches(counts, exact_two_token_distribution(target, sampling, REPEATING))
    out = engine.generate([REPEATING] * 256, make_policy("static:3,draft=ngram"), GenerationConfig(2, sampling, seed=0))
    rows = out.traces.to_pylist()
    assert rows and {r["draft_token"] for r in rows} == {5} and {r["draft_prob"] for r in rows} == {1.0}
    assert 0 < sum(r["accepted"] for r in rows) < len(rows), "the point-mass draft must be both accepted and rejected"


def test_the_test_can_fail(small_pair):
    """Sampling from the draft alone is detectably different from the target distribution."""
    target, draft = small_pair
    sampling = Sampling(temperature=1.0)
    engine = SpeculativeEngine(draft, draft, tiny_tokenizer())
    counts = sampled_counts(engine, "target", sampling)
    with pytest.raises(AssertionError):
        assert_matches(counts, exact_two_token_distribution(target, sampling))


def test_rejections_happen(small_pair):
    target, draft = small_pair
    engine = SpeculativeEngine(target, draft, tiny_tokenizer())
    out = engine.generate([PROMPT] * 256, make_policy("static:3"), GenerationConfig(max_new_tokens=2, sampling=Sampling(1.0)))
    accepted = out.traces.column("accepted").to_pylist()
    assert 0.2 < sum(accepted) / len(accepted) < 0.95


def test_verify_resamples_from_the_residual():
    # two rows of one draft token each, verified at k + 1 = 2 positions per row: [row0 p0, row0 bonus, row1 p0, row1 bonus]
    target = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    draft = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    tokens, offsets = torch.tensor([1, 2]), torch.tensor([0, 1, 2])
    generator = torch.Generator().manual_seed(0)
    outcomes = [verify_sampled(target, draft, tokens, offsets, generator) for _ in range(2000)]
    first = [(int(a[0]), int(n[0])) for a, n in outcomes]
    accepted = [n for a, n in first if a == 1]
    rejected = [n for a, n in first if a == 0]
    assert abs(len(accepted) / 2000 - 0.5) < 0.05  # min(1, p/q) = 0.5
    assert set(rejected) == {0}  # residual max(0, p - q) puts all mass on token 0
    assert set(accepted) == {0, 1, 2}  # bonus token from the next distribution
    assert all(int(a[1]) == 1 and int(n[1]) == 0 for a, n in outcomes), "row 1: p = q on its token, always accepted"


def test_greedy_verify_accepts_exactly_the_argmax():
    # row 0 proposes [1, 1] (argmaxes 1, 0, 2: one accepted, correction 0); row 1 proposes nothing (bonus 2);
    # row 2 proposes [2] (argmaxes 2, 1: accepted, bonus 1)
    argmax = torch.tensor([1, 0, 2, 2, 2, 1])
    accepted, following = verify_greedy(argmax, torch.tensor([1, 1, 2]), torch.tensor([0, 2, 2, 3]))
    assert accepted.tolist() == [1, 0, 1] and following.tolist() == [0, 2, 1]
    greedy = Sampling()
    assert distribution(torch.tensor([[1.0, 1.0]]), greedy).tolist() == [[1.0, 0.0]]

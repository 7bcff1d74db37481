"""Lossless in low precision: measured logit noise, and ties told apart from divergences."""

import pytest
import torch

from conftest import random_prompts, reference_greedy, tiny_llama
from specray.bench import lossless_ok
from specray.engine.numerics import classify_difference, logit_noise


@pytest.fixture(scope="module")
def models():
    exact = tiny_llama(seed=0, dtype=torch.float64)
    return exact, tiny_llama(seed=0, dtype=torch.bfloat16)


def test_noise_is_measured_not_assumed(models):
    exact, low = models
    prompts = random_prompts(3, seed=1)
    continuations = [reference_greedy(exact, p, 12) for p in prompts]
    assert logit_noise(exact, prompts, continuations) < 1e-9
    assert logit_noise(low, prompts, continuations) > 1e-4, "bf16 forwards of different widths round differently"


def second_choice(model, prompt, reference, position):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + reference[:position]])).logits[0, -1].float()
    top2 = torch.topk(logits, 2)
    assert int(top2.indices[0]) == reference[position]
    return int(top2.indices[1]), float(top2.values[0] - top2.values[1])


def test_a_difference_within_twice_the_noise_is_a_tie_and_beyond_it_a_divergence(models):
    exact, _ = models
    prompt = random_prompts(1, seed=2)[0]
    reference = reference_greedy(exact, prompt, 10)
    other_token, gap = second_choice(exact, prompt, reference, 3)
    other = reference[:3] + [other_token] + reference[4:]
    tie = classify_difference(exact, prompt, reference, other, noise=gap / 2 + 1e-9)
    assert tie.tie and tie.position == 3 and tie.gap == pytest.approx(gap, abs=1e-6)
    assert not classify_difference(exact, prompt, reference, other, noise=gap / 2 - 1e-6).tie
    assert classify_difference(exact, prompt, reference, list(reference), noise=1.0) is None


def test_stopping_early_is_a_divergence_whatever_the_noise(models):
    exact, _ = models
    prompt = random_prompts(1, seed=2)[0]
    reference = reference_greedy(exact, prompt, 10)
    difference = classify_difference(exact, prompt, reference, reference[:-2], noise=1e9)
    assert not difference.tie and difference.position == len(reference) - 2


def report(target_dtype, identical, divergences):
    return {"precision": {"target": target_dtype}, "rows": [{"identical_to_target": identical, "divergences": divergences}]}


def test_bench_exit_rule_exact_in_float32_ties_allowed_in_bf16():
    assert lossless_ok(report("float32", True, 0)) and not lossless_ok(report("float32", False, 0))
    assert lossless_ok(report("bfloat16", False, 0)) and not lossless_ok(report("bfloat16", False, 1))
    assert lossless_ok(report("bfloat16", None, None)), "sampling rows carry no identity check"

"""The engine with its models on a CUDA device: the models' forwards and caches on the GPU, the engine's
bookkeeping (proposals, verdicts, policies, the rejection sampler's draws) on the CPU. Skipped where no GPU
is present, as in CI; run on a GPU machine with `pytest tests/test_cuda.py`."""

import copy

import pytest
import torch
from conftest import GREEDY_MAX_NEW, perturbed, tiny_llama, tiny_tokenizer
from feature_kit import teacher_data, trained_draft

from specray.engine.sampling import Sampling
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.factory import make_policy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SPECS = ["static:4", "confidence:0.3,cost=off", "heuristic:cost=off", "static:3,draft=ngram+model", "confidence"]


def on_gpu(model):
    return copy.deepcopy(model).to("cuda")


@pytest.fixture(scope="module")
def feature_draft(target):
    """A feature-level draft reading the target's first layer beside its final state, trained on the CPU."""
    return trained_draft(target, teacher_data(target), (1, 2))[0]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("kind", ["model", "feature"])
def test_greedy_on_the_gpu_is_lossless(target, draft, feature_draft, prompts, references, spec, batch_size, kind):
    engine = SpeculativeEngine(on_gpu(target), on_gpu({"model": draft, "feature": feature_draft}[kind]), tiny_tokenizer())
    out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=GREEDY_MAX_NEW), max_batch=batch_size)
    assert [seq.tokens for seq in out.sequences] == references
    if "cost=off" in spec or spec.startswith("static"):
        assert 0 < sum(s.accepted for s in out.sequences) < sum(s.drafted for s in out.sequences)


def test_sampling_on_the_gpu_keeps_the_target_distribution():
    from test_engine_sampling import VOCAB, assert_matches, exact_two_token_distribution, sampled_counts

    small = tiny_llama(seed=4, vocab=VOCAB, hidden=16)
    engine = SpeculativeEngine(on_gpu(small), on_gpu(perturbed(small, noise=0.6, seed=5)), tiny_tokenizer(VOCAB))
    sampling = Sampling(temperature=1.0)
    assert_matches(sampled_counts(engine, "static:3", sampling, max_batch=48), exact_two_token_distribution(small, sampling))

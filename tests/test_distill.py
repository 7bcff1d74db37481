"""Draft distillation: the command on a tiny target, the draft format, and the shipped default draft."""

import json

import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer
from transformers import DynamicCache

from specray.models import encode_prompt, load_model, load_pair
from specray.models.draft import SubsetHead, build_draft, load_draft, read_draft_metadata, save_draft
from specray.models.refs import DRAFT_METADATA, EMBEDDED_DRAFT_DIR, EMBEDDED_LAYER_DRAFT
from specray.training.distill import cached_teacher_data, distill_main, head_subset, subset_coverage
from specray.training.distill_data import TeacherData, interleave_domains, save_teacher_data, teacher_data
from specray.training.distill_eval import accepted_per_iteration, agreement_report, greedy_matches


@pytest.fixture
def tiny_target_dir(tmp_path):
    model, tokenizer = tiny_llama(dtype=torch.float32), tiny_tokenizer()
    model.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    return tmp_path / "target"


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"w{3 + i} w{5 + i} w9", "domain": ("code", "math")[i % 2]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_distill_command_writes_a_loadable_draft(tiny_target_dir, prompts_file, tmp_path):
    out = tmp_path / "draft"
    meta = distill_main(["--target", str(tiny_target_dir), "--out", str(out), "--layers", "1", "--max-steps", "3",
                         "--prompts", str(prompts_file), "--max-new-tokens", "6", "--eval-prompts", "4",
                         "--head-size", "32", "--seed", "3", "--threads", "1"])
    saved = read_draft_metadata(out)
    assert saved["target"]["ref"] == str(tiny_target_dir) and saved["num_hidden_layers"] == 1
    assert saved["training"]["seed"] == 3 and saved["training"]["steps"] == 3
    assert saved["training"]["command"].startswith("specray distill --target")
    assert 0 <= meta["heldout"]["by_domain"]["all"]["agreement"] <= 1 and meta["latency"]["ratio"] > 0
    pair = load_pair(str(tiny_target_dir), str(out), dtype="float32")
    assert pair.draft.model.embed_tokens.weight is pair.target.model.embed_tokens.weight
    assert not any(p.requires_grad for p in pair.draft.parameters()) and not pair.draft.training
    draft, _ = load_model(str(out))
    logits = draft(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, 64) and torch.isinf(logits).sum(-1).eq(64 - 32).all()


def test_init_from_continues_a_layer_draft_with_its_own_layers(tiny_target_dir, prompts_file, tmp_path):
    argv = ["--target", str(tiny_target_dir), "--prompts", str(prompts_file), "--max-new-tokens", "6",
            "--eval-prompts", "4", "--head-size", "32", "--threads", "1"]
    distill_main([*argv, "--out", str(tmp_path / "first"), "--layers", "1", "--max-steps", "2"])
    distill_main([*argv, "--out", str(tmp_path / "next"), "--init-from", str(tmp_path / "first"), "--max-steps", "2"])
    saved = read_draft_metadata(tmp_path / "next")
    assert saved["num_hidden_layers"] == 1 and saved["training"]["layers"] == 1, "the saved draft's layers, not --layers 2"
    assert saved["training"]["init_from"]["training"]["command"] == read_draft_metadata(tmp_path / "first")["training"]["command"]
    assert load_pair(str(tiny_target_dir), str(tmp_path / "next"), dtype="float32").draft.config.num_hidden_layers == 1


def test_reused_teacher_files_add_up_their_generation_times(tmp_path):
    def data(n: int, seconds: float) -> TeacherData:
        return TeacherData(prompts=[[3, 4]] * n, responses=[[5]] * n, topk_ids=torch.zeros(n, 2, dtype=torch.int32),
                           topk_logprobs=torch.zeros(n, 2, dtype=torch.float16), domains=["code"] * n,
                           row_ids=[f"r{i}" for i in range(n)], seconds=seconds)

    save_teacher_data(data(2, 30.5), tmp_path / "a.safetensors")
    save_teacher_data(data(3, 40.0), tmp_path / "b.safetensors")
    both, reused = cached_teacher_data(f"{tmp_path / 'a.safetensors'},{tmp_path / 'b.safetensors'}", make=None)
    assert reused and len(both.prompts) == 5 and both.seconds == 70.5, "made one after another, not side by side"
    with pytest.raises(FileNotFoundError, match="c.safetensors"):
        cached_teacher_data(f"{tmp_path / 'a.safetensors'},{tmp_path / 'c.safetensors'}", make=None)


def test_subset_head_gives_full_vocab_logits_with_minus_inf_elsewhere():
    weight = torch.randn(10, 4)
    head = SubsetHead(weight, torch.tensor([1, 4, 7]))
    hidden = torch.randn(2, 3, 4)
    logits = head(hidden)
    assert logits.shape == (2, 3, 10) and head.out_features == 10
    torch.testing.assert_close(logits[..., [1, 4, 7]], hidden @ weight[[1, 4, 7]].T)
    assert torch.isneginf(logits[..., [0, 2, 3, 5, 6, 8, 9]]).all()
    assert logits.softmax(-1)[..., [0, 2]].eq(0).all()


def test_draft_accepts_the_engine_call():
    target = tiny_llama(dtype=torch.float32)
    draft = build_draft(target, 1, torch.arange(0, 64, 2)).eval()
    mask = torch.zeros(1, 1, 3, 3).masked_fill(~torch.tril(torch.ones(3, 3, dtype=torch.bool)), float("-inf"))
    out = draft(input_ids=torch.tensor([[3, 4, 5]]), attention_mask=mask, position_ids=torch.arange(3)[None],
                cache=DynamicCache(), use_cache=True, output_hidden_states=True)
    assert out.logits.shape == (1, 3, 64) and out.hidden_states[-1].shape == (1, 3, 32)


def test_saved_draft_round_trips_and_ships_only_its_own_weights(tmp_path):
    target = tiny_llama(dtype=torch.float32)
    draft = build_draft(target, 2, torch.arange(0, 64, 3))
    with torch.no_grad():
        draft.model.layers[1].mlp.up_proj.weight.add_(0.1)
    save_draft(draft, target, "tiny", tmp_path / "d", {"note": "x"})
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "d" / "draft.safetensors")))
    assert all(k.startswith("model.layers.") for k in keys - {"head_token_ids"}) and "head_token_ids" in keys
    again = load_draft(tmp_path / "d", target)
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(again(input_ids=ids).logits, draft(input_ids=ids).logits)
    with pytest.raises(ValueError, match="distilled for"):
        load_draft(tmp_path / "d", tiny_llama(vocab=48, dtype=torch.float32))


def test_draft_layers_start_as_copies_of_the_target_first_layers():
    target = tiny_llama(layers=3, dtype=torch.float32)
    draft = build_draft(target, 2)
    torch.testing.assert_close(draft.model.layers[1].self_attn.q_proj.weight,
                               target.model.layers[1].self_attn.q_proj.weight)
    assert [n for n, p in draft.named_parameters() if p.requires_grad] and all(
        n.startswith("model.layers.") for n, p in draft.named_parameters() if p.requires_grad)


def test_head_subset_keeps_most_frequent_tokens_and_eos():
    target, tokenizer = tiny_llama(dtype=torch.float32), tiny_tokenizer()
    rows = [{"id": str(i), "prompt": f"w{i + 3} w7", "domain": "chat"} for i in range(6)]
    data = teacher_data(target, tokenizer, rows, max_new_tokens=8, topk=8, batch_size=4)
    ids = head_subset(data, 5, {2})
    assert len(ids) == 5 and 2 in ids.tolist()
    counts = torch.bincount(torch.tensor([t for r in data.responses for t in r]), minlength=64)
    top = set(counts.argsort(descending=True)[:4].tolist())
    assert len(top & set(ids.tolist())) >= 3
    assert 0 < subset_coverage(ids, data) < 1 and subset_coverage(torch.arange(64), data) == 1


def test_greedy_teacher_data_matches_transformers_generate():
    target, tokenizer = tiny_llama(dtype=torch.float32), tiny_tokenizer()
    rows = [{"id": str(i), "prompt": " ".join(f"w{3 + (i * 7 + j) % 50}" for j in range(3 + i)), "domain": "code"}
            for i in range(5)]
    data = teacher_data(target, tokenizer, rows, max_new_tokens=6, topk=4, batch_size=3)
    for prompt, response in zip(data.prompts, data.responses):
        ref = target.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=2, pad_token_id=0)
        assert response == ref[0, len(prompt):].tolist()
    assert data.topk_ids[:, 0].tolist() == [t for r in data.responses for t in r]


def test_replay_of_greedy_speculation_at_k():
    assert accepted_per_iteration([True] * 5 + [False, True], k=4) == [4, 0, 1]
    assert accepted_per_iteration([], k=4) == []
    report = agreement_report([[True, False], [True, True]], ["code", "math"], k=4)
    assert report["all"]["agreement"] == 0.75 and report["math"]["agreement"] == 1.0


def test_interleaving_keeps_a_prefix_domain_balanced():
    rows = [{"id": str(i), "domain": d} for d in ("code", "math", "chat") for i in range(4)]
    assert sorted(r["domain"] for r in interleave_domains(rows, 0)[:3]) == ["chat", "code", "math"]


def test_shipped_draft_is_small_and_documented():
    meta = json.loads((EMBEDDED_DRAFT_DIR / DRAFT_METADATA).read_text())
    size = sum(p.stat().st_size for p in EMBEDDED_DRAFT_DIR.iterdir())
    assert size <= 40 * 2**20
    assert meta["target"]["ref"] == "embedded" and meta["training"]["command"].startswith("specray distill")
    assert {"code", "math", "logic", "chat", "all"} <= set(meta["heldout"]["by_domain"])


@pytest.mark.slow
def test_shipped_draft_agrees_with_the_target_as_recorded():
    """Teacher-forced on a fixed held-out subset: at least the recorded agreement minus a margin."""
    from specray.data.builtin import builtin_prompts

    pair = load_pair(draft_ref=EMBEDDED_LAYER_DRAFT, dtype="float32")  # the agreement was recorded in float32
    assert pair.draft.model.embed_tokens.weight is pair.target.model.embed_tokens.weight
    rows = interleave_domains(builtin_prompts("heldout"), 0)[:24]
    data = teacher_data(pair.target, pair.tokenizer, rows, max_new_tokens=64, topk=1, batch_size=24)
    first = next(r["prompt"] for r in rows if r["id"] == data.row_ids[0])
    assert data.prompts[0] == encode_prompt(pair.tokenizer, first)
    report = agreement_report(greedy_matches(pair.draft, data), data.domains)
    recorded = read_draft_metadata(EMBEDDED_DRAFT_DIR)["heldout"]["by_domain"]["all"]["agreement"]
    assert report["all"]["agreement"] >= recorded - 0.05, report

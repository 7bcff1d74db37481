"""Precision per role: `dtype=auto` measures both dtypes on each model's own work and keeps the faster,
a distilled draft gets its own copy of the shared weights when its dtype differs from the target's,
and a dtype the device cannot run is refused naming the device."""

import pytest
import torch

from conftest import random_prompts, reference_greedy, tiny_llama, tiny_tokenizer
from specray.config import load_config
from specray.distributed import runner as runner_mod
from specray.distributed.runner import BatchRunner
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models import load_pair
from specray.models import precision as precision_mod
from specray.models.draft import build_draft, save_draft
from specray.models.precision import check_dtype_runs, choose
from specray.policies.factory import make_policy


def fake_timings(monkeypatch, table):
    """`work_ms` answers from `table[(role_hidden_layers, dtype)]` instead of a clock."""
    monkeypatch.setattr(precision_mod, "work_ms", lambda model, work: table[(model.config.num_hidden_layers, next(model.parameters()).dtype)])


def test_choose_keeps_the_faster_dtype_and_records_both(monkeypatch):
    model = tiny_llama(layers=2, dtype=torch.float32)
    fake_timings(monkeypatch, {(2, torch.float32): 10.0, (2, torch.bfloat16): 5.0})
    timings = {}
    assert choose("target", model, (), timings) == torch.bfloat16
    assert timings == {"target": {"float32": 10.0, "bfloat16": 5.0}}
    assert next(model.parameters()).dtype == torch.float32, "timing a copy must leave the model as it was"


def test_low_precision_must_clearly_pay(monkeypatch):
    model = tiny_llama(layers=2, dtype=torch.float32)
    fake_timings(monkeypatch, {(2, torch.float32): 10.0, (2, torch.bfloat16): 9.5})
    assert choose("draft", model, (), {}) == torch.float32


@pytest.fixture
def distilled(tmp_path):
    """A tiny target dir and a distilled 1-layer draft for it (sharing embeddings, norm and head)."""
    target, tokenizer = tiny_llama(layers=3, dtype=torch.float32, eos_boost=1.5), tiny_tokenizer()
    target.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    draft = build_draft(target, 1)
    save_draft(draft, target, str(tmp_path / "target"), tmp_path / "draft")
    return tmp_path / "target", tmp_path / "draft"


@pytest.mark.parametrize("target_dtype, draft_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                                       (torch.bfloat16, torch.bfloat16)])
def test_auto_pair_runs_each_role_in_its_chosen_dtype(monkeypatch, distilled, target_dtype, draft_dtype):
    fake_timings(monkeypatch, {(3, torch.float32): 10.0, (3, torch.bfloat16): 1.0 if target_dtype == torch.bfloat16 else 20.0,
                               (1, torch.float32): 10.0, (1, torch.bfloat16): 1.0 if draft_dtype == torch.bfloat16 else 20.0})
    pair = load_pair(str(distilled[0]), str(distilled[1]), dtype="auto")
    assert {p.dtype for p in pair.target.parameters()} == {target_dtype}
    assert {p.dtype for p in pair.draft.parameters()} == {draft_dtype}
    shared = pair.draft.model.embed_tokens.weight is pair.target.model.embed_tokens.weight
    assert shared == (target_dtype == draft_dtype), "a draft in another dtype needs its own copy of the shared weights"
    assert pair.precision.describe()["target"] == str(target_dtype).removeprefix("torch.")
    out = SpeculativeEngine(pair.target, pair.draft, pair.tokenizer).generate(
        random_prompts(3, seed=5), make_policy("static:3"), GenerationConfig(max_new_tokens=8))
    assert all(len(s.tokens) > 0 for s in out.sequences)


def test_a_low_precision_draft_keeps_a_float32_target_exact(monkeypatch, distilled):
    """Verification decides every token, so a bf16 draft changes speed, never the float32 target's output."""
    fake_timings(monkeypatch, {(3, torch.float32): 10.0, (3, torch.bfloat16): 20.0, (1, torch.float32): 10.0, (1, torch.bfloat16): 1.0})
    pair = load_pair(str(distilled[0]), str(distilled[1]), dtype="auto")
    assert pair.precision.target == torch.float32 and pair.precision.draft == torch.bfloat16
    engine = SpeculativeEngine(pair.target, pair.draft, pair.tokenizer)
    prompts = random_prompts(8, seed=9)
    for spec in ("static:4", "confidence:cost=off", "static:3,draft=ngram+model"):
        out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=16))
        assert [s.tokens for s in out.sequences] == [reference_greedy(pair.target, p, 16) for p in prompts], spec
        assert sum(s.accepted for s in out.sequences) > 0


def test_real_calibration_times_both_dtypes(distilled):
    pair = load_pair(str(distilled[0]), str(distilled[1]), dtype="auto")
    timings = pair.precision.timings_ms
    assert set(timings) == {"target", "draft"}
    assert all(set(t) == {"float32", "bfloat16"} and min(t.values()) > 0 for t in timings.values())


def test_auto_weighs_each_role_at_the_batch_size_the_pair_decodes_at(monkeypatch, distilled):
    """bf16 that pays only for wide batches (as on a CPU with AMX) is chosen for a batch of 8, not for 1."""
    timed = []

    def wide_bf16_is_cheap(model, work):
        timed.append(work)
        return 10.0 if next(model.parameters()).dtype == torch.float32 else (1.0 if work[0][0] >= 4 else 20.0)

    monkeypatch.setattr(precision_mod, "work_ms", wide_bf16_is_cheap)
    one = load_pair(str(distilled[0]), str(distilled[1]), dtype="auto")
    assert (one.precision.target, one.precision.draft) == (torch.float32, torch.float32)
    assert {batch for work in timed for batch, _ in work} == {1}
    timed.clear()
    eight = load_pair(str(distilled[0]), str(distilled[1]), dtype="auto", batch_size=8)
    assert (eight.precision.target, eight.precision.draft) == (torch.bfloat16, torch.bfloat16)
    assert {batch for work in timed for batch, _ in work} == {8}


def test_a_job_worker_chooses_precision_for_its_batch_size(monkeypatch, distilled):
    loaded = []
    monkeypatch.setattr(runner_mod, "load_pair", lambda *args: loaded.append(args) or load_pair(*args[:2], "float32"))
    cfg = load_config(None, ["generation.batch_size=6", f"models.target={distilled[0]}", f"models.draft={distilled[1]}"])
    BatchRunner(cfg, "data.jsonl")
    assert loaded[0][-1] == 6


def test_explicit_dtype_is_used_for_both_roles(distilled):
    pair = load_pair(str(distilled[0]), str(distilled[1]), dtype="bfloat16")
    assert {p.dtype for m in (pair.target, pair.draft) for p in m.parameters()} == {torch.bfloat16}
    assert pair.precision.timings_ms == {}


def test_a_dtype_the_device_cannot_run_names_the_device():
    check_dtype_runs(torch.bfloat16, "cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the unavailable-device case cannot be shown here")
    with pytest.raises(ValueError, match="cannot run on device cuda"):
        check_dtype_runs(torch.bfloat16, "cuda")

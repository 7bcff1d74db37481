"""Feature-level (EAGLE) drafts: training, the engine feeding them the target's states, losslessness,
the file format, and refusals of targets they were not trained for."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from conftest import EOS, GREEDY_MAX_NEW, reference_greedy, tiny_llama, tiny_tokenizer
from feature_kit import teacher_data, trained_draft

from specray.engine.forward import forward_with_states
from specray.engine.sampling import Sampling
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models import load_pair
from specray.models.draft import SubsetHead, read_draft_metadata
from specray.models.feature_draft import (
    FeatureDraft, build_feature_draft, load_feature_draft, reads_target_hidden, save_feature_draft,
)
from specray.models.refs import EMBEDDED_FEATURE_DRAFT, EMBEDDED_FEATURE_DRAFT_DIR
from specray.policies.factory import make_policy
from specray.cli import main
from specray.training.distill_data import TeacherData
from specray.training.distill_eval import agreement_report
from specray.training.distill_features import feature_matches, shifted, target_states

MAX_NEW = GREEDY_MAX_NEW  # the shared `prompts` / `references` fixtures' length


@pytest.fixture(scope="module")
def teacher(target) -> TeacherData:
    """`feature_kit.teacher_data`, once for the module."""
    return teacher_data(target)


@pytest.fixture(scope="module")
def trained(target, teacher):
    """A draft reading the target's final states (EAGLE)."""
    return trained_draft(target, teacher)


@pytest.fixture(scope="module")
def fused(target, teacher):
    """A draft reading the target's first layer beside its final state, fused (EAGLE-3)."""
    return trained_draft(target, teacher, target_layers=(1, 2))


@pytest.fixture(scope="module")
def engine(target, trained):
    return SpeculativeEngine(target, trained[0], tiny_tokenizer())


def test_training_on_target_states_fits_them(trained):
    _, before, after, stats = trained
    assert stats["steps"] == 300
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize("spec", ["static:1", "static:4", "heuristic:cost=off", "confidence:0.3,cost=off",
                                  "static:3,draft=ngram+model"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_greedy_is_lossless(engine, prompts, references, spec, batch_size):
    out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=batch_size)
    for seq, ref in zip(out.sequences, references):
        assert seq.tokens == ref
        assert seq.stop_reason == ("eos" if ref[-1] == EOS else "max_new_tokens")
    drafted, accepted = sum(s.drafted for s in out.sequences), sum(s.accepted for s in out.sequences)
    assert 0 < accepted < drafted


def test_a_draft_reading_several_target_layers_learns_their_fusion(fused):
    draft, before, after, stats = fused
    assert draft.target_layers == (1, 2) and draft.state_size == 2 * draft.config.hidden_size
    assert stats["steps"] == 300 and after > before + 0.3, (before, after)
    hidden = draft.config.hidden_size
    assert draft.fuse.weight[:, :hidden].abs().max() > 1e-3, "it reads the first layer, which started at zero weight"


@pytest.mark.parametrize("spec", ["static:4", "confidence:0.3,cost=off", "static:3,draft=ngram+model"])
@pytest.mark.parametrize("batch_size", [1, 16])
def test_greedy_is_lossless_reading_several_target_layers(target, fused, prompts, references, spec, batch_size):
    engine = SpeculativeEngine(target, fused[0], tiny_tokenizer())
    out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=batch_size)
    assert [seq.tokens for seq in out.sequences] == references
    assert 0 < sum(s.accepted for s in out.sequences) < sum(s.drafted for s in out.sequences)


def with_subset_head(draft, token_ids: list[int]):
    """`draft` with an LM head over `token_ids` only (listed out of order on purpose)."""
    subset = copy.deepcopy(draft)
    subset.lm_head = SubsetHead(draft.lm_head.weight, torch.tensor(token_ids))
    return subset


@pytest.mark.parametrize("batch_size", [1, 16])
def test_a_subset_head_draft_proposes_only_its_tokens_and_stays_lossless(target, trained, prompts, references, batch_size):
    token_ids = [t for t in range(63, -1, -1) if t % 3 != 1]  # every token but a third of them, descending
    engine = SpeculativeEngine(target, with_subset_head(trained[0], token_ids), tiny_tokenizer())
    assert engine.draft_support.tolist() == sorted(token_ids)
    out = engine.generate(prompts, make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=batch_size)
    assert [seq.tokens for seq in out.sequences] == references
    drafted = [r["draft_token"] for r in out.traces.to_pylist()]
    assert len(drafted) > 50 and set(drafted) <= set(token_ids)
    assert sum(s.accepted for s in out.sequences) > 0


@pytest.mark.parametrize("spec,max_batch,reads,at_admission", [
    ("static:3", None, "final", True), ("static:3", 5, "final", True), ("static:3,draft=ngram+model", 4, "final", True),
    ("static:3", 5, "fused", True), ("static:3", 5, "final", False), ("static:3", 5, "fused", False)])
def test_first_draft_tokens_read_the_targets_true_states(target, trained, fused, prompts, spec, max_batch, reads, at_admission):
    """The draft's probability of every round's first token, as the engine recorded it, equals the draft
    reading the finished sequence with the target's own states: prefill, the draft's read of prompts at
    admission or as a catch-up later (`at_admission=False`: as when the batch idled), catch-up after
    n-gram rounds, refills and commits hand it exactly the states of the tokens before, at every target
    layer it reads."""
    draft = {"final": trained, "fused": fused}[reads][0]
    engine = SpeculativeEngine(target, draft, tiny_tokenizer())
    if not at_admission:
        admit = engine.admit
        engine.admit = lambda state, drafts: admit(state, False)
    out = engine.generate(prompts, make_policy(spec), GenerationConfig(max_new_tokens=MAX_NEW), max_batch=max_batch)
    firsts = [r for r in out.traces.to_pylist() if r["depth"] == 1 and r["draft_prob"] < 1.0]  # model, not n-gram
    assert len(firsts) > 20
    for i, (prompt, seq) in enumerate(zip(prompts, out.sequences)):
        tokens = torch.tensor([prompt + seq.tokens])
        _, states = forward_with_states(target, draft.target_layers, input_ids=tokens)
        probs = F.softmax(draft(input_ids=tokens, target_hidden=shifted(states)).logits[0].double(), -1)
        for row in (r for r in firsts if r["prompt_id"] == str(i)):
            position = len(prompt) + row["gen_position"] - 1  # the token before the drafted one
            assert row["draft_prob"] == pytest.approx(float(probs[position, row["draft_token"]]), rel=1e-5, abs=1e-7)


def test_re_reading_accepted_tokens_is_a_drafting_step_not_a_catch_up(target, trained, prompts):
    """A feature-level draft starts each round by re-reading the tokens the target accepted, with the target's
    own states: a steady step, whatever its width, priced as drafting steps are. Only tokens rows skipped are
    a catch-up, which the cost model keeps apart (it prices probes), and a batch that drafts every round has one:
    its first round's read of the prompts (`Decoding.draft_reads_newcomers`)."""
    engine = SpeculativeEngine(target, trained[0], tiny_tokenizer())
    widths, catch_ups, forward = [], [], engine.forward

    def timed(model, cache, chunks, *args, **kwargs):
        if model is engine.draft and kwargs.get("hidden"):  # a draft step (the admission read keeps no state)
            widths.append(max(map(len, chunks)))
        return forward(model, cache, chunks, *args, **kwargs)

    engine.forward = timed
    engine.costs.observe_catch_up = lambda batch, width, ms: catch_ups.append(ms)
    out = engine.generate(prompts, make_policy("static:3"), GenerationConfig(max_new_tokens=MAX_NEW))
    assert widths[0] == max(map(len, prompts)), "the first step reads the prompts"
    assert sum(s.accepted for s in out.sequences) > 0 and max(widths[1:]) > 1, "some rounds re-read accepted tokens"
    assert len(catch_ups) == 1


@pytest.mark.parametrize("target_layers", [None, (1, 2)], ids=["final", "fused"])
def test_sampling_keeps_the_target_distribution(target_layers):
    from test_engine_sampling import VOCAB, assert_matches, exact_two_token_distribution, sampled_counts

    small = tiny_llama(seed=4, vocab=VOCAB, hidden=16)
    draft = build_feature_draft(small, seed=1, target_layers=target_layers).to(torch.float64)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a draft that is neither the identity nor useless
        for weight in (draft.fc.weight, *([draft.fuse.weight] if target_layers else [])):
            weight.add_(0.3 * torch.randn(weight.shape, generator=generator, dtype=torch.float64))
    draft.requires_grad_(False)
    engine = SpeculativeEngine(small, draft, tiny_tokenizer(VOCAB))
    sampling = Sampling(temperature=1.0)
    assert_matches(sampled_counts(engine, "static:3", sampling, max_batch=48), exact_two_token_distribution(small, sampling))
    subset = SpeculativeEngine(small, with_subset_head(draft, [6, 1, 3, 2]), tiny_tokenizer(VOCAB))  # q = 0 off the subset
    assert_matches(sampled_counts(subset, "static:3", sampling, max_batch=48), exact_two_token_distribution(small, sampling))


def test_saved_feature_draft_round_trips_ships_only_its_own_weights_and_pairs(tmp_path, trained):
    model, tokenizer = tiny_llama(seed=0, dtype=torch.float32), tiny_tokenizer()
    model.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    draft = build_feature_draft(model, torch.arange(0, 64, 2))
    with torch.no_grad():
        draft.fc.bias.add_(0.1)
    save_feature_draft(draft, model, str(tmp_path / "target"), tmp_path / "d", {"note": "x"})
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "d" / "draft.safetensors")))
    assert "fc.weight" in keys and "head_token_ids" in keys and not any("embed" in k or "lm_head" in k for k in keys)
    meta = read_draft_metadata(tmp_path / "d")
    assert meta["format"] == "specray-feature-draft/1" and meta["note"] == "x" and meta["target"]["weights"]
    pair = load_pair(str(tmp_path / "target"), str(tmp_path / "d"), dtype="float32")
    assert isinstance(pair.draft, FeatureDraft) and reads_target_hidden(pair.draft)
    assert pair.draft.model.embed_tokens.weight is pair.target.model.embed_tokens.weight
    torch.testing.assert_close(pair.draft.fc.bias, draft.fc.bias)
    bf16 = load_feature_draft(tmp_path / "d", pair.target, torch.bfloat16)  # a dtype of its own: copies, same fit
    assert bf16.fc.weight.dtype == torch.bfloat16 and pair.target.model.embed_tokens.weight.dtype == torch.float32


def test_a_loaded_draft_carries_its_recorded_held_out_acceptance_and_a_bad_record_names_the_key(tmp_path):
    from specray.config import ModelsConfig
    from specray.distributed.draft_artifacts import draft_problem
    from specray.models.draft import write_draft_metadata

    model, tokenizer = tiny_llama(seed=0, dtype=torch.float32), tiny_tokenizer()
    model.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    save_feature_draft(build_feature_draft(model), model, str(tmp_path / "target"), tmp_path / "d",
                       {"heldout": {"by_domain": {"code": {"agreement": 0.4}, "all": {"agreement": 0.5}}}})
    pair = load_pair(str(tmp_path / "target"), str(tmp_path / "d"), dtype="float32")
    assert SpeculativeEngine(pair.target, pair.draft, tokenizer).expected_acceptance("math") == 0.5
    assert pair.draft.measured_acceptance == {"code": 0.4, "all": 0.5}
    meta = read_draft_metadata(tmp_path / "d")
    meta["heldout"]["by_domain"]["code"]["agreement"] = 1.7
    write_draft_metadata(tmp_path / "d", meta)
    with pytest.raises(ValueError, match=r"specray_draft.json: heldout.by_domain.code.agreement must be a number in \[0, 1\], got 1.7"):
        load_pair(str(tmp_path / "target"), str(tmp_path / "d"), dtype="float32")
    problem = draft_problem(ModelsConfig(target=str(tmp_path / "target"), draft=str(tmp_path / "d")))
    assert "heldout.by_domain.code.agreement" in problem and str(tmp_path / "d") in problem


def test_a_draft_reading_several_target_layers_ships_its_fusion_and_refuses_what_does_not_fit(tmp_path):
    model = tiny_llama(seed=0, dtype=torch.float32)
    draft = build_feature_draft(model, target_layers=(1, 2))
    with torch.no_grad():
        draft.fuse.weight.add_(0.1)
    save_feature_draft(draft, model, "tiny", tmp_path / "d")
    assert read_draft_metadata(tmp_path / "d")["target_layers"] == [1, 2]
    assert "fuse.weight" in load_file(str(tmp_path / "d" / "draft.safetensors"))
    loaded = load_feature_draft(tmp_path / "d", model)
    assert loaded.target_layers == (1, 2)
    torch.testing.assert_close(loaded.fuse.weight, draft.fuse.weight)
    meta_file = next(tmp_path.joinpath("d").glob("*.json"))
    for layers, message in [([2], r"fusion weight has shape \(32, 64\); reading target layers \[2\] .* needs None"),
                            ([1, 3], r"target layers \[1, 3\]: need ascending layers in 1..2 ending with 2")]:
        meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "target_layers": layers}))
        with pytest.raises(ValueError, match=message):
            load_feature_draft(tmp_path / "d", model)
    for bad in ((0, 2), 2, ("a", 2)):
        with pytest.raises(ValueError, match=r"target layers .*need ascending layers in 1..2"):
            build_feature_draft(model, target_layers=bad)


def test_a_target_of_another_shape_is_refused_naming_both_shapes(tmp_path):
    small = tiny_llama(seed=0, dtype=torch.float32)
    save_feature_draft(build_feature_draft(small), small, "tiny-32", tmp_path / "d")
    wide = tiny_llama(seed=0, dtype=torch.float32, hidden=48)
    with pytest.raises(ValueError, match=r"shape \(32, 64\).*hidden size 48 needs \(48, 96\)"):
        load_feature_draft(tmp_path / "d", wide)


def test_another_target_of_the_same_shape_is_refused_naming_both(tmp_path):
    mine = tiny_llama(seed=0, dtype=torch.float32)
    save_feature_draft(build_feature_draft(mine), mine, "tiny-seed-0", tmp_path / "d")
    load_feature_draft(tmp_path / "d", tiny_llama(seed=0, dtype=torch.bfloat16))  # the same weights in bf16 fit
    with pytest.raises(ValueError, match=r"trained on the target 'tiny-seed-0'.*cannot draft for the target"):
        load_feature_draft(tmp_path / "d", tiny_llama(seed=1, dtype=torch.float32))


@pytest.fixture
def eagle_argv(tmp_path) -> list[str]:
    """`specray distill --kind eagle` on a tiny target and prompts file, less --out and --max-steps."""
    model, tokenizer = tiny_llama(dtype=torch.float32), tiny_tokenizer()
    model.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"w{3 + i} w{5 + i} w9", "domain": "math"}) + "\n"
                               for i in range(12)))
    return ["distill", "--kind", "eagle", "--target", str(tmp_path / "target"), "--prompts", str(prompts),
            "--max-new-tokens", "6", "--eval-prompts", "4", "--head-size", "32", "--seed", "3", "--threads", "1",
            "--teacher-dtype", "bfloat16", "--train-dtype", "bfloat16"]


def test_distill_eagle_command_writes_a_draft_the_pair_loads(tmp_path, eagle_argv, capsys):
    out = tmp_path / "eagle"
    status = main([*eagle_argv, "--out", str(out), "--max-steps", "3"])
    assert status == 0, "the CLI's exit status"
    saved = meta = read_draft_metadata(out)
    assert saved["training"]["kind"] == "eagle" and saved["training"]["steps"] == 3
    assert saved["training"]["teacher"]["dtype"] == "bfloat16"
    assert 0 <= meta["heldout"]["by_domain"]["all"]["agreement"] <= 1 and meta["latency"]["ratio"] > 0
    assert json.loads(capsys.readouterr().out)["heldout"]["all"]["agreement"] == meta["heldout"]["by_domain"]["all"]["agreement"]
    pair = load_pair(str(tmp_path / "target"), str(out), dtype="float32")
    generated = SpeculativeEngine(pair.target, pair.draft, pair.tokenizer).generate(
        [[3, 4, 5]], make_policy("static:2"), GenerationConfig(max_new_tokens=5))
    assert generated.sequences[0].tokens == reference_greedy(pair.target, [3, 4, 5], 5)


def test_feature_layers_choose_what_a_new_eagle_draft_reads_and_a_bad_one_fails_before_any_work(tmp_path, eagle_argv):
    main([*eagle_argv, "--out", str(tmp_path / "fused"), "--max-steps", "2", "--feature-layers", "1"])
    saved = read_draft_metadata(tmp_path / "fused")
    assert saved["target_layers"] == saved["training"]["target_layers"] == [1, 2]
    assert load_pair(str(tmp_path / "target"), str(tmp_path / "fused"), dtype="float32").draft.target_layers == (1, 2)
    for bad in ("2", "3", "x"):
        with pytest.raises(ValueError, match=rf"--feature-layers '{bad}'"):
            main([*eagle_argv, "--out", str(tmp_path / "bad"), "--feature-layers", bad])
    layers_argv = [*eagle_argv, "--out", str(tmp_path / "bad"), "--feature-layers", "1"]
    layers_argv[layers_argv.index("eagle")] = "layers"
    with pytest.raises(ValueError, match=r"--feature-layers '1': only an eagle draft reads target layers, not --kind layers"):
        main(layers_argv)
    assert not (tmp_path / "bad").exists()


def test_init_from_continues_a_saved_draft_and_records_the_chain(tmp_path, eagle_argv):
    first, second, again = tmp_path / "first", tmp_path / "second", tmp_path / "again"
    main([*eagle_argv, "--out", str(first), "--max-steps", "3"])
    main([*eagle_argv, "--out", str(second), "--max-steps", "0", "--init-from", str(first), "--head-size", "16"])
    saved = read_draft_metadata(second)
    assert saved["training"]["init_from"] == {"path": str(first), "training": read_draft_metadata(first)["training"]}
    assert saved["head_subset"]["size"] == 32, "the draft's own head subset, not --head-size"
    assert load_file(second / "draft.safetensors").keys() == load_file(first / "draft.safetensors").keys()
    assert all(torch.equal(w, load_file(first / "draft.safetensors")[k]) for k, w in load_file(second / "draft.safetensors").items())
    main([*eagle_argv, "--out", str(again), "--max-steps", "2", "--init-from", str(second)])
    chain = read_draft_metadata(again)["training"]
    assert chain["steps"] == 2 and chain["init_from"]["training"]["init_from"]["path"] == str(first)
    assert not torch.equal(load_file(again / "draft.safetensors")["fc.weight"], load_file(second / "draft.safetensors")["fc.weight"])


def test_init_from_a_draft_of_another_kind_fails_before_any_work(tmp_path, eagle_argv):
    layers = tmp_path / "layers"
    main([*eagle_argv[:2], "layers", *eagle_argv[3:], "--out", str(layers), "--layers", "1", "--max-steps", "1"])
    with pytest.raises(ValueError, match=r"--init-from .*layers: holds a 'specray-draft/1' draft; --kind eagle continues"):
        main([*eagle_argv, "--out", str(tmp_path / "x"), "--init-from", str(layers)])
    with pytest.raises(ValueError, match=r"--init-from .*nowhere: no readable draft metadata"):
        main([*eagle_argv, "--out", str(tmp_path / "x"), "--init-from", str(tmp_path / "nowhere")])
    assert not (tmp_path / "x").exists()


def test_shipped_feature_draft_is_small_and_documented():
    meta = read_draft_metadata(EMBEDDED_FEATURE_DRAFT_DIR)
    assert sum(p.stat().st_size for p in EMBEDDED_FEATURE_DRAFT_DIR.iterdir()) <= 40 * 2**20
    assert meta["format"] == "specray-feature-draft/1" and meta["target"]["ref"] == "embedded"
    assert meta["training"]["command"].startswith("specray distill --kind eagle")
    assert {"code", "math", "logic", "chat", "all"} <= set(meta["heldout"]["by_domain"])


@pytest.mark.slow
def test_shipped_feature_draft_agrees_with_the_target_as_recorded():
    """Teacher-forced on a fixed held-out subset, reading the bfloat16 target's states as it was evaluated:
    at least the recorded agreement minus a margin."""
    from specray.data.builtin import builtin_prompts
    from specray.training.distill_data import interleave_domains, teacher_data

    pair = load_pair(draft_ref=EMBEDDED_FEATURE_DRAFT, dtype="float32")
    assert isinstance(pair.draft, FeatureDraft)
    teacher = copy.deepcopy(pair.target).to(torch.bfloat16)
    rows = interleave_domains(builtin_prompts("heldout"), 0)[:24]
    data = teacher_data(teacher, pair.tokenizer, rows, max_new_tokens=64, topk=1, batch_size=24)
    states = target_states(teacher, data, pair.draft.target_layers)
    report = agreement_report(feature_matches(pair.draft, data, states), data.domains)
    recorded = read_draft_metadata(EMBEDDED_FEATURE_DRAFT_DIR)["heldout"]["by_domain"]["all"]["agreement"]
    assert report["all"]["agreement"] >= recorded - 0.05, report

"""`specray bench` on tiny models saved to local directories, as a user with their own pair would run it."""

import json

import pytest

from conftest import perturbed, tiny_llama, tiny_tokenizer
from specray.bench import describe_cpu, split_policies
from specray.cli import main
from specray.policies.artifacts import ArtifactError
from specray.policies.disco import FEATURES, DiscoClassifier
from specray.policies.registry import publish


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    target = tiny_llama(seed=0)
    for name, model in (("target", target), ("draft", perturbed(target, noise=0.05))):
        model.save_pretrained(root / name)
        tiny_tokenizer().save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": " ".join(f"w{3 + (i * 7 + j) % 60}" for j in range(3 + i % 5)), "domain": d}
            for i, d in enumerate(["code", "math", "chat"] * 4)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_bench_reports_every_policy_against_target(pair_dirs, prompts_file, tmp_path):
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"),
        "--prompts", str(prompts_file), "--policies", "static:2,confidence:0.3,cost=off,oracle,hf-static:2",
        "--max-new-tokens", "16", "--batch-size", "3", "--dtype", "float64", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert code == 0
    policies = {r["policy"] for r in report["rows"]}
    assert policies == {"target", "static:2", "confidence:0.3,cost=off", "oracle", "hf-static:2"}
    assert {r["domain"] for r in report["rows"]} == {"all", "code", "math", "chat"}
    for row in report["rows"]:
        assert row["identical_to_target"] is True
        assert row["tokens_per_s"] > 0
    all_rows = {r["policy"]: r for r in report["rows"] if r["domain"] == "all"}
    assert all_rows["target"]["speedup_vs_target"] == 1.0
    assert all_rows["target"]["n_prompts"] == 12
    assert all_rows["oracle"]["acceptance_rate"] == 1.0
    assert 0 < all_rows["static:2"]["acceptance_rate"] < 1


def test_bench_runs_continuous_and_draining_batches_side_by_side(pair_dirs, prompts_file, tmp_path, monkeypatch):
    """`--batching both`: every policy twice, refilled and drained, the same tokens, and each row's overhead;
    the progress bar counts every prompt once per row."""
    import specray.bench

    bars = []

    class Recorded(specray.bench.tqdm):
        def close(self):
            if not self.disable:  # a disabled bar (one pass: no pass bar) keeps no description
                bars.append((self.desc, self.n, self.total))
            super().close()

    monkeypatch.setattr(specray.bench, "tqdm", Recorded)
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"),
        "--prompts", str(prompts_file), "--policies", "static:2,hf-static:2", "--batching", "both",
        "--max-new-tokens", "16", "--batch-size", "2", "--dtype", "float64", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert code == 0 and report["settings"]["batching"] == "both"
    rows = {r["policy"]: r for r in report["rows"] if r["domain"] == "all"}
    assert set(rows) == {"target", "target [drain]", "static:2", "static:2 [drain]", "hf-static:2"}
    for name, row in rows.items():
        assert row["identical_to_target"] is True and row["n_prompts"] == 12
        if not name.startswith("hf-"):
            assert row["overhead_ms_per_round"] > 0 and 0 < row["overhead_share"] < 1
    assert rows["hf-static:2"]["overhead_ms_per_round"] is None, "transformers' loop is not ours to split"
    assert ("bench", 5 * 12, 5 * 12) in bars, bars


def test_bench_mixes_domains_in_one_engine_each_row_under_its_own_domains_policy(pair_dirs, prompts_file, tmp_path):
    """`--mix-domains`: every domain's prompts stream through one engine, refilled across domains; lossless.
    `--repeats 2`: every policy twice over, mean times, and each row's lowest and highest single-pass speed-up."""
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"),
        "--prompts", str(prompts_file), "--policies", "heuristic:cost=off,oracle", "--batching", "both", "--mix-domains",
        "--max-new-tokens", "16", "--batch-size", "4", "--dtype", "float64", "--repeats", "2", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert code == 0 and report["settings"]["mix_domains"] is True and report["settings"]["repeats"] == 2
    assert {r["domain"] for r in report["rows"]} == {"all"}, "domains share the engine's time: one row per policy"
    rows = {r["policy"]: r for r in report["rows"]}
    assert set(rows) == {"target", "target [drain]", "heuristic:cost=off", "heuristic:cost=off [drain]", "oracle", "oracle [drain]"}
    for row in rows.values():
        assert row["identical_to_target"] is True and row["n_prompts"] == 12, "passes repeat the prompts, not add to them"
        low, high = row["speedup_range"]
        assert low <= row["speedup_vs_target"] * 1.0001 and row["speedup_vs_target"] <= high * 1.0001
    assert rows["oracle"]["acceptance_rate"] == 1.0, "each row's oracle reads its own reference"
    with pytest.raises(SystemExit):
        main(["bench", "--prompts", str(prompts_file), "--repeats", "0"])
    with pytest.raises(ValueError, match="--mix-domains"):
        main(["bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts",
              str(prompts_file), "--policies", "heuristic,draft=auto", "--mix-domains"])


def test_bench_auto_dtype_times_target_only_in_both_precisions(pair_dirs, prompts_file, tmp_path):
    """Speed-ups are against target-only in its fastest precision; identity against the verifier's own."""
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts", str(prompts_file),
        "--policies", "static:2,draft=ngram+model,hf-ngram:2", "--max-new-tokens", "12", "--batch-size", "3",
        "--dtype", "auto", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    verifier = report["precision"]["target"]
    other = {"float32": "bfloat16", "bfloat16": "float32"}[verifier]
    assert set(report["precision"]["timings_ms"]) == {"target", "draft"}
    rows = {r["policy"]: r for r in report["rows"] if r["domain"] == "all"}
    assert set(rows) == {"target", f"target@{other}", "static:2,draft=ngram+model", "hf-ngram:2"}
    assert report["baseline"] in ("target", f"target@{other}")
    assert rows[report["baseline"]]["speedup_vs_target"] == 1.0
    assert report["logit_noise"] >= 0
    spec = rows["static:2,draft=ngram+model"]
    assert spec["divergences"] == 0 and code == 0
    if spec["identical_to_target"]:
        assert spec["ties"] == 0
    assert rows[f"target@{other}"]["ties"] is None, "the other precision is a speed baseline, not an identity reference"


def test_bench_sampling_has_no_identity_check(pair_dirs, prompts_file, tmp_path):
    out = tmp_path / "bench.json"
    main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts", str(prompts_file),
        "--policies", "static:2", "--max-new-tokens", "8", "--temperature", "0.8", "--limit", "4", "--out", str(out),
    ])
    rows = json.loads(out.read_text())["rows"]
    assert {r["identical_to_target"] for r in rows} == {None}
    assert all(r["n_prompts"] <= 4 for r in rows)


def test_bench_loads_the_newest_registry_version_and_names_a_corrupt_file(pair_dirs, prompts_file, tmp_path):
    registry, out = tmp_path / "registry", tmp_path / "bench.json"
    for _ in range(2):
        publish(registry, "disco", {"global": (DiscoClassifier(hidden=4).state_dict(), {"kind": "disco", "features": FEATURES})})
    args = ["bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts", str(prompts_file),
            "--policies", "disco:cost=off", "--max-new-tokens", "4", "--limit", "3", "--dtype", "float64",
            "--policy-registry", str(registry), "--out", str(out)]
    assert main(args) == 0
    versions = {r["policy"]: r["policy_version"] for r in json.loads(out.read_text())["rows"]}
    assert versions == {"target": "", "disco:cost=off": "v0002"}  # every domain without a model of its own: global
    (registry / "disco" / "v0002" / "global.safetensors").write_bytes(b"\0" * 40)
    with pytest.raises(ArtifactError, match="v0002/global.safetensors"):
        main(args)


def test_bad_prompt_rows_fail_the_benchmark_loudly(pair_dirs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "w5 w6"}\n{"id": "b", "prompt": "   "}\n')
    with pytest.raises(ValueError, match="malformed prompt rows"):
        main(["bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts", str(bad)])


def test_unknown_policy_is_a_clear_error(pair_dirs, prompts_file):
    with pytest.raises(ValueError, match="unknown policy 'beam'"):
        main(["bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"),
              "--prompts", str(prompts_file), "--policies", "beam:3"])


def test_the_cpu_is_named_with_its_bf16_matrix_units():
    """Whether wide bf16 verification is nearly free depends on AMX, so bench output names it."""
    amx = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n"
    genoa = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n"
    assert describe_cpu(amx) == "Intel(R) Xeon(R) Platinum 8480+ (AMX-BF16)"
    assert describe_cpu(genoa) == "AMD EPYC (AVX512-BF16, no AMX)"
    assert describe_cpu("").endswith("(no bf16 units)")


def test_policy_lists_keep_options_with_their_policy():
    assert split_policies("static:2,confidence:0.3,refit=true,heuristic") == ["static:2", "confidence:0.3,refit=true", "heuristic"]


def test_bench_auto_draft_chooses_a_source_per_batch_and_stays_lossless(pair_dirs, prompts_file, tmp_path):
    """`draft=auto` beside each single source: every batch of a domain ran with one chosen source, each source was
    tried (no prior), and the output is target-only's."""
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"), "--prompts", str(prompts_file),
        "--policies", "static:2,static:2,draft=ngram,static:2,draft=auto", "--max-new-tokens", "12", "--batch-size", "1",
        "--batching", "drain", "--dtype", "float64", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert code == 0
    rows = {(r["policy"], r["domain"]): r for r in report["rows"]}
    assert {p for p, _ in rows} == {"target", "static:2", "static:2,draft=ngram", "static:2,draft=auto"}
    for domain in ("code", "math", "chat"):
        auto = rows[("static:2,draft=auto", domain)]
        assert auto["identical_to_target"] is True
        assert sum(auto["draft_sources"].values()) == 4  # 4 prompts of the domain, one per batch
        assert set(auto["draft_sources"]) == {"model", "ngram", "ngram+model", "none"}  # no prior: each tried once first
    assert rows[("static:2", "all")]["draft_sources"] is None


def test_auto_base_strips_only_the_auto_draft():
    from specray.bench import auto_base

    assert auto_base("heuristic,draft=auto") == "heuristic"
    assert auto_base("static:4,draft=auto") == "static:4"
    assert auto_base("confidence:draft=auto,k_max=4") == "confidence:k_max=4"
    assert auto_base("static:4,draft=ngram") is None


def test_bench_runs_a_feature_draft_and_gives_the_hf_baselines_a_token_level_assistant(pair_dirs, prompts_file, tmp_path):
    import torch

    from specray.models.feature_draft import build_feature_draft, save_feature_draft

    target = tiny_llama(seed=0)  # the same weights as pair_dirs/target
    save_feature_draft(build_feature_draft(target), target, str(pair_dirs / "target"), tmp_path / "eagle",
                       dtype=torch.float64)
    common = ["bench", "--target", str(pair_dirs / "target"), "--draft", str(tmp_path / "eagle"), "--prompts",
              str(prompts_file), "--max-new-tokens", "8", "--batch-size", "2", "--dtype", "float64", "--limit", "4"]
    with pytest.raises(ValueError, match="reads the target's hidden states.*--hf-draft"):
        main([*common, "--policies", "static:2,hf-static:2"])
    out = tmp_path / "bench.json"
    code = main([*common, "--policies", "static:2,hf-static:2,hf-ngram:2", "--hf-draft", str(pair_dirs / "draft"),
                 "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["hf_assistant"] == str(pair_dirs / "draft")
    assert {r["policy"] for r in report["rows"]} == {"target", "static:2", "hf-static:2", "hf-ngram:2"}
    assert all(r["identical_to_target"] for r in report["rows"])


@pytest.mark.parametrize("turns", ["rounds", "calls"])
def test_policies_take_turns_round_by_round(pair_dirs, prompts_file, tmp_path, monkeypatch, turns):
    """Target-only and each policy's engine call advance one round in turn, so machine load hits them alike
    (`--turns calls`: one call after another, one KV cache at a time); the oracle, which reads target-only's
    outputs, runs after them. Each policy's cost gate learns from its own rounds: every policy runs on its
    own copy of the calibrated cost table."""
    from specray.engine.decoding import Decoding

    order, costs, step = [], {}, Decoding.step

    def recorded(self):
        if self.config.max_new_tokens == 16:  # the pass, not the warm-up
            order.append("target" if self.policy is None else self.policy.policies[0].name)
            costs[order[-1]] = self.engine.costs
        step(self)

    monkeypatch.setattr(Decoding, "step", recorded)
    code = main([
        "bench", "--target", str(pair_dirs / "target"), "--draft", str(pair_dirs / "draft"),
        "--prompts", str(prompts_file), "--policies", "static:2,oracle", "--mix-domains",
        "--max-new-tokens", "16", "--batch-size", "4", "--dtype", "float64", "--out", str(tmp_path / "b.json"),
        "--turns", turns,
    ])
    assert code == 0 and json.loads((tmp_path / "b.json").read_text())["settings"]["turns"] == turns
    first_oracle = order.index("oracle")
    in_turns = order[:first_oracle]
    assert set(order[first_oracle:]) == {"oracle"}
    if turns == "calls":
        assert in_turns == sorted(in_turns, key=["target", "static:2"].index), in_turns
    else:
        both = 2 * min(in_turns.count("target"), in_turns.count("static:2"))
        assert both >= 8 and all(a != b for a, b in zip(in_turns[:both], in_turns[1:both])), in_turns
    assert len({id(c) for c in costs.values()}) == 3 and all(c.calibrated(4) for c in costs.values())


def test_a_policys_rate_over_passes_is_all_its_tokens_over_all_its_time():
    """In low precision a pass may decode a few tokens more or fewer (a tie resolved at another verification
    width): the mean is every pass's tokens over every pass's time, so it lies within the passes' range."""
    from specray.bench import Tally, mean_of_passes, speedup_ranges, tokens_per_s
    from specray.totals import Totals

    def tally(tokens, seconds):
        return {"all": Tally(seconds=seconds, totals=Totals(prompts=2, new_tokens=tokens))}

    passes, targets = [tally(600, 20.0), tally(660, 20.0)], [tally(660, 30.0), tally(660, 30.0)]
    mean, target = mean_of_passes(passes)["all"], mean_of_passes(targets)["all"]
    assert mean.totals.new_tokens == 600 and mean.totals.prompts == 2, "counts are the first pass's"
    assert tokens_per_s(mean) == pytest.approx(1260 / 40.0)
    low, high = speedup_ranges(passes, targets)["all"]
    assert low <= tokens_per_s(mean) / tokens_per_s(target) <= high

"""Choosing a draft source per domain from recorded speed, and the config that asks for it (no models)."""

import json

import pytest

from specray.config import ConfigError, load_config
from specray.distributed.draft_choice import DraftChooser, batch_speed
from specray.distributed.resolve import domain_policy, label_policy
from specray.policies.draft_prior import KIND, MAX_PRIOR_BATCHES, DraftPrior, load_prior, prior_meta
from specray.policies.registry import publish
from specray.policies.sources import SOURCES, registry_name, spec_source, with_source

SOURCE_LIST = ("model", "ngram", "ngram+model", "none")


def recorded(chooser: DraftChooser, speeds: dict[str, list[float]]) -> DraftChooser:
    """Feed batches of 100 tokens at the given tokens/s."""
    for source, values in speeds.items():
        for tps in values:
            chooser.record(source, 100, 100 / tps)
    return chooser


def choices(chooser: DraftChooser, n: int = 300) -> dict[str, int]:
    counts = {s: 0 for s in chooser.sources}
    for _ in range(n):
        counts[chooser.choose()] += 1
    return counts


def test_without_evidence_every_source_is_tried_once_in_order():
    chooser = DraftChooser(SOURCE_LIST, seed="code")
    seen = []
    for _ in SOURCE_LIST:
        source = chooser.choose()
        seen.append(source)
        chooser.record(source, 50, 1.0)
    assert seen == list(SOURCE_LIST)


def test_batches_in_flight_together_try_different_sources():
    chooser = DraftChooser(SOURCE_LIST, seed="code")
    assert [chooser.choose() for _ in range(3)] == ["model", "ngram", "ngram+model"]
    chooser.cancel("ngram")  # that batch failed: ngram is untried again
    assert chooser.choose() == "ngram"


def test_a_clearly_faster_source_is_exploited():
    speeds = {"model": [40, 42, 41], "ngram": [80, 78, 83], "ngram+model": [60, 59, 61], "none": [30, 31, 30]}
    chooser = recorded(DraftChooser(SOURCE_LIST, seed="math"), speeds)
    counts = choices(chooser)
    assert counts["ngram"] >= 295 and chooser.best() == "ngram"
    evidence = chooser.evidence()
    assert evidence["best"] == "ngram" and evidence["sources"]["ngram"]["batches"] == 3
    assert evidence["sources"]["ngram"]["tokens_per_s"] == pytest.approx(300 / sum(100 / v for v in speeds["ngram"]))


def test_close_sources_keep_being_compared():
    speeds = {"model": [50, 40, 60], "ngram": [52, 41, 58], "ngram+model": [10], "none": [10]}
    counts = choices(recorded(DraftChooser(SOURCE_LIST, seed="chat"), speeds))
    assert counts["model"] > 30 and counts["ngram"] > 30  # within noise of each other: both explored
    assert counts["ngram+model"] + counts["none"] < 10  # 5x slower: hardly ever


def test_registry_prior_ranks_sources_before_any_batch_and_live_speed_overrides_it():
    speeds = {"model": 1.0, "ngram": 3.0, "ngram+model": 2.0, "none": 0.5}  # tokens/ms, any common scale
    chooser = DraftChooser(SOURCE_LIST, DraftPrior(speeds, dict.fromkeys(speeds, 1.0)), seed="logic")
    assert choices(chooser)["ngram"] > 250  # no forced round of trying everything
    recorded(chooser, {"ngram": [20, 21, 19, 20, 20], "model": [60, 61, 59, 60, 60]})
    assert chooser.best() == "model"


def test_a_prior_weighs_as_many_batches_as_it_has_prompts_behind_it():
    speeds = {"model": 1.0, "none": 1.25}  # the label run found target-only 25% faster
    live = {"model": [45, 40], "none": [30]}  # two lucky model batches, one slow target-only batch

    def best(batches: float) -> str:
        return recorded(DraftChooser(("model", "none"), DraftPrior(speeds, dict.fromkeys(speeds, batches))), live).best()

    assert best(1.0) == "model"  # one pseudo-batch: three live batches overturn it
    assert best(MAX_PRIOR_BATCHES) == "none"  # a label run over many prompts: they do not


def test_batch_speed_is_tokens_over_the_longest_row():
    assert batch_speed([10, 20, 30], [500.0, 2000.0, 1000.0]) == (60, 2.0)
    chooser = DraftChooser(("model",))
    chooser.record("model", 0, 1.0)  # nothing generated: no evidence
    chooser.record("model", 5, 0.0)
    assert chooser.stats["model"].batches == 0


def test_sources_round_trip_through_specs():
    assert spec_source("heuristic") == "model" and spec_source("target") == "none"
    assert spec_source(with_source("confidence:0.3", "ngram+model")) == "ngram+model"
    assert with_source("static:4,draft=ngram", "model") == "static:k=4"
    assert with_source("static:4", "none") == "target"
    assert registry_name("code", "model") == "code" and registry_name("code", "ngram+model") == "code__ngram_model"
    assert set(SOURCES) == set(SOURCE_LIST)


def test_per_domain_draft_resolves_one_spec_per_source():
    cfg = load_config(None, ["policy.per_domain.code.draft=auto", "policy.per_domain.math.draft=ngram", "policy.per_domain.code.k_max=5"])
    code = domain_policy(cfg.policy, "code")
    assert code.auto and set(code.specs) == set(SOURCE_LIST) and code.specs["none"] == "target"
    assert all(spec_source(spec) == source for source, spec in code.specs.items())
    assert "k_max=5" in code.specs["ngram"]
    math_ = domain_policy(cfg.policy, "math")
    assert not math_.auto and math_.spec == "heuristic:draft=ngram"
    label = label_policy(3, ["model", "ngram"], "chat")
    assert label.spec == "static:3" and label.label_specs == ("static:k=3,draft=ngram",)


@pytest.mark.parametrize("overrides, message", [
    (["policy.per_domain.chat.draft=eagle"], r"policy\.per_domain\.chat\.draft: .*draft source for domain chat.*'eagle'"),
    (["policy.default=target", "policy.per_domain.code.draft=ngram"], r"policy\.per_domain\.code\.draft=ngram: .*does not draft"),
    (["policy.auto_sources=[model,model]"], r"policy\.auto_sources: expected each draft source once"),
    (["label.draft_sources=[none]"], r"label\.draft_sources: expected draft sources out of model, ngram, ngram\+model"),
])
def test_a_draft_that_cannot_run_fails_at_start_naming_domain_and_draft(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg = load_config(None, overrides)
        for domain in ("code", "math", "logic", "chat"):
            domain_policy(cfg.policy, domain)


def test_a_corrupt_prior_is_an_error_naming_the_file(tmp_path):
    publish(tmp_path, KIND, {"global": ({}, prior_meta({"model": {"tokens_per_ms": 1.5}, "ngram": {"tokens_per_ms": 2.5}}))})
    expected = DraftPrior({"model": 1.5, "ngram": 2.5}, {"model": 1.0, "ngram": 1.0}, "v0001")  # no prompts recorded: 1 batch
    assert load_prior(tmp_path, "code") == expected
    cfg = load_config(None, [f"policy.registry={tmp_path}", "policy.per_domain.code.draft=auto"])
    assert domain_policy(cfg.policy, "code").prior == expected
    stem = tmp_path / KIND / "v0001" / "global.json"
    meta = json.loads(stem.read_text())
    meta["sources"]["ngram"]["prompts"] = 2.5
    stem.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"policy\.per_domain\.code\.draft=auto: .*global\.json: sources\.ngram\.prompts"):
        domain_policy(cfg.policy, "code")
    meta["sources"]["ngram"] |= {"prompts": 40, "tokens_per_ms": -1}
    stem.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"policy\.per_domain\.code\.draft=auto: .*global\.json: sources\.ngram\.tokens_per_ms"):
        domain_policy(cfg.policy, "code")
    (tmp_path / KIND / "v0001" / "global.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"global\.safetensors does not exist"):
        domain_policy(cfg.policy, "code")


def test_no_prior_published_means_no_prior(tmp_path):
    assert load_prior(tmp_path, "code") is None
    cfg = load_config(None, [f"policy.registry={tmp_path}", "policy.per_domain.code.draft=auto"])
    assert domain_policy(cfg.policy, "code").prior is None


def test_a_missing_or_corrupt_draft_artifact_is_named_before_any_model_loads(tmp_path):
    import shutil

    from specray.distributed.draft_artifacts import check_draft_sources
    from specray.models.refs import EMBEDDED_DRAFT_DIR

    draft = tmp_path / "draft"
    shutil.copytree(EMBEDDED_DRAFT_DIR, draft)
    cfg = load_config(None, [f"models.draft={draft}", "policy.per_domain.code.draft=ngram", "policy.per_domain.math.draft=auto"])
    policies = {d: domain_policy(cfg.policy, d) for d in ("code", "math")}
    check_draft_sources(cfg.models, policies)  # intact, and distilled for the embedded target
    (draft / "draft.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match=r"policy\.per_domain\.math\.draft=model: .*draft\.safetensors: missing or corrupt"):
        check_draft_sources(cfg.models, policies)
    check_draft_sources(cfg.models, {"code": policies["code"]})  # n-gram lookup alone needs no draft model
    (draft / "specray_draft.json").write_text("{")
    with pytest.raises(ConfigError, match=r"specray_draft\.json: unreadable draft metadata"):
        check_draft_sources(cfg.models, policies)
    gone = load_config(None, [f"models.draft={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"policy\.per_domain\.code\.draft=model: models\.draft .*nowhere.*: no such file"):
        check_draft_sources(gone.models, {"code": domain_policy(gone.policy, "code")})


def test_a_draft_distilled_for_another_target_fails_naming_domain_and_draft(tmp_path):
    import shutil

    from specray.distributed.draft_artifacts import check_draft_sources
    from specray.models.refs import EMBEDDED_DRAFT_DIR

    draft, target = tmp_path / "draft", tmp_path / "target"
    shutil.copytree(EMBEDDED_DRAFT_DIR, draft)
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "vocab_size": 49152,
                                                    "num_hidden_layers": 2}))
    cfg = load_config(None, [f"models.draft={draft}", f"models.target={target}", "policy.per_domain.chat.draft=ngram+model"])
    policies = {"chat": domain_policy(cfg.policy, "chat")}
    with pytest.raises(ConfigError, match=r"policy\.per_domain\.chat\.draft=ngram\+model: draft .* distilled for another target .*hidden_size 576 vs 64"):
        check_draft_sources(cfg.models, policies)

"""Built-in prompt sets: sizes, balance, disjointness, and that the committed files are reproducible."""

from collections import Counter

import pytest

from specray.data.builtin import builtin_prompts
from specray.data.make_builtin import SIZES, build_sets

DOMAINS = {"code", "math", "logic", "chat"}


@pytest.mark.parametrize("split", ["distill", "heldout", "demo"])
def test_split_is_balanced_and_well_formed(split):
    rows = builtin_prompts(split)
    counts = Counter(r["domain"] for r in rows)
    assert set(counts) == DOMAINS
    assert set(counts.values()) == {SIZES[split]}
    assert all(set(r) == {"id", "prompt", "domain"} and r["prompt"].strip() for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)


def test_distill_is_large_enough():
    assert len(builtin_prompts("distill")) >= 1500


def test_splits_share_no_prompt():
    prompts = {s: {r["prompt"] for r in builtin_prompts(s)} for s in ("distill", "heldout", "demo")}
    assert not prompts["distill"] & prompts["heldout"]
    assert not prompts["distill"] & prompts["demo"]
    assert not prompts["heldout"] & prompts["demo"]


def test_committed_files_match_generator():
    for split, rows in build_sets().items():
        assert rows == builtin_prompts(split), f"{split}.jsonl is stale: run python -m specray.data.make_builtin"


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown built-in split"):
        builtin_prompts("train")


def test_quick_set_is_the_shortest_demo_prompts_of_every_domain():
    quick, demo = builtin_prompts("quick"), builtin_prompts("demo")
    assert Counter(r["domain"] for r in quick) == {d: 2 for d in DOMAINS}
    assert all(r in demo for r in quick)  # same ids and prompts as in demo
    for domain in DOMAINS:
        longest_quick = max(len(r["prompt"]) for r in quick if r["domain"] == domain)
        rest = [len(r["prompt"]) for r in demo if r["domain"] == domain and r not in quick]
        assert longest_quick <= min(rest)


def test_the_job_reads_the_quick_set_unless_told_otherwise():
    from specray.config import ConfigError, load_config
    from specray.data.builtin import builtin_path
    from specray.distributed.scheduler import dataset_path

    assert dataset_path(load_config(None, ["run_id=x"]).data) == builtin_path("quick")
    assert dataset_path(load_config(None, ["run_id=x", "data.builtin=demo"]).data) == builtin_path("demo")
    with pytest.raises(ConfigError, match="data.builtin: expected one of quick, demo"):
        load_config(None, ["run_id=x", "data.builtin=nope"])
    with pytest.raises(ConfigError, match="log_level: expected one of warning, info, debug"):
        load_config(None, ["run_id=x", "log_level=loud"])


def test_config_names_every_built_in_set():
    from specray.config import BUILTIN_SETS
    from specray.data.builtin import SPLITS

    assert sorted(BUILTIN_SETS) == sorted(SPLITS)  # config.py lists them without importing the data package

"""The acceptance-dynamics report against hand-computed values on tiny synthetic runs."""

import argparse
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from specray.analysis.load import load_runs
from specray.analysis.metrics import compute_metrics
from specray.analysis.report import add_report_parser, write_report
from specray.distributed.sink import RunMeta, RunSink
from specray.schema import LABEL_TRACE_SCHEMA, RESULT_SCHEMA, TRACE_SCHEMA


def rounds(prompt, domain, policy, version, spec):
    """Trace rows from [(iteration, first_position, [(accepted, evaluated, entropy), ...]), ...]."""
    rows = []
    for iteration, position, tokens in spec:
        for depth, (accepted, evaluated, entropy) in enumerate(tokens, start=1):
            rows.append({
                "run_id": "r", "source": "generate", "prompt_id": prompt, "domain": domain, "iteration": iteration, "depth": depth,
                "gen_position": position + depth - 1, "draft_token": 7, "draft_prob": 0.5, "target_prob": 0.5,
                "accept_prob": 1.0, "accepted": accepted, "evaluated": evaluated, "entropy": entropy,
                "topk_probs": [0.5], "policy": policy, "policy_version": version, "lookahead": len(tokens),
                "stop_reason": "policy", "draft_ms": 1.0, "verify_ms": 1.0,
            })
    return rows


def result(pid, domain, policy, version, new_tokens, wall_ms, iterations, accepted):
    return {
        "id": pid, "domain": domain, "prompt": "p", "output_text": "o", "output_tokens": [], "prompt_tokens": 3,
        "new_tokens": new_tokens, "iterations": iterations, "drafted": 0, "accepted": accepted, "wall_ms": wall_ms,
        "stop_reason": "eos", "policy": policy, "policy_version": version, "target": "t", "draft": "d",
    }


def write_run(path, results, traces):
    with RunSink(path, RunMeta(path.name, "t", "d")) as sink:
        sink.commit(pa.Table.from_pylist(results, RESULT_SCHEMA), pa.Table.from_pylist(traces, TRACE_SCHEMA))
    return str(path)


T, F = True, False
CODE_X, CODE_Y = [0.5, 2.0, 1.0, 0.5], [1, 0, 1, 1]  # entropy / accepted of code's evaluated tokens


@pytest.fixture
def runs(tmp_path):
    """static:3 on a code and a chat prompt, an oracle run on the code prompt, and target-only on both."""
    drafting = write_run(
        tmp_path / "static",
        [result("a", "code", "static:3", "v1", 5, 1000, 2, 3), result("b", "chat", "static:3", "v1", 3, 500, 2, 1)],
        rounds("a", "code", "static:3", "v1", [(0, 0, [(T, T, 0.5), (F, T, 2.0), (F, F, 3.0)]), (1, 2, [(T, T, 1.0), (T, T, 0.5)])])
        + rounds("b", "chat", "static:3", "v1", [(0, 0, [(F, T, 2.5), (F, F, 0.1)]), (1, 1, [(T, T, 0.2)])]),
    )
    oracle = write_run(  # SLs 2, 0 (iteration 1 drafted nothing: no rows), 3
        tmp_path / "oracle",
        [result("a", "code", "oracle", "o1", 8, 4000, 3, 5)],
        rounds("a", "code", "oracle", "o1", [(0, 0, [(T, T, 1.0)] * 2), (2, 3, [(T, T, 1.0)] * 3)]),
    )
    target = write_run(
        tmp_path / "target",
        [result("a", "code", "target", "", 5, 2000, 5, 0), result("b", "chat", "target", "", 3, 1500, 3, 0)],
        [],
    )
    return [drafting, oracle, target]


@pytest.fixture
def metrics(runs):
    return compute_metrics(*load_runs(runs), seed=0, resamples=200, position_width=2, entropy_bins=2)


def test_acceptance_rate_and_length_per_domain(metrics):
    code, chat, every = metrics["domains"]["code"], metrics["domains"]["chat"], metrics["all"]
    assert code["acceptance_rate"] == pytest.approx(3 / 4)  # oracle rows do not count
    assert chat["acceptance_rate"] == pytest.approx(1 / 2)
    assert every["acceptance_rate"] == pytest.approx(4 / 6)
    assert code["expected_accepted_length"] == pytest.approx(3 / 2)  # bonus token not counted
    assert code["expected_tokens_per_iteration"] == pytest.approx(5 / 2)
    assert chat["expected_accepted_length"] == pytest.approx(1 / 2)
    assert every["expected_accepted_length"] == pytest.approx(4 / 4)
    assert (code["drafted_tokens"], code["evaluated_tokens"], code["accepted_tokens"], code["drafting_iterations"]) == (5, 4, 3, 2)


def test_depth_and_position_profiles(metrics):
    rates = lambda p: {k: v["acceptance_rate"] for k, v in p.items()}  # noqa: E731
    assert rates(metrics["domains"]["code"]["depth_profile"]) == {"1": 1.0, "2": 0.5}
    assert rates(metrics["domains"]["chat"]["depth_profile"]) == {"1": 0.5}
    assert rates(metrics["all"]["depth_profile"]) == {"1": 0.75, "2": 0.5}
    assert metrics["all"]["depth_profile"]["1"]["tokens"] == 4
    assert rates(metrics["domains"]["code"]["position_profile"]) == {"0": 0.5, "2": 1.0}  # windows of 2 positions


def test_entropy_profile_and_pearson(metrics):
    code = metrics["domains"]["code"]
    assert [{k: v for k, v in b.items() if k != "ci95"} for b in code["entropy_profile"]] == [
        {"entropy_mean": 0.5, "acceptance_rate": 1.0, "tokens": 2},
        {"entropy_mean": 1.5, "acceptance_rate": 0.5, "tokens": 2},
    ]
    low, high = code["entropy_profile"][0]["ci95"]  # 2 of 2 accepted: Wilson's interval is wide and reaches 1
    assert 0.3 < low < 0.4 and high == 1.0
    p = code["entropy_acceptance_pearson"]
    assert p["rho"] == pytest.approx(np.corrcoef(CODE_X, CODE_Y)[0, 1])
    assert p["rho"] == pytest.approx(-1 / np.sqrt(1.5 * 0.75))  # cov -1, Σdx² 1.5, Σdy² 0.75
    assert (p["tokens"], p["prompts"], p["resamples"]) == (4, 1, 200)
    every = metrics["all"]["entropy_acceptance_pearson"]
    assert every["rho"] == pytest.approx(np.corrcoef(CODE_X + [2.5, 0.2], CODE_Y + [0, 1])[0, 1], rel=1e-5)
    assert every["ci95"][0] <= every["rho"] <= every["ci95"][1]


def test_bootstrap_is_seeded_and_exact_when_correlation_is_perfect():
    from specray.analysis.metrics import entropy_pearson

    rng = np.random.default_rng(1)
    x = rng.random(400)
    y = x < 0.5
    clusters = np.arange(400) // 4
    ok = np.ones(400, bool)
    first, again = (entropy_pearson(x, y, ok, clusters, seed=3, resamples=100) for _ in range(2))
    assert first == again and first["prompts"] == 100
    lo, hi = first["ci95"]
    assert lo < first["rho"] < hi < 0
    perfect = entropy_pearson(np.r_[0.0, 1.0, 0.0, 1.0], np.r_[T, F, T, F], np.ones(4, bool), np.arange(4), 0, 50)
    assert perfect["rho"] == pytest.approx(-1.0) and perfect["ci95"] == pytest.approx([-1.0, -1.0])
    constant = entropy_pearson(np.ones(3), np.r_[T, F, T], np.ones(3, bool), np.arange(3), 0, 50)
    assert constant["rho"] is None and constant["ci95"] is None


def test_lookahead_and_oracle_sl(metrics):
    code = metrics["domains"]["code"]
    assert code["chosen_lookahead"] == {"mean": 2.5, "std": 0.5, "iterations": 2, "histogram": {"2": 1, "3": 1}}
    sl = code["oracle_sl"]
    assert sl["mean"] == pytest.approx(5 / 3) and sl["std"] == pytest.approx(np.sqrt(14 / 9))
    assert sl["histogram"] == {"0": 1, "2": 1, "3": 1} and sl["iterations"] == 3
    assert metrics["domains"]["chat"]["oracle_sl"] is None
    assert metrics["all"]["oracle_sl"] == sl


def test_throughput_speedup_and_versions(metrics):
    code, chat, every = (metrics["domains"]["code"]["policies"], metrics["domains"]["chat"]["policies"], metrics["all"]["policies"])
    assert code["static:3"]["tokens_per_s"] == pytest.approx(5.0) and code["target"]["tokens_per_s"] == pytest.approx(2.5)
    assert code["static:3"]["speedup"] == pytest.approx(2.0) and code["target"]["speedup"] == pytest.approx(1.0)
    assert chat["static:3"]["speedup"] == pytest.approx(3.0)
    assert every["static:3"]["speedup"] == pytest.approx((8 / 1.5) / (8 / 3.5))
    assert code["static:3"]["accepted_per_iteration"] == pytest.approx(3 / 2)
    assert code["static:3"]["acceptance_rate"] == pytest.approx(3 / 4) and code["static:3"]["mean_lookahead"] == 2.5
    assert code["oracle"]["acceptance_rate"] is None  # oracle rows are labels, not a policy's acceptance
    assert metrics["all"]["policy_versions"] == {"oracle": ["o1"], "static:3": ["v1"], "target": [""]}


def test_no_oracle_no_target_and_empty_domain(tmp_path):
    run = write_run(
        tmp_path / "r",
        [result("a", "code", "static:3", "v1", 2, 100, 1, 1), result("z", "logic", "static:3", "v1", 1, 100, 1, 0)],
        rounds("a", "code", "static:3", "v1", [(0, 0, [(T, T, 1.0), (F, T, 1.0)])]),  # logic drafted nothing
    )
    m = compute_metrics(*load_runs([run]))
    logic = m["domains"]["logic"]
    assert logic["acceptance_rate"] is None and logic["expected_accepted_length"] is None
    assert logic["depth_profile"] == {} and logic["entropy_profile"] == [] and logic["chosen_lookahead"] is None
    assert logic["entropy_acceptance_pearson"]["rho"] is None
    assert m["all"]["oracle_sl"] is None
    assert m["all"]["entropy_acceptance_pearson"]["rho"] is None  # constant entropy
    assert m["all"]["policies"]["static:3"]["speedup"] is None  # no target-only run to compare with


def test_a_label_runs_rows_are_its_static_policys_drafts_and_its_rounds_oracle_lengths(tmp_path):
    """Counted like any policy's drafts, read without their hidden states; each round's accepted count
    is an oracle stopping length (here 1, then 3 = the label depth)."""
    first, second = [(T, T, 1.0), (F, T, 1.0), (F, F, 1.0)], [(T, T, 1.0), (T, T, 1.0), (T, T, 1.0)]
    spec = [(0, 0, first), (1, 2, second)]
    traces = [{**r, "source": "label", "hidden": [0.5] * 4} for r in rounds("a", "code", "static:3", "builtin", spec)]
    with RunSink(tmp_path / "label", RunMeta("label", "t", "d", hidden_states=True)) as sink:
        sink.commit(pa.Table.from_pylist([result("a", "code", "static:3", "builtin", 6, 100, 2, 4)], RESULT_SCHEMA),
                    pa.Table.from_pylist(traces, LABEL_TRACE_SCHEMA))
    traces, results = load_runs([str(tmp_path / "label")])
    assert "hidden" not in traces.column_names
    m = compute_metrics(traces, results)["all"]
    assert m["acceptance_rate"] == pytest.approx(4 / 5)
    assert m["oracle_sl"] == {"mean": 2.0, "std": 1.0, "iterations": 2, "histogram": {"1": 1, "3": 1}}


def test_report_renders_with_images(runs, tmp_path):
    out = tmp_path / "report"
    metrics = write_report(runs, out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"domains", "all", "draft_sources"} and set(metrics["domains"]) == {"code", "chat"}
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*data-file="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6
    for name, data in images:
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and base64.b64decode(data) == png
    summary = (out / "summary.md").read_text()
    assert "| code | 0.750 | 1.500 | 2.500 |" in summary and "1.67 ± 1.25" in summary
    assert all(f"]({name})" in summary for name, _ in images)


def test_report_of_a_run_with_nothing_committed(tmp_path):
    run = write_run(tmp_path / "empty", [], [])
    metrics = write_report([run], tmp_path / "out")
    assert metrics["domains"] == {} and metrics["all"]["acceptance_rate"] is None
    assert (tmp_path / "out" / "report.html").read_text().count("<img ") == 6


def test_cli_defaults_to_report_dir_of_first_run(runs):
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", *runs])
    assert args.handler(args) == 0
    assert (Path(runs[0]) / "report" / "report.html").exists()


def test_analysis_imports_neither_torch_nor_the_engine():
    code = "import sys, specray.analysis.report; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('specray.engine')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"

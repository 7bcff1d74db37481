"""The job's Ray metrics carry vLLM's speculative-decoding names and agree with the Parquet it writes.

The end-to-end test scrapes the Prometheus endpoint of the Ray node the job ran on, as a dashboard
would, and checks every counter against the committed results and traces.
"""

import re
import socket
import time
import urllib.request
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from jobkit import config, good_rows, write_jsonl
from specray.distributed.job import run_job
from specray.distributed.policy_actor import SpecDecodeCounts
from specray.distributed.sink import read_results, read_traces


def test_counts_follow_vllm_definitions():
    rows = [  # (prompt_id, iteration, depth, accepted)
        ("a", 1, 1, True), ("a", 1, 2, True), ("a", 1, 3, False),
        ("a", 2, 1, True),
        ("b", 1, 1, False), ("b", 1, 2, False),
    ]
    traces = pa.table({"prompt_id": [r[0] for r in rows], "iteration": [r[1] for r in rows],
                       "depth": [r[2] for r in rows], "accepted": [r[3] for r in rows]})
    counts = SpecDecodeCounts.of(traces)
    assert (counts.num_drafts, counts.num_draft_tokens, counts.num_accepted_tokens) == (3, 6, 3)
    assert counts.accepted_per_pos == {0: 2, 1: 1}
    assert SpecDecodeCounts.of(traces.slice(0, 0)) == SpecDecodeCounts(0, 0, 0, {})


@pytest.fixture(scope="module")
def ray_with_metrics():
    """A local Ray exporting metrics on a free port. A head that times out starting (seen once on 2 cores,
    right after another module's Ray had shut down) is retried once on a new port, so the test is about
    the metrics, not Ray's start-up."""
    for attempt in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        try:
            ray.init(num_cpus=2, _metrics_export_port=port, log_to_driver=False, logging_level="ERROR")
            break
        except Exception as error:  # ray raises a bare Exception for "node timed out during startup"
            ray.shutdown()
            if attempt or "timed out during startup" not in str(error):
                raise
    yield port
    ray.shutdown()


def scrape(port: int) -> dict[tuple[str, str, str], float]:
    """{(metric, domain, position or ""): value}, summed over the processes that reported it."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[tuple[str, str, str], float] = defaultdict(float)
    for line in body.splitlines():
        found = re.match(r"(ray_(?:spec_decode|specray)_\w+)\{(.*)\} (\S+)$", line)
        if found:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
            values[found.group(1), labels.get("domain", ""), labels.get("position", "")] += float(found.group(3))
    return values


def test_exported_counters_match_the_committed_run(pair, tmp_path, ray_with_metrics):
    rows = [{**r, "domain": "code"} for r in good_rows(6)]
    cfg = config(pair, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "out", "policy.default=static:3",
                 "generation.batch_size=3")
    run_job(cfg)
    results, traces = read_results(cfg.output.dir), read_traces(cfg.output.dir)
    drafted, accepted = pc.sum(results["drafted"]).as_py(), pc.sum(results["accepted"]).as_py()
    assert drafted > 0 and accepted > 0
    counts = SpecDecodeCounts.of(traces)
    expected = {
        ("ray_spec_decode_num_drafts_total", "code", ""): counts.num_drafts,
        ("ray_spec_decode_num_draft_tokens_total", "code", ""): drafted,
        ("ray_spec_decode_num_accepted_tokens_total", "code", ""): accepted,
        ("ray_specray_new_tokens_total", "code", ""): pc.sum(results["new_tokens"]).as_py(),
        **{("ray_spec_decode_num_accepted_tokens_per_pos_total", "code", str(p)): n
           for p, n in counts.accepted_per_pos.items()},
    }
    assert sum(counts.accepted_per_pos.values()) == accepted
    deadline, seen = time.monotonic() + 60, {}
    while time.monotonic() < deadline:  # the metrics agent exports on an interval
        seen = scrape(ray_with_metrics)
        if all(seen.get(key) == value for key, value in expected.items()):
            break
        time.sleep(2)
    assert {key: seen.get(key) for key in expected} == expected

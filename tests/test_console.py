"""What a newcomer sees on the console: the driver's bar and a short summary by default, worker logs
only with --verbose, and Ctrl-C ending in one line that says how far the run got and how to resume it.

The job runs as a real command line in its own process group, so Ctrl-C reaches every process a
terminal would send it to (the driver and the Ray processes it started), not just the driver.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobkit import assert_exactly_once, manifest_commits, write_jsonl
from specray.distributed.sink import read_errors, read_results
from specray.distributed.summary import format_summary, rate

REPO = Path(__file__).resolve().parents[1]


def rows(n: int) -> list[dict]:
    return [{"id": f"c{i}", "prompt": " ".join(f"w{3 + (i * 5 + j * 7) % 60}" for j in range(4 + i % 5)), "domain": "chat"}
            for i in range(n)]


def command(pair, data: Path, out: Path, *extra: str) -> list[str]:
    target, draft = pair
    return [sys.executable, "-m", "specray.cli", "generate", f"models.target={target}", f"models.draft={draft}",
            f"data.path={data}", f"output.dir={out}", "generation.batch_size=2", "cluster.num_workers=1", *extra]


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_default_console_is_the_bar_and_the_summary_and_verbose_brings_worker_logs_back(pair, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", rows(4))
    quiet = run(command(pair, data, tmp_path / "quiet", "generation.max_new_tokens=8"))
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    noise = [line for line in quiet.stderr.splitlines() if line.strip() and not line.lstrip("\r").startswith("generate:")]
    assert noise == [], noise  # no Ray banners, no worker lines, no warnings: only the progress bar
    assert "4 prompts done (4 results, 0 errors)" in quiet.stdout
    assert "speed-up over target-only decoding: not measured by a job; side by side: specray bench --policies heuristic --limit 8" in quiet.stdout
    assert f"specray report {tmp_path / 'quiet'}" in quiet.stdout
    assert "Warning" not in quiet.stdout + quiet.stderr
    loud = run(command(pair, data, tmp_path / "loud", "generation.max_new_tokens=8", "--verbose"))
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "Started a local Ray instance" in loud.stderr  # Ray's own log, shown at log_level=info


def test_ctrl_c_commits_what_finished_and_prints_the_resume_command(pair, tmp_path):
    data, out = write_jsonl(tmp_path / "p.jsonl", rows(120)), tmp_path / "out"
    args = command(pair, data, out, "generation.max_new_tokens=48", "output.rows_per_file=1")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + 180
    while manifest_commits(out) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    found = re.search(r"stopped; (\d+) of 120 prompts done and committed in (\S+)\. Resume with: (.+)", stderr)
    assert found, stderr[-3000:]
    done = int(found.group(1))
    assert 2 <= done < 120
    assert len(read_results(out)) + len(read_errors(out)) == done  # the line tells the truth about the disk
    resume = shlex.split(found.group(3))
    assert resume[:2] == ["specray", "generate"] and f"output.dir={out}" in resume and resume[-1].startswith("run_id=")
    finished = run([sys.executable, "-m", "specray.cli", *resume[1:]])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{done} already done earlier" in finished.stdout
    assert_exactly_once(out, {r["id"] for r in rows(120)})


def test_summary_names_counts_rates_acceptance_and_the_report_command():
    summary = {
        "output_dir": "runs/r1", "results": 7, "errors": 1, "skipped": 0, "seconds": 95.4, "new_tokens": 312,
        "tokens_per_s": 312 / 95.4, "speedup_vs_target": 1.37,
        "domains": {"code": {"prompts": 4, "drafted": 40, "accepted": 30, "acceptance": 0.75, "policy": {"spec": "static:k=4"}},
                    "chat": {"prompts": 3, "drafted": 0, "accepted": 0, "acceptance": None, "policy": {"spec": "heuristic"}}},
    }
    text = format_summary(summary)
    assert text.splitlines()[0] == ("specray generate: 8 prompts done (7 results, 1 errors); 312 new tokens in 95 s after the models "
                                   "loaded, 3.3 tok/s")
    assert "speed-up over target-only decoding: 1.37x" in text
    assert "  code     0.75  30/40  over 4 prompts" in text
    assert "chat   no drafting" in text
    assert "specray report runs/r1" in text
    measured_later = format_summary({**summary, "speedup_vs_target": None})
    assert "speed-up over target-only decoding: not measured by a job; side by side: " \
           "specray bench --policies heuristic,static:k=4 --limit 8" in measured_later
    assert (rate(0.3), rate(9.96), rate(123.4)) == ("0.3", "10.0", "123")


def test_the_bar_shows_a_slow_rate_instead_of_zero_and_redraws_on_every_commit(capsys):
    import time as clock

    from specray.distributed.batch import Totals
    from specray.distributed.progress import Progress

    progress = Progress(8)  # draws on stderr
    progress.start = clock.monotonic() - 64  # the models loaded a minute ago
    progress.done(2, [("code", Totals(prompts=2, new_tokens=20, iterations=10, drafted=8, accepted=6))])
    progress.done(2, [("math", Totals(prompts=2, new_tokens=12, iterations=12, drafted=0, accepted=0))])  # within mininterval
    drawn = capsys.readouterr().err.split("\r")[-1]
    progress.close()
    assert "4/8" in drawn and "0.5 tok/s" in drawn and "accept code=0.75" in drawn, drawn

"""The job submitted through the Ray Job SDK, as on a cluster, to a `ray start --head` this test starts
on free ports and stops through its own process group (never `ray stop`, which stops every cluster)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from ray.job_submission import JobStatus, JobSubmissionClient

from conftest import tiny_llama, tiny_tokenizer
from specray.distributed.sink import read_results

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def head():
    """A one-node cluster; its temp dir is short because Ray's socket paths must fit in 107 bytes."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    gcs, dashboard, client, agent, agent_grpc, env_agent, metrics = free_ports(7)
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats", "--num-cpus=2",
        f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `python` in entrypoints
    env.pop("RAY_ADDRESS", None)
    env["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster on 127.0.0.1; the SDK client here sends no token
    log = open(Path(temp_dir, "head.log"), "wb")
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        yield JobSubmissionClient(f"http://127.0.0.1:{dashboard}") if _wait_for_dashboard(dashboard, process) else None
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the cluster's processes exit at once; `ray start` itself drains 30 s
        time.sleep(3)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(port: int, process: subprocess.Popen, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            JobSubmissionClient(f"http://127.0.0.1:{port}").list_jobs()
            return True
        except Exception:  # not up yet: connection refused, or the job API still starting
            time.sleep(1)
    return False


def _submit(client: JobSubmissionClient, entrypoint: str, runtime_env: dict, timeout_s: float = 60) -> str:
    """Submit, waiting while the head's job agent is still starting ("No available agent" on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_job_submitted_with_the_job_sdk_runs_to_completion(head, tmp_path):
    assert head is not None, "the Ray head did not start"
    tokenizer = tiny_tokenizer()
    for name, seed in (("target", 0), ("draft", 0)):
        tiny_llama(seed=seed, dtype=torch.float32).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "w{3 + i} w{9 + i} w5", "domain": "chat"}}\n' for i in range(6)))
    overrides = [f"models.target={tmp_path / 'target'}", f"models.draft={tmp_path / 'draft'}", f"data.path={data}",
                 f"output.dir={tmp_path / 'out'}", "generation.max_new_tokens=8", "cluster.num_workers=2"]
    job = _submit(head, f"python jobs/generate.py configs/default.yaml {' '.join(overrides)}",
                  {"working_dir": str(REPO), "excludes": [".git", ".venv", "venv", "runs", "*.egg-info", "__pycache__"]})
    deadline = time.monotonic() + 240
    while head.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, head.get_job_logs(job)[-3000:]
        time.sleep(1)
    logs = head.get_job_logs(job)
    assert head.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    assert '"results": 6' in logs
    assert sorted(read_results(tmp_path / "out")["id"].to_pylist()) == [f"p{i}" for i in range(6)]

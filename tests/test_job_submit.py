"""The job submitted with `ray job submit`, word for word as the README says, to a `ray start --head`
this test starts on free ports and stops through its own process group (never `ray stop`, which stops
every cluster).

The head runs in Ray's default authentication mode (RAY_AUTH_MODE unset). The pinned Ray then turns
token authentication on whenever a token exists (`~/.ray/auth_token`, which any local `ray.init()`
writes, or RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN): here a token of the test's own, so the test never
reads or writes the user's. A client without the token is refused; with RAY_AUTH_MODE=token and the
token it submits, and the job runs to completion.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
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
    token_path = Path(temp_dir, "auth_token")
    token_path.write_text(secrets.token_hex(32))
    gcs, dashboard, client, agent, agent_grpc, env_agent, metrics = free_ports(7)
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats", "--num-cpus=2",
        f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}",
    ]
    env = cli_env()
    env["RAY_AUTH_TOKEN_PATH"] = str(token_path)  # the head finds a token, so the default mode turns auth on
    log = open(Path(temp_dir, "head.log"), "wb")
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        up = _wait_for_dashboard(dashboard, token_path.read_text(), process)
        yield {"address": f"http://127.0.0.1:{dashboard}", "token_path": token_path} if up else None
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the cluster's processes exit at once; `ray start` itself drains 30 s
        time.sleep(3)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def cli_env() -> dict:
    """This venv's `ray` and `python` first on PATH; Ray's auth mode as a fresh shell has it (unset: other
    tests' local `ray.init()` set RAY_AUTH_MODE=token in this process)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    return env


def _wait_for_dashboard(port: int, token: str, process: subprocess.Popen, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(request, timeout=5).read()
            return True
        except (urllib.error.URLError, OSError):  # not up yet: connection refused, or the job API still starting
            time.sleep(1)
    return False


def ray_cli(args: list[str], env: dict, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_a_client_without_the_token_is_refused(head):
    assert head is not None, "the Ray head did not start"
    refused = ray_cli(["job", "list", "--address", head["address"]], cli_env(), timeout_s=120)
    assert refused.returncode != 0 and "authentication" in (refused.stdout + refused.stderr).lower(), refused


def test_ray_job_submit_as_the_readme_says_runs_to_completion(head, tmp_path):
    assert head is not None, "the Ray head did not start"
    tokenizer = tiny_tokenizer()
    for name, seed in (("target", 0), ("draft", 0)):
        tiny_llama(seed=seed, dtype=torch.float32).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "w{3 + i} w{9 + i} w5", "domain": "chat"}}\n' for i in range(6)))
    overrides = [f"models.target={tmp_path / 'target'}", f"models.draft={tmp_path / 'draft'}", f"data.path={data}",
                 f"output.dir={tmp_path / 'out'}", "generation.max_new_tokens=8", "cluster.num_workers=2"]
    env = {**cli_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(head["token_path"])}
    # the README's command (.gitignore keeps .venv and runs/ out of the upload)
    command = ["job", "submit", "--address", head["address"], "--working-dir", ".", "--",
               "python", "jobs/generate.py", "configs/default.yaml", *overrides]
    deadline = time.monotonic() + 60
    while True:  # the head's job agent may still be starting on a loaded machine
        done = ray_cli(command, env)
        if done.returncode == 0 or "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    assert "succeeded" in logs.lower() and '"results": 6' in logs, logs[-3000:]
    assert sorted(read_results(tmp_path / "out")["id"].to_pylist()) == [f"p{i}" for i in range(6)]

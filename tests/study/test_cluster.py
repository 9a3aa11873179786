"""Cluster mode: a real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
PostgreSQL storage, the smoke study launched against it with --address."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
from helpers import fer_cli
from optuna.trial import TrialState


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray turns on token authentication for clusters on a machine that has a token file
# (~/.ray/auth_token, written by any local ray.init()); every node and the driver must
# then present the same token. The test sets one explicitly, as a real cluster would.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _ray(*args: str) -> subprocess.CompletedProcess:
    ray_bin = shutil.which("ray") or str(Path(os.sys.executable).parent / "ray")
    return subprocess.run([ray_bin, *args], capture_output=True, text=True, timeout=180, env={**os.environ, **AUTH})


@pytest.fixture
def two_node_cluster():
    import ray

    ray.shutdown()  # no in-process Ray of an earlier module may linger
    port = _free_port()
    env_flags = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    head = _ray("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                *env_flags)
    assert head.returncode == 0, head.stderr
    try:
        worker = _ray("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *env_flags)
        assert worker.returncode == 0, worker.stderr
        yield f"127.0.0.1:{port}"
    finally:
        _ray("stop", "--force")


def test_smoke_study_runs_on_both_nodes_with_postgres(two_node_cluster, pg_url, study_env):
    proc = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", pg_url, "--address", two_node_cluster,
                   "--max-concurrent", "2", env=AUTH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="smoke", storage=pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    nodes = {t.user_attrs["node_id"] for t in trials}
    assert len(nodes) == 2  # one CPU per node and two trials at a time: both nodes trained

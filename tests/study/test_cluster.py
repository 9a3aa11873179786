"""Cluster mode: a real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
PostgreSQL storage, the smoke study launched against it with --address; then the worker node dies."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import pytest
from helpers import fer_cli_cmd, free_port, polled_trials
from optuna.trial import TrialState

# Ray turns on token authentication for clusters on a machine that has a token file
# (~/.ray/auth_token, written by any local ray.init()); every node and the driver must
# then present the same token. The test sets one explicitly, as a real cluster would.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _ray(*args: str) -> subprocess.CompletedProcess:
    ray_bin = shutil.which("ray") or str(Path(os.sys.executable).parent / "ray")
    return subprocess.run([ray_bin, *args], capture_output=True, text=True, timeout=180, env={**os.environ, **AUTH})


def _kill_processes_under(marker: str) -> list[str]:
    """SIGKILL every process whose command line names ``marker`` (a node's private temp dir):
    this cluster's processes only, never another test run's Ray (``ray stop`` would kill them all)."""
    victims = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] != os.getpid() and marker in " ".join(p.info["cmdline"] or ()):
            victims.append(p)
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    return [" ".join(p.info["cmdline"] or ())[:60] for p in victims]


@dataclass
class Cluster:
    address: str
    head_dir: str
    worker_dir: str

    def kill_worker_node(self) -> list[str]:
        return _kill_processes_under(self.worker_dir)


@pytest.fixture
def two_node_cluster():
    import ray

    ray.shutdown()  # no in-process Ray of an earlier module may linger
    port = free_port()
    # a short private temp dir per node (Ray's unix sockets live under it): it marks this cluster's
    # processes, so teardown and the node-loss test kill exactly them
    root = tempfile.mkdtemp(prefix="fr", dir="/tmp")
    head_dir, worker_dir = os.path.join(root, "h"), os.path.join(root, "w")
    env_flags = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        head = _ray("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                    f"--temp-dir={head_dir}", *env_flags)
        assert head.returncode == 0, head.stderr
        worker = _ray("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                      f"--temp-dir={worker_dir}", *env_flags)
        assert worker.returncode == 0, worker.stderr
        yield Cluster(f"127.0.0.1:{port}", head_dir, worker_dir)
    finally:
        _kill_processes_under(worker_dir)
        _kill_processes_under(head_dir)
        shutil.rmtree(root, ignore_errors=True)

# Eight epochs, not the smoke study's two: on a loaded 2-core machine a Ray worker actor takes longer
# to start than a two-epoch trial takes to run, and Tune then reuses the first node's actor for every
# trial (seen: all three on one node). The second node's actor must come up while the first trials run.
LONGER = """
name: smoke-long
question: Does the smoke study spread over two nodes and survive losing one?
extends: smoke
profiles:
  smoke:
    base: {epochs: 8}
"""


@pytest.fixture
def longer_smoke(study_env) -> str:
    path = study_env / "smoke-long.yaml"
    path.write_text(LONGER)
    return str(path)


def test_the_smoke_study_runs_on_both_nodes_with_postgres_and_a_lost_node_s_trial_resumes_on_the_head(
        two_node_cluster, pg_url, longer_smoke):
    """One cluster start for both claims (each costs ~10 s of node processes on 2 cores): two trials
    run at once, one per 1-CPU node, on PostgreSQL storage; then the worker node dies with its trial
    after that trial's epoch-0 checkpoint and well before its end."""
    cmd = fer_cli_cmd("launch", longer_smoke, "--profile", "smoke",
                      "--storage", pg_url, "--address", two_node_cluster.address, "--max-concurrent", "2")
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **AUTH})
    try:
        deadline = time.time() + 400
        while time.time() < deadline:  # both nodes hold a trial that has checkpointed epoch 0
            time.sleep(1)
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            trials = polled_trials(pg_url, "smoke-long")
            # two trials at once (one per 1-CPU node), each past its epoch-0 checkpoint and with at
            # least two of its eight epochs still to run: the kill lands mid-trial with a checkpoint
            running = [t for t in trials if t.state == TrialState.RUNNING and 0 in t.intermediate_values]
            if len(running) == 2 and all(len(t.intermediate_values) <= 6 for t in running):
                break
        else:
            raise AssertionError("two trials never ran at once")
        # both nodes train: two trials of one CPU each past their first epoch at once, on two 1-CPU
        # nodes, are one per node (node_id is stored when a trial ends; the survivor's is checked below)
        killed = two_node_cluster.kill_worker_node()
        assert killed  # raylet, agents and the trial's worker process
        _, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="smoke-long", storage=pg_url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["cell_id"] for t in complete) == [
        "balanced_softmax/seed=0", "plain-ce/seed=0", "sampler_sqrt/seed=0"]  # each cell once
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert len(lost) == 1, [(t.number, t.state, t.user_attrs.get("error")) for t in trials]
    retry = next(t for t in complete if t.user_attrs.get("retry_of") == lost[0].number)
    assert retry.user_attrs["cell_id"] == lost[0].user_attrs["cell_id"]
    # resumed from its last checkpoint: the epochs it covers are carried over, not trained again
    assert 0 in retry.intermediate_values and retry.intermediate_values[0] == lost[0].intermediate_values[0]
    # the trial that ran beside it and survived the kill was on the head: the retry ran there too (an
    # earlier trial may have finished on the worker before the kill, so not every node id is the head's)
    survivor = next(t for t in complete if t.number in {r.number for r in running} and t.number != lost[0].number)
    assert retry.user_attrs["node_id"] == survivor.user_attrs["node_id"], killed

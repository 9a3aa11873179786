"""Faults under load against real components: the database restarted mid-study, several drivers on
one study, a trial out of memory. Launches run as ``fer-study`` processes with their own local Ray."""

from __future__ import annotations

import subprocess
import threading
import time

import optuna
import pytest
from helpers import SEQUENTIAL_SMOKE, fer_cli_cmd, polled_trials
from optuna.trial import TrialState

from fer_core.study.bridge import OptunaBridge
from fer_core.study.runner import open_study
from fer_core.study.spec import load_study

SMOKE_CELLS = ["balanced_softmax/seed=0", "plain-ce/seed=0", "sampler_sqrt/seed=0"]


def _launch(url: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    import os

    cmd = fer_cli_cmd("launch", "smoke", "--profile", "smoke", "--storage", url, *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _wait_for(url: str, cond, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond(polled_trials(url)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited (rc {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _complete(trials) -> list[str]:
    return sorted(t.user_attrs["cell_id"] for t in trials if t.state == TrialState.COMPLETE)


def test_postgres_restarted_mid_study_nothing_lost_nothing_twice(private_pg, study_env):
    url = private_pg.url
    # 1. an outage longer than the driver waits: it stops with one line and exit code 2
    first = _launch(url, "--max-concurrent", "1", env={"FER_STUDY_DB_WAIT_S": "3"})
    _wait_for(url, lambda ts: len(_complete(ts)) >= 1, first, "the first trial completed")
    private_pg.stop()
    try:
        _, err = first.communicate(timeout=300)
    finally:
        private_pg.start()
    assert first.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("error: lost the database for more than 3 s") and "relaunch" in last, err[-3000:]
    kept = {t.number: t.user_attrs["cell_id"] for t in polled_trials(url) if t.state == TrialState.COMPLETE}
    assert kept

    # 2. a restart shorter than the wait: the relaunched driver rides it out and finishes the study
    second = _launch(url, "--max-concurrent", "1")
    _wait_for(url, lambda ts: any(t.state == TrialState.RUNNING and t.user_attrs.get("attempt") is None
                                  and t.number not in kept and t.intermediate_values for t in ts),
              second, "a trial of the relaunch reported an epoch")
    private_pg.stop()
    time.sleep(5)
    private_pg.start()
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert "reconciled" in out  # the trial the stopped driver left RUNNING was failed and re-queued
    trials = polled_trials(url)
    assert _complete(trials) == SMOKE_CELLS  # every cell once: none lost, none twice
    for number, cell in kept.items():  # the trials finished before the outage are still there, unchanged
        assert trials[number].state == TrialState.COMPLETE and trials[number].user_attrs["cell_id"] == cell
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_four_drivers_on_a_sequential_study_run_each_cell_once_and_share_each_look(pg_url, study_env):
    """Four drivers claim look 1's cells, then plan look 2 from the same stored look 1; a driver that finishes
    its share of a look waits for the others' cells before judging it (fer_core/study/runner.py,
    _next_look_when_ready). A look is a set of planned cells like a fixed design's, so this is also the
    several-drivers test of the claims (one test: each launch of four drivers costs ~40 s on 2 cores)."""
    import os

    (study_env / "seq-smoke.yaml").write_text(SEQUENTIAL_SMOKE)
    cmd = fer_cli_cmd("launch", "seq-smoke.yaml", "--profile", "smoke", "--storage", pg_url, "--max-concurrent", "1")
    drivers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
               for _ in range(4)]
    results = [d.communicate(timeout=600) for d in drivers]
    for d, (_, err) in zip(drivers, results):
        assert d.returncode == 0, err[-3000:]
    trials = polled_trials(pg_url, "seq-smoke")
    assert _complete(trials) == sorted(f"{v}/seed={s}" for v in ("lr_nudge", "plain-ce") for s in (0, 1, 2))
    assert len(trials) == 6  # no cell claimed twice, not even one that was then abandoned
    summaries = [next(ln for ln in out.splitlines() if ln.endswith(" run now")) for out, _ in results]
    assert sum(int(ln.rsplit("; ", 1)[-1].split()[0]) for ln in summaries) == 6  # "...; N run now": true counts
    assert any("sequential: 1 look(s) judged" in out for out, _ in results)  # look 2 planned by a launch


SEARCH = """
name: claim-test
question: do concurrent drivers share one search budget?
data: {dataset: synthetic}
base: {backbone: test_resnet, img_size: 48, epochs: 2, warmup_epochs: 0, batch_size: 32}
seeds: [0, 1]
design: {kind: search, space: imbalance}
optuna_sampler: {name: random}
budget: {trials: 9, max_concurrent: 2}
"""


@pytest.mark.parametrize("design", ["search", "one_at_a_time"])
def test_concurrent_claims_share_the_budget_and_the_cells(design, pg_url, study_env):
    """The claim itself, hammered: 4 drivers' bridges (each its own connection pool) suggest at once
    on PostgreSQL until the study is used up; every planned cell / budget slot is taken exactly once."""
    if design == "search":
        path = study_env / "claim.yaml"
        path.write_text(SEARCH)
        spec = load_study(str(path), "smoke")
    else:
        spec = load_study("imbalance-ablation", "smoke")
    open_study(spec, pg_url)
    planned = spec.n_planned()
    bridges = [OptunaBridge(open_study(spec, pg_url), spec, spec.cells(), planned, lambda c: {}, f"driver-{i}")
               for i in range(4)]
    claimed: list[tuple[int, str]] = []
    start = threading.Barrier(4)

    def drive(i: int) -> None:
        start.wait()
        n = 0
        while bridges[i].suggest(f"ray-{i}-{n}") != OptunaBridge.FINISHED:
            claimed.append((i, bridges[i].trials[f"ray-{i}-{n}"].number))
            n += 1

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    trials = optuna.load_study(study_name=spec.name, storage=pg_url).get_trials()
    assert len(trials) == len(claimed) == planned
    assert len({n for _, n in claimed}) == planned
    if design != "search":
        assert sorted(t.user_attrs["cell_id"] for t in trials) == sorted(c.cell_id for c in spec.cells())


def test_a_driver_waiting_out_the_database_is_not_declared_dead(monkeypatch):
    """A live driver writes no heartbeat while it waits for a restarted database (up to
    $FER_STUDY_DB_WAIT_S); a driver relaunched meanwhile must not fail its trials under it."""
    from fer_core.study.claims import DRIVER_ATTR, driver_is_dead

    study = optuna.create_study()
    other = "another-host:4242:0"  # not this host: judged by its heartbeat alone, not by its pid
    study.set_user_attr(DRIVER_ATTR + other, 1000.0)
    monkeypatch.setenv("FER_STUDY_DB_WAIT_S", "180")
    assert not driver_is_dead(study, other, now=1000.0 + 150)  # silent 150 s: maybe waiting for the DB
    assert driver_is_dead(study, other, now=1000.0 + 215)  # past the wait and a margin: gone
    monkeypatch.setenv("FER_STUDY_DB_WAIT_S", "10")
    assert driver_is_dead(study, other, now=1000.0 + 150)  # a short wait: the 120 s floor applies
    assert not driver_is_dead(study, other, now=1000.0 + 100)

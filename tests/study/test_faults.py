"""Faults against real components: a trial process dies, a trial runs out of memory, the driver dies,
the database is unreachable; and no password shows in anything a run writes.

Each launch runs as a separate ``fer-study`` process with its own local Ray, as a user runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from helpers import SEQUENTIAL_SMOKE, fer_cli, fer_cli_cmd, polled_trials
from optuna.trial import TrialState

from fer_core.cli import main
from fer_core.errors import FerError
from fer_core.report.export import report
from fer_core.study.runner import LaunchOptions, launch

PASSWORD = "s3cret-Pa55word"


def test_killed_and_out_of_memory_trials_are_retried_and_no_password_leaks(pg_url, study_env, cache_dir, capsys):
    # the real server trusts 127.0.0.1, so a password in the URL is accepted and must never be shown
    url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")
    env = {"FER_STUDY_FAIL_AT": "plain-ce/seed=0@1",  # the worker process exits hard at epoch 1, attempt 1
           # a real allocation failure (address space capped with setrlimit) at epoch 1, attempt 1
           "FER_STUDY_OOM_AT": "balanced_softmax/seed=0@1"}
    proc = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="smoke", storage=url).get_trials()
    failed = {t.user_attrs["cell_id"]: t for t in trials if t.state == TrialState.FAIL}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(failed) == ["balanced_softmax/seed=0", "plain-ce/seed=0"]
    oom = failed["balanced_softmax/seed=0"]
    assert "MemoryError: trial ran out of memory" in oom.user_attrs["error"], oom.user_attrs["error"]
    assert sorted(oom.intermediate_values) == [0]
    failed = [failed["plain-ce/seed=0"]]
    assert failed[0].user_attrs["error"]  # the reason is stored
    assert sorted(failed[0].intermediate_values) == [0]  # the worker died inside epoch 1, before reporting it
    assert sorted(t.user_attrs["cell_id"] for t in complete) == [
        "balanced_softmax/seed=0", "plain-ce/seed=0", "sampler_sqrt/seed=0"]
    retried = next(t for t in complete if t.user_attrs["cell_id"] == "plain-ce/seed=0")
    assert retried.user_attrs["retry_of"] == failed[0].number and retried.user_attrs["attempt"] == 2
    assert sorted(retried.intermediate_values) == [0, 1]  # epoch 0 carried over from the checkpoint
    assert retried.params == failed[0].params
    oom_retry = next(t for t in complete if t.user_attrs.get("retry_of") == oom.number)
    assert oom_retry.user_attrs["cell_id"] == "balanced_softmax/seed=0"  # the study went on, the cell too

    status = fer_cli("status", "smoke", "--storage", url)
    studies = fer_cli("studies", "--storage", url)
    assert status.returncode == 0 and "complete 3" in status.stdout
    assert "smoke" in studies.stdout
    outputs = [proc.stdout, proc.stderr, status.stdout, status.stderr, studies.stdout, studies.stderr]
    study = optuna.load_study(study_name="smoke", storage=url)
    outputs += [repr(study.user_attrs), repr(study._storage.get_study_system_attrs(study._study_id))]  # the note
    outputs += [repr(t.user_attrs) + repr(t.system_attrs) for t in study.get_trials()]
    # the report: every file it writes and what it prints
    rep = report("smoke", storage=url, out=str(study_env / "report"))
    outputs += [rep["markdown"], rep["status"]] + [open(f, errors="replace").read() for f in rep["files"]]
    # exception messages: a refused relaunch, an unknown study, a database that does not exist
    with pytest.raises(FerError) as refused:
        launch("smoke", LaunchOptions(storage=url, profile="cpu", show_progress=False))
    with pytest.raises(FerError) as unknown:
        launch("no-such-study", LaunchOptions(storage=url, profile="smoke", show_progress=False))
    outputs += [str(refused.value), str(unknown.value)]
    assert main(["status", "smoke", "--storage", url.rsplit("/", 1)[0] + "/no_such_db"]) == 2
    assert main(["report", "nope", "--storage", url, "--out", str(study_env / "r2")]) == 2
    printed = capsys.readouterr()
    outputs += [printed.out, printed.err]
    assert "no_such_db" in printed.err and "nope" in printed.err  # the error lines were really produced
    assert not [text for text in outputs if PASSWORD in text]
    assert "postgres:***@" in status.stdout and "postgres:***@" in str(refused.value)
    # every file the service wrote (runs dir with Tune's pickles, artifact store, report), as bytes
    written = [p for p in study_env.rglob("*") if p.is_file()]
    assert "tuner.pkl" in {p.name for p in written}, sorted(p.name for p in written)  # the scan sees the pickles
    assert any((study_env / "fer-study-artifacts").rglob("*")) and any((study_env / "report").rglob("*"))
    assert [str(p) for p in written if PASSWORD.encode() in p.read_bytes()] == []


def test_unreachable_database_fails_before_any_trial(study_env):
    t0 = time.time()
    proc = fer_cli("launch", "smoke", "--profile", "smoke", "--storage",
                   f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/nowhere", timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage"), proc.stderr
    assert PASSWORD not in proc.stderr and "postgres:***@127.0.0.1:1" in proc.stderr
    assert not (study_env / "runs").exists()  # no trial started
    assert time.time() - t0 < 60


def test_an_input_error_in_a_trial_fails_it_once_and_stops_the_launch(study_env, cache_dir):
    """A DataError raised inside the worker fails the same way on every attempt: stored FAIL once with its
    line, never retried, no other cell started, exit 2 with one ``error:`` line."""
    url = f"sqlite:///{study_env / 'input.db'}"
    proc = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, "--max-concurrent", "1",
                   env={"FER_STUDY_DATAERROR_AT": "plain-ce/seed=0@0"})  # raised on every attempt
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: trial 0 (plain-ce/seed=0) failed: DataError: injected input error"), lines
    assert "not retried" in lines[0] and "Traceback" not in proc.stderr
    trials = optuna.load_study(study_name="smoke", storage=url).get_trials()
    assert [(t.user_attrs["cell_id"], t.state) for t in trials] == [("plain-ce/seed=0", TrialState.FAIL)]
    assert trials[0].user_attrs["error"] == "DataError: injected input error at epoch 0 (FER_STUDY_DATAERROR_AT)"
    assert "retry_of" not in trials[0].user_attrs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM-to-the-group"])
def test_a_signal_stops_the_launch_keeps_finished_trials_and_a_relaunch_runs_the_rest(sig, study_env, cache_dir):
    """SIGINT to the driver (``kill -INT``); SIGTERM to its whole process group, as ``timeout``, a process
    supervisor or ``kill -TERM -- -PGID`` send it: the local Ray's processes run in sessions of their own
    (runner._ray_nodes_in_own_session), so the driver stops cleanly instead of losing its GCS (issue 37)."""
    url = f"sqlite:///{study_env / 'signal.db'}"
    cmd = fer_cli_cmd("launch", "smoke", "--profile", "smoke", "--storage", url, "--max-concurrent", "1")
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until one trial finished and the next one runs
            time.sleep(1)
            states = [t.state for t in polled_trials(url)]
            if TrialState.COMPLETE in states and TrialState.RUNNING in states:
                break
        else:
            raise AssertionError("the first trial never completed")
        t0 = time.time()
        if sig == signal.SIGTERM:
            os.killpg(driver.pid, sig)  # the driver was started with setsid: its group is its pid
        else:
            driver.send_signal(sig)  # to the driver only, as `kill` sends it
        out, err = driver.communicate(timeout=120)
        took = time.time() - t0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 128 + sig, (driver.returncode, err[-3000:])
    assert took < 30, took  # within seconds (was 61 s and rc 1 once the group signal had killed Ray's GCS)
    trials = optuna.load_study(study_name="smoke", storage=url).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"interrupted: {len(finished)} finished trials kept; relaunch to continue"], err[-3000:]
    assert "Traceback" not in err and " run now" not in out  # not the normal summary
    assert len(finished) >= 1 and not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["error"].startswith(f"interrupted by {sig.name}: re-queued")
    if sig == signal.SIGTERM:
        return  # the relaunch is the same for both signals: checked once
    proc = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reconciled" not in proc.stdout  # nothing was left RUNNING to repair
    complete = [t.user_attrs["cell_id"] for t in optuna.load_study(study_name="smoke", storage=url).get_trials()
                if t.state == TrialState.COMPLETE]
    assert sorted(complete) == ["balanced_softmax/seed=0", "plain-ce/seed=0", "sampler_sqrt/seed=0"]




def test_a_driver_killed_mid_study_relaunches_and_runs_each_cell_once(study_env, cache_dir):
    """kill -9 of the driver and its local Ray while a trial runs, here in a sequential study's second look:
    look 1 (seeds 0, 1 of both rows), then look 2 (seed 2) planned by the launch itself. The relaunch fails
    and re-queues the trial the dead driver left RUNNING, replays look 1 from storage and finishes look 2;
    no cell is lost or run twice."""
    (study_env / "seq-smoke.yaml").write_text(SEQUENTIAL_SMOKE)
    url = f"sqlite:///{study_env / 'seq.db'}"
    cmd = fer_cli_cmd("launch", "seq-smoke.yaml", "--profile", "smoke", "--storage", url, "--max-concurrent", "1")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and driver.poll() is None:  # until a look-2 cell runs
            time.sleep(1)
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("seed") == 2
                   for t in polled_trials(url, "seq-smoke")):
                break
        else:
            raise AssertionError("look 2 never started")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    time.sleep(2)
    before = optuna.load_study(study_name="seq-smoke", storage=url).get_trials()
    look1 = {f"{v}/seed={s}" for v in ("plain-ce", "lr_nudge") for s in (0, 1)}
    assert look1 <= {t.user_attrs["cell_id"] for t in before if t.state == TrialState.COMPLETE}  # look 1 done
    left_running = [t.number for t in before if t.state == TrialState.RUNNING]
    assert left_running  # the dead driver left a trial RUNNING
    proc = fer_cli("launch", "seq-smoke.yaml", "--profile", "smoke", "--storage", url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sequential:" in proc.stdout and "reconciled" in proc.stdout
    trials = optuna.load_study(study_name="seq-smoke", storage=url).get_trials()
    complete = sorted(t.user_attrs["cell_id"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == sorted(f"{v}/seed={s}" for v in ("plain-ce", "lr_nudge") for s in (0, 1, 2))  # each once
    for t in trials:
        if t.number in left_running:
            assert t.state == TrialState.FAIL and "driver stopped" in t.user_attrs["error"]
    again = fer_cli("launch", "seq-smoke.yaml", "--profile", "smoke", "--storage", url)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="seq-smoke", storage=url).get_trials()) == len(trials)  # nothing left
    rep = fer_cli("report", "seq-smoke", "--storage", url, "--out", str(study_env / "rep"))
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (study_env / "rep" / "report.md").read_text()
    assert "Sequential design (looks [2, 3]" in md and "6 trainings against 6 for the fixed design" in md

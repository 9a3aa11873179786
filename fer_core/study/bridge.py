"""Our searcher bridge between Ray Tune and an Optuna study (ask/tell), and the pruner scheduler.

What Ray's stock ``OptunaSearch`` gets wrong, and this bridge does instead:
- it drops the last result before a scheduler stop (``on_trial_result`` is not called
  for it): here every reported epoch becomes an intermediate value, recorded from the
  Tune callback, which sees every result;
- it tells a scheduler-stopped trial as COMPLETE (poisoning best-trial, TPE and
  importances): here a trial without its ``final`` report is PRUNED;
- a crashed attempt is told FAIL with its error message; the Ray trial restarts from
  its last checkpoint under a new Optuna trial with the same params, carrying the
  epochs that the checkpoint covers;
- planned cells (grid / one-at-a-time) are identified by ``cell_id``: completed and pruned cells
  are never re-run, trials left RUNNING by a dead driver are reconciled on relaunch;
- k-fold CV with pruning across folds: just before a fold cell would be claimed, its config
  is judged against the best config on the folds both have completed (``foldprune``); a
  pruned config's remaining fold cells are stored PRUNED, never trained, never re-run;
- several drivers may run one study at once: a cell (or a search design's budget slot) is
  claimed under a study-wide lock by creating its RUNNING trial, params and owner included,
  in one storage write, so no cell runs twice and the search budget is shared (claims and
  driver liveness live in ``claims``, which needs no Ray);
- every storage write waits out a lost database connection for a bounded time
  (``storage.retrying``), then stops the driver with one line.
Only this driver-side code writes the storage.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from fer_core.errors import ConfigError, DataError, FerError, first_line
from fer_core.study.artifacts import upload_trial_artifacts
from fer_core.study.claims import DRIVER_ATTR, Claims
from fer_core.study.components import schedule_unsettled
from fer_core.study.outputs import retain_checkpoint
from fer_core.study.result import INPUT_ERROR, WorkerResult, store_result
from fer_core.study.spec import Cell, StudySpec
from fer_core.study.storage import StorageLost, redact_text, retrying

log = logging.getLogger("fer_study")
# refreshes a study's dashboard note: (study, planned trials), after finished trials (RateLimitedNote)
NoteFn = Callable[[optuna.Study, int | None], None]
# the note is rebuilt after a finished trial at most once per NOTE_MIN_GAP_S, or NOTE_COST_FACTOR times
# its last build's seconds where that is longer (see RateLimitedNote)
NOTE_MIN_GAP_S, NOTE_COST_FACTOR = 20.0, 10.0


class RateLimitedNote:
    """The study's dashboard note, refreshed after finished trials but not after every one.

    The note is rebuilt from every stored trial, so its cost grows with the study (~1 s at 57 trials
    on a 2-core CPU): one build per finished trial made a launch's note work grow with the square of
    its trials, on the writer thread whose tells queue behind it and on the CPUs the trials train on.
    A request builds at once when the last build is at least ``max(min_gap_s, cost_factor x its
    seconds)`` old (so notes take at most ~1/(1 + cost_factor) of the writer's time); otherwise one
    catch-up build is scheduled for when it is due (it reads the storage then, so it shows every trial
    finished meanwhile): the note is never more than that gap behind. ``final`` builds a stale note at
    once (the launch's last word)."""

    def __init__(self, note: NoteFn, min_gap_s: float = NOTE_MIN_GAP_S,
                 cost_factor: float = NOTE_COST_FACTOR) -> None:
        self.note, self.min_gap_s, self.cost_factor = note, min_gap_s, cost_factor
        self.builds = 0
        self._due = 0.0  # time.monotonic() from which the next request builds at once
        self._scheduled = False  # a catch-up build is owed (cleared when it starts or final() takes it over)
        self._timer: threading.Timer | None = None  # kept past its start: final() joins a catch-up mid-build
        self._lock, self._build_lock = threading.Lock(), threading.Lock()

    def __getstate__(self) -> dict:  # Tune pickles the searcher that holds this: no lock, no timer
        state = dict(self.__dict__)
        state.update(_timer=None, _scheduled=False, _lock=None, _build_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock, self._build_lock = threading.Lock(), threading.Lock()

    def request(self, study: optuna.Study, planned: int | None) -> None:
        with self._lock:
            wait = self._due - time.monotonic()
            if wait > 0:
                if not self._scheduled:  # else the scheduled catch-up will show this trial too
                    self._scheduled = True
                    self._timer = threading.Timer(wait, self._catch_up, (study, planned))
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._build(study, planned)

    def final(self, study: optuna.Study, planned: int | None) -> None:
        """Cancel a scheduled catch-up and build it now; wait for one already building."""
        with self._lock:
            timer, pending = self._timer, self._scheduled
            self._timer, self._scheduled = None, False
        if timer is not None:
            timer.cancel()
            timer.join()
        if pending:
            self._build(study, planned)

    def _catch_up(self, study: optuna.Study, planned: int | None) -> None:
        with self._lock:
            if not self._scheduled:  # final() took it over
                return
            self._scheduled = False
        self._build(study, planned)

    def _build(self, study: optuna.Study, planned: int | None) -> None:
        with self._build_lock:  # the writer thread and a catch-up never build at once
            t0 = time.monotonic()
            try:
                self.note(study, planned)
            except Exception as err:  # a note is a convenience: it must never stop a study
                log.warning("study note not refreshed: %s", redact_text(first_line(err)))
            now = time.monotonic()
            self._due = now + max(self.min_gap_s, self.cost_factor * (now - t0))
            self.builds += 1


class OptunaBridge(Searcher):
    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        todo: list[Cell],
        n_search: int,
        trial_attrs: Callable[[dict], dict],
        driver: str,
        artifact_store=None,
        planned: int | None = None,
        outputs_dir: str | None = None,
        note: NoteFn | None = None,
    ) -> None:
        super().__init__(metric=spec.metric, mode="max" if spec.direction == "maximize" else "min")
        self.study, self.spec, self.n_search = study, spec, n_search
        self.trial_attrs, self.driver = trial_attrs, driver
        self.artifact_store, self.planned = artifact_store, planned
        # refreshes the study's dashboard note (study, planned trials) after finished trials: given
        # by the caller (the CLI passes the report's table), so the study layer needs no report code
        self.note = RateLimitedNote(note) if note is not None else None
        self.outputs_dir = outputs_dir  # per-trial scratch dirs for probabilities and the model (shared runs dir)
        self.class_names = list(study.user_attrs.get("class_names") or [])
        self._writer: ThreadPoolExecutor | None = None  # made on first use: Tune pickles the searcher
        self._pending: list[Future] = []
        self.trials: dict[str, optuna.Trial] = {}  # ray trial id -> current Optuna trial
        self.steps: dict[str, dict[int, float]] = {}  # ray trial id -> epoch -> value recorded
        self.final: dict[str, dict] = {}
        self.failed_error: dict[str, str] = {}
        self.issued = 0
        self.lost: StorageLost | None = None  # set when the database stayed away too long: the driver stops
        # set when a trial hit an input error (DataError/ConfigError in the worker): every cell would
        # burn its time on the same error, so no new trial starts and ``launch`` stops with this line
        self.input_error: FerError | None = None
        self.input_errors: dict[str, str] = {}  # ray trial id -> "<Type>: <message>" reported by the trial
        self.interrupted: int | None = None  # the signal (SIGINT/SIGTERM) that asked the launch to stop
        self.kept = 0  # trials this driver finished (complete or pruned) and handed to storage
        self.claims = Claims(study, spec, todo, driver)  # planned cells left, search slots, fold pruning

    # -- Searcher API ------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        try:
            return self._suggest(trial_id)
        except StorageLost as err:
            self.lost = err
            raise

    def _suggest(self, trial_id: str) -> dict | str | None:
        if self.stopping() is not None:
            return Searcher.FINISHED
        if self.spec.design == "search":
            if self.issued >= self.n_search:
                return Searcher.FINISHED
            trial = retrying("claiming a search trial", self.claims.claim_search_slot)
            if trial is None:
                return Searcher.FINISHED
            seed = self.spec.seeds[self.issued % len(self.spec.seeds)]
            # re-running suggest_* on the same trial returns the stored value: safe to retry
            params = {**retrying("sampling parameters", lambda: self.spec.space.sample(trial)), "seed": seed}
            meta = {"seed": seed}
        else:
            if self.claims.fold_pruner is not None:
                self._settle()
            claimed = retrying("claiming a planned cell", self.claims.claim_cell)
            if claimed is None:
                return Searcher.FINISHED
            trial, cell = claimed
            params = dict(cell.params)
            meta = cell.attrs
        self.issued += 1
        config = self.spec.trial_config(params)
        attrs = {**meta, **self.trial_attrs(config), "ray_trial_id": trial_id, "driver": self.driver,
                 "config": json.loads(json.dumps(config, default=str))}
        for k, v in attrs.items():
            retrying("labelling a trial", lambda k=k, v=v: trial.set_user_attr(k, v))
        self.trials[trial_id] = trial
        self.steps[trial_id] = {}
        return {"train": config, "meta": {**meta, "optuna_number": trial.number}, "metric": self.spec.metric,
                "checkpoint_every": self.spec.checkpoint_every,
                "checkpoint_min_s": self.spec.checkpoint_min_s, "out_dir": self._out_dir(trial_id)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        if result:
            self.record(trial_id, result)
        if error:
            # the error text arrives in BridgeCallback.on_trial_error right after this call
            self.failed_error[trial_id] = "pending"
            return
        if trial_id in self.input_errors:  # failed once, never retried (the same input fails the same way)
            self.fail(trial_id, self.input_errors[trial_id])
            return
        fer_result = self.final.get(trial_id)
        if fer_result is not None:
            # the finished trial's writes (attrs, artifacts, tell, note: ~1 s of PNG rendering and
            # table building) go to one background thread, in order, so the Tune controller can
            # start the next trial at once; flush() waits for them before the driver exits
            value = fer_result[self.spec.metric]
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-storage")
            self._pending.append(self._writer.submit(self._finish, trial, json.loads(fer_result["fer_result"]), value,
                                                     self._out_dir(trial_id)))
            self.kept += 1
        elif self.stopping() is not None:
            # stopped with the launch (a signal, another trial's input error): not a pruning verdict;
            # FAIL re-queues the cell for the relaunch
            self.fail(trial_id, self.stopping() or "stopped")
            return
        else:
            by = self.spec.scheduler["name"] if self.spec.scheduler["name"] != "none" else self.spec.pruner["name"]
            self._guard("storing a pruned trial", lambda: (trial.set_user_attr("stopped_by", by),
                                                           self.study.tell(trial, state=TrialState.PRUNED,
                                                                           skip_if_finished=True)))
            self.kept += 1
        self.trials.pop(trial_id, None)

    def __getstate__(self) -> dict:
        # Tune pickles the searcher with its experiment state; the writer thread stays here
        state = dict(self.__dict__)
        state.update(_writer=None, _pending=[])
        return state

    def stopping(self) -> str | None:
        """Why the launch is stopping before its work is done (the FAIL reason of the trials it stops),
        or None while it runs on."""
        if self.interrupted is not None:
            return f"interrupted by {signal.Signals(self.interrupted).name}: re-queued, a relaunch runs it"
        if self.input_error is not None:
            return f"stopped: the launch stopped on an input error ({first_line(self.input_error)}); re-queued"
        return None

    def abandon(self) -> None:
        """After Tune stopped: the trials it stopped with the launch (Tune tells the searcher nothing
        about those) are stored FAIL with the reason, so a relaunch re-runs their cells."""
        reason = self.stopping()
        if reason is None:
            return
        for trial_id in list(self.trials):
            self.fail(trial_id, reason)

    def _out_dir(self, trial_id: str) -> str | None:
        return os.path.join(self.outputs_dir, trial_id) if self.outputs_dir else None

    def _finish(self, trial: optuna.Trial, summary: WorkerResult, value: float, out_dir: str | None = None) -> None:
        # the worker's result is stored as it came, under the contract's names (fer_core/study/result.py)
        retrying("storing a finished trial's metrics", lambda: store_result(trial, summary))
        # optuna-dashboard's trial list says only "Trial N" and prints raw floats: one rounded line
        # (a user attr: a column of its table view) and the trial's note name the variant and its values
        line = trial_summary(trial.user_attrs, self.spec.metric, value, summary.get("test_metrics") or {})
        retrying("labelling a finished trial", lambda: trial.set_user_attr("summary", line))
        try:
            import optuna_dashboard

            optuna_dashboard.save_note(trial, f"### {line}")
        except Exception as err:  # a note is a convenience: it must never stop a study
            log.warning("trial %d: note not saved: %s", trial.number, redact_text(first_line(err)))
        if self.artifact_store is not None:
            # before tell: artifacts attach to a running trial; a failed upload is only a warning
            warnings = upload_trial_artifacts(self.artifact_store, trial, summary, self.class_names, out_dir)
            if warnings:
                retrying("storing an artifact warning",
                         lambda: trial.set_user_attr("artifact_warning", "; ".join(warnings)))
        # skip_if_finished: a tell that committed just before the connection dropped is not an error on retry
        retrying("storing a finished trial", lambda: self.study.tell(trial, value, state=TrialState.COMPLETE,
                                                                    skip_if_finished=True))
        try:  # after tell: the retention ranks this trial among the complete ones
            retain_checkpoint(getattr(self.artifact_store, "path", None), self.study, trial.number, out_dir,
                              self.spec.keep_checkpoints)
        except OSError as err:
            log.warning("trial %d: checkpoint not kept: %s", trial.number, err.strerror or err)
        self.refresh_note()

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        """A storage write from a Tune callback: retried; a lost database is remembered so that
        ``launch`` stops with its one-line message whatever Tune wraps it in."""
        try:
            return retrying(what, fn)
        except StorageLost as err:
            self.lost = err
            raise

    def _settle(self) -> None:
        """Wait until this driver's finished trials are in storage (their writes run in the background):
        pruning across folds judges a config on the stored fold values, and a fold that finished a
        moment ago must count. Errors stay with the futures for ``flush`` to report."""
        for fut in list(self._pending):
            fut.exception()

    def flush(self) -> None:
        """Wait for every finished trial's writes; a failed write leaves its trial RUNNING, which the
        next launch reconciles (failed and re-queued), so it is reported, not raised."""
        pending, self._pending = self._pending, []
        for fut in pending:
            err = fut.exception()
            if isinstance(err, StorageLost):
                self.lost = self.lost or err
            if err is not None:
                log.error("storing a finished trial failed: %s", redact_text(first_line(err)))
        if self.note is not None and self.lost is None:  # the note a rate limit held back, now
            self.note.final(self.study, self.planned)

    # -- storage writes ------------------------------------------------------------------------
    def record(self, trial_id: str, result: dict) -> None:
        """Every epoch's metric becomes an intermediate value, once (idempotent by epoch)."""
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        if result.get(INPUT_ERROR):
            self._input_error(trial_id, trial, str(result[INPUT_ERROR]))
            return
        if "epoch" not in result:
            return
        if result.get("final"):
            self.final[trial_id] = result
            return
        step, value = int(result["epoch"]), result.get(self.spec.metric)
        if value is None or step in self.steps[trial_id]:
            return
        self._guard("storing an epoch", lambda: trial.report(float(value), step))  # idempotent by step
        self.steps[trial_id][step] = float(value)

    def _input_error(self, trial_id: str, trial: optuna.Trial, message: str) -> None:
        """A trial's input error: stored as its FAIL reason once it stops; the first one stops the launch."""
        message = redact_text(message)
        self.input_errors[trial_id] = message
        if self.input_error is None:
            kind = message.partition(": ")[0]
            cls = {"DataError": DataError, "ConfigError": ConfigError}.get(kind, FerError)
            cell = trial.user_attrs.get("cell_id")
            where = f"trial {trial.number}" + (f" ({cell})" if cell else "")
            self.input_error = cls(f"{where} failed: {message}; the launch stopped (an input error is not "
                                   "retried): fix it and relaunch to run the rest")

    def refresh_note(self) -> None:
        """The study's dashboard note shows the current ablation table, refreshed after finished trials."""
        if self.note is not None:
            self.note.request(self.study, self.planned)

    def should_prune(self, trial_id: str) -> bool:
        trial = self.trials.get(trial_id)
        return trial is not None and self._guard("asking the pruner", trial.should_prune)

    def fail(self, trial_id: str, message: str) -> None:
        trial = self.trials.pop(trial_id, None)
        if trial is None:
            return
        self._guard("storing a failed trial", lambda: (
            trial.set_user_attr("error", redact_text(message)[-2000:]),
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)))

    def retry(self, trial_id: str, message: str, resume_epoch: int) -> None:
        """A crashed attempt: FAIL it, open a new Optuna trial with the same params for the restart."""
        old = self.trials.get(trial_id)
        if old is None:
            return
        frozen = self._guard("reading a crashed trial", lambda: self.study._storage.get_trial(old._trial_id))
        self.fail(trial_id, message)
        attrs = {k: v for k, v in frozen.user_attrs.items() if k != "error"}
        attrs.update(retry_of=frozen.number, attempt=int(frozen.user_attrs.get("attempt", 1)) + 1)
        # the same cell, still owned by this driver: a new RUNNING trial, no claim needed
        new = self._guard("opening a retry", lambda: self.claims.create_trial(frozen.params,
                                                                              dict(frozen.distributions), attrs))
        kept = {s: v for s, v in self.steps.get(trial_id, {}).items() if s <= resume_epoch}
        for s, v in sorted(kept.items()):
            self._guard("carrying an epoch over", lambda s=s, v=v: new.report(v, s))
        self.trials[trial_id], self.steps[trial_id] = new, kept


def trial_summary(attrs: dict, metric: str, value: float, test: dict) -> str:
    """A finished trial in one rounded line: variant (or config id, or trial), fold, seed, validation
    objective (what selected the epoch) and the same metric on the held-out test split."""
    what = attrs.get("variant") or attrs.get("config_id") or "search trial"
    fold = f", fold {attrs['fold']}" if "fold" in attrs else ""
    held_out = f", test {test[metric]:.4f}" if isinstance(test.get(metric), (int, float)) else ""
    return f"{what}{fold}, seed {attrs.get('seed', '?')}: validation {metric} {value:.4f}{held_out}"


class BridgeCallback(Callback):
    """Sees every result (also the one a scheduler stops on), recoveries and errors."""

    def __init__(self, bridge: OptunaBridge, on_step: Callable[[list], None] | None = None) -> None:
        self.bridge, self.on_step = bridge, on_step
        self.last_beat = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.bridge.record(trial.trial_id, result)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        ckpt_epoch = int((trial.last_result or {}).get("checkpoint_epoch", -1))
        self.bridge.retry(trial.trial_id, _error_text(trial), ckpt_epoch)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.bridge.fail(trial.trial_id, _error_text(trial))

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.time()
        if now - self.last_beat > 15:  # driver heartbeat: lets a relaunch tell a dead driver from a live one
            self.last_beat = now
            self.bridge._guard("recording the driver heartbeat",
                               lambda: self.bridge.study.set_user_attr(DRIVER_ATTR + self.bridge.driver, now))
        if self.on_step:  # the progress display: Tune's trials say how many run now
            self.on_step(trials)


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            text = open(path).read().strip()
            return text.splitlines()[-1] if text else "trial failed"
    except OSError:
        pass
    return "trial failed (worker died)"


class LaunchStopper(Stopper):
    """Stops a trial that reported an input error at once (its result never reaches a scheduler, which
    would read its NaN metric) and the whole launch after the first one (no trial may burn time on an
    error that fails every attempt the same way) or after SIGINT/SIGTERM."""

    def __init__(self, bridge: OptunaBridge) -> None:
        self.bridge = bridge

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get(INPUT_ERROR))

    def stop_all(self) -> bool:
        return self.bridge.stopping() is not None


class OptunaPrunerScheduler(FIFOScheduler):
    """A Tune scheduler that asks the Optuna pruner about the trial in storage (macro-F1 by epoch)."""

    def __init__(self, bridge: OptunaBridge) -> None:
        super().__init__()
        self.bridge = bridge

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("final"):
            return TrialScheduler.CONTINUE
        self.bridge.record(trial.trial_id, result)  # every epoch stays an intermediate value (the curve)
        if schedule_unsettled(result):  # but the pruner judges none before the schedule's last switch acted
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP if self.bridge.should_prune(trial.trial_id) else TrialScheduler.CONTINUE

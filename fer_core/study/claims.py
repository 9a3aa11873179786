"""Who runs what on a study: driver liveness, and claims taken under the study-wide lock.

Several drivers may run one study at once. A planned cell (or a search design's budget slot) is
claimed under a study-wide lock (``storage.claim_lock``) by creating its RUNNING trial, params and
owner included, in one storage write, so no cell runs twice and the search budget is shared. A
driver writes a heartbeat into the study's user attrs; on relaunch, the RUNNING trials of a driver
that is gone (crash, Ctrl-C, kill -9) are failed and their cells re-queued (``reconcile``).
With pruning across folds, a fold cell's config is judged (``foldprune``) just before the claim.

Plain Optuna and the storage: no Ray here, so claims are testable on a bare study.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from fer_core.study.foldprune import fold_values, judge, make_fold_pruner, pruned_trial, verdict_attrs
from fer_core.study.queries import real_trials
from fer_core.study.spec import Cell, StudySpec
from fer_core.study.storage import claim_key, claim_lock, wait_budget

log = logging.getLogger("fer_study")
DRIVER_ATTR = "driver_heartbeat:"  # study user attr prefix: driver id -> last seen (unix time)
STALE_S = 120.0  # a driver silent this long is dead; its RUNNING trials are reconciled


# -- driver liveness ------------------------------------------------------------------------------
def stale_s() -> float:
    """How long a driver may be silent before it counts as dead: never less than the database wait.
    A live driver waiting out a database restart writes no heartbeat; a driver relaunched when the
    server is back must not fail that driver's trials under it."""
    return max(STALE_S, wait_budget() + 30.0)


def driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_is_dead(study: optuna.Study, driver: str | None, now: float | None = None) -> bool:
    if not driver:
        return True
    host, pid, _ = [*driver.split(":"), "", "", ""][:3]
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        return True
    seen = study.user_attrs.get(DRIVER_ATTR + driver)
    return seen is None or (now or time.time()) - float(seen) > stale_s()


def reconcile(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose driver is gone (crash, Ctrl-C, kill -9); return their numbers."""
    failed = []
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = t.user_attrs.get("driver")
        if not driver and t.datetime_start and (now - t.datetime_start).total_seconds() < stale_s():
            continue  # a search trial another live driver has just asked for and not yet labelled
        if driver_is_dead(study, driver):
            study._storage.set_trial_user_attr(t._trial_id, "error", "driver stopped while the trial ran; re-queued")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    return failed


# -- claims under the study lock ------------------------------------------------------------------
class Claims:
    """One driver's claims on a study: the planned cells it still may take (``todo``), or slots of a
    search design's budget. Every claim reads and writes the storage under the study-wide lock."""

    def __init__(self, study: optuna.Study, spec: StudySpec, todo: list[Cell], driver: str) -> None:
        self.study, self.spec, self.todo, self.driver = study, spec, list(todo), driver
        self.dists = {k: CategoricalDistribution(sorted(set(map(_hashable, vals)), key=repr))
                      for k, vals in self._factor_values().items()}
        self.fold_pruner = make_fold_pruner(spec.cv_prune, spec.source)
        self.fold_pruned: list[str] = []  # cell ids this driver stored as skipped (the launch summary)

    def _factor_values(self) -> dict[str, list]:
        vals: dict[str, list] = {}
        for c in self.spec.cells():
            for k, v in c.params.items():
                vals.setdefault(k, []).append(v)
        return vals

    def _lock_key(self) -> str:
        return claim_key(self.study.study_name)

    def claim_cell(self) -> tuple[optuna.Trial, Cell] | None:
        """Take the next planned cell no driver has finished or is running: check and create the
        RUNNING trial under the study lock (another driver's claim is visible to the next holder).
        With pruning across folds, a fold cell whose config the stored folds condemn is stored as
        PRUNED instead (with the rest of that config's folds) and the next cell is looked at."""
        with claim_lock(self.study._storage, self._lock_key()):
            trials = self.study.get_trials(deepcopy=False)
            taken = {t.user_attrs.get("cell_id") for t in trials if t.state in (
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)}
            values = fold_values(trials) if self.fold_pruner is not None else {}
            for i, cell in enumerate(self.todo):
                if cell.cell_id in taken:
                    continue  # done, skipped or running in another driver
                if values and self._prune_config(cell, values, taken):
                    continue
                meta = {**cell.attrs, "driver": self.driver}
                trial = self.create_trial(cell.params, {k: self.dists[k] for k in cell.params}, meta)
                del self.todo[:i + 1]  # only once the claim is stored: a retried claim sees the same list
                return trial, cell
            self.todo.clear()
        return None

    def _prune_config(self, cell: Cell, values: dict[str, dict[int, float]], taken: set) -> bool:
        """Under the claim lock: judge ``cell``'s config on the stored fold values; when pruned, store
        every fold cell of it that is not done or running as a PRUNED trial (``taken`` grows)."""
        config_id = cell.meta.get("config_id")
        if config_id is None or cell.variant == self.spec.baseline_variant:
            return False  # the baseline is never pruned: every Δ in the report pairs against its folds
        verdict = judge(values, config_id, self.fold_pruner, self.spec.direction, self.spec.cv_prune["name"])
        if verdict is None:
            return False
        why = verdict_attrs(verdict, self.spec.cv_folds)
        for c in self.spec.cells():
            if c.meta.get("config_id") != config_id or c.cell_id in taken:
                continue
            config = json.loads(json.dumps(self.spec.trial_config(c.params), default=str))
            attrs = {**c.attrs, "driver": self.driver, "config": config, **why}
            self.study._storage.create_new_trial(self.study._study_id, template_trial=pruned_trial(
                dict(c.params), {k: self.dists[k] for k in c.params}, attrs))
            taken.add(c.cell_id)
            self.fold_pruned.append(c.cell_id)
        log.info("config %s: remaining folds skipped (%s, p=%.3g after %d folds)", config_id, verdict.reason,
                 verdict.p_value, verdict.folds_done)
        return True

    def claim_search_slot(self) -> optuna.Trial | None:
        """A new search trial while the budget, counted over every driver, has room: finished, running
        and queued trials count; failed attempts do not (their retry or a relaunch refills them)."""
        with claim_lock(self.study._storage, self._lock_key()):
            # warm-start copies are prior evidence told before the search, not slots of its budget
            used = len(real_trials(self.study, states=(
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)))
            if self.spec.trials is not None and used >= self.spec.trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr("driver", self.driver)
            return trial

    def create_trial(self, params: dict, dists: dict, user_attrs: dict) -> optuna.Trial:
        """A RUNNING trial with its params and owner in one write (no WAITING queue another
        driver's ask() could pop, no unlabelled moment a concurrent reconcile could misread)."""
        template = FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(), datetime_complete=None,
            params=params, distributions=dists, user_attrs=user_attrs, system_attrs={}, intermediate_values={},
            trial_id=-1)
        trial_id = self.study._storage.create_new_trial(self.study._study_id, template_trial=template)
        return optuna.Trial(self.study, trial_id)


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)

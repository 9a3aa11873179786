"""Pruning across folds in k-fold CV studies (``cv: {folds: k, prune: {name: wilcoxon, ...}}``).

A config (a variant at one seed) runs as ``k`` fold trials sharing a ``config_id``. Once the
folds it has completed are significantly worse than the best config's folds, paired by
fold, its remaining folds are skipped: they are stored as PRUNED trials that never train.

The decision is Optuna's own ``WilcoxonPruner`` (made for exactly this: a paired signed-rank
test between a trial and the best trial over "instances", here folds), asked about an
in-memory Optuna study that mirrors the CV study one level up: one trial per config, its
intermediate values its fold values (step = fold index), the config's value the mean over
its completed folds. The best trial is therefore the config with the best mean over its
completed folds; the pruner pairs the candidate with it over the folds both have.

Everything the decision reads comes from storage (COMPLETE fold trials), never from a
driver's memory, so concurrent drivers and a relaunch reach the same decision; the
bridge takes it under the study-wide claim lock, just before a fold cell would be claimed.
The design's baseline config is never pruned: every Δ in the report is paired against it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_core.errors import ConfigError, first_line
from fer_core.registry import Registry, lookup
from fer_core.study.inmemory import quiet_memory_study

FOLD_PRUNERS = Registry("fold pruner", "cv.prune")
PRUNED_BY = "pruned_by"  # trial user attr that marks a fold skipped by pruning across folds (and says why)


def _wilcoxon(**o: Any) -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():  # Optuna marks WilcoxonPruner experimental
        warnings.simplefilter("ignore")
        return optuna.pruners.WilcoxonPruner(**{"p_threshold": 0.1, "n_startup_steps": 2, **o})


FOLD_PRUNERS.register("none")(lambda **o: None)
FOLD_PRUNERS.register("wilcoxon")(_wilcoxon)


def parse_fold_prune(value: Any, folds: int, where: str) -> dict[str, Any] | None:
    """``cv.prune`` (a name or ``{name, options}``) -> ``{name, options}``, or None when off.
    Built once here so a bad option, or settings under which nothing could ever be pruned,
    stop the launch with one line before any trial."""
    if value is None:
        return None
    part = {"name": value, "options": {}} if isinstance(value, str) else value
    if not isinstance(part, Mapping) or set(part) - {"name", "options"} or not isinstance(part.get("name"), str):
        raise ConfigError(f"{where}: cv.prune must be a name or {{name, options}}; "
                          f"names: {', '.join(sorted(FOLD_PRUNERS))}")
    opts = part.get("options") or {}
    if not isinstance(opts, Mapping):
        raise ConfigError(f"{where}: cv.prune.options must be a mapping")
    part = {"name": part["name"], "options": dict(opts)}
    try:
        lookup(FOLD_PRUNERS, part["name"])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    pruner = make_fold_pruner(part, where)
    if pruner is None:
        return None
    if isinstance(pruner, optuna.pruners.WilcoxonPruner):
        startup, p = pruner._n_startup_steps, pruner._p_threshold
        # the smallest one-sided exact p-value of n paired folds is 2**-n: fewer folds can never prune
        need = max(2, startup, math.floor(-math.log2(p)) + 1 if p > 0 else 10**6)
        if need >= folds:
            raise ConfigError(f"{where}: cv.prune: with p_threshold {p} and n_startup_steps {startup} a config needs "
                              f"{need} completed folds before it can be pruned, and cv.folds is {folds}: no fold "
                              "would ever be skipped; raise p_threshold or folds, or drop cv.prune")
    return part


def make_fold_pruner(part: Mapping[str, Any] | None, where: str = "study") -> optuna.pruners.BasePruner | None:
    if not part:
        return None
    factory = lookup(FOLD_PRUNERS, part["name"])
    try:
        return factory(**part.get("options", {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: cv.prune.options: {first_line(err)}") from None


@dataclass(frozen=True)
class FoldVerdict:
    """Why a config's remaining folds are skipped."""

    config_id: str
    best_config_id: str
    pruner: str
    p_value: float  # the paired one-sided test the pruner ran (for the record; the pruner decided)
    folds_done: int  # the pruned config's completed folds
    paired: int  # folds both configs have completed

    @property
    def reason(self) -> str:
        return f"{self.pruner} across folds vs config {self.best_config_id}"


def fold_values(trials: Iterable[FrozenTrial]) -> dict[str, dict[int, float]]:
    """config_id -> fold -> objective value, from the COMPLETE fold trials (the first one per fold:
    a fold is one cell, run once)."""
    out: dict[str, dict[int, float]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        ua = t.user_attrs
        if t.state != TrialState.COMPLETE or t.value is None or "config_id" not in ua or ua.get("fold") is None:
            continue
        out.setdefault(str(ua["config_id"]), {}).setdefault(int(ua["fold"]), float(t.value))
    return out


def judge(values: Mapping[str, Mapping[int, float]], config_id: str, pruner: optuna.pruners.BasePruner | None,
          direction: str, name: str = "wilcoxon") -> FoldVerdict | None:
    """Ask ``pruner`` whether ``config_id`` should skip its remaining folds, given every config's
    completed fold values. None: keep running it."""
    mine = values.get(config_id) or {}
    others = {c: v for c, v in values.items() if c != config_id and v}
    if pruner is None or not mine or not others:
        return None
    mirror = quiet_memory_study(direction=direction)  # no "A new study created in memory" per claim
    for cid, vals in others.items():
        mirror.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=sum(vals.values()) / len(vals),
            intermediate_values=dict(vals), user_attrs={"config_id": cid}))
    candidate = optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=dict(mine))
    with warnings.catch_warnings():  # "steps missing in the best trial": those folds are simply not paired
        warnings.simplefilter("ignore")
        if not pruner.prune(mirror, candidate):
            return None
    best = mirror.best_trial
    common = sorted(set(mine) & set(best.intermediate_values))
    diffs = [mine[f] - best.intermediate_values[f] for f in common]
    import scipy.stats as ss

    p = float(ss.wilcoxon(diffs, alternative="less" if direction == "maximize" else "greater",
                          zero_method="zsplit").pvalue)
    return FoldVerdict(config_id, str(best.user_attrs["config_id"]), name, p, len(mine), len(common))


def pruned_trial(params: dict, dists: dict, user_attrs: dict) -> FrozenTrial:
    """The stored record of a skipped fold: PRUNED from the start, no value, no epochs."""
    now = datetime.now()
    return FrozenTrial(number=-1, state=TrialState.PRUNED, value=None, datetime_start=now, datetime_complete=now,
                       params=params, distributions=dists, user_attrs=user_attrs, system_attrs={},
                       intermediate_values={}, trial_id=-1)


def verdict_attrs(v: FoldVerdict, folds: int) -> dict[str, Any]:
    return {PRUNED_BY: v.reason, "pruned_vs_config": v.best_config_id, "prune_p_value": v.p_value,
            "pruned_after_folds": v.folds_done, "pruned_paired_folds": v.paired, "cv_folds": folds}

"""Warm-starting a search from finished trials of another study in the same storage.

``fer-study launch imbalance-hpo --warm-start imbalance-ablation`` tells the new study copies
of the source study's finished trials before the first trial is asked, so TPE (and the
pruner) start from evidence instead of ``n_startup_trials`` random draws.

A source trial is told only when it is a point of this study: its whole resolved trial
config must equal the config this study would train for the same searched values. Only
the searched keys (mapped onto this space's distributions: a value outside a range or a
categorical's choices skips the trial) and keys that do not change what a trial measures
(``IGNORED_KEYS``: the seed, the double-weighting guard, execution knobs) may differ. So
a source that trained fewer epochs, another backbone or image size, other data or a
knob this space does not search (``cutmix_alpha: 1.0`` where this study trains 0) is
skipped with the reason: a value from another training budget is on another scale, and
TPE would read it as evidence against (or for) the wrong region.

The copies carry ``warm_start_from`` (source study), ``warm_start_trial`` (its number) and
``derived: warm_start``: they are prior evidence, not trials of this study, so they never
use the search budget, never rank as best trial, are left out of the report table and
checkpoint retention (``outputs.real_trials``), and are never told twice (a relaunch
skips the (source, number) pairs already there, under the study's claim lock).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fer_core.config import resolve_config, unread_keys
from fer_core.errors import ConfigError, FerError, first_line
from fer_core.study.space import Param
from fer_core.study.spec import StudySpec
from fer_core.study.storage import claim_key, claim_lock, open_storage, redact, study_names
from fer_core.study.studymodel import NAME_RE

WARM_ATTR = "warm_start_from"  # trial user attr: the source study's name
WARM_TRIAL_ATTR = "warm_start_trial"  # trial user attr: the source trial's number
SOURCE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # PRUNED ones: TPE reads their last epoch
# keys that may differ between a source trial and this study without changing what the trial
# measures: the seed is noise by design, the double-weighting guard only permits a config, the
# rest pick where and how fast it runs
IGNORED_KEYS = frozenset({"seed", "allow_double_weighting", "cache_dir", "device", "num_threads", "channels_last",
                          "amp", "compile", "eval_batch_size", "tta"})


def is_warm_start(trial: FrozenTrial) -> bool:
    """A copy told by ``--warm-start`` (prior evidence), not a trial this study ran."""
    return WARM_ATTR in trial.user_attrs


@dataclass
class WarmStart:
    """What one source study gives this study: the copies to tell and why the others were skipped."""

    source: str
    copies: list[FrozenTrial] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> source trials
    told: int = 0  # told by this launch
    already: int = 0  # told by an earlier launch

    def reasons(self, top: int = 4) -> str:
        """The commonest skip reasons with their counts, e.g. ``sampler='weighted' not in space: 3``."""
        text = ", ".join(f"{r}: {k}" for r, k in self.skipped.most_common(top))
        more = len(self.skipped) - top
        return text + (f", {more} more reasons" if more > 0 else "")

    def line(self) -> str:
        s = f"warm start: told {self.told} trials from {self.source}"
        if self.already:
            s += f" ({self.already} told before)"
        n = sum(self.skipped.values())
        if n:
            s += f", skipped {n} ({self.reasons()})"
        return s


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: 0 and 0.0 are, True and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _fit(p: Param, value: Any) -> tuple[Any, str | None]:
    """``value`` as a value of ``p``'s distribution, or the reason it is not one."""
    if p.type == "categorical":
        for c in p.choices:
            if _same(value, c):
                return c, None  # the space's own object: 0 told as the choice 0.0
        return None, f"{p.name}={value!r} not in space"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{p.name}={value!r} not a number"
    lo, hi = float(p.low), float(p.high)
    if not lo <= value <= hi:
        return None, f"{p.name}={value:g} outside [{lo:g}, {hi:g}]"
    step = p.step or (1 if p.type == "int" else None)
    if step and abs((value - lo) / step - round((value - lo) / step)) > 1e-8:
        return None, f"{p.name}={value:g} off the step {step:g}"
    return (round(value) if p.type == "int" else float(value)), None


def _config_of(trial: FrozenTrial) -> dict[str, Any] | None:
    cfg = trial.user_attrs.get("config")  # what the bridge stored: the trial's whole config
    return dict(cfg) if isinstance(cfg, Mapping) else None


def map_trial(spec: StudySpec, trial: FrozenTrial, source: str) -> tuple[FrozenTrial | None, str | None]:
    """A source trial as a trial of ``spec``'s search space (target distributions), or why not."""
    if is_warm_start(trial):
        return None, "a warm-start copy itself"
    if trial.state == TrialState.COMPLETE and (trial.value is None or not math.isfinite(trial.value)):
        return None, "no finite value"
    raw = _config_of(trial)
    if raw is None:
        return None, "no stored config"
    try:
        src = resolve_config(raw, check_names=False).model_dump()
    except ConfigError:
        return None, "its config is not valid any more"
    assert spec.space is not None
    values: dict[str, Any] = {}  # walks the space like SearchSpace.sample: conditionals see their parents
    for p in spec.space.params:
        if not p.active(values):
            continue
        if p.type == "fixed":
            values[p.name] = p.value
            continue
        v, why = _fit(p, src.get(p.name))
        if why:
            return None, why
        values[p.name] = v
    seed = src["seed"]
    config = spec.trial_config({**values, "seed": seed})
    try:
        here = resolve_config(config, check_names=False).model_dump()
    except ConfigError as err:
        return None, f"not a valid config here ({str(err).split(':')[0]})"
    unread = unread_keys(src) & unread_keys(here)  # e.g. stage2_epochs where neither trains a stage 2
    for k in sorted(here):
        if k not in IGNORED_KEYS | unread and not _same(src.get(k), here[k]):
            return None, f"{k}={src.get(k)!r} (here {here[k]!r})"
    dists = {p.name: p.distribution() for p in spec.space.params if p.name in values and p.type != "fixed"}
    attrs = {
        WARM_ATTR: source, WARM_TRIAL_ATTR: trial.number, "derived": "warm_start", "seed": seed,
        "epochs": src["epochs"],  # equal to this study's by construction; kept so the copy says so itself
        "warm_start_label": trial.user_attrs.get("cell_id") or trial.user_attrs.get("variant") or "",
        "config": json.loads(json.dumps(config, default=str)),
    }
    copy = optuna.trial.create_trial(
        # a PRUNED trial's value is its last epoch's (Optuna's own tell stores it so): kept as it is
        state=trial.state, value=trial.value if trial.value is not None and math.isfinite(trial.value) else None,
        params={k: values[k] for k in dists}, distributions=dists, user_attrs=attrs,
        intermediate_values={int(s): float(v) for s, v in trial.intermediate_values.items()
                             if v is not None and math.isfinite(v)})
    return copy, None


def check_names(spec: StudySpec, sources: Iterable[str]) -> list[str]:
    """``--warm-start`` values checked at the edge, before the storage is read."""
    names = list(dict.fromkeys(sources))
    if names and spec.design != "search":
        raise ConfigError(f"--warm-start: study {spec.name!r} is a {spec.design} design; only a search design "
                          "samples from told trials")
    for n in names:
        if not isinstance(n, str) or not NAME_RE.match(n):
            raise ConfigError(f"--warm-start: {n!r} is not a study name (letters, digits, '_', '.', '-')")
        if n == spec.name:
            raise ConfigError(f"--warm-start {n}: that is the study being launched")
    return names


def plan(spec: StudySpec, url: str, source: str, storage: optuna.storages.BaseStorage | None = None) -> WarmStart:
    """Read ``source`` and map its finished trials; refuse (one line) a study whose objective is not
    this one's, and a source none of whose finished trials fits. Writes nothing. ``storage``: ``url``
    already opened (a launch opens it once)."""
    storage = storage or open_storage(url)
    names = study_names(storage)
    if source not in names:
        raise ConfigError(f"--warm-start: no study {source!r} in {redact(url)}; stored: "
                          f"{', '.join(sorted(n for n in names if n != spec.name)) or '(none)'}")
    src = optuna.load_study(study_name=source, storage=storage)
    if len(src.directions) != 1:
        raise ConfigError(f"--warm-start {source}: a multi-objective study; {spec.name} has one objective")
    direction, metric = src.direction.name.lower(), src.user_attrs.get("metric")
    if direction != spec.direction or metric != spec.metric:
        raise ConfigError(f"--warm-start {source}: its objective is {metric or '(not a fer-study study)'} "
                          f"({direction}), {spec.name} {spec.metric} ({spec.direction}); refusing: its values "
                          "would mean something else here")
    ws = WarmStart(source)
    finished = src.get_trials(deepcopy=False, states=SOURCE_STATES)
    for t in finished:
        copy, why = map_trial(spec, t, source)
        if copy is None:
            ws.skipped[why] += 1
        else:
            ws.copies.append(copy)
    if not finished:
        raise ConfigError(f"--warm-start {source}: no complete or pruned trial to tell yet")
    if not ws.copies:
        raise ConfigError(f"--warm-start {source}: none of its {len(finished)} finished trials fits {spec.name} "
                          f"(skipped: {ws.reasons()}); only searched keys and the seed may "
                          "differ (same data, backbone, image size, epochs, ...)")
    return ws


def tell(study: optuna.Study, plans: list[WarmStart]) -> list[WarmStart]:
    """Tell the planned copies not told before. Under the study's claim lock (the one that guards
    the search budget): two drivers launched together with ``--warm-start`` tell each copy once."""
    if not plans:
        return plans
    with claim_lock(study._storage, claim_key(study.study_name)):
        have = {(t.user_attrs[WARM_ATTR], t.user_attrs.get(WARM_TRIAL_ATTR))
                for t in study.get_trials(deepcopy=False) if is_warm_start(t)}
        for ws in plans:
            new = [c for c in ws.copies if (ws.source, c.user_attrs[WARM_TRIAL_ATTR]) not in have]
            ws.already, ws.told = len(ws.copies) - len(new), len(new)
            try:
                study.add_trials(new)
            except ValueError as err:  # a distribution this study's earlier trials store differently
                raise FerError(f"--warm-start {ws.source}: {first_line(err)}") from None
    return plans


def warm_started(study: optuna.Study) -> dict[str, int]:
    """Source study -> copies told into ``study``."""
    return dict(Counter(t.user_attrs[WARM_ATTR] for t in study.get_trials(deepcopy=False) if is_warm_start(t)))

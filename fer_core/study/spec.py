"""Study files (``studies/*.yaml``) validated into a frozen ``StudySpec``.

A study file is data: name, the question it answers, data source, base config, design
(``grid`` | ``one_at_a_time`` | ``search``), objective, seeds, budget, Optuna sampler,
pruner or Ray scheduler, resources per trial, and budget profiles (``smoke`` for CI,
``cpu`` for a laptop, ``gpu`` for full size). ``extends: other.yaml`` makes a study a
small diff from a base file. A profile is a deep-merge patch over the whole spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fer_core.config import KEYS, resolve_config
from fer_core.errors import ConfigError
from fer_core.metric_names import SELECT_METRICS
from fer_core.study.space import SearchSpace, parse_space

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "cpu", "gpu")
DESIGNS = ("grid", "one_at_a_time", "search")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # no SQL/shell metacharacters, no paths
SPEC_KEYS = {"name", "question", "extends", "data", "base", "design", "seeds", "objective", "optuna_sampler",
             "pruner", "scheduler", "budget", "resources", "max_failures", "profiles", "checkpoint_every",
             "checkpoint_min_s", "keep_checkpoints", "cv", "teacher", "report"}
EXTEND_MERGE = {"base", "data", "budget", "resources", "profiles"}
DATA_KEYS = {"dataset", "data_path", "data_seed", "val_fraction", "test_fraction", "cache_dir"}


def search_dirs(kind: str) -> list[Path]:
    """Where names resolve: $FER_STUDY_DIR (studies) / the working directory / the source tree."""
    dirs = []
    env = os.environ.get("FER_STUDY_DIR" if kind == "studies" else "FER_SPACE_DIR")
    if env:
        dirs.append(Path(env))
    dirs += [Path.cwd() / kind, REPO_ROOT / kind]
    return list(dict.fromkeys(dirs))


def find_file(name: str, kind: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in search_dirs(kind):
        for cand in (d / name, d / f"{name}.yaml", d / f"{name}.yml"):
            if cand.is_file():
                return cand
    known = sorted({f.stem for d in search_dirs(kind) if d.is_dir() for f in d.glob("*.yaml")})
    label = "study" if kind == "studies" else "search space"
    raise ConfigError(f"unknown {label} {name!r}; known: {', '.join(known) or '(none)'}")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the study file as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}:{f' line {mark.line + 1}' if mark else ''} invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: Mapping, patch: Mapping) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _load_raw(path: Path, depth: int = 0) -> dict[str, Any]:
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if depth > 5 or not isinstance(parent, str):
            raise ConfigError(f"{path}: extends must name one study file (and not loop)")
        base = _load_raw((path.parent / parent) if (path.parent / parent).is_file() else find_file(parent, "studies"),
                         depth + 1)
        base.pop("name", None)
        # a child changes the base config, data, budget and profiles key by key; the design,
        # seeds, objective and components it names replace the parent's wholesale
        data = {**base, **{k: deep_merge(base.get(k) or {}, v) if k in EXTEND_MERGE and isinstance(v, Mapping)
                           else v for k, v in data.items()}}
    return data


@dataclass(frozen=True)
class Cell:
    """One planned trial of a grid / one-at-a-time design."""

    cell_id: str  # "<variant>/seed=<seed>": identity used for dedup and resume
    variant: str
    seed: int
    params: dict[str, Any]  # the Optuna params (design factors + seed [+ cv_fold])
    meta: dict[str, Any] = field(default_factory=dict)  # k-fold CV: {"fold", "config_id"} (trial user attrs)

    @property
    def attrs(self) -> dict[str, Any]:
        """What a trial of this cell carries as user attrs to be found again (resume, report, folds)."""
        return {"cell_id": self.cell_id, "variant": self.variant, "seed": self.seed, **self.meta}


@dataclass(frozen=True)
class StudySpec:
    name: str
    question: str
    source: str
    profile: str
    design: str
    base: dict[str, Any]  # trial config every trial starts from (data keys included)
    seeds: tuple[int, ...]
    metric: str
    direction: str
    optuna_sampler: dict[str, Any]
    pruner: dict[str, Any]
    scheduler: dict[str, Any]
    trials: int | None
    time_s: float | None
    max_concurrent: int
    resources: dict[str, Any]  # cpu: float; gpu: float or "auto" (measured, fer_core.study.gpu)
    max_failures: int
    checkpoint_every: int
    # a checkpoint is at most every checkpoint_every epochs and at least this many seconds after the last
    # one: a retry then loses at most ~this much work, and short epochs do not pay a save + Tune hand-off each
    checkpoint_min_s: float = 30.0
    keep_checkpoints: int = 3  # best-epoch models of the study's top trials kept for export/teachers
    cv_folds: int = 0  # k-fold CV: every (variant, seed, repeat) runs once per fold, one trial each
    cv_repeats: int = 1  # repeated k-fold: partitions per seed (fer_core/data/folds.py)
    cv_prune: dict[str, Any] | None = None  # pruning across folds {name, options} (foldprune.py); None = off
    teacher_from: dict[str, Any] | None = None  # distillation: {study, top}, resolved at launch (study/teachers.py)
    factors: dict[str, tuple] = field(default_factory=dict)  # grid
    baseline: str = "baseline"  # one_at_a_time
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # one_at_a_time (+ named combinations)
    space: SearchSpace | None = None  # search
    resolved: dict[str, Any] = field(default_factory=dict)  # the merged spec as data (stored in the study)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def cells(self) -> list[Cell]:
        """Planned trials (grid, one_at_a_time) in launch order: baseline first, seeds inner."""
        if self.design == "search":
            return []
        if self.design == "grid":
            keys = list(self.factors)
            combos = [dict(zip(keys, vals)) for vals in itertools.product(*self.factors.values())]
            named = [(",".join(f"{k}={v}" for k, v in c.items()), c) for c in combos]
        else:
            named = [(self.baseline, {}), *self.variants.items()]
        keys = self.factor_keys()
        out = []
        for variant, diff in named:
            for seed in self.seeds:
                params = {k: diff.get(k, self.base.get(k, _default(k))) for k in keys}
                params["seed"] = seed
                if not self.cv_folds:
                    out.append(Cell(f"{variant}/seed={seed}", variant, seed, params))
                for repeat in range(self.cv_repeats if self.cv_folds else 0):
                    # the folds of one config (variant, seed, repeat: one partition) share its config_id;
                    # with one repeat, ids and params are what they were before repeats existed
                    config_id = f"{variant}/seed={seed}" + (f"/repeat={repeat}" if self.cv_repeats > 1 else "")
                    extra = {"cv_repeat": repeat} if self.cv_repeats > 1 else {}
                    for fold in range(self.cv_folds):
                        out.append(Cell(f"{config_id}/fold={fold}", variant, seed, {**params, **extra, "cv_fold": fold},
                                        {"fold": fold, "repeat": repeat, "config_id": config_id}))
        if self.cv_prune:
            # fold-major (fold 0 of every config, then fold 1, ...): every config has early folds done
            # to be compared on before its later folds are claimed, so pruning can skip them
            out.sort(key=lambda c: c.meta["fold"])
        return out

    @property
    def baseline_variant(self) -> str | None:
        """The config every Δ is paired against: the one-at-a-time baseline, the grid's first combination."""
        if self.design == "search":
            return None
        if self.design == "one_at_a_time":
            return self.baseline
        return ",".join(f"{k}={v[0]}" for k, v in self.factors.items())

    def factor_keys(self) -> list[str]:
        if self.design == "grid":
            return list(self.factors)
        return sorted({k for diff in self.variants.values() for k in diff})

    def trial_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.base, **params}

    def n_planned(self) -> int | None:
        return len(self.cells()) if self.design != "search" else self.trials


def _default(key: str) -> Any:
    from fer_core.config import TrainConfig

    return TrainConfig.model_fields[key].default


def _mapping(data: dict, key: str, src: str) -> dict:
    v = data.get(key) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{src}: {key} must be a mapping")
    return dict(v)


def _check_config_keys(d: Mapping, where: str) -> None:
    for k in d:
        if k not in KEYS:
            import difflib

            close = difflib.get_close_matches(str(k), KEYS, n=1)
            raise ConfigError(f"{where}: unknown config key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _check_seeds(seeds: Any, where: str) -> None:
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{where} must be a non-empty list of non-negative integers, got {seeds!r}"[:300])
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where} repeat a value")


def default_profile() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def load_study(name: str, profile: str | None = None) -> StudySpec:
    """Resolve a study name or path + profile into a validated StudySpec (trains nothing)."""
    path = find_file(name, "studies")
    src = str(path)
    raw = _load_raw(path)
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{src}: unknown study key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    profile = profile or os.environ.get("FER_STUDY_PROFILE") or default_profile()
    if profile not in PROFILES:
        raise ConfigError(f"--profile: unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    profiles = _mapping(raw, "profiles", src)
    for p in profiles:
        if p not in PROFILES:
            raise ConfigError(f"{src}: profiles: unknown profile {p!r}; valid: {', '.join(PROFILES)}")
        if profiles[p] is not None and not isinstance(profiles[p], Mapping):
            raise ConfigError(f"{src}: profiles.{p} must be a mapping of study keys, "
                              f"got {type(profiles[p]).__name__}")
    spec = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profiles.get(profile) or {})

    sname = spec.get("name")
    if not isinstance(sname, str) or not NAME_RE.match(sname):
        raise ConfigError(f"{src}: name must match {NAME_RE.pattern} (letters, digits, '_', '.', '-'), got {sname!r}")
    question = spec.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{src}: question: say in one sentence what the study answers")
    data = _mapping(spec, "data", src)
    bad = set(data) - DATA_KEYS
    if bad:
        raise ConfigError(f"{src}: data: unknown key {sorted(bad)[0]!r}; allowed: {', '.join(sorted(DATA_KEYS))}")
    base = _mapping(spec, "base", src)
    _check_config_keys(base, f"{src}: base")
    if set(base) & DATA_KEYS:
        raise ConfigError(f"{src}: base: data keys belong under 'data:' ({sorted(set(base) & DATA_KEYS)[0]})")
    base = {**data, **base}
    # every profile's seeds, not only the selected one's: `validate --profile cpu` must not pass a file
    # whose top-level or smoke seeds would fail the launch another profile makes
    if "seeds" in raw:
        _check_seeds(raw["seeds"], f"{src}: seeds")
    for p, patch in profiles.items():
        if patch and "seeds" in patch:
            _check_seeds(patch["seeds"], f"{src}: profiles.{p}.seeds")
    seeds = spec.get("seeds", [0])
    _check_seeds(seeds, f"{src}: seeds")
    obj = _mapping(spec, "objective", src)
    metric, direction = obj.get("metric", "macro_f1"), obj.get("direction", "maximize")
    if metric not in SELECT_METRICS:
        raise ConfigError(f"{src}: objective.metric {metric!r}; allowed: {', '.join(SELECT_METRICS)}")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{src}: objective.direction {direction!r}; allowed: maximize, minimize")
    if metric != "macro_f1" and "select_metric" not in base:
        base = {**base, "select_metric": metric}  # a trial's epoch is selected by the study's objective too
    rep = _mapping(spec, "report", src)  # the report's class groups and estimability (fer_core/report/evidence.py)
    for k, v in rep.items():
        if k not in ("many_above", "few_below", "min_support"):
            raise ConfigError(f"{src}: report: unknown key {k!r}; allowed: few_below, many_above, min_support")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{src}: report.{k} must be an integer >= 1, got {v!r}")
    if rep.get("few_below", 20) > rep.get("many_above", 100):
        raise ConfigError(f"{src}: report.few_below must not exceed report.many_above")
    budget = _mapping(spec, "budget", src)
    bad = set(budget) - {"trials", "time_s", "max_concurrent"}
    if bad:
        raise ConfigError(f"{src}: budget: unknown key {sorted(bad)[0]!r}; allowed: max_concurrent, time_s, trials")
    resources = _mapping(spec, "resources", src) or {"cpu": 1, "gpu": 0}
    for k, v in resources.items():
        if k == "gpu" and v == "auto":  # a GPU fraction measured per backbone (fer_core.study.gpu)
            continue
        if k not in ("cpu", "gpu") or isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e6:
            raise ConfigError(f"{src}: resources: {k}: must be cpu/gpu with a number >= 0 (gpu may be 'auto'), "
                              f"got {v!r}")
    time_s = budget.get("time_s")
    if time_s is not None and (isinstance(time_s, bool) or not isinstance(time_s, (int, float))
                               or not 0 < time_s < float("inf")):
        raise ConfigError(f"{src}: budget.time_s must be a number of seconds > 0, got {time_s!r}")
    design = _mapping(spec, "design", src)
    kind = design.get("kind")
    if kind not in DESIGNS:
        raise ConfigError(f"{src}: design.kind {kind!r}; allowed: {', '.join(DESIGNS)}")
    from fer_core.distill import parse_teacher

    teacher_path, teacher_from = parse_teacher(spec.get("teacher"), src)
    if teacher_path:
        base = {**base, "teacher": teacher_path}
    cv = _mapping(spec, "cv", src)
    cv_prune = None
    cv_repeats = 1
    if cv:
        if set(cv) - {"folds", "repeats", "group_by", "prune"}:
            raise ConfigError(f"{src}: cv: unknown key {sorted(set(cv) - {'folds', 'repeats', 'group_by', 'prune'})[0]!r}; "
                              "allowed: folds, group_by, prune, repeats")
        folds = cv.get("folds")
        if isinstance(folds, bool) or not isinstance(folds, int) or not 3 <= folds <= 50:
            raise ConfigError(f"{src}: cv.folds must be an integer in 3..50 (one fold held out, one selecting "
                              f"the epoch, the rest training), got {folds!r}")
        cv_repeats = cv.get("repeats", 1)
        if isinstance(cv_repeats, bool) or not isinstance(cv_repeats, int) or not 1 <= cv_repeats <= 100:
            raise ConfigError(f"{src}: cv.repeats must be an integer in 1..100, got {cv_repeats!r}")
        if kind == "search":
            raise ConfigError(f"{src}: cv: k-fold cross-validation needs a grid or one_at_a_time design")
        if {"cv_fold", "cv_folds", "cv_repeat"} & set(base):
            raise ConfigError(f"{src}: base: cv_folds/cv_fold/cv_repeat are set by 'cv:', not by hand")
        base = {**base, "cv_folds": folds, "cv_group_by": str(cv.get("group_by", "none"))}
        from fer_core.study.foldprune import parse_fold_prune

        # its own key, not the study's `pruner:` (which stops a trial between epochs): this one
        # skips whole fold trials of a config, and both can be on together
        cv_prune = parse_fold_prune(cv.get("prune"), folds, src)

    def intval(v: Any, key: str, lo: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{src}: {key} must be an integer >= {lo}, got {v!r}")
        return v

    kw: dict[str, Any] = {}
    if kind == "grid":
        factors = _mapping(design, "factors", src)
        if not factors:
            raise ConfigError(f"{src}: design.factors: a grid needs at least one factor")
        _check_config_keys(factors, f"{src}: design.factors")
        for k, vals in factors.items():
            if not isinstance(vals, list) or not vals or len(set(map(repr, vals))) != len(vals):
                raise ConfigError(f"{src}: design.factors.{k}: a non-empty list of distinct values")
        kw["factors"] = {k: tuple(v) for k, v in factors.items()}
    elif kind == "one_at_a_time":
        kw["baseline"] = str(design.get("baseline", "baseline"))
        variants = _mapping(design, "variants", src)
        if not variants:
            raise ConfigError(f"{src}: design.variants: one_at_a_time needs at least one variant")
        for vname, diff in variants.items():
            if not isinstance(diff, Mapping) or not diff:
                raise ConfigError(f"{src}: design.variants.{vname}: a non-empty mapping of config changes")
            _check_config_keys(diff, f"{src}: design.variants.{vname}")
            if vname == kw["baseline"]:
                raise ConfigError(f"{src}: design.variants: {vname!r} is the baseline's name")
        kw["variants"] = {str(k): dict(v) for k, v in variants.items()}
    else:
        space_name = design.get("space")
        if not isinstance(space_name, str):
            raise ConfigError(f"{src}: design.space must name a file in search_spaces/")
        space_path = find_file(space_name, "search_spaces")
        kw["space"] = parse_space(read_yaml(space_path), str(space_path))
        if budget.get("trials") is None:
            raise ConfigError(f"{src}: budget.trials is required for a search design")

    def component(key: str, default: str) -> dict[str, Any]:
        c = spec.get(key) or {"name": default}
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, Mapping) or set(c) - {"name", "options"}:
            raise ConfigError(f"{src}: {key} must be a name or {{name, options}}")
        opts = c.get("options") or {}
        if not isinstance(opts, Mapping):
            raise ConfigError(f"{src}: {key}.options must be a mapping")
        return {"name": c.get("name", default), "options": dict(opts)}

    scheduler = component("scheduler", "none")
    ospec = StudySpec(
        name=sname, question=question.strip(), source=src, profile=profile, design=kind, base=base,
        seeds=tuple(seeds), metric=metric, direction=direction,
        optuna_sampler=component("optuna_sampler", "tpe"),
        pruner=component("pruner", "none"), scheduler=scheduler,
        trials=intval(budget["trials"], "budget.trials", 1) if budget.get("trials") is not None else None,
        time_s=float(time_s) if time_s is not None else None,
        max_concurrent=intval(budget.get("max_concurrent", 2), "budget.max_concurrent", 1),
        resources={"cpu": float(resources.get("cpu", 1)),
                   "gpu": "auto" if resources.get("gpu") == "auto" else float(resources.get("gpu", 0))},
        max_failures=intval(spec.get("max_failures", 2), "max_failures", 0),
        checkpoint_every=intval(spec.get("checkpoint_every", 1), "checkpoint_every", 1),
        checkpoint_min_s=_checkpoint_min_s(spec.get("checkpoint_min_s", 30), scheduler["name"], src),
        keep_checkpoints=intval(spec.get("keep_checkpoints", 3), "keep_checkpoints", 0),
        cv_folds=int(base.get("cv_folds", 0)),
        cv_repeats=cv_repeats,
        cv_prune=cv_prune,
        teacher_from=teacher_from,
        resolved={**spec, "profile": profile},
        **kw,
    )
    validate_components(ospec)
    return ospec


def _checkpoint_min_s(v: Any, scheduler: str, src: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
        raise ConfigError(f"{src}: checkpoint_min_s must be a number of seconds >= 0 (0: every checkpoint_every "
                          f"epochs), got {v!r}")
    if scheduler == "hyperband":
        return 0.0  # Ray's HyperBand pauses trials and resumes them from their latest checkpoint
    return float(v)


def validate_components(spec: StudySpec) -> None:
    """Resolve every name and every planned config without training (``fer-study validate``)."""
    from fer_core.registry import lookup
    from fer_core.study.components import (
        OPTUNA_SAMPLERS,
        PRUNERS,
        SCHEDULERS,
        make_optuna_sampler,
        make_pruner,
    )

    lookup(OPTUNA_SAMPLERS, spec.optuna_sampler["name"])
    lookup(PRUNERS, spec.pruner["name"])
    # built here too (cheap): a missing optional package or a bad option fails before any trial
    with warnings.catch_warnings():  # Optuna flags TPE's multivariate/group options as experimental
        warnings.simplefilter("ignore")
        make_optuna_sampler(spec.optuna_sampler, seed=spec.seeds[0])
        make_pruner(spec.pruner)
    lookup(SCHEDULERS, spec.scheduler["name"])
    if spec.pruner["name"] != "none" and spec.scheduler["name"] != "none":
        raise ConfigError(f"{spec.source}: pick one of pruner ({spec.pruner['name']}) and scheduler "
                          f"({spec.scheduler['name']}): both would stop trials")
    configs = [spec.trial_config(c.params) for c in spec.cells()]
    if spec.space is not None:
        configs = [spec.trial_config({**c, "seed": spec.seeds[0]}) for c in spec.space.corner_configs()]
    for cfg in configs:
        try:
            resolve_config(cfg)
        except ConfigError as err:
            raise ConfigError(f"{spec.source}: {err}") from None

"""Study files (``studies/*.yaml``) validated into a frozen ``StudySpec``.

A study file is data: name, the question it answers, data source, base config, design
(``grid`` | ``one_at_a_time`` | ``search``), objective, seeds, budget, Optuna sampler,
pruner or Ray scheduler, resources per trial, and budget profiles (``smoke`` for CI,
``cpu`` for a laptop, ``gpu`` for full size). ``extends: other.yaml`` makes a study a
small diff from a base file. A profile is a deep-merge patch over the whole spec.

Three steps, three modules: ``studyfile`` finds the file and merges ``extends`` and the profile,
``studymodel`` parses the result into frozen pydantic models (one-line errors naming the file and
the key), and ``load_study`` here checks what spans sections and builds the ``StudySpec`` the
rest of the code uses.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from fer_core.config import TrainConfig, check_registry_names, resolve_config
from fer_core.config_rules import SPATIAL_HEADS
from fer_core.errors import ConfigError
from fer_core.study.space import SearchSpace, parse_space
from fer_core.study.studyfile import PROFILES, find_file, load_raw, merged_study, profile_patches, read_yaml
from fer_core.study.studymodel import DATA_KEYS, Study, check_seeds, parse_study

if TYPE_CHECKING:
    from fer_core.sequential import Plan


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


class Planned(NamedTuple):
    """One planned trial's config, validated (``TrainConfig``)."""

    variant: str | None  # None: a search space's corner config
    resolved: TrainConfig


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
    fraction: dict[str, tuple[str, ...]] = field(default_factory=dict)  # grid: fractional factorial generators
    baseline: str = "baseline"  # one_at_a_time
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # one_at_a_time (+ named combinations)
    space: SearchSpace | None = None  # search
    sequential: Plan | None = None  # design.sequential: train in looks (fer_core/sequential.py); None: every seed
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
            combos = [c for c in (dict(zip(keys, vals)) for vals in itertools.product(*self.factors.values()))
                      if self.in_fraction(c)]
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
        first = next(c for c in (dict(zip(self.factors, vals)) for vals in itertools.product(*self.factors.values()))
                     if self.in_fraction(c))
        return ",".join(f"{k}={v}" for k, v in first.items())

    def code(self, factor: str, level: Any) -> int:
        """A two-level factor's level as -1 (its first) or +1 (its second)."""
        return -1 if repr(level) == repr(self.factors[factor][0]) else 1

    def in_fraction(self, combo: Mapping[str, Any]) -> bool:
        """Whether a grid combination is a cell of the fraction: each generated factor's code equals
        the product of its word's codes (all combinations without ``fraction``)."""
        return all(self.code(gen, combo[gen]) == math.prod(self.code(w, combo[w]) for w in word)
                   for gen, word in self.fraction.items())

    def factor_keys(self) -> list[str]:
        if self.design == "grid":
            return list(self.factors)
        return sorted({k for diff in self.variants.values() for k in diff})

    def trial_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.base, **params}

    @cached_property
    def planned(self) -> tuple[Planned, ...]:
        """Every planned trial config, validated once per spec (validate, launch and their checks all
        read it; a changed copy, ``dataclasses.replace``, validates its own): a grid's or
        one-at-a-time's cells, a search space's corner configs. Registry names are checked by
        ``validate_components``, which every ``load_study`` runs."""
        if self.space is not None:
            named = [(None, self.trial_config({**c, "seed": self.seeds[0]})) for c in self.space.corner_configs()]
        else:
            named = [(c.variant, self.trial_config(c.params)) for c in self.cells()]
        out = []
        for variant, cfg in named:
            try:
                out.append(Planned(variant, resolve_config(cfg, check_names=False)))
            except ConfigError as err:
                raise ConfigError(f"{self.source}: {err}") from None
        return tuple(out)

    def __getstate__(self) -> dict[str, Any]:
        # the searcher holds the spec and Tune pickles its state: the validated configs are rebuilt on
        # demand, not carried along
        return {k: v for k, v in self.__dict__.items() if k != "planned"}

    def n_planned(self) -> int | None:
        return len(self.cells()) if self.design != "search" else self.trials


def _default(key: str) -> Any:
    from fer_core.config import TrainConfig

    return TrainConfig.model_fields[key].default


def default_profile() -> str:
    # without a GPU device node (NVIDIA or ROCm) CUDA cannot be available: answer without importing
    # torch (~2 s), so that `validate` and a relaunch's first line come at once on CPU machines
    if not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"):
        return "cpu"
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def load_study(name: str, profile: str | None = None, data: str | None = None,
               sets: Mapping[str, Any] | None = None) -> StudySpec:
    """Resolve a study name or path + profile into a validated StudySpec (trains nothing): the file
    and its ``extends`` merged (``studyfile``), parsed (``studymodel``), then the checks that span
    sections and the trial configs every planned cell would train. ``data`` and ``sets`` are the
    launch's ``--data PATH`` and ``--set KEY=VALUE`` (``launch_overrides``): part of the spec, its
    fingerprint and its stored copy, so a relaunch with other ones is refused like a changed file."""
    path = find_file(name, "studies")
    src = str(path)
    raw = load_raw(path)
    profile = profile or os.environ.get("FER_STUDY_PROFILE") or default_profile()
    if profile not in PROFILES:
        raise ConfigError(f"--profile: unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    profiles = profile_patches(raw, src)
    # every profile's seeds, not only the selected one's: `validate --profile cpu` must not pass a file
    # whose top-level or smoke seeds would fail the launch another profile makes
    if "seeds" in raw:
        check_seeds(raw["seeds"], f"{src}: seeds")
    for p, patch in profiles.items():
        if "seeds" in patch:
            check_seeds(patch["seeds"], f"{src}: profiles.{p}.seeds")
    spec = merged_study(raw, profiles, profile, src)
    overrides = launch_overrides(spec, data, sets or {})
    if overrides:  # data keys go under data:, the rest over base:, as a study file would put them
        o = overrides["base"]
        spec = {**spec, "data": {**(spec.get("data") or {}), **{k: v for k, v in o.items() if k in DATA_KEYS}},
                "base": {**(spec.get("base") or {}), **{k: v for k, v in o.items() if k not in DATA_KEYS}}}
        spec = _drop_au_rows(spec, overrides)
    study = parse_study(spec, src)
    kind = study.design.kind
    base = {**(spec.get("data") or {}), **study.base}  # the data keys as the file orders them
    if study.objective.metric != "macro_f1" and "select_metric" not in base:
        base = {**base, "select_metric": study.objective.metric}  # a trial's epoch is selected by it too
    from fer_core.config_rules import parse_teacher

    teacher_path, teacher_from = parse_teacher(study.teacher, src)
    if teacher_path:
        base = {**base, "teacher": teacher_path}
    base, cv_prune = _cross_validation(study, base, src)
    kw: dict[str, Any] = {}
    if kind == "grid":
        kw["factors"] = {k: tuple(v) for k, v in study.design.factors.items()}
        kw["fraction"] = {str(k): tuple(v) for k, v in (study.design.fraction or {}).items()}
    elif kind == "one_at_a_time":
        kw["baseline"] = str(study.design.baseline)
        kw["variants"] = {str(k): dict(v) for k, v in study.design.variants.items()}
    else:
        space_path = find_file(study.design.space, "search_spaces")
        kw["space"] = parse_space(read_yaml(space_path), str(space_path))
        if study.budget.trials is None:
            raise ConfigError(f"{src}: budget.trials is required for a search design")
    seq = study.design.sequential
    if seq is not None:
        from fer_core.sequential import Plan  # scipy: only for the studies that train in looks

        kw["sequential"] = Plan(seq.looks, seq.min_effect, seq.futility_power)
    ospec = StudySpec(
        name=study.name, question=study.question, source=src, profile=profile, design=kind, base=base,
        seeds=study.seeds, metric=study.objective.metric, direction=study.objective.direction,
        optuna_sampler=study.optuna_sampler, pruner=study.pruner, scheduler=study.scheduler,
        trials=study.budget.trials, time_s=study.budget.time_s, max_concurrent=study.budget.max_concurrent,
        resources=study.resources, max_failures=study.max_failures, checkpoint_every=study.checkpoint_every,
        # Ray's HyperBand pauses trials and resumes them from their latest checkpoint: one every epoch
        checkpoint_min_s=0.0 if study.scheduler["name"] == "hyperband" else study.checkpoint_min_s,
        keep_checkpoints=study.keep_checkpoints,
        # a non-integer cv_folds set by hand in base: TrainConfig refuses it below with one line, not int()
        cv_folds=study.cv.folds if study.cv else _int_or_zero(base.get("cv_folds", 0)),
        cv_repeats=study.cv.repeats if study.cv else 1,
        cv_prune=cv_prune,
        teacher_from=teacher_from,
        resolved={**spec, "profile": profile, **({"overrides": overrides["given"]} if overrides else {})},
        **kw,
    )
    validate_components(ospec)
    return ospec


def launch_overrides(spec: Mapping[str, Any], data: str | None, sets: Mapping[str, Any]) -> dict[str, Any] | None:
    """``--data PATH`` and ``--set KEY=VALUE`` as base-config keys (``base``) and as given (``given``,
    stored with the spec and named in the report), or None without any. ``--data`` becomes
    ``dataset`` (detected as ``fer-study data inspect`` does) and an absolute ``data_path``; a
    ``--set`` key must be a trial-config key that the design does not vary."""
    if not data and not sets:
        return None
    from fer_core.config import KEYS

    base: dict[str, Any] = {}
    given: dict[str, Any] = {}
    if data:
        from fer_core.data.inspect import detect_source

        path = Path(data).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"--data {data}: no such file or directory")
        base.update(dataset=detect_source(path), data_path=str(path))
        given["data"] = {"path": str(path), "kind": base["dataset"]}
    design = spec.get("design") or {}
    varied = {"seed", "cv_fold", "cv_folds", "cv_repeat"} | set(design.get("factors") or {}) | {
        k for diff in (design.get("variants") or {}).values() if isinstance(diff, Mapping) for k in diff}
    for key, value in sets.items():
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=3)
            raise ConfigError(f"--set {key}: not a trial-config key" + (f"; did you mean {', '.join(near)}?" if near
                                                                        else " (fer_core/config.py lists them)"))
        if key in varied:
            raise ConfigError(f"--set {key}: the study's design varies this key (or it is set per trial); "
                              "--set takes keys every trial shares")
        if data and key in ("dataset", "data_path"):
            raise ConfigError(f"--set {key}: --data already sets it")
        base[key] = value
    if sets:
        given["set"] = dict(sets)
    return {"base": base, "given": given}


def _drop_au_rows(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Data given at launch (``--data``, ``--set dataset=...``) without AU labels: a one-at-a-time design's
    variants that train the AU head are left out, and said so (``given["dropped_variants"]``: the launch
    prints it, the report's header names it), instead of refusing the launch. None of the published FER
    releases carries AU labels; those rows would train the baseline exactly (the AU loss has nothing to
    learn). Data named in the study file itself still gets check_data's refusal: its author planned them."""
    from fer_core.data.inspect import source_has_aus

    design = spec.get("design") or {}
    variants = design.get("variants")
    base = {**(spec.get("data") or {}), **(spec.get("base") or {})}
    if design.get("kind") != "one_at_a_time" or not isinstance(variants, Mapping):
        return spec
    if not {"dataset", "data_path"} & set(overrides["base"]) or source_has_aus(base.get("dataset", "synthetic"),
                                                                                base.get("data_path")):
        return spec

    def au_weight(diff: Any) -> float:
        w = {**base, **(diff if isinstance(diff, Mapping) else {})}.get("au_weight", 0.0)
        return float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else 0.0

    drop = [name for name, diff in variants.items() if au_weight(diff) > 0]
    if not drop or au_weight({}) > 0:  # a baseline that needs AU labels: check_data refuses it in one line
        return spec
    overrides["given"]["dropped_variants"] = drop
    return {**spec, "design": {**design, "variants": {k: v for k, v in variants.items() if k not in drop}}}


def _int_or_zero(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _cross_validation(study: Study, base: dict[str, Any], src: str) -> tuple[dict[str, Any], dict | None]:
    """k-fold CV (``cv:``): its keys in the base config, and its pruning across folds (or None)."""
    cv = study.cv
    if cv is None:
        return base, None
    if study.design.kind == "search":
        raise ConfigError(f"{src}: cv: k-fold cross-validation needs a grid or one_at_a_time design")
    if {"cv_fold", "cv_folds", "cv_repeat"} & set(base):
        raise ConfigError(f"{src}: base: cv_folds/cv_fold/cv_repeat are set by 'cv:', not by hand")
    from fer_core.study.foldprune import parse_fold_prune

    # its own key, not the study's `pruner:` (which stops a trial between epochs): this one
    # skips whole fold trials of a config, and both can be on together
    return {**base, "cv_folds": cv.folds, "cv_group_by": str(cv.group_by)}, parse_fold_prune(cv.prune, cv.folds, src)


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
    for p in spec.planned:
        try:
            # the starting weights are checked at launch (check_weights_here), on the machine that trains
            check_registry_names(p.resolved)
        except ConfigError as err:
            raise ConfigError(f"{spec.source}: {err}") from None


def check_heads(spec: StudySpec) -> None:
    """Every planned (backbone, spatial head) pair gives a feature map the head can pool: a token
    backbone (ViT, Swin) under ``head: au_attention`` is refused with one line at validate and at
    launch, not at its first trial. Builds each such backbone once on the meta device (shapes only);
    a study without a spatial head imports nothing."""
    pairs = set()
    for _, c in spec.planned:
        if c.head in SPATIAL_HEADS:
            pairs.add((c.backbone, c.head))
    if not pairs:
        return
    from fer_core.models import check_spatial_head

    for backbone, head in sorted(pairs):
        try:
            check_spatial_head(backbone, head)
        except ConfigError as err:
            raise ConfigError(f"{spec.source}: {err}") from None


def check_weights_here(spec: StudySpec) -> None:
    """Every planned trial's starting weights are to be had on this machine (a ``pretrained_path``
    file, timm's weights in the hub cache or downloadable): else one line before any trial starts,
    saying how to supply them. Looks at each (backbone, regime, file) once; downloads nothing."""
    from fer_core.config import check_weight_files

    seen = set()
    for _, c in spec.planned:
        key = (c.backbone, c.pretrained, c.pretrained_path if c.pretrained == "file" else None)
        if key in seen or c.pretrained is False:  # from scratch: nothing to find (and no torch import)
            continue
        seen.add(key)
        try:
            check_weight_files(c)
        except ConfigError as err:
            raise ConfigError(f"{spec.source} (profile {spec.profile}): {err}") from None


def needs_aus(cfg: Any) -> bool:
    """A trial config that trains the AU head: without AU labels it would silently equal its baseline."""
    return cfg.au_weight > 0


def _where(data: dict[str, Any]) -> str:
    return data["kind"] + (f" at {data['where']}" if data["where"] else "")


def check_data(spec: StudySpec, headers: bool = False) -> list[dict[str, Any]]:
    """Every planned trial's data source, read from its label files (``data.inspect.peek``: nothing
    decoded): one summary per source for ``validate``'s plan. A trial that needs AU labels
    (``needs_aus``) on a source without them is refused with one line, at validate and at launch
    before anything is stored. ``headers`` (validate): every image file's header too (the launch decodes
    them all instead)."""
    from fer_core.data.inspect import peek
    from fer_core.errors import DataError

    sources: dict[tuple, dict[str, Any]] = {}
    # variant -> (au_weight, its source), every one at once (one line names them all)
    refused: dict[str, tuple[float, dict[str, Any]]] = {}
    for variant, c in spec.planned:
        key = (c.dataset, c.data_path, c.data_seed, c.val_fraction, c.test_fraction, c.ferplus_labels,
               c.affectnet_classes)
        if key not in sources:
            try:
                sources[key] = peek(*key, headers=headers)
            except DataError as err:
                raise DataError(f"{spec.source}: data: {err}") from None
        data = sources[key]
        if needs_aus(c) and not data["has_aus"]:
            if variant is None:
                raise ConfigError(f"{spec.source}: the search space (a corner config) needs AU labels (au_weight "
                                  f"{c.au_weight:g}) but the data ({_where(data)}) has none; set au_weight: 0 in the "
                                  "space or use data with AU labels")
            refused.setdefault(variant, (c.au_weight, data))
    if refused:
        names, data = list(refused), next(iter(refused.values()))[1]  # the source named: a refused variant's
        who = (f"variant {names[0]!r} needs" if len(names) == 1 else
               f"variants {', '.join(map(repr, names))} need")
        weights = ", ".join(f"{w:g}" for w in dict.fromkeys(w for w, _ in refused.values()))
        raise ConfigError(f"{spec.source}: {who} AU labels (au_weight {weights}) but the data ({_where(data)}) has "
                          f"none; drop {'it' if len(names) == 1 else 'them'} with a study file of three lines (name: "
                          f"my-{spec.name}, extends: {spec.name}.yaml, drop_variants: [{', '.join(names)}]), or use data "
                          "with AU labels")
    return list(sources.values())

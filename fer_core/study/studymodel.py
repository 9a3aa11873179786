"""A study file's schema: the merged study (``studyfile.merged_study``) parsed into frozen pydantic
models, like ``TrainConfig`` for one training run. Every error is one line naming the file, the
key and what is allowed: the validators raise their own messages (the words users and the tests
have always seen), and ``parse_study`` prefixes the file. Checks that need more than one section
(the design against ``cv``, the objective into the base config) stay with ``spec.load_study``.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from fer_core.config import KEYS
from fer_core.errors import ConfigError
from fer_core.metric_names import SELECT_METRICS

DESIGNS = ("grid", "one_at_a_time", "search")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # no SQL/shell metacharacters, no paths
DATA_KEYS = {"dataset", "data_path", "data_seed", "val_fraction", "test_fraction", "cache_dir"}
CV_FOLDS = (3, 50)  # one fold held out, one selecting the epoch, the rest training
CV_REPEATS = (1, 100)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(key: str, lo: int, hi: int | None = None, why: str = "", optional: bool = False) -> BeforeValidator:
    """An integer in lo.. (or lo..hi), else '<key> must be an integer >= lo, got v'; ``optional``: null is unset."""
    def check(v: Any) -> int | None:
        if v is None and optional:
            return None
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            allowed = f"in {lo}..{hi}{why}" if hi is not None else f">= {lo}"
            raise ValueError(f"{key} must be an integer {allowed}, got {v!r}")
        return v
    return BeforeValidator(check)


def seconds(key: str, lo_open: bool, extra: str = "", optional: bool = False) -> BeforeValidator:
    """A finite number of seconds, > 0 (``lo_open``) or >= 0; ``optional``: null is unset."""
    def check(v: Any) -> float | None:
        if v is None and optional:
            return None
        if not _is_number(v) or not (0 < v if lo_open else 0 <= v) or not v < float("inf"):
            raise ValueError(f"{key} must be a number of seconds {'>' if lo_open else '>='} 0{extra}, got {v!r}")
        return float(v)
    return BeforeValidator(check)


def check_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise ConfigError(f"{where} must be a non-empty list of non-negative integers, got {seeds!r}"[:300])
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where} repeat a value")
    return tuple(seeds)


def check_config_keys(d: Mapping, where: str) -> None:
    for k in d:
        if k not in KEYS:
            close = difflib.get_close_matches(str(k), KEYS, n=1)
            raise ConfigError(f"{where}: unknown config key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _seeds(v: Any) -> tuple[int, ...]:
    try:
        return check_seeds(v, "seeds")
    except ConfigError as err:
        raise ValueError(str(err)) from None


def _name(v: Any) -> str:
    if v is None:
        raise ValueError("name: missing; every study file needs one (e.g. name: my-ablation), the study's name "
                         "in the storage")
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ValueError(f"name must match {NAME_RE.pattern} (letters, digits, '_', '.', '-'), got {v!r}")
    return v


def _question(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("question: say in one sentence what the study answers")
    return v.strip()


def _config_mapping(key: str) -> BeforeValidator:
    """A mapping of trial config keys (``base``)."""
    def check(v: Any) -> dict[str, Any]:
        v = _section(v, key)
        try:
            check_config_keys(v, key)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if set(v) & DATA_KEYS:
            raise ValueError(f"{key}: data keys belong under 'data:' ({sorted(set(v) & DATA_KEYS)[0]})")
        return v
    return BeforeValidator(check)


def _component(key: str, default: str) -> BeforeValidator:
    """``optuna_sampler``, ``pruner``, ``scheduler``: a name or {name, options} -> {name, options}."""
    def check(v: Any) -> dict[str, Any]:
        c = v or {"name": default}
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, Mapping) or set(c) - {"name", "options"}:
            raise ValueError(f"{key} must be a name or {{name, options}}")
        opts = c.get("options") or {}
        if not isinstance(opts, Mapping):
            raise ValueError(f"{key}.options must be a mapping")
        return {"name": c.get("name", default), "options": dict(opts)}
    return BeforeValidator(check)


def _resources(v: Any) -> dict[str, Any]:
    """cpu: a number >= 0; gpu: a number >= 0 or 'auto' (a fraction measured per backbone, ``study/gpu.py``)."""
    res = _section(v, "resources") or {"cpu": 1, "gpu": 0}
    for k, n in res.items():
        if k == "gpu" and n == "auto":
            continue
        if k not in ("cpu", "gpu") or not _is_number(n) or not 0 <= n < 1e6:
            raise ValueError(f"resources: {k}: must be cpu/gpu with a number >= 0 (gpu may be 'auto'), got {n!r}")
    return {"cpu": float(res.get("cpu", 1)), "gpu": "auto" if res.get("gpu") == "auto" else float(res.get("gpu", 0))}


def _section(v: Any, key: str) -> dict[str, Any]:
    """A mapping section; nothing (or an empty value) is an empty one, as it always was."""
    if not v:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"{key} must be a mapping")
    return dict(v)


class Section(BaseModel):
    """A mapping of known keys: anything else is refused with the section's keys listed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    KEY: ClassVar[str] = ""  # where it sits in the study file ("" = the top level)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> dict[str, Any]:
        data = _section(data, cls.KEY)
        bad = sorted((k for k in data if k not in cls.model_fields), key=str)
        if bad:
            allowed = ", ".join(sorted(cls.model_fields))
            where = f"{cls.KEY}: unknown key" if cls.KEY else "unknown study key"
            raise ValueError(f"{where} {bad[0]!r}; allowed: {allowed}")
        return data


class Data(Section):
    KEY = "data"
    dataset: Any = None
    data_path: Any = None
    data_seed: Any = None
    val_fraction: Any = None
    test_fraction: Any = None
    cache_dir: Any = None  # values: TrainConfig checks them with the rest of each trial's config


class Objective(Section):
    KEY = "objective"
    metric: Annotated[str, BeforeValidator(lambda v: _one_of(v, "objective.metric", SELECT_METRICS))] = "macro_f1"
    direction: Annotated[Literal["maximize", "minimize"],
                         BeforeValidator(lambda v: _one_of(v, "objective.direction", ("maximize", "minimize")))] = \
        "maximize"


def _names(v: Any, key: str) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v) or len(set(v)) != len(v):
        raise ValueError(f"{key}: {v!r}; allowed: a non-empty list of distinct variant names")
    return v


def _one_of(v: Any, key: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ValueError(f"{key} {v!r}; allowed: {', '.join(allowed)}")
    return v


class Report(Section):
    """The report's class groups and estimability (fer_core/report/evidence.py)."""

    KEY = "report"
    many_above: Annotated[int, integer("report.many_above", 1)] = 100
    few_below: Annotated[int, integer("report.few_below", 1)] = 20
    min_support: Annotated[int, integer("report.min_support", 1)] = 5
    # pre-registered primary comparisons: their own Holm family, the other variants a secondary one
    primary: Annotated[list[str] | None, BeforeValidator(lambda v: _names(v, "report.primary"))] = None

    @model_validator(mode="after")
    def _ordered(self) -> Report:
        if self.few_below > self.many_above:
            raise ValueError("report.few_below must not exceed report.many_above")
        return self


class Budget(Section):
    KEY = "budget"
    trials: Annotated[int | None, integer("budget.trials", 1, optional=True)] = None  # required by a search design
    time_s: Annotated[float | None, seconds("budget.time_s", lo_open=True, optional=True)] = None
    max_concurrent: Annotated[int, integer("budget.max_concurrent", 1)] = 2


class CrossValidation(Section):
    KEY = "cv"
    folds: Annotated[int, integer("cv.folds", *CV_FOLDS, why=" (one fold held out, one selecting the epoch, "
                                                           "the rest training)")] = Field(None, validate_default=True)
    repeats: Annotated[int, integer("cv.repeats", *CV_REPEATS)] = 1  # repeated k-fold: partitions per seed
    group_by: Any = "none"  # checked with the trial config (cv_group_by)
    prune: Any = None  # pruning across folds: checked by foldprune.parse_fold_prune, which knows the folds


def _empty_sequential() -> dict[str, Any]:
    raise ValueError("design.sequential: a mapping {looks: [3, 5, 8, 12], min_effect: 0.02[, futility_power: 0.2]}")


def check_fraction(fraction: Any, factors: Mapping[str, list]) -> None:
    """``design.fraction``: each generated factor (two levels) is the ± product of other two-level
    factors, so the grid keeps the cells whose levels satisfy every generator (a regular 2^(k-p))."""
    if fraction is None:
        return
    gens = _section(fraction, "design.fraction")
    if not gens:
        raise ValueError("design.fraction: a mapping {generated factor: [factors]}")
    for gen, word in gens.items():
        if not isinstance(word, list) or len(word) < 2 or len(set(word)) != len(word):
            raise ValueError(f"design.fraction.{gen}: a list of at least two distinct factors")
        for name in [gen, *word]:
            if name not in factors:
                raise ValueError(f"design.fraction.{gen}: {name!r} is not one of design.factors "
                                 f"({', '.join(factors)})")
            if len(factors[name]) != 2:
                raise ValueError(f"design.fraction.{gen}: factor {name!r} needs exactly two levels, "
                                 f"has {len(factors[name])}")
        if gen in word or any(w in gens for w in word):
            raise ValueError(f"design.fraction.{gen}: a generator's word must name base factors only")


class Sequential(Section):
    """``design.sequential``: train in looks, each row stopping when decided or futile
    (``fer_core/sequential.py``). The seeds of look k are the first ``looks[k]`` of the study's
    ``seeds``, so the last look is all of them (checked with the seeds, ``Study``)."""

    KEY = "design.sequential"
    looks: Annotated[tuple[int, ...], BeforeValidator(lambda v: _looks(v))] = Field(None, validate_default=True)
    min_effect: Annotated[float, BeforeValidator(lambda v: _open_unit(v, "design.sequential.min_effect",
                                                                       " (the smallest |Δ| of the objective "
                                                                       "worth the maximum seeds)"))] = \
        Field(None, validate_default=True)
    futility_power: Annotated[float, BeforeValidator(lambda v: _open_unit(v, "design.sequential.futility_power",
                                                                           " (conditional power under which a row "
                                                                           "stops for futility from look 2 on)"))] = 0.2


def _looks(v: Any) -> tuple[int, ...]:
    if (not isinstance(v, list) or len(v) < 2 or not all(_is_int(n) for n in v) or v[0] < 2
            or any(b <= a for a, b in itertools.pairwise(v))):
        raise ValueError(f"design.sequential.looks must be a list of at least two increasing integers, the first "
                         f">= 2 (seeds at each look; a Δ's variance needs two), got {v!r}"[:300])
    return tuple(v)


def _open_unit(v: Any, key: str, what: str) -> float:
    if not _is_number(v) or not 0 < v < 1:
        raise ValueError(f"{key} must be a number in (0, 1){what}, got {v!r}")
    return float(v)


class Design(Section):
    """One of three kinds: ``grid`` (factors x seeds), ``one_at_a_time`` (a baseline and variants that
    each change it), ``search`` (a search space sampled ``budget.trials`` times)."""

    KEY = "design"
    kind: Annotated[str, BeforeValidator(lambda v: _one_of(v, "design.kind", DESIGNS))] = \
        Field(None, validate_default=True)
    factors: Any = None  # grid
    # grid as a regular two-level fractional factorial: {generated factor: [factors whose ± product sets it]}
    fraction: Any = None
    baseline: Any = "baseline"  # one_at_a_time
    variants: Any = None  # one_at_a_time (+ named combinations)
    space: Any = None  # search: a file in search_spaces/
    # grid / one_at_a_time: train in looks, stopping each row when decided (fer_core/sequential.py)
    sequential: Annotated[Sequential | None, BeforeValidator(lambda v: v if v is None else _section(
        v, "design.sequential") or _empty_sequential())] = None

    @model_validator(mode="after")
    def _kind_keys(self) -> Design:
        if self.sequential is not None and self.kind == "search":
            raise ValueError("design.sequential: only a grid or one_at_a_time design trains in looks (a search "
                             "design's budget is budget.trials)")
        try:
            if self.kind == "grid":
                factors = _section(self.factors, "design.factors")
                if not factors:
                    raise ValueError("design.factors: a grid needs at least one factor")
                check_config_keys(factors, "design.factors")
                for k, vals in factors.items():
                    if not isinstance(vals, list) or not vals or len(set(map(repr, vals))) != len(vals):
                        raise ValueError(f"design.factors.{k}: a non-empty list of distinct values")
                check_fraction(self.fraction, factors)
            elif self.kind == "one_at_a_time":
                variants = _section(self.variants, "design.variants")
                if not variants:
                    raise ValueError("design.variants: one_at_a_time needs at least one variant")
                for vname, diff in variants.items():
                    if not isinstance(diff, Mapping) or not diff:
                        raise ValueError(f"design.variants.{vname}: a non-empty mapping of config changes")
                    check_config_keys(diff, f"design.variants.{vname}")
                    if vname == str(self.baseline):
                        raise ValueError(f"design.variants: {vname!r} is the baseline's name")
            elif self.fraction is not None:
                raise ValueError("design.fraction: only a grid design can be fractional")
            elif not isinstance(self.space, str):
                raise ValueError("design.space must name a file in search_spaces/")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self


class Study(Section):
    """A whole study file after ``extends`` and the profile are merged in; field order is check order."""

    name: Annotated[str, BeforeValidator(_name)] = Field(None, validate_default=True)
    question: Annotated[str, BeforeValidator(_question)] = Field(None, validate_default=True)
    extends: Any = None  # merged away by studyfile.load_raw
    profiles: Any = None  # merged in by studyfile.merged_study (checked there)
    data: Data = Data()
    base: Annotated[dict[str, Any], _config_mapping("base")] = {}
    seeds: Annotated[tuple[int, ...], BeforeValidator(_seeds)] = (0,)
    objective: Objective = Objective()
    report: Report = Report()
    budget: Budget = Budget()
    resources: Annotated[dict[str, Any], BeforeValidator(_resources)] = Field(None, validate_default=True)
    design: Design = Field(None, validate_default=True)
    teacher: Any = None  # a model file or {study, top}: distill.parse_teacher
    cv: Annotated[CrossValidation | None, BeforeValidator(lambda v: v or None)] = None  # empty: no k-fold CV
    optuna_sampler: Annotated[dict[str, Any], _component("optuna_sampler", "tpe")] = \
        Field(None, validate_default=True)
    pruner: Annotated[dict[str, Any], _component("pruner", "none")] = Field(None, validate_default=True)
    scheduler: Annotated[dict[str, Any], _component("scheduler", "none")] = Field(None, validate_default=True)
    max_failures: Annotated[int, integer("max_failures", 0)] = 2
    checkpoint_every: Annotated[int, integer("checkpoint_every", 1)] = 1
    # a checkpoint is at most every checkpoint_every epochs and at least this many seconds after the last one
    checkpoint_min_s: Annotated[float, seconds("checkpoint_min_s", lo_open=False,
                                               extra=" (0: every checkpoint_every epochs)")] = 30.0
    keep_checkpoints: Annotated[int, integer("keep_checkpoints", 0)] = 3  # best-epoch models kept per study

    @model_validator(mode="after")
    def _looks_are_seeds(self) -> Study:
        """The seeds of look k are the first looks[k] of ``seeds``: the last look is every seed."""
        seq = self.design.sequential if self.design is not None else None
        if seq is not None:
            if seq.looks[-1] != len(self.seeds):
                raise ValueError(f"design.sequential.looks: the last look ({seq.looks[-1]} seeds) must be every "
                                 f"seed of the study ({len(self.seeds)} in seeds); list {seq.looks[-1]} seeds, "
                                 "look k trains the first looks[k] of them")
            if self.cv:
                raise ValueError("design.sequential: not with cv (a k-fold row's units are (seed, repeat) pools)")
        return self

    @model_validator(mode="after")
    def _primary_are_variants(self) -> Study:
        """report.primary names one_at_a_time variants (grid variants are checked by the report)."""
        d = self.design
        if self.report.primary and d is not None and d.kind == "one_at_a_time" and d.variants:
            known = [str(k) for k in d.variants]
            bad = [v for v in self.report.primary if v not in known]
            if bad:
                raise ValueError(f"report.primary: {bad[0]!r} is not a variant; allowed: {', '.join(known)}")
        return self


def parse_study(merged: Mapping[str, Any], src: str) -> Study:
    """The merged study file as a ``Study``; a ConfigError '<file>: <first problem>' otherwise."""
    try:
        return Study.model_validate(dict(merged))
    except ValidationError as err:
        raise ConfigError(f"{src}: {_one_line(err)}") from None


def _one_line(err: ValidationError) -> str:
    """The first problem in the validators' own words; pydantic's only for a type they never see."""
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":
        return msg
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"{loc} must be a mapping"
    return f"{loc}: {msg}, got {e.get('input')!r}"[:300]

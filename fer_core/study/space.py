"""Search spaces as YAML data (``search_spaces/*.yaml``), sampled define-by-run on an Optuna trial.

A space maps config keys to parameter specs::

    loss: {type: categorical, choices: [ce, focal, balanced_softmax]}
    focal_gamma: {type: float, low: 0.5, high: 4.0, when: {loss: focal}}   # conditional
    lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    epochs: {type: int, low: 4, high: 12}
    allow_double_weighting: {type: fixed, value: true}

Conditionals (``when``) refer to categorical parameters listed before them, so the
sampled trial only carries the parameters that are active (TPE handles this natively).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from fer_core.config import KEYS
from fer_core.errors import ConfigError


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # categorical | float | int | fixed
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    value: Any = None
    when: tuple[tuple[str, tuple], ...] = ()  # (other param, allowed values)

    def active(self, params: Mapping[str, Any]) -> bool:
        return all(k in params and params[k] in allowed for k, allowed in self.when)

    def distribution(self) -> optuna.distributions.BaseDistribution | None:
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.type == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return None  # fixed: not an Optuna parameter


@dataclass(frozen=True)
class SearchSpace:
    source: str
    params: tuple[Param, ...]

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter on ``trial``; fixed values are added without suggesting."""
        out: dict[str, Any] = {}
        for p in self.params:
            if not p.active(out):
                continue
            if p.type == "fixed":
                out[p.name] = p.value
            elif p.type == "categorical":
                out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif p.type == "float":
                out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
            else:
                out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        return out

    def complete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A sampled trial's whole assignment from its Optuna params as stored: fixed values are no
        Optuna params, so the ones active for ``params`` are added back (as ``sample`` added them)."""
        out = dict(params)
        for p in self.params:
            if p.type == "fixed" and p.name not in out and p.active(out):
                out[p.name] = p.value
        return out

    def corner_configs(self) -> list[dict[str, Any]]:
        """Every categorical choice with numeric params at their bounds: validation without training."""
        outs = []
        cats = [p for p in self.params if p.type == "categorical"]
        for p in cats:
            for choice in p.choices:
                for edge in ("low", "high"):
                    cfg: dict[str, Any] = {}
                    for q in self.params:
                        if not q.active(cfg):
                            continue
                        if q is p:
                            cfg[q.name] = choice
                        elif q.type == "categorical":
                            cfg[q.name] = q.choices[0]
                        elif q.type == "fixed":
                            cfg[q.name] = q.value
                        else:
                            v = q.low if edge == "low" else q.high
                            cfg[q.name] = int(v) if q.type == "int" else float(v)
                    outs.append(cfg)
        return outs or [{}]


def _num(src: str, name: str, spec: Mapping, key: str) -> float:
    v = spec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{src}: parameter {name!r}: {key} must be a number, got {v!r}")
    return float(v)


def parse_space(data: Any, src: str) -> SearchSpace:
    """Validate a search-space mapping; every error names the file and the parameter."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{src}: a search space must be a non-empty mapping of config key -> parameter spec")
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, spec in data.items():
        if name not in KEYS:
            raise ConfigError(f"{src}: unknown config key {name!r} in search space")
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(f"{src}: parameter {name!r} needs a mapping with 'type' (categorical|float|int|fixed)")
        allowed = {"type", "choices", "low", "high", "log", "step", "value", "when"}
        extra = set(spec) - allowed
        if extra:
            raise ConfigError(f"{src}: parameter {name!r}: unknown field {sorted(extra)[0]!r}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        kind = spec["type"]
        when: list[tuple[str, tuple]] = []
        if not isinstance(spec.get("when") or {}, Mapping):
            raise ConfigError(f"{src}: parameter {name!r}: when must map earlier parameters to allowed values, "
                              f"got {spec['when']!r}")
        for other, vals in (spec.get("when") or {}).items():
            if other not in seen or seen[other].type not in ("categorical", "fixed"):
                raise ConfigError(f"{src}: parameter {name!r}: 'when' refers to {other!r}, which must be a "
                                  "categorical or fixed parameter listed before it")
            vals = tuple(vals) if isinstance(vals, list) else (vals,)
            when.append((other, vals))
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{src}: parameter {name!r}: choices must be a non-empty list")
            if len(set(map(repr, choices))) != len(choices):
                raise ConfigError(f"{src}: parameter {name!r}: choices repeat a value")
            p = Param(name, kind, choices=tuple(choices), when=tuple(when))
        elif kind in ("float", "int"):
            low, high = _num(src, name, spec, "low"), _num(src, name, spec, "high")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise ConfigError(f"{src}: parameter {name!r}: log must be true or false, got {log!r}")
            step = spec.get("step")
            if not low < high:
                raise ConfigError(f"{src}: parameter {name!r}: empty range, low ({low:g}) must be < high ({high:g})")
            if log and low <= 0:
                raise ConfigError(f"{src}: parameter {name!r}: log scale needs low > 0 (got {low:g})")
            if step is not None and (log or isinstance(step, bool) or not isinstance(step, (int, float))
                                     or not 0 < step < float("inf")):
                raise ConfigError(f"{src}: parameter {name!r}: step must be a positive number and not with log")
            if kind == "int" and (low != int(low) or high != int(high)):
                raise ConfigError(f"{src}: parameter {name!r}: int bounds must be integers")
            p = Param(name, kind, low=low, high=high, log=log, step=step, when=tuple(when))
        elif kind == "fixed":
            if "value" not in spec:
                raise ConfigError(f"{src}: parameter {name!r}: fixed needs 'value'")
            p = Param(name, kind, value=spec["value"], when=tuple(when))
        else:
            raise ConfigError(f"{src}: parameter {name!r}: unknown type {kind!r}; allowed: categorical, float, int, fixed")
        params.append(p)
        seen[name] = p
    return SearchSpace(src, tuple(params))

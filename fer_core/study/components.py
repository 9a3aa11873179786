"""Registries of the study's components: Optuna samplers, Optuna pruners, Ray schedulers.

Kept apart from ``fer_core.sampling.DATA_SAMPLERS`` (which draws training batches):
an *Optuna sampler* proposes trial parameters.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import optuna

from fer_core.config_rules import SETTLED_KEY
from fer_core.errors import ConfigError
from fer_core.registry import Registry

OPTUNA_SAMPLERS = Registry("Optuna sampler", "optuna_sampler")
PRUNERS = Registry("Optuna pruner", "pruner")
SCHEDULERS = Registry("Ray scheduler", "scheduler")


def _build(factory, options: dict[str, Any], what: str):
    try:
        return factory(**options)
    except TypeError as err:
        raise ConfigError(f"{what}.options: {err}") from None


# constant_liar: concurrent trials see each other as pending, so they do not all propose the same point
OPTUNA_SAMPLERS.register("tpe")(lambda seed, **o: optuna.samplers.TPESampler(
    seed=seed, **{"constant_liar": True, "multivariate": True, "group": True, "n_startup_trials": 8, **o}))
OPTUNA_SAMPLERS.register("random")(lambda seed, **o: optuna.samplers.RandomSampler(seed=seed, **o))


# Exactly the globals a pickled Optuna CMA-ES optimizer names (enumerated from real states of
# CMA, SepCMA and CMAwM after a few generations, cmaes 0.13 / numpy 2): the three optimizer classes
# and what an ndarray and a numpy scalar reduce to, under numpy 2's module path and numpy 1's.
# A module-wide rule ("numpy.*") let a planted state call numpy.testing's runstring or numpy.load
# with allow_pickle, i.e. run code.
_CMA_GLOBALS = frozenset({
    ("cmaes._cma", "CMA"), ("cmaes._sepcma", "SepCMA"), ("cmaes._cmawm", "CMAwM"),
    ("cmaes", "CMA"), ("cmaes", "SepCMA"), ("cmaes", "CMAwM"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("_core", "core") for name in ("_reconstruct", "scalar")),
})


class _NumpyCmaUnpickler(pickle.Unpickler):
    """Only the globals a CMA-ES state is made of (``_CMA_GLOBALS``): a pickle planted in a shared
    database must not get to name ``os.system``, numpy's code-running helpers or any other callable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CMA_GLOBALS:
            return super().find_class(module, name)
        raise ConfigError(f"optuna_sampler cmaes: the stored optimizer state names {module[:80]}.{name[:80]}; "
                          "refusing to load it (only cmaes optimizers and numpy arrays are allowed)")


def restricted_loads(data: bytes) -> Any:
    try:
        return _NumpyCmaUnpickler(io.BytesIO(data)).load()
    except ConfigError:
        raise
    except Exception as err:  # truncated or garbled bytes: one line, not a traceback mid-study
        raise ConfigError(f"optuna_sampler cmaes: the stored optimizer state is not readable "
                          f"({type(err).__name__}); refusing to load it") from None


class SafeCmaEsSampler(optuna.samplers.CmaEsSampler):
    """Optuna's CMA-ES keeps its optimizer pickled in trial system attrs and unpickles whatever the
    storage holds; this one reads it through ``restricted_loads``."""

    def _restore_optimizer(self, completed_trials):  # type: ignore[override]
        for trial in reversed(completed_trials):
            attrs = {k: v for k, v in trial.system_attrs.items() if k.startswith(self._attr_key_optimizer)}
            if attrs:
                try:
                    data = bytes.fromhex(self._concat_optimizer_attrs(attrs))
                except (KeyError, ValueError, TypeError):  # a gap in the parts, or not hex
                    raise ConfigError(f"optuna_sampler cmaes: trial {trial.number}'s stored optimizer state is "
                                      "malformed; refusing to load it") from None
                return restricted_loads(data)
        return None


@OPTUNA_SAMPLERS.register("cmaes")
def _cmaes(seed: int | None, **o: Any) -> optuna.samplers.BaseSampler:
    try:
        import cmaes  # noqa: F401  (optional: Optuna imports it lazily, mid-study)
    except ImportError:
        raise ConfigError("optuna_sampler cmaes needs the 'cmaes' package (pip install cmaes); "
                          "or use tpe, random, qmc, gp, nsga2") from None
    return SafeCmaEsSampler(seed=seed, **o)


OPTUNA_SAMPLERS.register("qmc")(lambda seed, **o: optuna.samplers.QMCSampler(seed=seed, **o))
OPTUNA_SAMPLERS.register("gp")(lambda seed, **o: optuna.samplers.GPSampler(seed=seed, **o))
OPTUNA_SAMPLERS.register("nsga2")(lambda seed, **o: optuna.samplers.NSGAIISampler(seed=seed, **o))

PRUNERS.register("none")(lambda **o: optuna.pruners.NopPruner())
PRUNERS.register("median")(lambda **o: optuna.pruners.MedianPruner(**{"n_startup_trials": 4, "n_warmup_steps": 1, **o}))
PRUNERS.register("percentile")(lambda **o: optuna.pruners.PercentilePruner(**{"percentile": 25.0, "n_startup_trials": 4, "n_warmup_steps": 1, **o}))
PRUNERS.register("successive_halving")(lambda **o: optuna.pruners.SuccessiveHalvingPruner(**o))
PRUNERS.register("hyperband")(lambda **o: optuna.pruners.HyperbandPruner(**o))
PRUNERS.register("wilcoxon")(lambda **o: optuna.pruners.WilcoxonPruner(**o))


def schedule_unsettled(result: dict[str, Any]) -> bool:
    """True while a trial's last schedule switch (DRW start, deferred sampler or weights, stage 2)
    has not yet had an epoch to act (``fer_core/stages.py``): no pruner or scheduler may judge
    that epoch, it would compare a run before its switch with runs after theirs (or with none)."""
    return "epoch" in result and int(result["epoch"]) < int(result.get(SETTLED_KEY, 0) or 0)


def _settled(cls: type) -> type:
    """A Ray scheduler class that does not see a trial's results before its schedule has settled:
    it neither stops the trial on them nor counts them against other trials (its first result is
    the settled epoch's, judged at every milestone it has passed)."""
    from ray.tune.schedulers import TrialScheduler

    def on_trial_result(self, tune_controller, trial, result):
        if schedule_unsettled(result):
            return TrialScheduler.CONTINUE
        return cls.on_trial_result(self, tune_controller, trial, result)

    return type(f"Settled{cls.__name__}", (cls,), {"on_trial_result": on_trial_result})


def _ray_scheduler(cls_name: str, defaults: dict[str, Any]):
    def make(metric: str, mode: str, max_t: int, **o):
        from ray.tune import schedulers

        cls = _settled(getattr(schedulers, cls_name))
        kw = {"metric": metric, "mode": mode, "time_attr": "training_iteration", **defaults, **o}
        if cls_name in ("ASHAScheduler", "HyperBandScheduler"):
            kw.setdefault("max_t", max_t)
        return cls(**kw)

    return make


SCHEDULERS.register("none")(lambda metric, mode, max_t, **o: None)
SCHEDULERS.register("asha")(_ray_scheduler("ASHAScheduler", {"grace_period": 1, "reduction_factor": 3}))
SCHEDULERS.register("hyperband")(_ray_scheduler("HyperBandScheduler", {}))
SCHEDULERS.register("median")(_ray_scheduler("MedianStoppingRule", {"grace_period": 1, "min_samples_required": 3}))


def make_optuna_sampler(spec_part: dict[str, Any], seed: int | None):
    from fer_core.registry import lookup

    return _build(lambda **o: lookup(OPTUNA_SAMPLERS, spec_part["name"])(seed, **o), spec_part["options"], "optuna_sampler")


def make_pruner(spec_part: dict[str, Any]):
    from fer_core.registry import lookup

    return _build(lookup(PRUNERS, spec_part["name"]), spec_part["options"], "pruner")


def make_scheduler(spec_part: dict[str, Any], metric: str, mode: str, max_t: int):
    from fer_core.registry import lookup

    factory = lookup(SCHEDULERS, spec_part["name"])
    return _build(lambda **o: factory(metric, mode, max_t, **o), spec_part["options"], "scheduler")

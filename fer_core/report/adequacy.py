"""Adequacy: can this study's trainings answer its question at all? Checked before significance.

An effect measured on models that have not converged measures how fast each fix converges, not what it
does to a trained model; an effect on classes that no model predicts is no effect of the method; a
baseline at chance has nothing to improve on. Three checks, all computed from what the storage holds
(each trial's validation curve, its held-out predictions, the training class counts):

1. **Convergence** (``curve_converged``), per COMPLETE trial, on its validation objective per epoch:
   the trial is *still rising* when (a) the epoch validation selected lies in the last tenth of the
   schedule, and (b) the best-so-far objective gained more during the last quarter of the schedule
   than the curve's epoch-to-epoch noise. The noise is estimated from the second differences of the
   curve, which a linear trend leaves untouched: sigma = 1.4826 * MAD(second differences) / sqrt(6)
   (a second difference of independent noise has variance 6 sigma^2); it is floored at 0.002. A curve
   of fewer than 4 epochs cannot show a plateau and counts as still rising. A trial stopped early by
   ``early_stopping_patience`` has seen its plateau. Only stage 1 is judged (a stage 2 re-fits a head
   for a fixed, short schedule); with a schedule switch inside stage 1 (DRW, deferred re-sampling) the
   part before the last switch is judged when it covers at least half of stage 1: what follows the
   switch is the method's own, fixed-length phase, and its jump is the method's effect. The thresholds
   (``CurveRule``) are checked on curves with a known plateau across noise levels
   (tests/report/test_adequacy.py). A row fails when more than half of its seeds are still rising
   (``not_converged k/n``), and every row fails when the baseline's do (``baseline_not_converged k/n``).
2. **Above chance**: the baseline's held-out objective against the chance level of the data, the
   objective a classifier reaches that predicts at random by the training priors (expected confusion
   counts: TP_c = n_c pi_c, predicted_c = N pi_c). When the baseline's interval reaches down to chance,
   no row is answerable (``baseline_at_chance``).
3. **Unlearnt classes and groups**: a class that neither a variant nor the baseline predicts on any
   held-out image of any seed has no estimable Δ ("not estimable: never predicted"); a class group
   (many/medium/few-shot) whose estimable classes are all unlearnt so fails the row
   (``group_unlearnt few``). A group with no estimable class (all of them with fewer than
   ``min_support`` test images) is not a failure of the row: the split cannot judge it, the k-fold
   protocol can (studies/imbalance-cv.yaml).

A row that fails gets the verdict "not answerable at this budget: REASONS", leaves the Holm family,
and report.csv says why in ``adequate`` / ``adequacy``. Every format opens with ``adequacy_sentence``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fer_core.report.evidence import GROUP_LABELS, GROUPS


@dataclass(frozen=True)
class CurveRule:
    last_fraction: float = 0.1  # the selected epoch in the last tenth of the schedule ...
    window_fraction: float = 0.25  # ... and the best-so-far gained over the last quarter
    noise_factor: float = 1.0  # more than this many times the epoch-to-epoch noise
    noise_floor: float = 0.002  # a curve this smooth is judged against this noise
    z: float = 2.0  # and the last half's slope this many standard errors above 0
    min_epochs: int = 4  # fewer epochs cannot show a plateau


RULE = CurveRule()


def curve_noise(y: np.ndarray, floor: float = RULE.noise_floor) -> float:
    """Epoch-to-epoch noise of a curve: robust SD from its second differences (blind to a linear trend)."""
    d2 = np.diff(y, 2)
    if len(d2) < 2:
        return floor
    mad = float(np.median(np.abs(d2 - np.median(d2))))
    return max(floor, 1.4826 * mad / math.sqrt(6.0))


def curve_converged(curve: Sequence[float], scheduled: int, maximize: bool = True, rule: CurveRule = RULE
                    ) -> tuple[bool, dict[str, float]]:
    """(converged, why) for one validation curve (one value per epoch run) of a ``scheduled``-epoch
    schedule; ``why`` holds the selected epoch, the last quarter's gain and the noise it was judged by."""
    y = np.asarray([v for v in curve if v is not None and v == v], dtype=float)
    if not maximize:
        y = -y
    n = len(y)
    if n < scheduled:  # stopped early: its stopping rule saw the plateau
        return True, {"epochs": n, "stopped_early": 1.0}
    if n < rule.min_epochs:
        return False, {"epochs": n, "too_short": 1.0}
    best = int(np.argmax(y))  # the first best, as the trainer selects (strictly greater)
    late = best >= n - max(1, math.ceil(rule.last_fraction * n))
    noise = curve_noise(y, rule.noise_floor)
    # the trend of the last quarter (least squares, at least 4 epochs) and what it adds over that quarter
    q = max(1, math.ceil(rule.window_fraction * n))
    h = y[n - max(rule.min_epochs, q):]
    t = np.arange(len(h), dtype=float) - (len(h) - 1) / 2
    slope = float((t * (h - h.mean())).sum() / (t * t).sum())
    gain = slope * q
    z = slope / (noise / math.sqrt(float((t * t).sum())))
    rising = late and gain > rule.noise_factor * noise and z > rule.z
    return not rising, {"epochs": n, "best_epoch": best, "gain": gain, "noise": noise, "z": z}


def judged_curve(curve: Mapping[Any, float] | Sequence[float], config: Mapping[str, Any] | None
                 ) -> tuple[list[float], int]:
    """The part of a trial's validation curve that the convergence rule judges, and its scheduled length:
    stage 1, before its last schedule switch when that covers at least half of stage 1."""
    values = [float(v) for _, v in sorted(curve.items())] if isinstance(curve, Mapping) else list(curve)
    cfg = dict(config or {})
    epochs = int(cfg.get("epochs") or len(values))
    switch = _last_switch(cfg, epochs)
    if switch and switch >= epochs / 2:
        epochs = switch
    return values[:epochs], epochs


def _last_switch(cfg: dict, epochs: int) -> int:
    """Stage 1's last schedule switch (DRW start, deferred sampler/weights), 0 without one."""
    from fer_core.config import resolve_config
    from fer_core.stages import first_selectable_epoch

    try:
        return int(first_selectable_epoch(resolve_config({**cfg, "epochs": epochs}, check_names=False)))
    except Exception:  # a config of an older release that no longer resolves: judge the whole stage 1
        return 0


def chance_level(metric: str, train_counts: Sequence[int], labels: np.ndarray, tail: Sequence[int] = ()) -> float:
    """The objective of a classifier that predicts at random by the training priors, on these held-out labels
    (expected confusion counts)."""
    k = len(train_counts)
    prior = np.asarray(train_counts, dtype=float)
    prior = prior / prior.sum()
    y = np.asarray(labels, dtype=np.int64)
    n_c = np.bincount(y, minlength=k).astype(float)
    n = n_c.sum()
    if metric == "accuracy":
        return float((n_c / n * prior).sum())
    if metric == "balanced_accuracy":  # recall of class c is pi_c; mean over the classes present
        return float(prior[n_c > 0].mean())
    f1 = np.where(n_c + n * prior > 0, 2 * n_c * prior / np.maximum(n_c + n * prior, 1e-12), 0.0)
    if metric == "tail_f1":
        return float(f1[list(tail)].mean()) if len(tail) else float("nan")
    return float(f1.mean())


@dataclass
class Adequacy:
    """The checks' findings for a whole table: per row its reasons (machine-readable) and what to do."""

    reasons: dict[str, list[str]] = field(default_factory=dict)  # variant -> ["not_converged 3/3", ...]
    rising: dict[str, tuple[int, int]] = field(default_factory=dict)  # variant -> (seeds still rising, seeds)
    never_predicted: dict[str, list[int]] = field(default_factory=dict)  # variant -> classes neither predicts
    own_never: dict[str, list[int]] = field(default_factory=dict)  # variant -> classes it never predicts itself
    unjudgeable_groups: list[str] = field(default_factory=list)  # groups with no estimable class on this split
    chance: float = float("nan")
    baseline: str | None = None
    baseline_ci: tuple[float, float] = (float("nan"), float("nan"))
    epochs: int | None = None  # the schedule the trials ran (the largest), for the advice

    def adequate(self, variant: str) -> bool:
        return not self.reasons.get(variant)

    def text(self, variant: str) -> str:
        return "; ".join(self.reasons.get(variant, []))


def check_convergence(trials: Any, variants: Sequence[str], maximize: bool, rule: CurveRule = RULE
                      ) -> tuple[dict[str, tuple[int, int]], int | None]:
    """variant -> (COMPLETE trials still rising, COMPLETE trials), and the longest stage-1 schedule."""
    out: dict[str, tuple[int, int]] = {}
    longest = None
    done = trials[trials["state"] == "COMPLETE"]
    for v in variants:
        rising = total = 0
        for r in done[done["variant"] == v].to_dict("records"):
            curve, scheduled = judged_curve(r.get("curve") or {}, r.get("config"))
            if not curve:  # nothing reported per epoch (a trial told by hand): nothing to judge
                continue
            total += 1
            rising += not curve_converged(curve, scheduled, maximize, rule)[0]
            epochs = int((r.get("config") or {}).get("epochs") or 0) or None
            longest = max(longest or 0, epochs or 0) or None
        out[v] = (rising, total)
    return out, longest


def predicted_classes(preds: np.ndarray | None, k: int) -> np.ndarray | None:
    """Which classes a variant predicts on any held-out image of any seed (k,) bool; None without predictions."""
    if preds is None:
        return None
    return np.bincount(np.asarray(preds).ravel(), minlength=k)[:k] > 0


def assess(variants: Sequence[Any], baseline: str | None, curves: Mapping[str, tuple[int, int]],
           groups: Mapping[str, Sequence[int]], estimable: np.ndarray, k: int) -> Adequacy:
    """The findings that do not need the held-out estimates (convergence, unlearnt classes and groups);
    ``variants``: ``evidence.Variant``s (name, units, preds)."""
    a = Adequacy(baseline=baseline, rising=dict(curves))
    a.unjudgeable_groups = [g for g in GROUPS if groups.get(g) and not any(estimable[c] for c in groups[g])]
    pred = {v.name: predicted_classes(v.preds, k) for v in variants}
    base_pred = pred.get(baseline) if baseline else None
    b_rising, b_total = curves.get(baseline, (0, 0)) if baseline else (0, 0)
    for v in variants:
        reasons: list[str] = []
        rising, total = curves.get(v.name, (0, 0))
        if total and 2 * rising > total:
            reasons.append(f"not_converged {rising}/{total}")
        if baseline and v.name != baseline and b_total and 2 * b_rising > b_total:
            reasons.append(f"baseline_not_converged {b_rising}/{b_total}")
        mine = pred.get(v.name)
        if mine is not None:
            # a class neither this variant nor the baseline ever predicts: no Δ to estimate
            never = ~mine if base_pred is None or v.name == baseline else ~(mine | base_pred)
            a.never_predicted[v.name] = [c for c in range(k) if never[c]]
            a.own_never[v.name] = [c for c in range(k) if not mine[c]]
            unlearnt = [g for g in GROUPS if g not in a.unjudgeable_groups and groups.get(g)
                        and all(never[c] for c in groups[g] if estimable[c])]
            if unlearnt:
                reasons.append("group_unlearnt " + ",".join(unlearnt))
        a.reasons[v.name] = reasons
    return a


def judge_chance(a: Adequacy, baseline_row: Mapping[str, Any], chance: float) -> None:
    """Every row fails when the baseline's held-out interval reaches down to chance."""
    a.chance = chance
    lo, hi = baseline_row.get("test_score_ci_lo"), baseline_row.get("test_score_ci_hi")
    if lo is None or lo != lo:
        return
    a.baseline_ci = (float(lo), float(hi))
    if lo <= chance:
        for v in a.reasons:
            a.reasons[v].append(f"baseline_at_chance {lo:.3f}<={chance:.3f}")


NEVER = "not estimable: never predicted"

REASON_TEXT = {
    "not_converged": "validation {m} still rising at the end in {x} seeds",
    "baseline_not_converged": "the baseline's validation {m} still rising at the end in {x} seeds",
    "group_unlearnt": "no model predicts the {x} classes",
    "baseline_at_chance": "the baseline is not above chance ({x})",
}


def readable(reasons: Sequence[str], metric: str) -> str:
    """'not_converged 3/3; group_unlearnt few' -> the same in words."""
    out = []
    for r in reasons:
        key, _, x = r.partition(" ")
        if key == "group_unlearnt":
            x = ", ".join(GROUP_LABELS.get(g, g) for g in x.split(","))
        out.append(REASON_TEXT.get(key, key).format(m=metric, x=x))
    return "; ".join(out)


def advice(a: Adequacy, metric: str) -> str:
    """What to do about the failures found."""
    keys = {r.split(" ", 1)[0] for rs in a.reasons.values() for r in rs}
    todo = []
    if keys & {"not_converged", "baseline_not_converged", "baseline_at_chance"}:
        longer = f"--set epochs={2 * a.epochs}" if a.epochs else "--set epochs=N"
        todo.append(f"train longer ({longer}) or use the gpu profile")
    if "group_unlearnt" in keys:
        todo.append("train longer or use a profile whose baseline learns every class group")
    return " and ".join(dict.fromkeys(todo))


def adequacy_sentence(a: Adequacy, metric: str, n_trials: int) -> str:
    """The one sentence every format opens with: can this study answer its question, and what to do if not."""
    rows = [v for v in a.reasons if v != a.baseline]  # the compared rows (the baseline has no verdict)
    bad = [v for v in rows if a.reasons[v]]
    rising = sum(x for x, _ in a.rising.values())
    total = sum(n for _, n in a.rising.values())
    split = ""
    if a.unjudgeable_groups:
        names = ", ".join(GROUP_LABELS[g] for g in a.unjudgeable_groups)
        split = (f" (the test split cannot judge the {names} group: none of its classes has enough test images; "
                 "the k-fold protocol can, studies/imbalance-cv.yaml)")
    if not bad and not (a.baseline and a.reasons.get(a.baseline)):
        chance = f", the baseline's test {metric} {a.baseline_ci[0]:.3f}-{a.baseline_ci[1]:.3f} is above chance " \
                 f"({a.chance:.3f})" if a.chance == a.chance and a.baseline_ci[0] == a.baseline_ci[0] else ""
        curves = (f"the validation {metric} curves reached their plateau ({total - rising} of {total} trials)"
                  if total else "no validation curves were stored to judge")
        return (f"**Adequacy: this study can answer its question**: {curves}{chance} and every judged class group "
                f"is predicted{split}.")
    found = []
    if total and rising:
        found.append(f"validation {metric} still rising at the end in {rising} of {total} trials")
    at_chance = any(r.startswith("baseline_at_chance") for rs in a.reasons.values() for r in rs)
    if at_chance:
        found.append(f"the baseline's test {metric} ({a.baseline_ci[0]:.3f}-{a.baseline_ci[1]:.3f}) is not above "
                     f"chance ({a.chance:.3f})")
    unlearnt = sorted({g for rs in a.reasons.values() for r in rs if r.startswith("group_unlearnt")
                       for g in r.split(" ", 1)[1].split(",")}, key=GROUPS.index)
    if unlearnt:
        found.append("no model of some rows predicts the " + ", ".join(GROUP_LABELS[g] for g in unlearnt)
                     + " classes")
    return (f"**Adequacy: this study cannot answer its question at this budget for {len(bad)} of {len(rows)} "
            "compared rows**: "
            f"{'; '.join(found)}: {advice(a, metric)}{split}. Those rows get no better/worse verdict.")

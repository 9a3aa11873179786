"""Storage -> the ablation table: one row per variant (or distinct config), baseline first.

Reads only the storage (every trial's held-out predictions are a user attr; the artifact
store adds calibration from the stored logits). Every effect is estimated on held-out images
with the intervals of ``fer_core/report/stats.py``: the test split at each trial's selected
epoch, or in a k-fold CV study the pooled out-of-fold predictions (``cv_units``); validation,
which selected the epochs, stays as a secondary column. Means, CIs and tests use COMPLETE
trials only, one per (variant, unit): a seed, or with k-fold CV a (seed, repeat) whose folds
all completed; PRUNED and FAIL trials are counted beside them, never averaged in. A k-fold
CV config pruned across folds keeps its validation row and is marked ("pruned after 2/5 folds").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from fer_core.errors import FerError, first_line
from fer_core.metrics import classification_metrics
from fer_core.report import adequacy, evidence, stats
from fer_core.report import sequential as seqreport
from fer_core.report.effects import effects_markdown, factorial_effects
from fer_core.report.ensemble import stored_ensembles
from fer_core.report.evidence import GROUP_LABELS, GROUPS, ReportSettings, class_column, shot_groups
from fer_core.study.artifacts import PREDICTIONS_JSON, read_json_artifact
from fer_core.study.inmemory import quiet_memory_study
from fer_core.study.outputs import read_cams, read_probabilities, real_trials, unpack_classes
from fer_core.study.result import stored_result
from fer_core.study.warmstart import WARM_ATTR, is_warm_start


class Held(NamedTuple):
    """One unit's held-out images: true and predicted classes, and (CV folds) the images' positions."""

    labels: np.ndarray
    pred: np.ndarray
    index: np.ndarray | None = None


@dataclass
class StudyData:
    name: str
    design: str
    metric: str
    direction: str
    class_names: list[str]
    class_counts: list[int]
    tail: list[int]
    spec: dict[str, Any]
    planned: int | None
    trials: pd.DataFrame  # one row per trial (every state)
    heldout: dict[Any, Held] = field(default_factory=dict)  # unit key -> held-out (labels, pred[, index])
    units: pd.DataFrame = field(default_factory=pd.DataFrame)  # COMPLETE evidence units (see evidence_units)
    calibration: dict[int, dict] = field(default_factory=dict)  # trial -> ece, nll, brier, reliability (test)
    settings: ReportSettings = field(default_factory=ReportSettings)
    groups: dict[str, list[int]] = field(default_factory=dict)  # many / medium / few-shot classes
    test_support: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    ensembles: list[dict] = field(default_factory=list)  # derived entries (study user attrs ensemble:<name>)
    warm_started: dict[str, int] = field(default_factory=dict)  # source study -> copies told (not in the table)
    effects: pd.DataFrame | None = None  # a two-level grid's factorial effects (set by build_table)
    cams: dict[int, dict] = field(default_factory=dict)  # trial -> class -> mean maps (cam_samples; report/cams.py)
    adequacy: adequacy.Adequacy | None = None  # can the trainings answer at all (set by build_table)
    sequential: Any = None  # design.sequential: the replayed looks (sequential.State; set by build_table)

    @property
    def missing(self) -> int | None:
        if self.planned is None:
            return None
        return max(0, self.planned - self.counts.get("COMPLETE", 0) - self.counts.get("PRUNED", 0))


def _variant_of(t: optuna.trial.FrozenTrial, design: str) -> str:
    if design != "search" and t.user_attrs.get("variant"):
        return str(t.user_attrs["variant"])
    params = {k: v for k, v in sorted(t.params.items()) if k not in ("seed", "cv_fold", "cv_repeat")}
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "(defaults)"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def study_groups(spec: dict, counts: list[int]) -> dict[str, list[int]]:
    """Head/medium/tail classes as the trials grouped them (``class_groups`` with the study's thresholds)."""
    from fer_core.config import TrainConfig
    from fer_core.metrics import class_groups

    base = spec.get("base") or {}
    fields = TrainConfig.model_fields
    tail_max = int(base.get("tail_max_count", fields["tail_max_count"].default))
    head_min = int(base.get("head_min_count", fields["head_min_count"].default))
    return class_groups(counts, tail_max, head_min)


def tail_classes(spec: dict, counts: list[int]) -> list[int]:
    return study_groups(spec, counts)["tail"]


def load_study_data(study: optuna.Study, planned: int | None = None, store=None) -> StudyData:
    attrs = study.user_attrs
    design = attrs.get("design", "one_at_a_time")
    names = list(attrs.get("class_names") or [])
    counts = list(attrs.get("class_counts") or [])
    spec = attrs.get("spec") or {}
    rows = []
    heldout: dict[Any, Held] = {}
    calibration: dict[int, dict] = {}
    cams: dict[int, dict] = {}
    warm: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if is_warm_start(t):
            # a copy told by --warm-start is another study's trial: TPE's prior here, never a row
            # (it would repeat the source's results without test metrics, predictions or a model)
            warm[ua[WARM_ATTR]] = warm.get(ua[WARM_ATTR], 0) + 1
            continue
        res = stored_result(t)  # the trial-result contract's names (fer_core/study/result.py)
        val = res["val_metrics"] or {}
        test = res["test_metrics"] or {}
        row = {
            "number": t.number, "state": t.state.name, "variant": _variant_of(t, design),
            "seed": ua.get("seed", t.params.get("seed")), "value": t.value if t.state == TrialState.COMPLETE else None,
            # the pairing unit: a seed, or with k-fold CV a (seed, repeat) whose folds pool into one
            "unit": _unit_of(t), "fold": ua.get("fold"),
            "test_macro_f1": test.get("macro_f1"), "val_macro_f1": val.get("macro_f1"), "accuracy": val.get("accuracy"),
            "balanced_accuracy": val.get("balanced_accuracy"), "tail_f1": val.get("tail_f1"),
            "test_tail_f1": test.get("tail_f1"), "best_epoch": res["best_epoch"],
            "test_accuracy": test.get("accuracy"), "test_balanced_accuracy": test.get("balanced_accuracy"),
            "val_f1": val.get("f1"), "test_f1": test.get("f1"), "confusion_matrix": val.get("confusion_matrix"),
            # per AU on test, thresholds chosen on validation (trials that trained the AU head only)
            "test_au_f1_per_au": test.get("au_f1_per_au"), "test_au_auc_per_au": test.get("au_auc_per_au"),
            "curve": dict(sorted(t.intermediate_values.items())), "params": dict(t.params),
            "train_loss": res.get("train_loss"),  # per epoch run (None in older trials): the curves' second panel
            "config": ua.get("config"), "error": ua.get("error"), "tta": res["tta_metrics"],
            "posthoc": res["posthoc_metrics"],
            # pruning across folds (fer_core/study/foldprune.py): a skipped fold and why
            "config_id": ua.get("config_id"), "pruned_by": ua.get("pruned_by"),
            "pruned_after_folds": ua.get("pruned_after_folds"), "prune_p_value": ua.get("prune_p_value"),
            "cv_folds": ua.get("cv_folds"),
        }
        rows.append(row)
        if t.state == TrialState.COMPLETE:
            held = _heldout_of(t, store, study)
            if held is not None:
                heldout[t.number] = held
            if store is not None:
                cal = _calibration_of(t, store, study)
                if cal is not None:
                    calibration[t.number] = cal
                maps = read_cams(store, study._storage, t)
                if maps:
                    cams[t.number] = maps
    df = pd.DataFrame(rows)
    units, heldout = evidence_units(df, heldout, spec, len(names), study_groups(spec, counts) if counts else {})
    by_state = {s: int((df["state"] == s).sum()) if len(df) else 0 for s in ("COMPLETE", "RUNNING", "PRUNED", "FAIL")}
    settings = ReportSettings.from_spec(spec)
    support = np.bincount(next(iter(heldout.values())).labels, minlength=len(names)).tolist() if heldout else []
    return StudyData(
        name=study.study_name, design=design, metric=attrs.get("metric", "macro_f1"),
        direction=study.direction.name.lower(), class_names=names, class_counts=counts,
        tail=tail_classes(spec, counts) if counts else [], spec=spec, planned=planned, trials=df,
        heldout=heldout, units=units, calibration=calibration, settings=settings,
        groups=shot_groups(counts, settings) if counts else {g: [] for g in GROUPS}, test_support=support,
        counts=by_state, ensembles=stored_ensembles(attrs), warm_started=warm, cams=cams,
    )


def _unit_of(t: optuna.trial.FrozenTrial) -> Any:
    """The pairing unit of a trial: its seed; a k-fold CV trial's (seed, repeat) as 'seed' or 'seed.rR'."""
    ua = t.user_attrs
    seed = ua.get("seed", t.params.get("seed"))
    if ua.get("fold") is None:
        return seed
    repeat = ua.get("repeat", t.params.get("cv_repeat"))
    return str(seed) if "cv_repeat" not in t.params else f"{seed}.r{repeat}"


UNIT_MEANS = ("value", "accuracy", "balanced_accuracy", "tail_f1", "val_macro_f1")  # validation: mean over folds


def evidence_units(df: pd.DataFrame, heldout: dict[int, Held], spec: dict, num_classes: int,
                   groups: dict[str, list[int]]) -> tuple[pd.DataFrame, dict[Any, Held]]:
    """The COMPLETE evidence units (one row each) and their held-out predictions (key -> Held).

    Designed studies: a unit is a trial (the first COMPLETE one per variant and seed), key its number.
    k-fold CV: a unit is a (variant, seed, repeat): its validation figures are the mean over the folds it
    completed; when all ``k`` folds completed with their images' positions stored, its held-out
    predictions are the k folds' out-of-fold predictions pooled and sorted by image, so that every
    unit of every variant predicts the same pool images in the same order (paired by image), each by
    a model that never trained or selected on it. A unit with a fold missing (pruned across folds,
    failed, still running) keeps its validation figures and has no held-out predictions."""
    if df.empty:
        return df, {}
    complete = df[df["state"] == "COMPLETE"].sort_values("number")
    if not complete["fold"].notna().any():
        units = complete.drop_duplicates(["variant", "unit"], keep="first").copy()
        units["key"] = units["number"]
        units["numbers"] = [[int(n)] for n in units["number"]]
        return units, {int(n): heldout[int(n)] for n in units["number"] if int(n) in heldout}
    k = int((spec.get("cv") or {}).get("folds") or 0)
    rows, pooled = [], {}
    for (variant, unit), g in complete.drop_duplicates(["variant", "unit", "fold"]).groupby(
            ["variant", "unit"], sort=False):
        nums = [int(n) for n in g.sort_values("fold")["number"]]
        row = {**g.iloc[0].to_dict(), "key": f"{variant}|{unit}", "numbers": nums, "tta": None, "posthoc": None,
               **{c: float(pd.to_numeric(g[c], errors="coerce").mean()) for c in UNIT_MEANS},
               **{c: float("nan") for c in ("test_macro_f1", "test_accuracy", "test_balanced_accuracy",
                                            "test_tail_f1")}}
        held = [heldout.get(n) for n in nums]
        if len(nums) == k and all(h is not None and h.index is not None for h in held):
            index = np.concatenate([h.index for h in held])
            order = np.argsort(index, kind="stable")
            h = Held(np.concatenate([h.labels for h in held])[order], np.concatenate([h.pred for h in held])[order],
                     index[order])
            if len(np.unique(h.index)) != len(h.index):
                raise FerError(f"k-fold unit {row['key']!r}: its folds held out overlapping images (trials {nums}); "
                               "the folds must partition the pool")
            pooled[row["key"]] = h
            m = classification_metrics(h.labels, h.pred, num_classes, groups)
            row.update({"test_macro_f1": m["macro_f1"], "test_accuracy": m["accuracy"],
                        "test_balanced_accuracy": m["balanced_accuracy"], "test_tail_f1": m.get("tail_f1")})
        rows.append(row)
    return pd.DataFrame(rows), pooled


def _heldout_of(t: optuna.trial.FrozenTrial, store, study: optuna.Study) -> Held | None:
    """(labels, predicted classes[, image positions]) on the held-out split: the user attr, else
    (older trials) the artifact."""
    packed = (t.user_attrs.get("predictions_packed") or {}).get("test")
    if packed:
        return Held(unpack_classes(packed["labels"]), unpack_classes(packed["pred"]),
                    unpack_classes(packed["index"]) if "index" in packed else None)
    if store is None:
        return None
    p = read_json_artifact(store, study._storage, t, PREDICTIONS_JSON)
    if not p or "test" not in p:
        return None
    return Held(np.asarray(p["test"]["labels"], dtype=np.int64), np.asarray(p["test"]["pred"], dtype=np.int64))


def _calibration_of(t: optuna.trial.FrozenTrial, store, study: optuna.Study) -> dict | None:
    """ECE / NLL / Brier and the reliability bins of the trial's test logits (older trials: log of
    their float16 probabilities, which is what they kept)."""
    out = read_probabilities(store, study._storage, t)
    if not out or "test_labels" not in out:
        return None
    logits = out.get("test_logits")
    if logits is None:
        logits = np.log(np.clip(out["test_probs"].astype(np.float64), 1e-12, None))
    labels = out["test_labels"].astype(np.int64)
    return {**stats.calibration(logits, labels), "reliability": stats.reliability(stats.softmax(logits), labels),
            "n": len(labels)}


def variant_order(data: StudyData, complete: pd.DataFrame) -> list[str]:
    """Baseline first, then the spec's order (ablation), else by mean value (search)."""
    seen = list(dict.fromkeys(complete["variant"]))
    design = data.spec.get("design") or {}
    if data.design == "one_at_a_time":
        base = str(design.get("baseline", "baseline"))
        order = [base, *map(str, (design.get("variants") or {}).keys())]
        return [v for v in order if v in seen] + [v for v in seen if v not in order]
    if data.design == "grid":
        return seen
    means = complete.groupby("variant")["value"].mean()
    reverse = data.direction == "maximize"
    return sorted(seen, key=lambda v: means[v], reverse=reverse)


def build_table(data: StudyData) -> pd.DataFrame:
    """The ablation table as a DataFrame (every number in full precision)."""
    df = data.trials
    if df.empty or not (df["state"] == "COMPLETE").any():
        raise FerError(f"study {data.name!r} has no complete trials yet ({_counts_text(data)}); "
                       "nothing to report")
    complete = data.units
    order = variant_order(data, complete)
    has_baseline = data.design in ("one_at_a_time", "grid")
    baseline = order[0] if has_baseline else None
    per_seed = {v: complete[complete["variant"] == v].set_index("unit") for v in order}
    maximize = data.direction == "maximize"
    labels, variants = held_out_inputs(data, order, per_seed)
    # design.sequential: the looks the stored trials complete, replayed (fer_core/sequential.py)
    plan = seqreport.plan_of(data.spec) if baseline is not None else None
    seq = seqreport.state_from(data, plan, baseline, variants, labels) if plan is not None else None
    seq_cols = seqreport.columns(seq) if seq is not None else {}
    data.sequential = seq
    # adequate before significant (fer_core/report/adequacy.py): rows whose models have not converged, or
    # whose class groups no model predicts, get no verdict and leave the Holm family
    k = len(data.class_names)
    curves, longest = adequacy.check_convergence(df, order, maximize)
    estimable = np.asarray(data.test_support or [0] * k) >= data.settings.min_support
    adq = adequacy.assess(variants, baseline, curves, data.groups, estimable, k)
    adq.epochs = longest
    held = evidence.held_out_columns(variants, labels, baseline, data.metric, data.class_names, data.groups,
                                     data.tail, data.settings, holm_rows={v for v in order if adq.adequate(v)})
    if baseline is not None and labels is not None and held.get(baseline) and data.class_counts:
        adequacy.judge_chance(adq, held[baseline], adequacy.chance_level(data.metric, data.class_counts, labels,
                                                                         data.tail))
    data.adequacy = adq
    for v, cols in held.items():
        _mask_never_predicted(cols, adq.never_predicted.get(v, []), adq.own_never.get(v, []), data)
        if not adq.adequate(v) and "p_holm" in cols:
            cols["p_holm"] = float("nan")  # outside the family (baseline at chance: every row)
    rows = []
    for v in order:
        g = per_seed[v]
        vals = g["value"].astype(float).to_numpy()
        all_v = df[df["variant"] == v]
        skipped = all_v[(all_v["state"] == "PRUNED") & all_v["pruned_by"].notna()]
        row: dict[str, Any] = {
            "variant": v, "baseline": v == baseline, "n_seeds": len(g), "seeds": ",".join(map(str, g.index)),
            # folds skipped by pruning across folds are told apart from trials a pruner stopped mid-training
            "n_pruned": int((all_v["state"] == "PRUNED").sum()) - len(skipped),
            "n_fold_skipped": len(skipped), "fold_pruned": _fold_pruned_text(skipped, data.spec),
            "n_failed": int((all_v["state"] == "FAIL").sum()),
            # the selection split (it picked each trial's epoch): secondary, never a verdict
            "val_macro_f1_mean": float(vals.mean()),
            "val_macro_f1_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
        }
        for col in ("test_macro_f1", "test_accuracy", "test_balanced_accuracy", "accuracy", "balanced_accuracy"):
            row[col] = float(pd.to_numeric(g[col], errors="coerce").mean())
        if baseline is not None and v != baseline:
            b = per_seed[baseline]
            common = sorted(set(g.index) & set(b.index), key=str)
            row["val_delta"] = float((g.loc[common, "value"].astype(float).to_numpy()
                                      - b.loc[common, "value"].astype(float).to_numpy()).mean()) if common else float("nan")
        row.update(held.get(v, {}))
        row.update(seq_cols.get(v, {}))
        row["adequate"], row["adequacy"] = adq.adequate(v), adq.text(v)
        if "fold" in g and g["fold"].notna().any() and not any(key in data.heldout for key in g["key"]):
            row["no_heldout"] = "no seed has all its folds complete: no held-out estimate, no verdict"
        cals = [[data.calibration.get(n) for n in nums] for nums in g["numbers"]]
        if cals and all(c is not None for unit in cals for c in unit):
            for k in ("ece", "nll", "brier"):  # per unit (CV: its folds weighted by their images), then over units
                per_unit = [c[0][k] if len(c) == 1 else np.average([f[k] for f in c], weights=[f["n"] for f in c])
                            for c in cals]
                row[k] = float(np.mean(per_unit))
                if k == "ece" and len(per_unit) >= 2:  # seeds only: the test set's part is not estimated for ECE
                    lo, hi = stats.estimate(np.asarray(per_unit), np.zeros((len(per_unit), 1)), image_part=False).ci()
                    row["ece_ci_lo"], row["ece_ci_hi"] = float(max(lo, 0.0)), float(hi)
        row["derived"] = ""
        rows.append(row)
        tta = _tta_row(data, v, g)
        if tta:
            rows.append(tta)
        rows += _posthoc_rows(data, g, labels, next(x for x in variants if x.name == v))
    rows += [_ensemble_row(data, e) for e in data.ensembles]
    table = pd.DataFrame(rows)
    # a two-level grid (full or fractional): main effects and two-way interactions, same evidence
    data.effects = factorial_effects(data.spec, variants, labels, data.metric, len(data.class_names),
                                               data.tail)
    real = table["derived"] == ""
    # the star marks the variant validation would pick (selection split), never the test's best
    means = table["val_macro_f1_mean"].where(real)
    table["best"] = real & (means == (means.max() if maximize else means.min()))
    n_tests = int(table["p_holm"].notna().sum()) if "p_holm" in table else 0
    # derived rows (TTA, post-hoc, ensembles) are as adequate as the trained variant they come from
    source = table["variant"].str.split(" +", n=1, regex=False).str[0]
    table["adequate"] = [adq.adequate(s) if d != "ensemble" else True for s, d in zip(source, table["derived"])]
    table["adequacy"] = [adq.text(s) if d != "ensemble" else "" for s, d in zip(source, table["derived"])]
    table["verdict"] = [(f"{r['fold_pruned']}; " if r.get("fold_pruned") else "") + (
        # adequate before significant: a row the adequacy check holds back keeps that verdict here too
        seqreport.verdict(r, maximize) if seq is not None and r["derived"] == "" and not r.get("adequacy")
        and seqreport.verdict(r, maximize) else _verdict(r, maximize, n_tests, data.metric))
        for r in table.to_dict("records")]
    return table


def _mask_never_predicted(cols: dict[str, Any], never: list[int], own: list[int], data: StudyData) -> None:
    """A class that neither the variant nor the baseline predicts on any held-out image has no Δ, and a
    variant's F1 of a class it never predicts is a plain 0 with no interval ("+0.000 [0.000, 0.000]" would
    claim a certainty that no model earned): blank the intervals, the Δs of ``never`` classes, and the group
    figures of a group whose estimable classes are all such classes; ``never_predicted`` and
    ``own_never_predicted`` list the classes, ``{group}_never_predicted`` / ``{group}_own_never`` the groups."""
    if not cols:
        return
    support = np.asarray(data.test_support or [0] * len(data.class_names))
    nan = float("nan")
    cols["never_predicted"] = ",".join(map(str, never))
    cols["own_never_predicted"] = ",".join(map(str, own))
    for c in own:
        col = class_column(c, data.class_names[c])
        if col in cols and cols[col] == cols[col]:
            cols[col + "_ci_lo"] = cols[col + "_ci_hi"] = nan  # the F1 stays: 0 by definition
    for c in never:
        col = "delta_" + class_column(c, data.class_names[c])
        for suffix in ("", "_ci_lo", "_ci_hi"):
            if col + suffix in cols:
                cols[col + suffix] = nan
    for g in GROUPS:
        members = [c for c in data.groups.get(g, []) if support[c] >= data.settings.min_support]
        if members and all(c in own for c in members):
            cols[f"{g}_own_never"] = True
            cols[f"{g}_f1_ci_lo"] = cols[f"{g}_f1_ci_hi"] = nan
        if members and all(c in never for c in members):
            cols[f"{g}_never_predicted"] = True
            for suffix in ("", "_ci_lo", "_ci_hi"):
                if f"{g}_delta{suffix}" in cols:
                    cols[f"{g}_delta{suffix}"] = nan


def held_out_inputs(data: StudyData, order: list[str], per_seed: dict[str, pd.DataFrame]
                     ) -> tuple[np.ndarray | None, list[evidence.Variant]]:
    """The shared held-out labels and each variant's predictions (units x images): what
    ``evidence.held_out_columns`` estimates from (benchmarks/regime_effects.py reads it too)."""
    labels, first = None, None
    for key, h in sorted(data.heldout.items(), key=lambda kv: str(kv[0])):
        if labels is None:
            labels, first = h.labels, key
        elif len(h.labels) != len(labels) or not np.array_equal(h.labels, labels):
            raise FerError(f"study {data.name!r}: {_unit_name(key)} was evaluated on other held-out images than "
                           f"{_unit_name(first)} (another data set under the same study?); cannot pair them")
    out = []
    for v in order:
        g = per_seed[v]
        keys = list(g["key"])
        if data.trials["fold"].notna().any():  # k-fold CV: the units whose folds all completed
            g = g[[key in data.heldout for key in keys]]
            keys = list(g["key"])
        ok = labels is not None and len(keys) > 0 and all(key in data.heldout for key in keys)
        out.append(evidence.Variant(v, [str(u) for u in g.index],
                                    np.stack([data.heldout[key].pred for key in keys]) if ok else None))
    return labels, out


def _unit_name(key: Any) -> str:
    return f"trial {key}" if isinstance(key, (int, np.integer)) else f"k-fold unit {key}"


def _fold_pruned_text(skipped: pd.DataFrame, spec: dict) -> str:
    """'pruned after 2/5 folds (wilcoxon across folds vs config X, p=0.062)', one per pruned config."""
    out = []
    for cid, g in skipped.groupby("config_id", sort=False):
        r = g.iloc[0]
        k = r["cv_folds"] if r["cv_folds"] == r["cv_folds"] and r["cv_folds"] else (spec.get("cv") or {}).get("folds")
        seed = str(cid).rsplit("/", 1)[-1]
        out.append(f"{seed + ' ' if len(skipped['config_id'].unique()) > 1 else ''}pruned after "
                   f"{int(r['pruned_after_folds'])}/{int(k) if k else '?'} folds ({r['pruned_by']}, "
                   f"p={float(r['prune_p_value']):.3f})")
    return "; ".join(out)


def _tta_row(data: StudyData, variant: str, g: pd.DataFrame) -> dict[str, Any] | None:
    """The variant's seeds evaluated with test-time augmentation: its own row, paired with the plain one.
    Descriptive: its CI carries the seeds only (TTA predictions per image stay in the artifacts)."""
    ttas = [t if isinstance(t, dict) else None for t in g["tta"]] if "tta" in g else []
    if not ttas or any(t is None for t in ttas):
        return None
    vals = np.array([t["val"]["macro_f1"] for t in ttas], dtype=float)
    test = np.array([t["test"]["macro_f1"] for t in ttas], dtype=float)
    plain = pd.to_numeric(g["test_macro_f1"], errors="coerce").to_numpy(float)  # the same trials without TTA
    name = ttas[0]["name"]
    row: dict[str, Any] = {
        "variant": f"{variant} +tta:{name}", "baseline": False, "n_seeds": len(g), "seeds": ",".join(map(str, g.index)),
        "n_pruned": 0, "n_fold_skipped": 0, "fold_pruned": "", "n_failed": 0, "val_macro_f1_mean": float(vals.mean()),
        "val_macro_f1_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
        "test_macro_f1": float(test.mean()),
        "accuracy": float(np.mean([t["val"].get("accuracy", np.nan) for t in ttas])),
        "balanced_accuracy": float(np.mean([t["val"].get("balanced_accuracy", np.nan) for t in ttas])),
        "derived": "tta", "tta_gain": float((test - plain).mean()),
    }
    # the seeds' part only (the same estimate with no per-image influences: TTA predictions stay in
    # the artifacts), a t-interval over the paired seeds
    gain = stats.estimate(test - plain, np.zeros((len(test), 1)), image_part=False)
    lo, hi = gain.ci()
    row["tta_gain_ci_lo"], row["tta_gain_ci_hi"] = float(lo), float(hi)
    for c, cname in enumerate(data.class_names):
        row[class_column(c, cname)] = float(np.mean([t["test"]["f1"][c] for t in ttas]))
    return row


def _posthoc_rows(data: StudyData, g: pd.DataFrame, labels: np.ndarray | None,
                  plain: evidence.Variant) -> list[dict[str, Any]]:
    """The variant's trials with each post-hoc correction (``fer_core/posthoc.py``; tau chosen on each
    trial's validation split): one derived row per correction, held-out figures with both variance
    parts, and its gain over the variant itself paired by seed and image. Descriptive: outside the
    table's Holm family (the gain's p is its own test's)."""
    entries = list(g["posthoc"]) if "posthoc" in g else []
    if labels is None or plain.preds is None or not entries or not all(isinstance(e, dict) and e for e in entries):
        return []
    if any((c or {}).get("posthoc", "none") != "none" for c in g["config"]):
        return []  # the variant's output is already a correction; the stored ones correct the raw model
    out = []
    for name in sorted(set.intersection(*(set(e) for e in entries))):
        ph = [e[name] for e in entries]
        derived = evidence.Variant(f"{plain.name} +posthoc:{name}", plain.units,
                                   np.stack([unpack_classes(p["test_pred"]) for p in ph]))
        cols = evidence.held_out_columns([plain, derived], labels, plain.name, data.metric, data.class_names,
                                         data.groups, data.tail, data.settings)[derived.name]
        vals = np.array([p["val"]["macro_f1"] for p in ph], dtype=float)
        row: dict[str, Any] = {
            "variant": derived.name, "baseline": False, "n_seeds": len(g), "seeds": ",".join(map(str, g.index)),
            "n_pruned": 0, "n_fold_skipped": 0, "fold_pruned": "", "n_failed": 0, "derived": "posthoc",
            "val_macro_f1_mean": float(vals.mean()), "val_macro_f1_sd": float(vals.std(ddof=1)) if len(vals) > 1
            else float("nan"), "test_macro_f1": float(np.mean([p["test"]["macro_f1"] for p in ph])),
            "accuracy": float(np.mean([p["val"].get("accuracy", np.nan) for p in ph])),
            "balanced_accuracy": float(np.mean([p["val"].get("balanced_accuracy", np.nan) for p in ph])),
            "posthoc_tau": float(np.median([p["tau"] for p in ph])), "posthoc_of": plain.name,
        }
        # absolute held-out figures keep their columns; the Δ against the variant itself gets its own, so
        # that `delta` always means Δ vs the baseline
        for k, v in cols.items():
            if k.startswith(("test_score", "many_f1", "medium_f1", "few_f1", "f1_")):
                row[k] = v
        for src, dst in (("delta", "posthoc_gain"), ("few_delta", "posthoc_few_gain")):
            for suffix in ("", "_ci_lo", "_ci_hi"):
                row[dst + suffix] = cols.get(src + suffix, float("nan"))
        row["posthoc_gain_p"] = cols.get("p_value", float("nan"))
        out.append(row)
    return out


def _ensemble_row(data: StudyData, e: dict) -> dict[str, Any]:
    """A stored ensemble: one derived, descriptive row (its members are trials; it is not one)."""
    val, test = e["val"], e["test"]
    row: dict[str, Any] = {
        "variant": f"ensemble:{e['name']}", "baseline": False, "n_seeds": len(e["members"]),
        "seeds": "trials " + ",".join(map(str, e["members"])), "n_pruned": 0, "n_fold_skipped": 0, "fold_pruned": "",
        "n_failed": 0, "val_macro_f1_mean": float(val["macro_f1"]), "val_macro_f1_sd": float("nan"),
        "test_macro_f1": float(test["macro_f1"]), "accuracy": float(val["accuracy"]),
        "balanced_accuracy": float(val["balanced_accuracy"]), "derived": "ensemble",
        "members": ",".join(map(str, e["members"])), "ensemble_by": e.get("by"),
        "ensemble_gain": float(val["macro_f1"] - max(e.get("member_values") or [np.nan])),
    }
    for c, cname in enumerate(data.class_names):
        row[class_column(c, cname)] = float(test["f1"][c]) if len(test["f1"]) > c else float("nan")
    return row


def _verdict(r: dict, maximize: bool, n_tests: int, metric: str) -> str:
    if r.get("baseline"):
        return "baseline"
    if r.get("derived") == "tta":
        return (f"derived: TTA on the same trials, {r['tta_gain']:+.3f} "
                f"{_ci(r.get('tta_gain_ci_lo'), r.get('tta_gain_ci_hi'))} test macro-F1 vs without it "
                "(paired by seed; seeds only)")
    if r.get("derived") == "posthoc":
        few = (f"; few-shot F1 {r['posthoc_few_gain']:+.3f} "
               f"{_ci(r.get('posthoc_few_gain_ci_lo'), r.get('posthoc_few_gain_ci_hi'))}"
               if r.get("posthoc_few_gain") == r.get("posthoc_few_gain") and "posthoc_few_gain" in r else "")
        return (f"derived: {r['variant'].rsplit('+posthoc:', 1)[1]} of {r['posthoc_of']} after training (tau chosen on "
                f"validation, median {r['posthoc_tau']:.2f}), {r['posthoc_gain']:+.3f} "
                f"{_ci(r.get('posthoc_gain_ci_lo'), r.get('posthoc_gain_ci_hi'))} test vs the variant itself "
                f"(paired by seed and image, p={r['posthoc_gain_p']:.3g}{few}); outside the Holm family")
    if r.get("derived") == "ensemble":
        return (f"derived: mean probabilities of trials {r['members']} (top {r['n_seeds']} by val {r['ensemble_by']}), "
                f"{r['ensemble_gain']:+.3f} val vs its best member; not a trial, never the best")
    if "val_delta" not in r:
        return ""
    if r.get("adequacy"):
        return "not answerable at this budget: " + adequacy.readable(r["adequacy"].split("; "), metric)
    return evidence.verdict(r, maximize, n_tests)


def _counts_text(data: StudyData) -> str:
    c = data.counts
    return f"{c.get('COMPLETE', 0)} complete, {c.get('RUNNING', 0)} running, {c.get('PRUNED', 0)} pruned, " \
           f"{c.get('FAIL', 0)} failed"


def status_line(data: StudyData) -> str:
    s = f"study {data.name} ({data.design}): {_counts_text(data)}"
    seq = data.sequential
    if seq is not None and data.planned is not None:  # the plan is the maximum; the looks decide what is needed
        s += f" of at most {data.planned} planned (sequential design)"
        if not seq.finished:
            s += (f"; look {seq.looks_done + 1} of {len(seq.plan.looks)} still to run: this report is partial, its "
                  "open rows undecided")
    elif data.planned is not None:
        s += f" of {data.planned} planned"
        if data.missing:
            s += f"; {data.missing} trials missing: this report is partial"
    if data.warm_started:
        s += "; warm-started with " + ", ".join(f"{n} trials told from {src}" for src, n in
                                                sorted(data.warm_started.items())) + " (not in this table)"
    return s


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _est(r: dict, col: str, signed: bool = False) -> str:
    v = r.get(col)
    if v is None or v != v:
        return "–"
    return f"{v:+.3f} {_ci(r.get(col + '_ci_lo'), r.get(col + '_ci_hi'))}" if signed else \
        f"{v:.3f} {_ci(r.get(col + '_ci_lo'), r.get(col + '_ci_hi'))}"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the readable tables show: every row but the post-hoc rows of variants other than the
    baseline. Each trained variant has one per correction (up to three times the rows); the baseline's
    are the literature's cheap baselines and stay, the rest are summed up by ``posthoc_frame`` (all
    rows stay in report.csv)."""
    if "posthoc_of" not in table.columns:
        return table
    baselines = set(table.loc[table["baseline"] & (table["derived"] == ""), "variant"])
    return table[(table["derived"] != "posthoc") | table["posthoc_of"].isin(baselines)]


def posthoc_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame | None:
    """Trained variant x post-hoc correction: test metric of the corrected model and its gain over the
    variant itself (paired by seed and image, both variance parts; few-shot F1 too where the classes
    have a few-shot group) [95 % CI]; None without post-hoc rows."""
    if "posthoc_of" not in table.columns:
        return None
    ph = table[table["derived"] == "posthoc"]
    if not len(ph):
        return None
    m, few = data.metric, bool(data.groups.get("few"))
    methods = sorted({v.rsplit("+posthoc:", 1)[1] for v in ph["variant"]})
    by = {(r["posthoc_of"], r["variant"].rsplit("+posthoc:", 1)[1]): r for r in ph.to_dict("records")}
    out = []
    for variant in dict.fromkeys(ph["posthoc_of"]):  # table order: baseline first
        row = {"variant": variant}
        for name in methods:
            r = by.get((variant, name), {})
            row[f"{name}: test {m}"] = _est(r, "test_score")
            row[f"{name}: gain"] = _est(r, "posthoc_gain", signed=True)
            if few:
                row[f"{name}: few-shot gain"] = _est(r, "posthoc_few_gain", signed=True)
        out.append(row)
    return pd.DataFrame(out)


def summary_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame:
    """The readable table (Markdown, LaTeX, HTML, the dashboard note): held-out first."""
    out = []
    m = data.metric
    for r in shown(table).to_dict("records"):
        derived = r.get("derived")
        row = {
            "variant": ("★ " if r["best"] else "") + r["variant"],
            "n": (f"{r['n_seeds']} trials" if derived == "ensemble" else f"{r['n_seeds']}")
                 + (f" (+{r['n_pruned']} pruned)" if r["n_pruned"] else "")
                 + (f" (pruned: {r['n_fold_skipped']} folds skipped)" if r.get("n_fold_skipped") else "")
                 + (f" (+{r['n_failed']} failed)" if r["n_failed"] else ""),
            f"test {m} [95% CI]": _est(r, "test_score") if derived in (None, "", "posthoc")
            else fmt(r.get("test_macro_f1")),
        }
        if "delta" in table.columns or "val_delta" in table.columns:
            row[f"Δ test {m} [95% CI]"] = "" if r["baseline"] or derived else _est(r, "delta", signed=True)
            row["p (Holm)"] = "" if r["baseline"] or derived else fmt(r.get("p_holm"))
            row["MDE 80%"] = "" if r["baseline"] or derived else fmt(r.get("mde"))
            # the share of seed pairs the variant won, as a count (not a probability of being better)
            won = r.get("p_improve")
            row["seed pairs won"] = "" if r["baseline"] or derived or won != won or won is None else \
                f"{won * r['n_paired']:g}/{int(r['n_paired'])}"
            if data.groups.get("few"):
                row["Δ few-shot F1 [95% CI]"] = "" if r["baseline"] or derived else _est(r, "few_delta", signed=True)
        if data.sequential is not None:  # design.sequential: how far each row went and why it stopped
            seq = r.get("sequential_status")
            ok = isinstance(seq, str) and not derived
            row["looks"] = f"{int(r['looks_run'])}" if ok else ""
            row["stopped"] = r["stop_reason"] if ok else ""
            row["level spent"] = fmt(r["level_spent"], 4) if ok else ""
        if "ece" in table.columns:
            row["ECE"] = fmt(r.get("ece"))
        row[f"val {m} (selection)"] = f"{fmt(r['val_macro_f1_mean'])} ± {fmt(r['val_macro_f1_sd'])}"
        row["verdict"] = r["verdict"]
        out.append(row)
    df = pd.DataFrame(out)
    # columns with nothing to say (no baseline, no stored logits) are left out
    empty = [c for c in df.columns if df[c].isin(["–", ""]).all()]
    return df.drop(columns=empty)


def _class_label(data: StudyData, c: int) -> str:
    n_train = data.class_counts[c] if c < len(data.class_counts) else "?"
    n_test = data.test_support[c] if c < len(data.test_support) else "?"
    return f"{c} {data.class_names[c]} ({n_train}/{n_test})"


def per_class_frame(data: StudyData, table: pd.DataFrame, delta: bool = False) -> pd.DataFrame:
    """Variant x class test F1 (or Δ vs the baseline) with 95 % CIs; n.e. = not estimable."""
    rows = table[~table["baseline"] & (table["derived"] == "")] if delta else shown(table)
    cols = {}
    for c, name in enumerate(data.class_names):
        col = ("delta_" if delta else "") + class_column(c, name)
        support = data.test_support[c] if c < len(data.test_support) else None
        cells = []
        for r in rows.to_dict("records"):
            if support is not None and support < data.settings.min_support:
                cells.append("n.e.")
            elif str(c) in str(r.get("never_predicted" if delta else "own_never_predicted", "")).split(","):
                cells.append("n.p." if delta else "0 (n.p.)")
            elif f"{col}_ci_lo" in r and r[f"{col}_ci_lo"] == r[f"{col}_ci_lo"]:
                v = r[col]
                cells.append(f"{v:+.2f} [{r[col + '_ci_lo']:+.2f}, {r[col + '_ci_hi']:+.2f}]" if delta else
                             f"{v:.2f} [{r[col + '_ci_lo']:.2f}, {r[col + '_ci_hi']:.2f}]")
            else:
                cells.append(fmt(r.get(col), 2))
        cols[_class_label(data, c)] = cells
    return pd.DataFrame({"variant": list(rows["variant"]), **cols})


def group_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame:
    rows = shown(table)
    rows = rows[rows["derived"].isin(["", "posthoc"])]  # post-hoc rows: their group F1 (Δ: in the verdict)
    out = {"variant": list(rows["variant"])}
    for g in GROUPS:
        if not data.groups.get(g):
            continue
        label = f"{GROUP_LABELS[g]} ({len(data.groups[g])})"
        out[f"{label} F1"] = ["0 (never predicted)" if r.get(f"{g}_own_never") is True else _est(r, f"{g}_f1")
                              for r in rows.to_dict("records")]
        out[f"{label} Δ"] = ["" if r["baseline"] or r["derived"] else adequacy.NEVER
                             if r.get(f"{g}_never_predicted") is True else _est(r, f"{g}_delta", signed=True)
                             for r in rows.to_dict("records")]
    return pd.DataFrame(out)


def calibration_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame | None:
    if "ece" not in table.columns:
        return None
    rows = table[(table["derived"] == "") & table["ece"].notna()]
    ece = [fmt(r["ece"]) + (f" {_ci(r.get('ece_ci_lo'), r.get('ece_ci_hi'))}" if r.get("ece_ci_lo") == r.get(
        "ece_ci_lo") and "ece_ci_lo" in r else "") for r in rows.to_dict("records")]
    return pd.DataFrame({"variant": list(rows["variant"]), "top-label ECE (15 bins) [95% CI, seeds]": ece,
                         "NLL": rows["nll"].map(fmt), "Brier": rows["brier"].map(fmt)})


def au_frame(data: StudyData) -> pd.DataFrame | None:
    """AU x variant: test F1 at the per-AU thresholds chosen on validation and ROC AUC, mean ± SD over
    the seeds (descriptive: AU detection is a secondary output, not one of the table's tests); only
    variants that trained the AU head (``au_weight > 0`` on data with AU labels); None without any."""
    done = data.trials[(data.trials["state"] == "COMPLETE")]
    if "test_au_f1_per_au" not in done.columns:
        return None
    done = done[done["test_au_f1_per_au"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    if not len(done):
        return None
    from fer_core.data.dataset import AU_VOCAB

    def cell(values: list[list[float]], a: int) -> str:
        v = np.array([x[a] for x in values], dtype=float)
        v = v[np.isfinite(v)]
        if not len(v):
            return "n.e."
        return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    out: dict[str, list[str]] = {"AU": [f"AU{au}" for au in AU_VOCAB]}
    for variant, g in done.groupby("variant", sort=False):
        f1, auc = list(g["test_au_f1_per_au"]), list(g["test_au_auc_per_au"])
        out[f"{variant} F1"] = [cell(f1, a) for a in range(len(AU_VOCAB))]
        out[f"{variant} AUC"] = [cell(auc, a) for a in range(len(AU_VOCAB))]
    return pd.DataFrame(out)


def sequential_judge(study: optuna.Study) -> Any:
    """The launch's judge for a sequential design (``LaunchOptions.judge``): the report's held-out test
    of each row on its first seeds, over the stored trials as they are now."""
    data = load_study_data(study)
    plan = seqreport.plan_of(data.spec)
    if plan is None or data.units.empty:
        return lambda look, seeds: {}
    order = variant_order(data, data.units)
    per_seed = {v: data.units[data.units["variant"] == v].set_index("unit") for v in order}
    labels, variants = held_out_inputs(data, order, per_seed)
    return seqreport.judge_from(data, plan, order[0], variants, labels)


def design_line(data: StudyData, table: pd.DataFrame) -> str:
    """What the design can detect: seeds, held-out images, the Holm family, the median MDE."""
    real = table[table["derived"] == ""]
    n_img = sum(data.test_support) if data.test_support else 0
    seeds = sorted({int(n) for n in real["n_seeds"]})
    line = (f"Design: {len(real)} {'variants' if data.design != 'search' else 'configs'} x "
            f"{'/'.join(map(str, seeds))} seeds; held-out: "
            f"{'out-of-fold pool' if data.trials['fold'].notna().any() else 'test split'}, {n_img} images")
    if "p_value" in real.columns and real["p_value"].notna().any():
        n_tests = int(real["p_holm"].notna().sum())
        left = int((~real["adequate"].astype(bool) & ~real["baseline"].astype(bool)).sum()) \
            if "adequate" in real.columns else 0
        why = f" (the rows that pass the adequacy check; {left} not answerable left out)" if left else ""
        fams = real["holm_family"].dropna() if "holm_family" in real else pd.Series(dtype=str)
        if (fams == "primary").any():
            line += (f"; Holm families: {int((fams == 'primary').sum())} primary tests (report.primary), "
                     f"{int((fams == 'secondary').sum())} secondary{why}")
        else:
            line += f"; one Holm family of {n_tests} tests{why}"
        if real["mde"].notna().any():
            line += f"; median minimum detectable Δ {data.metric} at 80 % power: {float(real['mde'].median()):.3f}"
        if "delta_prior_df" in real and real["delta_prior_df"].notna().any():
            line += (f"; seed variances moderated across the rows (empirical Bayes, prior df "
                     f"{float(real['delta_prior_df'].dropna().iloc[0]):.1f})")
    if data.sequential is not None:  # the verdicts are the sequential procedure's, not the one Holm family's
        line += ". " + seqreport.header(data.sequential)
    return line


def adequacy_line(data: StudyData) -> str:
    """The sentence every format opens with: can the study answer its question, and what to do if not."""
    if data.adequacy is None:
        return ""
    return adequacy.adequacy_sentence(data.adequacy, data.metric, int(data.counts.get("COMPLETE", 0)))


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return "–"
    return f"[{lo:.3f}, {hi:.3f}]"


def header_lines(data: StudyData) -> list[str]:
    """What every format opens with (Markdown, HTML, LaTeX comments): the study's question, its data
    and classes, profile and training recipe, and budget; then "Given at launch" when --data/--set were."""
    spec = data.spec
    base = {**(spec.get("data") or {}), **(spec.get("base") or {})}
    lines = []
    if spec.get("question"):
        lines.append(f"Question: {spec['question']}")
    given = spec.get("overrides") or {}
    dataset = base.get("dataset", "synthetic")
    where = f" at {base['data_path']}" if base.get("data_path") else ""
    classes = ", ".join(f"{n} ({c})" for n, c in zip(data.class_names, data.class_counts))
    lines.append(f"Data: {dataset}{where}; {len(data.class_names)} classes (training images): {classes}"
                 if classes else f"Data: {dataset}{where}")
    recipe = ", ".join(f"{k} {base[k]}" for k in ("backbone", "img_size", "epochs", "loss", "sampler") if k in base)
    lines.append(f"Profile: {spec.get('profile', '?')}" + (f" ({recipe})" if recipe else ""))
    budget = spec.get("budget") or {}
    seeds = spec.get("seeds")
    parts = [f"{data.planned} trials planned" if data.planned is not None else "trials: as budgeted"]
    if isinstance(seeds, list):
        parts.append(f"seeds {', '.join(map(str, seeds))}")
    parts += [f"{k.replace('_', ' ')} {v}" for k, v in budget.items() if v is not None]
    lines.append("Budget: " + "; ".join(parts))
    if given:  # fer-study launch --data / --set: what this study ran on besides its file
        g = [f"data {given['data']['path']} ({given['data']['kind']})"] if given.get("data") else []
        g += [f"{k}={v}" for k, v in (given.get("set") or {}).items()]
        if given.get("dropped_variants"):  # rows the given data cannot train (no AU labels), left out
            g.append(f"variants left out (the data has no AU labels): {', '.join(given['dropped_variants'])}")
        lines.append("Given at launch: " + ", ".join(g))
    return lines


POSTHOC_TITLE = ("Post-hoc corrections of every trained variant (fer_core/posthoc.py, tau chosen on validation; the "
                 "table above shows the baseline's): test {m} of the corrected model and its gain over the variant "
                 "itself, paired by seed and image [95 % CI], outside the Holm family")


@dataclass(frozen=True)
class Frames:
    """The report's tables, built once per report: Markdown, LaTeX and HTML lay out the same frames."""

    summary: pd.DataFrame
    groups: pd.DataFrame
    per_class: pd.DataFrame
    per_class_delta: pd.DataFrame | None  # None without a baseline to take Δs against
    posthoc: pd.DataFrame | None  # None without post-hoc rows (every variant's corrections, summed up)
    aus: pd.DataFrame | None  # None unless a variant trained the AU head
    calibration: pd.DataFrame | None  # None without stored logits (no artifact store) or none calibrated


def report_frames(data: StudyData, table: pd.DataFrame) -> Frames:
    cal = calibration_frame(data, table)
    return Frames(summary_frame(data, table), group_frame(data, table), per_class_frame(data, table),
                  per_class_frame(data, table, delta=True) if "delta" in table.columns else None,
                  posthoc_frame(data, table), au_frame(data), cal if cal is not None and len(cal) else None)


def markdown(data: StudyData, table: pd.DataFrame, frames: Frames | None = None) -> str:
    """The whole report as Markdown: header, status, design, the table, groups, per class, calibration,
    how to read it; ``frames``: the tables when the caller built them for other formats too."""
    f = frames or report_frames(data, table)
    lines = [f"## {data.name}: ablation table", ""]
    if data.adequacy is not None:
        lines += [adequacy_line(data), ""]
    for h in header_lines(data):
        lines += [h + ("" if h.endswith((".", "?", "!")) else "."), ""]
    lines += [status_line(data) + ".", "", design_line(data, table) + ".", ""]
    lines += [f.summary.to_markdown(index=False), ""]
    st = data.settings
    if any(data.groups.values()):
        lines += [f"Class groups by training images (many-shot > {st.many_above}, medium, few-shot < {st.few_below}), "
                  "test macro-F1 over the group's estimable classes and its Δ vs the baseline [95 % CI; "
                  "descriptive (unadjusted), outside the Holm family]:", "",
                  f.groups.to_markdown(index=False), ""]
    lines += [f"Per-class test F1 [95 % CI] (column: class (training/test images); n.e. = fewer than "
              f"{st.min_support} test images, not estimable; 0 (n.p.) = the variant never predicts the class, "
              "in any seed):", "",
              f.per_class.to_markdown(index=False), ""]
    if f.per_class_delta is not None:
        lines += ["Per-class Δ test F1 vs the baseline [95 % CI; descriptive (unadjusted), one interval per cell, "
                  "outside the Holm family] (n.p. = neither the variant nor the baseline predicts the class in any "
                  "seed: not estimable):", "",
                  f.per_class_delta.to_markdown(index=False), ""]
    if f.posthoc is not None:
        lines += [POSTHOC_TITLE.format(m=data.metric) + ":", "", f.posthoc.to_markdown(index=False), ""]
    effects = data.effects
    if effects is not None and len(effects):
        missing = effects.attrs.get("missing_runs") or []
        lines += [f"Factorial effects on test {data.metric}: least squares on the runs present (on a complete "
                  "grid: mean of the runs at a contrast's + level minus its - level; an interaction: the product "
                  "of its factors' codes), paired by seed, both variance parts, Holm across the effects "
                  "(fer_core/report/effects.py)"
                  + (f"; runs without held-out predictions: {'; '.join(missing)}" if missing else "") + ":", "",
                  effects_markdown(effects, data.metric), ""]
    if f.aus is not None:
        lines += ["Action Units on the test split (AU head): F1 at each AU's threshold chosen on validation and ROC "
                  "AUC, mean ± SD over seeds, descriptive (n.e.: no positive test image):", "",
                  f.aus.to_markdown(index=False, disable_numparse=True), ""]  # "0.50" stays "0.50"
    if f.calibration is not None:
        where = "the out-of-fold pool (folds weighted by their images)" if data.trials["fold"].notna().any() \
            else "the test split"
        lines += [f"Calibration on {where} (from the stored float32 logits; ECE of the top label only, mean over "
                  "seeds with a t-interval over the seeds (the finite test set not included); NLL and Brier: mean "
                  "over seeds):", "",
                  f.calibration.to_markdown(index=False), ""]
    lines += [
        f"Every effect is estimated on the test split at each trial's selected epoch; validation {data.metric} "
        "selected the epochs (and the ★, the variant validation would pick) and is shown as a secondary column, "
        "never tested. Intervals are 95 % t-intervals whose variance carries both the seeds (paired by seed for a "
        "Δ) and the finite test set (the same images for every trial), fer_core/report/stats.py. p is the test of "
        "Δ = 0, Holm-corrected across the table's variants; the verdict is that test's; MDE is the |Δ| this design "
        "detects with 80 % power at the family-wise level (Holm's first step, alpha/m; noncentral t), n/a where the Δ "
        "has no variance; seed pairs won counts the seeds in which the variant beat the baseline (ties half), a "
        "description, not a probability; Δ pairs the seeds both rows have, so with a seed missing it can differ "
        "from the difference of the two test scores (the verdict says so). Seed variances are moderated across "
        "the table's rows (empirical Bayes, Smyth 2004), which adds the prior's degrees of freedom; per-class "
        "and group intervals are descriptive (unadjusted). Pruned and failed trials are counted, never averaged in.",
    ]
    if data.trials["fold"].notna().any():
        lines += ["", "k-fold cross-validation, scored out of fold: in each fold's trial that fold is held out, the "
                  "next fold selects the epoch and the rest train; the k folds' held-out predictions of one "
                  "(seed, repeat) are pooled, so every train+validation image is predicted once per seed by a model "
                  "that never trained or selected on it. The test split and image part above are that pool; a seed "
                  "(or repeat) is one unit, paired across variants by its shared partition; validation is the "
                  "mean over folds."]
    if data.trials["pruned_by"].notna().any():
        lines += ["", "Pruning across folds: a config whose completed folds were significantly worse than the best "
                  "config's (Wilcoxon signed-rank, paired by fold) had its remaining folds skipped; its validation "
                  "is the mean over the folds it completed; a (seed, repeat) with a fold missing has no pooled "
                  "held-out predictions, so a pruned config gets no held-out estimate; its verdict says after how "
                  "many folds it was pruned. The baseline is never pruned."]
    return "\n".join(lines) + "\n"


def search_extras(study: optuna.Study, data: StudyData, top: int = 10) -> dict[str, Any]:
    """Best trials, fANOVA parameter importances and the best config (search designs)."""
    complete = data.trials[data.trials["state"] == "COMPLETE"]
    asc = data.direction != "maximize"
    best = complete.sort_values("value", ascending=asc).head(top)
    best_rows = pd.DataFrame({
        "trial": best["number"], "val macro-F1": best["value"].map(fmt),
        "test macro-F1": best["test_macro_f1"].map(fmt),
        "params": [", ".join(f"{k}={_short(v)}" for k, v in sorted(p.items())) for p in best["params"]],
    })
    target = study
    if data.warm_started:  # importances of this study's own trials, like the table above
        target = quiet_memory_study(directions=study.directions)
        target.add_trials(real_trials(study))
    try:
        imp = optuna.importance.get_param_importances(
            target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        importances = {k: float(v) for k, v in imp.items()}
        why = ""
    except (RuntimeError, ValueError) as err:
        importances, why = {}, first_line(err)
    best_config = dict(best.iloc[0]["config"] or {}) if len(best) else {}
    return {"best_trials": best_rows, "importances": importances, "importance_note": why,
            "best_config": best_config, "best_trial": int(best.iloc[0]["number"]) if len(best) else None}

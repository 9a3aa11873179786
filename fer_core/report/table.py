"""Storage -> the ablation table: one row per variant (or distinct config), baseline first.

Reads only the storage (and, for the image bootstrap, the stored prediction artifacts).
Means, CIs and tests use COMPLETE trials only, one per (variant, seed); PRUNED and FAIL
trials are counted beside them, never averaged in. A k-fold CV config pruned across folds
is reported over the folds it completed and marked ("pruned after 2/5 folds").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from fer_core.errors import FerError
from fer_core.report import stats
from fer_core.report.artifacts import PREDICTIONS_JSON, read_json_artifact
from fer_core.report.ensemble import stored_ensembles
from fer_core.study.outputs import real_trials
from fer_core.study.warmstart import WARM_ATTR, is_warm_start

P_LEVEL = 0.05


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
    predictions: dict[int, dict] = field(default_factory=dict)  # trial number -> {"val": {labels, pred}}
    counts: dict[str, int] = field(default_factory=dict)
    ensembles: list[dict] = field(default_factory=list)  # derived entries (study user attrs ensemble:<name>)
    warm_started: dict[str, int] = field(default_factory=dict)  # source study -> copies told (not in the table)

    @property
    def missing(self) -> int | None:
        if self.planned is None:
            return None
        return max(0, self.planned - self.counts.get("COMPLETE", 0) - self.counts.get("PRUNED", 0))


def _variant_of(t: optuna.trial.FrozenTrial, design: str) -> str:
    if design != "search" and t.user_attrs.get("variant"):
        return str(t.user_attrs["variant"])
    params = {k: v for k, v in sorted(t.params.items()) if k not in ("seed", "cv_fold")}
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
    preds: dict[int, dict] = {}
    warm: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if is_warm_start(t):
            # a copy told by --warm-start is another study's trial: TPE's prior here, never a row
            # (it would repeat the source's results without test metrics, predictions or a model)
            warm[ua[WARM_ATTR]] = warm.get(ua[WARM_ATTR], 0) + 1
            continue
        val = ua.get("val_metrics") or {}
        test = ua.get("test_metrics") or {}
        row = {
            "number": t.number, "state": t.state.name, "variant": _variant_of(t, design),
            "seed": ua.get("seed", t.params.get("seed")), "value": t.value if t.state == TrialState.COMPLETE else None,
            # the pairing unit: a seed, or with k-fold CV a (seed, fold); folds are treated like seeds
            "unit": ua.get("seed", t.params.get("seed")) if ua.get("fold") is None
            else f"{ua.get('seed', t.params.get('seed'))}/{ua['fold']}", "fold": ua.get("fold"),
            "test_macro_f1": test.get("macro_f1"), "val_macro_f1": val.get("macro_f1"), "accuracy": val.get("accuracy"),
            "balanced_accuracy": val.get("balanced_accuracy"), "tail_f1": val.get("tail_f1"),
            "test_tail_f1": test.get("tail_f1"), "best_epoch": ua.get("best_epoch"),
            "val_f1": val.get("f1"), "test_f1": test.get("f1"), "confusion_matrix": val.get("confusion_matrix"),
            "curve": dict(sorted(t.intermediate_values.items())), "params": dict(t.params),
            "config": ua.get("config"), "error": ua.get("error"), "tta": ua.get("tta_metrics"),
            # pruning across folds (fer_core/study/foldprune.py): a skipped fold and why
            "config_id": ua.get("config_id"), "pruned_by": ua.get("pruned_by"),
            "pruned_after_folds": ua.get("pruned_after_folds"), "prune_p_value": ua.get("prune_p_value"),
            "cv_folds": ua.get("cv_folds"),
        }
        rows.append(row)
        if t.state == TrialState.COMPLETE and store is not None:
            p = read_json_artifact(store, study._storage, t, PREDICTIONS_JSON)
            if p and "val" in p:
                preds[t.number] = p
    df = pd.DataFrame(rows)
    by_state = {s: int((df["state"] == s).sum()) if len(df) else 0 for s in ("COMPLETE", "RUNNING", "PRUNED", "FAIL")}
    return StudyData(
        name=study.study_name, design=design, metric=attrs.get("metric", "macro_f1"),
        direction=study.direction.name.lower(), class_names=names, class_counts=counts,
        tail=tail_classes(spec, counts) if counts else [], spec=spec, planned=planned, trials=df,
        predictions=preds, counts=by_state, ensembles=stored_ensembles(attrs), warm_started=warm,
    )


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


def class_column(c: int, name: str) -> str:
    return f"f1_{c:02d}_{name.replace(' ', '_')}"


def build_table(data: StudyData) -> pd.DataFrame:
    """The ablation table as a DataFrame (every number in full precision)."""
    df = data.trials
    if df.empty or not (df["state"] == "COMPLETE").any():
        raise FerError(f"study {data.name!r} has no complete trials yet ({_counts_text(data)}); "
                       "nothing to report")
    complete = df[df["state"] == "COMPLETE"].sort_values("number").drop_duplicates(["variant", "unit"], keep="first")
    order = variant_order(data, complete)
    has_baseline = data.design in ("one_at_a_time", "grid")
    baseline = order[0] if has_baseline else None
    per_seed = {v: complete[complete["variant"] == v].set_index("unit") for v in order}
    maximize = data.direction == "maximize"
    k = len(data.class_names)
    # k-fold CV: every fold validates on other images, so there is no image bootstrap across folds
    preds_of = {} if complete["fold"].notna().any() else data.predictions
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
            "val_macro_f1_mean": float(vals.mean()),
            "val_macro_f1_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
        }
        row["ci_seeds_lo"], row["ci_seeds_hi"] = stats.bootstrap_mean_ci(vals)
        preds = [preds_of.get(int(n)) for n in g["number"]]
        row["ci_images_lo"], row["ci_images_hi"] = _image_ci(preds, k)
        for col in ("test_macro_f1", "accuracy", "balanced_accuracy", "tail_f1", "test_tail_f1"):
            row[col] = float(pd.to_numeric(g[col], errors="coerce").mean())
        if baseline is not None and v != baseline:
            b = per_seed[baseline]
            common = sorted(set(g.index) & set(b.index))
            a_vals = g.loc[common, "value"].astype(float).to_numpy()
            b_vals = b.loc[common, "value"].astype(float).to_numpy()
            row["n_paired"] = len(common)
            row["delta"] = float((a_vals - b_vals).mean()) if common else float("nan")
            row["delta_ci_lo"], row["delta_ci_hi"] = stats.bootstrap_mean_ci(a_vals - b_vals)
            pa = [preds_of.get(int(g.loc[s, "number"])) for s in common]
            pb = [preds_of.get(int(b.loc[s, "number"])) for s in common]
            row["delta_img_ci_lo"], row["delta_img_ci_hi"] = _image_ci(pa, k, pb)
            row["p_value"] = stats.paired_test(a_vals, b_vals)
            # the tail classes: does the fix help the rare classes, paired by seed, with CIs
            a_t = pd.to_numeric(g.loc[common, "tail_f1"], errors="coerce").to_numpy(float)
            b_t = pd.to_numeric(b.loc[common, "tail_f1"], errors="coerce").to_numpy(float)
            row["tail_delta"] = float(np.nanmean(a_t - b_t)) if common and data.tail else float("nan")
            row["tail_delta_ci_lo"], row["tail_delta_ci_hi"] = stats.bootstrap_mean_ci(a_t - b_t)
            row["tail_delta_img_ci_lo"], row["tail_delta_img_ci_hi"] = (
                _image_ci(pa, k, pb, classes=data.tail) if data.tail else (float("nan"), float("nan")))
        for c, name in enumerate(data.class_names):
            f1s = [f[c] for f in g["val_f1"] if isinstance(f, list) and len(f) > c]
            row[class_column(c, name)] = float(np.mean(f1s)) if f1s else float("nan")
        row["derived"] = ""
        rows.append(row)
        tta = _tta_row(data, v, g)
        if tta:
            rows.append(tta)
    base_mean = rows[0]["val_macro_f1_mean"] if baseline is not None else None
    rows += [_ensemble_row(data, e, base_mean) for e in data.ensembles]
    table = pd.DataFrame(rows)
    if baseline is not None:
        table["p_holm"] = stats.holm(table.get("p_value", pd.Series([np.nan] * len(table))).tolist())
    real = table["derived"] == ""
    means = table["val_macro_f1_mean"].where(real)  # the best is a trained variant, never a derived row
    table["best"] = real & (means == (means.max() if maximize else means.min()))
    table["verdict"] = [(f"{r['fold_pruned']}; " if r.get("fold_pruned") else "") + _verdict(r, maximize)
                        for r in table.to_dict("records")]
    return table


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
    """The variant's seeds evaluated with test-time augmentation: its own row, paired with the plain one."""
    ttas = [t if isinstance(t, dict) else None for t in g["tta"]] if "tta" in g else []
    if not ttas or any(t is None for t in ttas):
        return None
    vals = np.array([t["val"]["macro_f1"] for t in ttas], dtype=float)
    plain = pd.to_numeric(g["val_macro_f1"], errors="coerce").to_numpy(float)  # the same trials without TTA
    name = ttas[0]["name"]
    row: dict[str, Any] = {
        "variant": f"{variant} +tta:{name}", "baseline": False, "n_seeds": len(g), "seeds": ",".join(map(str, g.index)),
        "n_pruned": 0, "n_fold_skipped": 0, "fold_pruned": "", "n_failed": 0, "val_macro_f1_mean": float(vals.mean()),
        "val_macro_f1_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
        "ci_images_lo": float("nan"), "ci_images_hi": float("nan"),
        "test_macro_f1": float(np.mean([t["test"]["macro_f1"] for t in ttas])),
        "accuracy": float(np.mean([t["val"].get("accuracy", np.nan) for t in ttas])),
        "balanced_accuracy": float(np.mean([t["val"].get("balanced_accuracy", np.nan) for t in ttas])),
        "tail_f1": float(np.mean([t["val"].get("tail_f1", np.nan) for t in ttas])),
        "test_tail_f1": float(np.mean([t["test"].get("tail_f1", np.nan) for t in ttas])),
        "derived": "tta", "tta_gain": float((vals - plain).mean()),
    }
    row["ci_seeds_lo"], row["ci_seeds_hi"] = stats.bootstrap_mean_ci(vals)
    row["tta_gain_ci_lo"], row["tta_gain_ci_hi"] = stats.bootstrap_mean_ci(vals - plain)
    for c, cname in enumerate(data.class_names):
        row[class_column(c, cname)] = float(np.mean([t["val"]["f1"][c] for t in ttas]))
    return row


def _ensemble_row(data: StudyData, e: dict, base_mean: float | None) -> dict[str, Any]:
    """A stored ensemble: one derived row (its members are trials; it is not one)."""
    val, test = e["val"], e["test"]
    k = len(data.class_names)
    p = e.get("predictions", {}).get("val")
    lo, hi = (stats.image_bootstrap_ci(np.asarray(p["labels"]), [np.asarray(p["pred"])], k) if p
              else (float("nan"), float("nan")))
    row: dict[str, Any] = {
        "variant": f"ensemble:{e['name']}", "baseline": False, "n_seeds": len(e["members"]),
        "seeds": "trials " + ",".join(map(str, e["members"])), "n_pruned": 0, "n_fold_skipped": 0, "fold_pruned": "",
        "n_failed": 0,
        "val_macro_f1_mean": float(val["macro_f1"]), "val_macro_f1_sd": float("nan"),
        "ci_seeds_lo": float("nan"), "ci_seeds_hi": float("nan"), "ci_images_lo": lo, "ci_images_hi": hi,
        "test_macro_f1": float(test["macro_f1"]), "accuracy": float(val["accuracy"]),
        "balanced_accuracy": float(val["balanced_accuracy"]), "tail_f1": float(val.get("tail_f1", np.nan)),
        "test_tail_f1": float(test.get("tail_f1", np.nan)), "derived": "ensemble",
        "members": ",".join(map(str, e["members"])), "ensemble_by": e.get("by"),
        "ensemble_gain": float(val["macro_f1"] - max(e.get("member_values") or [np.nan])),
    }
    if base_mean is not None:
        row["delta"] = float(val["macro_f1"] - base_mean)  # descriptive: not paired by seed, no test
    for c, cname in enumerate(data.class_names):
        row[class_column(c, cname)] = float(val["f1"][c]) if len(val["f1"]) > c else float("nan")
    return row


def _image_ci(preds: list[dict | None], k: int, base: list[dict | None] | None = None,
              classes: list[int] | None = None) -> tuple[float, float]:
    if not preds or any(p is None for p in preds) or (base is not None and any(p is None for p in base)):
        return float("nan"), float("nan")
    labels = np.asarray(preds[0]["val"]["labels"], dtype=int)
    a = [np.asarray(p["val"]["pred"], dtype=int) for p in preds]
    b = [np.asarray(p["val"]["pred"], dtype=int) for p in base] if base is not None else None
    return stats.image_bootstrap_ci(labels, a, k, baseline_by_seed=b, classes=classes)


def _verdict(r: dict, maximize: bool) -> str:
    if r.get("baseline"):
        return "baseline"
    if r.get("derived") == "tta":
        return (f"derived: TTA on the same trials, {r['tta_gain']:+.3f} "
                f"{_ci(r.get('tta_gain_ci_lo'), r.get('tta_gain_ci_hi'))} vs without it (paired by seed)")
    if r.get("derived") == "ensemble":
        return (f"derived: mean probabilities of trials {r['members']} (top {r['n_seeds']} by val {r['ensemble_by']}), "
                f"{r['ensemble_gain']:+.3f} vs its best member; not a trial, never the best")
    if "p_holm" not in r or r.get("delta") is None:
        return ""
    n = int(r.get("n_paired") or 0)
    if n < 2:
        return f"too few paired seeds to tell from the baseline (n={n})"
    p = r["p_holm"]
    better = (r["delta"] > 0) == maximize
    img = ""
    lo, hi = r.get("delta_img_ci_lo"), r.get("delta_img_ci_hi")
    if lo == lo and hi == hi and lo is not None:
        img = "; its image-bootstrap CI excludes 0" if (lo > 0 or hi < 0) else "; its image-bootstrap CI includes 0"
    if p == p and p < P_LEVEL:
        return f"{'better' if better else 'worse'} than the baseline (Holm p={p:.3f}{img})"
    return f"not distinguishable from the baseline (Holm p={p:.2f}{img})"


def _counts_text(data: StudyData) -> str:
    c = data.counts
    return f"{c.get('COMPLETE', 0)} complete, {c.get('RUNNING', 0)} running, {c.get('PRUNED', 0)} pruned, " \
           f"{c.get('FAIL', 0)} failed"


def status_line(data: StudyData) -> str:
    s = f"study {data.name} ({data.design}): {_counts_text(data)}"
    if data.planned is not None:
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


def summary_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame:
    """The readable table (Markdown, LaTeX, HTML, the dashboard note)."""
    out = []
    for r in table.to_dict("records"):
        row = {
            "variant": ("★ " if r["best"] else "") + r["variant"],
            "n": (f"{r['n_seeds']} trials" if r.get("derived") == "ensemble" else f"{r['n_seeds']}")
                 + (f" (+{r['n_pruned']} pruned)" if r["n_pruned"] else "")
                 + (f" (pruned: {r['n_fold_skipped']} folds skipped)" if r.get("n_fold_skipped") else "")
                 + (f" (+{r['n_failed']} failed)" if r["n_failed"] else ""),
            "val macro-F1": f"{fmt(r['val_macro_f1_mean'])} ± {fmt(r['val_macro_f1_sd'])}",
            "95% CI seeds": _ci(r["ci_seeds_lo"], r["ci_seeds_hi"]),
            "95% CI images": _ci(r["ci_images_lo"], r["ci_images_hi"]),
        }
        if "delta" in table.columns:
            d = r.get("delta")
            row["Δ vs baseline"] = "" if r["baseline"] or r.get("derived") == "tta" else (
                f"{d:+.3f} {_ci(r.get('delta_ci_lo'), r.get('delta_ci_hi'))}" if d == d else "–")
            row["Δ CI images"] = "" if r["baseline"] else _ci(r.get("delta_img_ci_lo"), r.get("delta_img_ci_hi"))
            row["p (Holm)"] = "" if r["baseline"] else fmt(r.get("p_holm"))
        row.update({"test macro-F1": fmt(r["test_macro_f1"]), "acc": fmt(r["accuracy"]),
                    "bal. acc": fmt(r["balanced_accuracy"]), "tail F1": fmt(r["tail_f1"])})
        if "tail_delta" in table.columns:
            td = r.get("tail_delta")
            row["Δ tail F1 [CI images]"] = "" if r["baseline"] or r.get("derived") else (
                f"{td:+.3f} {_ci(r.get('tail_delta_img_ci_lo'), r.get('tail_delta_img_ci_hi'))}" if td == td else "–")
        row["verdict"] = r["verdict"]
        out.append(row)
    df = pd.DataFrame(out)
    # columns with nothing to say (no stored predictions: no image CIs) are left out
    empty = [c for c in df.columns if df[c].isin(["–", ""]).all()]
    return df.drop(columns=empty)


def per_class_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame:
    """Variant x class validation F1 (tail classes marked)."""
    cols = {}
    for c, name in enumerate(data.class_names):
        label = f"{c}{'*' if c in data.tail else ''}"
        cols[label] = [fmt(v, 2) for v in table[class_column(c, name)]]
    return pd.DataFrame({"variant": table["variant"], **cols})


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return "–"
    return f"[{lo:.3f}, {hi:.3f}]"


def markdown(data: StudyData, table: pd.DataFrame) -> str:
    """The whole report as Markdown: status, the table, per-class F1, how to read it."""
    lines = [f"## {data.name}: ablation table", "", status_line(data) + ".", ""]
    q = data.spec.get("question")
    if q:
        lines += [f"Question: {q}", ""]
    lines += [summary_frame(data, table).to_markdown(index=False), ""]
    tail_names = ", ".join(f"{c} {data.class_names[c]}" for c in data.tail)
    lines += [f"Per-class validation F1 (mean over seeds; * = tail class: {tail_names}):", "",
              per_class_frame(data, table).to_markdown(index=False), ""]
    lines += [
        f"Validation {data.metric} is the objective. Mean ± sd over seeds; 95 % CIs by percentile bootstrap over "
        "seeds and, where predictions are stored, over validation images (same images for every seed). "
        "Δ is paired by seed; p is a paired t-test, Holm-corrected across variants. "
        "Tail F1 is the macro-F1 over the tail classes (*); its Δ is paired by seed, with a CI over validation "
        "images. Test metrics are at each trial's selected epoch and were not used for selection. "
        "Pruned and failed trials are counted, never averaged in.",
    ]
    if data.trials["fold"].notna().any():
        lines += ["", "k-fold cross-validation: every fold is a trial and counts like a seed (a config's value is "
                  "its mean over folds, sd and CIs over folds, Δ paired by fold); folds validate on different "
                  "images, so there is no image bootstrap."]
    if data.trials["pruned_by"].notna().any():
        lines += ["", "Pruning across folds: a config whose completed folds were significantly worse than the best "
                  "config's (Wilcoxon signed-rank, paired by fold) had its remaining folds skipped; its row is the "
                  "mean ± sd over the folds it completed, its Δ is paired over the folds both configs have, and its "
                  "verdict says after how many folds it was pruned. The baseline is never pruned."]
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
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
        try:
            target = optuna.create_study(directions=study.directions)
        finally:
            optuna.logging.set_verbosity(verbosity)
        target.add_trials(real_trials(study))
    try:
        imp = optuna.importance.get_param_importances(
            target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        importances = {k: float(v) for k, v in imp.items()}
        why = ""
    except (RuntimeError, ValueError) as err:
        importances, why = {}, str(err).splitlines()[0]
    best_config = dict(best.iloc[0]["config"] or {}) if len(best) else {}
    return {"best_trials": best_rows, "importances": importances, "importance_note": why,
            "best_config": best_config, "best_trial": int(best.iloc[0]["number"]) if len(best) else None}

"""Report plots (matplotlib, PNG): per-class test F1 heatmap, forest plot of held-out deltas,
confusion matrix of the best trial, learning curves, reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fer_core.report.table import StudyData, class_column
from fer_core.study.artifacts import confusion_png


def heatmap(data: StudyData, table: pd.DataFrame, path: Path) -> None:
    m = np.array([[r.get(class_column(c, n), np.nan) for c, n in enumerate(data.class_names)]
                  for r in table.to_dict("records")], dtype=float)
    fig, ax = plt.subplots(figsize=(0.6 * len(data.class_names) + 4, 0.35 * len(table) + 2), dpi=90)
    top = max(0.01, float(np.nanmax(m))) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=top, aspect="auto")
    ax.set_yticks(range(len(table)), table["variant"], fontsize=8)
    ax.set_xticks(range(len(data.class_names)),
                  [f"{c}{'*' if c in data.groups.get('few', []) else ''}" for c in range(len(data.class_names))],
                  fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j] == m[i, j]:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if m[i, j] > 0.6 * top else "white")
    ax.set_xlabel("class (* = few-shot; empty = not estimable)")
    ax.set_title(f"{data.name}: test F1 per class (mean over seeds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def forest(data: StudyData, table: pd.DataFrame, path: Path) -> bool:
    if "delta" not in table.columns:
        return False
    rows = table[~table["baseline"] & (table["derived"] == "") & table["delta"].notna()]  # derived rows: not paired
    if rows.empty:
        return False
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(rows) + 1.5)), dpi=90)
    y = np.arange(len(rows))[::-1]
    d = rows["delta"].to_numpy(float)
    lo, hi = rows["delta_ci_lo"].to_numpy(float), rows["delta_ci_hi"].to_numpy(float)
    ok = ~np.isnan(lo)
    if ok.any():
        ax.hlines(y[ok], lo[ok], hi[ok], color="tab:blue", label="95% CI (seeds and test images)", lw=2)
    ax.plot(d, y, "ko", ms=4, label="mean Δ (paired by seed)")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(y, rows["variant"], fontsize=8)
    ax.set_xlabel(f"Δ test {data.metric} vs baseline")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{data.name}: held-out effect of each variant", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def reliability(data: StudyData, table: pd.DataFrame, path: Path) -> bool:
    """Reliability diagrams (test split, 15 bins, seeds pooled), one small panel per variant."""
    complete = data.trials[data.trials["state"] == "COMPLETE"]
    panels = []
    for v in table.loc[table["derived"] == "", "variant"]:
        cals = [data.calibration[int(n)] for n in complete.loc[complete["variant"] == v, "number"]
                if int(n) in data.calibration]
        if cals:
            count = sum(c["reliability"]["count"] for c in cals)
            hits = sum(np.nan_to_num(c["reliability"]["accuracy"]) * c["reliability"]["count"] for c in cals)
            conf = sum(np.nan_to_num(c["reliability"]["confidence"]) * c["reliability"]["count"] for c in cals)
            panels.append((v, count, hits, conf))
    if not panels:
        return False
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.3 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (v, count, hits, conf) in zip(axes.ravel(), panels):
        ok = count > 0
        mids = (np.arange(len(count)) + 0.5) / len(count)
        ax.bar(mids[ok], hits[ok] / count[ok], width=1 / len(count), color="tab:blue", alpha=0.7, edgecolor="white")
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.plot(conf[ok] / count[ok], hits[ok] / count[ok], "k.", ms=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(v, fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{data.name}: reliability on the test split (accuracy vs confidence, 15 bins)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def best_confusion(data: StudyData, table: pd.DataFrame, path: Path) -> int | None:
    complete = data.trials[data.trials["state"] == "COMPLETE"]
    if complete.empty:
        return None
    best = complete.sort_values("value", ascending=data.direction != "maximize").iloc[0]
    if not best["confusion_matrix"]:
        return None
    confusion_png(best["confusion_matrix"], data.class_names,
                  f"best trial {best['number']} ({best['variant']}): validation", str(path))
    return int(best["number"])


def learning_curves(data: StudyData, table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=90)
    df = data.trials[data.trials["state"].isin(["COMPLETE", "PRUNED"])]
    cmap = plt.get_cmap("tab20")
    for i, v in enumerate(table["variant"]):
        curves = [c for c in df[df["variant"] == v]["curve"] if c]
        if not curves:
            continue
        epochs = sorted({e for c in curves for e in c})
        mean = [np.mean([c[e] for c in curves if e in c]) for e in epochs]
        ax.plot(epochs, mean, color=cmap(i % 20), lw=1.2, label=v)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {data.metric}")
    ax.set_title(f"{data.name}: learning curves (mean over seeds)", fontsize=10)
    if len(table) <= 20:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def make_plots(data: StudyData, table: pd.DataFrame, out: Path) -> dict[str, Path]:
    files = {"heatmap": out / "per_class_f1_heatmap.png", "forest": out / "delta_forest.png",
             "confusion": out / "best_confusion_matrix.png", "curves": out / "learning_curves.png",
             "reliability": out / "reliability.png"}
    heatmap(data, table, files["heatmap"])
    if not forest(data, table, files["forest"]):
        files.pop("forest")
    if best_confusion(data, table, files["confusion"]) is None:
        files.pop("confusion")
    learning_curves(data, table, files["curves"])
    if not reliability(data, table, files["reliability"]):
        files.pop("reliability")
    return files

"""Report plots (matplotlib, PNG): per-class F1 heatmap, forest plot of deltas, confusion
matrix of the best trial, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fer_core.report.artifacts import confusion_png
from fer_core.report.table import StudyData, class_column


def heatmap(data: StudyData, table: pd.DataFrame, path: Path) -> None:
    m = np.array([[r[class_column(c, n)] for c, n in enumerate(data.class_names)] for r in table.to_dict("records")])
    fig, ax = plt.subplots(figsize=(0.6 * len(data.class_names) + 4, 0.35 * len(table) + 2), dpi=90)
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(0.01, float(np.nanmax(m))), aspect="auto")
    ax.set_yticks(range(len(table)), table["variant"], fontsize=8)
    ax.set_xticks(range(len(data.class_names)),
                  [f"{c}{'*' if c in data.tail else ''}" for c in range(len(data.class_names))], fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j] == m[i, j]:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if m[i, j] > 0.6 * np.nanmax(m) else "white")
    ax.set_xlabel("class (* = tail)")
    ax.set_title(f"{data.name}: validation F1 per class (mean over seeds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def forest(data: StudyData, table: pd.DataFrame, path: Path) -> bool:
    if "delta" not in table.columns:
        return False
    rows = table[~table["baseline"] & (table["derived"] == "")]  # derived rows are not paired by seed
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(rows) + 1.5)), dpi=90)
    y = np.arange(len(rows))[::-1]
    d = rows["delta"].to_numpy(float)
    for lo_col, hi_col, color, label, off in (("delta_ci_lo", "delta_ci_hi", "tab:blue", "95% CI (seeds)", 0.12),
                                             ("delta_img_ci_lo", "delta_img_ci_hi", "tab:orange",
                                              "95% CI (images)", -0.12)):
        lo, hi = rows[lo_col].to_numpy(float), rows[hi_col].to_numpy(float)
        ok = ~np.isnan(lo)
        if ok.any():
            ax.hlines(y[ok] + off, lo[ok], hi[ok], color=color, label=label, lw=2)
    ax.plot(d, y, "ko", ms=4, label="mean Δ (paired by seed)")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(y, rows["variant"], fontsize=8)
    ax.set_xlabel(f"Δ validation {data.metric} vs baseline")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{data.name}: effect of each variant", fontsize=10)
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
             "confusion": out / "best_confusion_matrix.png", "curves": out / "learning_curves.png"}
    heatmap(data, table, files["heatmap"])
    if not forest(data, table, files["forest"]):
        files.pop("forest")
    if best_confusion(data, table, files["confusion"]) is None:
        files.pop("confusion")
    learning_curves(data, table, files["curves"])
    return files

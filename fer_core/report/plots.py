"""Report plots (matplotlib, PNG): per-class test F1 heatmap, forest plot of held-out deltas,
confusion matrix of the best trial, learning curves, reliability diagrams.

Every figure carries its own title (the PNG alone must say what it shows) and has a one-sentence
caption in ``FIGURES`` that the Markdown and HTML reports print under it. Colours are colour-blind
safe: the Okabe-Ito palette for lines, ``cividis`` for the heatmap."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from fer_core.report.cams import cam_figure
from fer_core.report.table import StudyData, class_column
from fer_core.study.artifacts import confusion_png

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
# deficiency; eight colours, so more variants than this go to small multiples, never a repeated colour
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MAX_LINES = len(OKABE_ITO)

# key -> (title, caption): what the Markdown and HTML reports print with each figure
FIGURES: dict[str, tuple[str, str]] = {
    "heatmap": ("Per-class test F1",
                "Test F1 of every class (columns: class name and training images, * = few-shot) for each variant "
                "(rows), mean over seeds; an empty cell has too few test images to estimate."),
    "forest": ("Held-out effect of each variant",
               "Δ test {metric} of each variant vs the baseline (dot: mean paired by seed; bar: 95 % interval "
               "over seeds and test images); a bar that crosses the dashed zero line is no detectable effect."),
    "confusion": ("Confusion matrix of the best trial",
                  "Validation confusion matrix of the trial validation ranks first (rows: true class with its "
                  "training images, row-normalised colour, counts in the cells)."),
    "curves": ("Learning curves",
               "Validation {metric} (the selection metric){loss} per epoch, mean over each "
               "variant's seeds, for completed and pruned trials."),
    "reliability": ("Reliability diagrams",
                    "Accuracy vs confidence on the test split in 15 bins, seeds pooled, one panel per variant; "
                    "bars below the diagonal are over-confident."),
    "cams": ("Where each variant looks: mean Grad-CAM of the tail classes",
             "Mean Grad-CAM map (validation images of each tail class, each image's map for its true class, "
             "mean over seeds) of the baseline and each variant; a title gives the share of the map's mass in the "
             "face half where the class's defining AUs sit (dashed line: the halves' border)."),
}


def caption(key: str, data: StudyData) -> tuple[str, str]:
    title, text = FIGURES[key]
    has_loss = "train_loss" in data.trials and data.trials["train_loss"].map(lambda x: bool(x)).any()
    loss = " and training loss" if has_loss else " (trials stored before the training loss was kept show no loss)"
    return title, text.format(metric=data.metric, loss=loss)


def _class_ticks(data: StudyData) -> list[str]:
    """``name (training images)``, * for few-shot: what a per-class axis is labelled with."""
    few = set(data.groups.get("few", []))
    counts = data.class_counts
    return [f"{name}{'*' if c in few else ''} ({counts[c] if c < len(counts) else '?'})"
            for c, name in enumerate(data.class_names)]


def heatmap(data: StudyData, table: pd.DataFrame, path: Path) -> None:
    m = np.array([[r.get(class_column(c, n), np.nan) for c, n in enumerate(data.class_names)]
                  for r in table.to_dict("records")], dtype=float)
    k = len(data.class_names)
    fig, ax = plt.subplots(figsize=(0.7 * k + 4, 0.35 * len(table) + 2.6), dpi=90)
    top = max(0.01, float(np.nanmax(m))) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="cividis", vmin=0, vmax=top, aspect="auto")
    ax.set_yticks(range(len(table)), table["variant"], fontsize=8)
    ax.set_xticks(range(k), _class_ticks(data), fontsize=8, rotation=40, ha="right", rotation_mode="anchor")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j] == m[i, j]:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if m[i, j] > 0.6 * top else "white")
    ax.set_xlabel("class (training images; * = few-shot; empty = not estimable)")
    ax.set_title(f"{data.name}: test F1 per class (mean over seeds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, label="test F1")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _delta_formatter(span: float) -> FuncFormatter:
    """Tick labels with as many decimals as the tick step needs (0.05, not 0.0500), signed."""
    decimals = int(max(1, min(4, np.ceil(-np.log10(max(span, 1e-6) / 5)))))
    return FuncFormatter(lambda v, _: "0" if abs(v) < 10 ** -(decimals + 2) else f"{v:+.{decimals}f}")


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
        ax.hlines(y[ok], lo[ok], hi[ok], color=OKABE_ITO[0], label="95% CI (seeds and test images)", lw=2)
    ax.plot(d, y, "o", color="black", ms=4, label="mean Δ (paired by seed)")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(y, rows["variant"], fontsize=8)
    ends = np.concatenate([d, lo[ok], hi[ok], [0.0]])
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, symmetric=False))
    ax.xaxis.set_major_formatter(_delta_formatter(float(np.nanmax(ends) - np.nanmin(ends))))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(f"Δ test {data.metric} vs baseline")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
        ax.bar(mids[ok], hits[ok] / count[ok], width=1 / len(count), color=OKABE_ITO[0], alpha=0.7, edgecolor="white")
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
                  f"{data.name}: best trial {best['number']} ({best['variant']}), validation", str(path),
                  counts=data.class_counts or None)
    return int(best["number"])


def _mean_curve(curves: list[dict]) -> tuple[list[int], list[float]]:
    """Epochs (integers) and the mean over the curves that reached each epoch."""
    epochs = sorted({int(e) for c in curves for e in c})
    return epochs, [float(np.mean([c[e] for c in curves if e in c])) for e in epochs]


def _variant_curves(data: StudyData, table: pd.DataFrame) -> list[tuple[str, tuple, tuple | None]]:
    """(variant, validation curve, training-loss curve or None) for each trained variant in table order."""
    df = data.trials[data.trials["state"].isin(["COMPLETE", "PRUNED"])]
    out = []
    for v in table.loc[table["derived"] == "", "variant"]:
        trials = df[df["variant"] == v]
        curves = [{int(k): float(x) for k, x in c.items()} for c in trials["curve"] if c]
        if not curves:
            continue
        losses = [dict(enumerate(map(float, x))) for x in trials.get("train_loss", pd.Series(dtype=object))
                  if isinstance(x, list) and x]
        out.append((v, _mean_curve(curves), _mean_curve(losses) if losses else None))
    return out


def learning_curves(data: StudyData, table: pd.DataFrame, path: Path) -> None:
    """Validation metric and training loss per epoch: side by side with one Okabe-Ito colour per variant
    and the legend outside, or, with more variants than colours, one small panel per variant."""
    series = _variant_curves(data, table)
    has_loss = any(loss is not None for _, _, loss in series)
    integer = MaxNLocator(integer=True)
    if len(series) <= MAX_LINES:
        ncols = 2 if has_loss else 1
        fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols + 2, 3.8), dpi=90, squeeze=False)
        val_ax, loss_ax = axes[0][0], (axes[0][1] if has_loss else None)
        for i, (v, (ep, mean), loss) in enumerate(series):
            colour = OKABE_ITO[i]
            val_ax.plot(ep, mean, color=colour, lw=1.5, marker="o", ms=2.5, label=v)
            if loss_ax is not None and loss is not None:
                loss_ax.plot(loss[0], loss[1], color=colour, lw=1.5, marker="o", ms=2.5, label=v)
        val_ax.set_ylabel(f"validation {data.metric}")
        val_ax.set_title(f"validation {data.metric} (selection)", fontsize=9)
        panels = [val_ax]
        if loss_ax is not None:
            loss_ax.set_ylabel("training loss")
            loss_ax.set_title("training loss", fontsize=9)
            panels.append(loss_ax)
        for ax in panels:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(integer)
            ax.grid(color="0.92", lw=0.6)
        if series:
            panels[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                              title="variant", title_fontsize=7)
    else:
        cols = 4
        rows = -(-len(series) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.3 * rows + 0.6), dpi=90, squeeze=False,
                                 sharex=True, sharey=True)
        for ax in axes.ravel()[len(series):]:
            ax.axis("off")
        first_twin = None
        for ax, (v, (ep, mean), loss) in zip(axes.ravel(), series):
            ax.plot(ep, mean, color=OKABE_ITO[0], lw=1.4)
            ax.set_title(v, fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=6)
            ax.grid(color="0.92", lw=0.6)
            if loss is not None:
                twin = ax.twinx()
                if first_twin is None:
                    first_twin = twin
                else:  # one loss scale for every panel, as the metric's: panels compare at a glance
                    twin.sharey(first_twin)
                twin.plot(loss[0], loss[1], color=OKABE_ITO[5], lw=1.0, ls="--")
                twin.tick_params(labelsize=6, colors=OKABE_ITO[5])
        fig.supxlabel("epoch", fontsize=8)
        fig.supylabel(f"validation {data.metric} (solid, blue)" + ("; training loss (dashed, right axis)"
                                                                   if has_loss else ""), fontsize=8)
    fig.suptitle(f"{data.name}: learning curves (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def make_plots(data: StudyData, table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """The figures written, by ``FIGURES`` key, in the order the reports show them."""
    files = {"heatmap": out / "per_class_f1_heatmap.png", "forest": out / "delta_forest.png",
             "confusion": out / "best_confusion_matrix.png", "curves": out / "learning_curves.png",
             "reliability": out / "reliability.png", "cams": out / "cam_tail_classes.png"}
    heatmap(data, table, files["heatmap"])
    if not forest(data, table, files["forest"]):
        files.pop("forest")
    if best_confusion(data, table, files["confusion"]) is None:
        files.pop("confusion")
    learning_curves(data, table, files["curves"])
    if not reliability(data, table, files["reliability"]):
        files.pop("reliability")
    if not cam_figure(data, table, files["cams"]):  # only trials with cam_samples stored maps
        files.pop("cams")
    return files

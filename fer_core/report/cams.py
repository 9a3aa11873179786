"""Where each variant looks: the trials' class activation maps (config key ``cam_samples``) in the report.

Per class with an AU half (``fer_core.cam.class_regions``: upper face AUs 1, 2, 4, 5, 6, 7; lower
9-27) and per variant, the share of the mean Grad-CAM map's mass in that half (``half_mass``), mean
over the variant's trials, with its change vs the baseline; with ``head: au_attention`` the same for
the head's attention maps. And one figure: the tail classes' mean maps, baseline and variants side by
side. The maps are validation images' (a diagnostic of the selected models, not a test result).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fer_core.cam import half_mass
from fer_core.report.table import StudyData


def _variants(data: StudyData, table: pd.DataFrame) -> list[tuple[str, bool, list[dict]]]:
    """(variant, is baseline, its trials' maps) in table order, for variants with maps."""
    done = data.trials[data.trials["state"] == "COMPLETE"] if len(data.trials) else data.trials
    out = []
    for _, row in table[table["derived"] == ""].iterrows():
        nums = done.loc[done["variant"] == row["variant"], "number"]
        maps = [data.cams[int(n)] for n in nums if int(n) in data.cams]
        if maps:
            out.append((row["variant"], bool(row["baseline"]), maps))
    return out


def _region(data: StudyData, c: int) -> str | None:
    return next((m[c]["region"] for m in data.cams.values() if c in m and m[c]["region"]), None)


def _share(maps: list[dict], c: int, key: str, region: str) -> float:
    values = [half_mass(m[c][key], region) for m in maps if c in m and m[c].get(key) is not None]
    return float(np.nanmean(values)) if values and not np.isnan(values).all() else float("nan")


def cam_frame(data: StudyData, table: pd.DataFrame) -> pd.DataFrame | None:
    """One row per class with an AU half and per variant: the share of activation mass in that half
    (Grad-CAM; attention with au_attention), mean over trials, and its change vs the baseline; None
    when no trial stored maps."""
    if not data.cams:
        return None
    variants = _variants(data, table)
    base = next(((v, maps) for v, is_base, maps in variants if is_base), None)
    rows = []
    for c, name in enumerate(data.class_names):
        region = _region(data, c)
        if region is None:
            continue
        for v, _, maps in variants:
            row = {"class": name, "training_images": data.class_counts[c] if c < len(data.class_counts) else None,
                   "tail_class": c in data.tail, "au_half": region, "variant": v,
                   "n_trials": sum(c in m for m in maps)}
            for key, col in (("mean", "cam"), ("attention_mean", "attention")):
                row[f"{col}_share"] = _share(maps, c, key, region)
                row[f"{col}_delta"] = (row[f"{col}_share"] - _share(base[1], c, key, region)) if base else float("nan")
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def cam_markdown(frame: pd.DataFrame) -> str:
    """The table as Markdown, shares and deltas to 3 decimals."""
    shown = frame.copy()
    for col in ("cam_share", "cam_delta", "attention_share", "attention_delta"):
        shown[col] = [("" if np.isnan(x) else f"{x:+.3f}" if col.endswith("delta") else f"{x:.3f}")
                      for x in shown[col].astype(float)]
    return shown.to_markdown(index=False, disable_numparse=True)  # keep "+0.025" and "0.550" as formatted


def cam_figure(data: StudyData, table: pd.DataFrame, path: Path) -> bool:
    """Tail classes (rows; the three smallest classes when the study has no tail) x variants (columns,
    baseline first): the mean Grad-CAM map over the variant's trials, its share in the class's AU half
    in the panel title, a dashed line where the halves meet. False (nothing written) without maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = _variants(data, table)
    classes = [c for c in (data.tail or list(np.argsort(data.class_counts)[:3]))
               if any(c in m for _, _, maps in variants for m in maps)]
    if not variants or not classes:
        return False
    fig, axes = plt.subplots(len(classes), len(variants), figsize=(1.9 * len(variants) + 1.2, 1.9 * len(classes) + 0.8),
                             dpi=90, squeeze=False, layout="constrained")  # constrained: room for the suptitle
    for i, c in enumerate(classes):
        region = _region(data, int(c))
        for j, (v, _, maps) in enumerate(variants):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            have = [m[c]["mean"] for m in maps if c in m]
            if not have:
                ax.axis("off")
                continue
            mean = np.mean(have, axis=0)
            ax.imshow(mean, cmap="cividis", vmin=0)
            ax.axhline(mean.shape[0] / 2 - 0.5, color="white", lw=0.8, ls="--")
            mass = half_mass(mean, region) if region else float("nan")
            share = "no AU half" if not region else f"{region}: no mass" if np.isnan(mass) else f"{region} {mass:.2f}"
            ax.set_title(f"{v}\n{share}" if i == 0 else share, fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{data.class_names[c]} ({data.class_counts[c]})", fontsize=7)
    fig.suptitle(f"{data.name}: mean Grad-CAM,\ntail classes (validation images)", fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True

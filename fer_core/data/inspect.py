"""``fer-study data inspect``: what a data source holds (class counts, AU frequencies, AU quirks)."""

from __future__ import annotations

from pathlib import Path

from fer_core.data.dataset import AU_VOCAB, SPLITS, TRAIN, FerDataset
from fer_core.data.rafce import TOKEN_KINDS, is_rafce_dir


def detect_source(path: str | Path) -> str:
    """``rafce`` (label files present), ``manifest`` (a .csv file) or ``folder``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return "manifest"
    if is_rafce_dir(p):
        return "rafce"
    return "folder"


def summarize(ds: FerDataset) -> dict:
    """JSON-able summary: per-split class counts, train AU frequencies, AU token kinds."""
    counts = {name: dict(zip(ds.class_names, ds.class_counts(i))) for i, name in enumerate(SPLITS)}
    train = ds.split == TRAIN
    n_train = int(train.sum())
    au_freq = {}
    if ds.has_aus and n_train:
        freq = ds.aus[train].mean(dim=0).tolist()
        au_freq = {f"AU{au}": round(f, 4) for au, f in zip(AU_VOCAB, freq)}
    kinds = ds.info.get("au_token_kinds") or {}
    return {
        "source": ds.info.get("source", "?"),
        "num_images": len(ds.labels),
        "img_size": int(ds.images.shape[-1]),
        "fingerprint": ds.fingerprint,
        "classes": list(ds.class_names),
        "split_sizes": {name: int((ds.split == i).sum()) for i, name in enumerate(SPLITS)},
        "class_counts": counts,
        "has_aus": ds.has_aus,
        "train_au_frequency": au_freq,
        "au_token_kinds": {k: int(kinds.get(k, 0)) for k in TOKEN_KINDS} if kinds else {},
    }


def format_summary(summary: dict) -> str:
    """Plain-text tables (no markup) for the terminal."""
    lines = [f"source: {summary['source']}  images: {summary['num_images']}  size: {summary['img_size']} px  "
             f"fingerprint: {summary['fingerprint'][:12]}"]
    sizes = summary["split_sizes"]
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    width = max(len(c) for c in summary["classes"])
    lines.append("")
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS))
    for c in summary["classes"]:
        lines.append(f"{c:<{width}}  " + "  ".join(f"{summary['class_counts'][s][c]:>6}" for s in SPLITS))
    if summary["train_au_frequency"]:
        lines.append("")
        lines.append("train AU frequency: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["train_au_frequency"].items()))
    else:
        lines.append("")
        lines.append("no AU labels")
    if summary["au_token_kinds"]:
        lines.append("AU tokens: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in summary["au_token_kinds"].items()))
    return "\n".join(lines)

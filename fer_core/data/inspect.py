"""``fer-study data inspect``: what a data source holds (class counts, AU frequencies, AU quirks)."""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.data.dataset import AU_VOCAB, RAFCE_STATS, SPLITS, TRAIN, FerDataset
from fer_core.data.rafce import TOKEN_KINDS, is_rafce_dir


def detect_source(path: str | Path) -> str:
    """``rafce`` (label files present), ``manifest`` (a .csv file) or ``folder``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return "manifest"
    if is_rafce_dir(p):
        return "rafce"
    return "folder"


def disk_px(path: Path) -> tuple[int, int] | None:
    """Width and height of one image file as stored (its header only), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # the decoder names the problem
        return None


# what ``peek(headers=True)`` (validate) cannot see without decoding every pixel, said in its plan
NOT_CHECKED = ("image pixel data is not decoded (a truncated file whose header is intact stops the launch, "
               "which decodes every image)")


def check_headers(paths: list[Path]) -> None:
    """Every image file's header (format and size, a few bytes each, read in threads): a 0-byte,
    corrupt or non-image file, and one past PIL's decompression-bomb limit, refused as the launch's
    decoder refuses it (``cache.decode_image``'s message). Pixels are not decoded."""
    import warnings
    from multiprocessing.pool import ThreadPool

    from PIL import Image

    from fer_core.errors import DataError

    def one(path: Path) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # past the limit: decode refuses
                with Image.open(path) as im:
                    w, h = im.size
                    if w * h > (Image.MAX_IMAGE_PIXELS or w * h):
                        raise Image.DecompressionBombError(f"{w}x{h} pixels, over the {Image.MAX_IMAGE_PIXELS} "
                                                           "pixel limit")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as err:
            return f"{path}: cannot decode image ({' '.join(str(err).split()) or type(err).__name__})"
        return None

    with ThreadPool(min(8, os.cpu_count() or 1)) as pool:  # file opens wait on the disk, not the CPU
        for problem in pool.imap(one, paths, chunksize=64):
            if problem is not None:
                raise DataError(problem)


def peek(dataset: str, data_path: str | None = None, data_seed: int = 0, val_fraction: float = 0.15,
         test_fraction: float = 0.15, headers: bool = False) -> dict:
    """What a trial's data source holds, from its label files and folder listing, without decoding an
    image (``validate``'s plan; no torch): kind, classes, training counts, AU labels, one image's size.
    The generated sets (``where`` None) are described from their recipes (made in the cache on first use).
    The checks the launch makes on the data run here too: no empty class, two trainable classes and a
    validation image, and with ``headers`` every image's header (``check_headers``; not its pixels)."""
    if dataset == "synthetic":
        names, counts = list(RAFCE_STATS["classes"]), list(RAFCE_STATS["partition_counts"]["0"])
        return {"kind": "synthetic", "where": None, "classes": names, "train_counts": counts,
                "has_aus": True, "px": None}  # the stand-in is written in the RAF-CE format, AU file included
    if dataset == "digits":
        from fer_core.data.digits import train_counts

        counts = train_counts()
        return {"kind": "digits", "where": None, "classes": [f"digit-{c}" for c in range(10)],
                "train_counts": counts, "has_aus": False, "px": (8, 8)}
    from fer_core.data.folder import read_folder
    from fer_core.data.manifest import read_manifest
    from fer_core.data.rafce import read_rafce

    path = Path(str(data_path)).expanduser()
    raw = {"rafce": lambda: read_rafce(path), "manifest": lambda: read_manifest(path),
           "folder": lambda: read_folder(path, val_fraction, test_fraction, data_seed)}[dataset]()
    from fer_core.data.dataset import VAL, check_trainable_counts
    from fer_core.data.raw import check_train_classes

    if len(raw.paths) == 0:
        from fer_core.errors import DataError

        raise DataError(f"{raw.root}: no images")
    check_train_classes(raw)
    train = raw.labels[raw.split == TRAIN]
    counts = [int((train == c).sum()) for c in range(len(raw.class_names))]
    check_trainable_counts(raw.class_names, counts, int((raw.split == VAL).sum()), str(data_path or dataset))
    if headers:
        check_headers(raw.paths)
    return {"kind": dataset, "where": str(path), "classes": list(raw.class_names), "train_counts": counts,
            "n_images": len(raw.labels), "has_aus": raw.has_aus, "px": disk_px(raw.paths[0]) if raw.paths else None}


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
    disk = summary.get("disk_px")
    on_disk = f" (first image on disk: {disk[0]}x{disk[1]} px)" if disk else ""
    lines = [f"source: {summary['source']}  images: {summary['num_images']}  decoded size: {summary['img_size']} px"
             f"{on_disk}  fingerprint: {summary['fingerprint'][:12]}"]
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

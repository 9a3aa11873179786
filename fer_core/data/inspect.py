"""``fer-study data inspect``: what a data source holds (class counts, AU frequencies, AU quirks)."""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.data.dataset import AU_VOCAB, RAFCE_STATS, SPLITS, TRAIN, FerDataset
from fer_core.data.rafce import TOKEN_KINDS, is_rafce_dir
from fer_core.data.raw import RawSource


def detect_source(path: str | Path) -> str:
    """The reader for a path, from the files present (module doc of each reader): ``rafce``, ``rafdb`` /
    ``rafdb_compound``, ``fer2013`` / ``ferplus``, ``affectnet``, ``expw``, ``ckplus``, ``manifest`` (any
    other .csv file) or ``folder`` (class folders)."""
    from fer_core.data.affectnet import is_affectnet_dir
    from fer_core.data.ckplus import is_ckplus_dir
    from fer_core.data.expw import is_expw_dir
    from fer_core.data.fer2013 import FERPLUS_FILE, fer2013_csv, has_fer2013
    from fer_core.data.published import header
    from fer_core.data.rafdb import is_rafdb_dir, rafdb_kind

    p = Path(path)
    if has_fer2013(p):
        return "ferplus" if (fer2013_csv(p).parent / FERPLUS_FILE).is_file() else "fer2013"
    if p.is_file() and p.suffix.lower() == ".csv":
        return "affectnet" if "subDirectory_filePath" in header(p) and is_affectnet_dir(p) else "manifest"
    if is_rafce_dir(p):
        return "rafce"
    if is_rafdb_dir(p):
        return rafdb_kind(p)
    if is_affectnet_dir(p):
        return "affectnet"
    if is_expw_dir(p):
        return "expw"
    if p.is_dir() and is_ckplus_dir(p):
        return "ckplus"
    return "folder"


def source_has_aus(dataset: str, data_path: str | None) -> bool:
    """Whether a source carries AU labels, from its kind and at most one file's header (``launch``
    decides which rows it can train before any label file is parsed): the stand-in and a RAF-CE release
    with its AU file do, a manifest with an ``aus`` column does; the other readers have none."""
    if dataset == "synthetic":
        return True
    if not data_path:
        return False
    p = Path(data_path).expanduser()
    if dataset == "rafce":
        from fer_core.data.rafce import AU_FILE

        return (p / AU_FILE).is_file()
    if dataset == "manifest":
        from fer_core.data.published import header

        return "aus" in header(p)
    return False


def read_raw(dataset: str, path: Path, data_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
             ferplus_labels: str = "majority", affectnet_classes: int = 7) -> RawSource:
    """The ``RawSource`` of a user's data set (label files parsed, nothing decoded, no torch)."""
    from fer_core.data.affectnet import read_affectnet
    from fer_core.data.ckplus import read_ckplus
    from fer_core.data.expw import read_expw
    from fer_core.data.fer2013 import read_fer2013
    from fer_core.data.folder import read_folder
    from fer_core.data.manifest import read_manifest
    from fer_core.data.rafce import read_rafce
    from fer_core.data.rafdb import read_rafdb

    return {"rafce": lambda: read_rafce(path), "manifest": lambda: read_manifest(path),
            "folder": lambda: read_folder(path, val_fraction, test_fraction, data_seed),
            "rafdb": lambda: read_rafdb(path, False, val_fraction, data_seed),
            "rafdb_compound": lambda: read_rafdb(path, True, val_fraction, data_seed),
            "fer2013": lambda: read_fer2013(path, plus=False),
            "ferplus": lambda: read_fer2013(path, plus=True, soft=ferplus_labels == "soft"),
            "affectnet": lambda: read_affectnet(path, affectnet_classes, val_fraction, data_seed),
            "expw": lambda: read_expw(path, val_fraction, test_fraction, data_seed),
            "ckplus": lambda: read_ckplus(path, val_fraction, test_fraction, data_seed)}[dataset]()


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
         test_fraction: float = 0.15, ferplus_labels: str = "majority", affectnet_classes: int = 7,
         headers: bool = False) -> dict:
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
    path = Path(str(data_path)).expanduser()
    raw = read_raw(dataset, path, data_seed, val_fraction, test_fraction, ferplus_labels, affectnet_classes)
    from fer_core.data.dataset import VAL, check_trainable_counts
    from fer_core.data.raw import check_train_classes

    if len(raw.labels) == 0:
        from fer_core.errors import DataError

        raise DataError(f"{raw.root}: no images")
    check_train_classes(raw)
    train = raw.labels[raw.split == TRAIN]
    counts = [int((train == c).sum()) for c in range(len(raw.class_names))]
    check_trainable_counts(raw.class_names, counts, int((raw.split == VAL).sum()), str(data_path or dataset))
    if headers and raw.paths:  # FER2013 keeps its images in the CSV: no file headers to read
        check_headers(raw.paths)
    # FER2013 keeps its 48x48 images in the CSV: no file to look at
    px = disk_px(raw.paths[0]) if raw.paths else (48, 48) if raw.pixels is not None else None
    return {"kind": dataset, "where": str(path), "classes": list(raw.class_names), "train_counts": counts,
            "n_images": len(raw.labels), "has_aus": raw.has_aus, "px": px}


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
    train_counts = [n for n in ds.class_counts(TRAIN) if n > 0]
    return {
        "source": ds.info.get("source", "?"),
        "format": ds.info.get("format") or ds.info.get("source", "?"),
        # largest / smallest training class (classes with no training image are named by the counts)
        "imbalance_ratio": round(max(train_counts) / min(train_counts), 2) if train_counts else None,
        "dropped": dict(ds.info.get("dropped") or {}),
        "carves": list(ds.info.get("carves") or []),
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
    lines.append(f"format: {summary['format']}")
    sizes = summary["split_sizes"]
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if summary.get("imbalance_ratio") is not None:
        lines.append(f"imbalance ratio (largest / smallest training class): {summary['imbalance_ratio']:g}")
    for carved in summary.get("carves") or []:
        lines.append(carved)
    dropped = summary.get("dropped") or {}
    lines.append("dropped: " + (", ".join(f"{why} {n}" for why, n in dropped.items()) if dropped else "none"))
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

"""``load_dataset``: name -> reader -> decoded, cached ``FerDataset``.

``DATASETS`` maps the config value ``dataset`` to a reader that returns a ``RawSource``;
``cache.build_dataset`` does the decoding and caching for all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_core.config_rules import GENERATED  # noqa: F401  (made in the cache on first use: no data_path)
from fer_core.data.affectnet import read_affectnet
from fer_core.data.cache import build_dataset, build_once, cache_root
from fer_core.data.ckplus import read_ckplus
from fer_core.data.dataset import FerDataset
from fer_core.data.digits import IMBALANCE_RATIO, digits_dir
from fer_core.data.expw import read_expw
from fer_core.data.fer2013 import read_fer2013
from fer_core.data.folder import read_folder
from fer_core.data.manifest import read_manifest
from fer_core.data.rafce import read_rafce
from fer_core.data.rafdb import read_rafdb
from fer_core.data.raw import RawSource
from fer_core.data.synthetic import SYNTH_VERSION, synthesize_rafce
from fer_core.errors import ConfigError
from fer_core.registry import Registry, lookup

if TYPE_CHECKING:
    from fer_core.config import TrainConfig

DATASETS = Registry("dataset", "dataset")
# the config keys that decide which decoded data set a trial needs (data_key)
DATA_KEYS = ("dataset", "data_path", "img_size", "data_seed", "val_fraction", "test_fraction", "cache_dir",
             "ferplus_labels", "affectnet_classes")


def _standin_ready(target: Path) -> bool:
    try:
        return json.loads((target / "STANDIN.json").read_text()).get("version") == SYNTH_VERSION
    except (OSError, ValueError):
        return False


def synthetic_dir(root: Path, seed: int, img_size: int) -> Path:
    """The stand-in for (seed, size), generated on first use; same files as ``data synth`` writes."""
    return build_once(root / f"synthetic-rafce-seed{seed}-{img_size}px", _standin_ready,
                      lambda tmp: synthesize_rafce(tmp, seed=seed, img_size=img_size))


@DATASETS.register("synthetic")
def _synthetic(data_path: str | None, img_size: int, data_seed: int, cache: Path, **_: object) -> RawSource:
    root = synthetic_dir(cache, data_seed, img_size)
    raw = read_rafce(root)  # the stand-in goes through the real RAF-CE reader on purpose
    raw.kind = "synthetic"
    raw.info["source"] = "synthetic"
    raw.info["seed"] = data_seed
    return raw


def _need_path(data_path: str | None, name: str) -> Path:
    if not data_path:
        raise ConfigError(f"data_path is required for dataset {name!r}")
    return Path(data_path).expanduser()


@DATASETS.register("digits")
def _digits(data_seed: int, cache: Path, **_: object) -> RawSource:
    """scikit-learn's 1,797 real 8x8 digit scans cut long-tailed (fer_core/data/digits.py)."""
    root = digits_dir(cache, data_seed)
    raw = read_folder(root)
    raw.kind = "digits"
    raw.info.update(source="sklearn digits, long-tailed", seed=data_seed, imbalance_ratio=IMBALANCE_RATIO)
    return raw


@DATASETS.register("rafce")
def _rafce(data_path: str | None, **_: object) -> RawSource:
    return read_rafce(_need_path(data_path, "rafce"))


@DATASETS.register("manifest")
def _manifest(data_path: str | None, **_: object) -> RawSource:
    return read_manifest(_need_path(data_path, "manifest"))


@DATASETS.register("folder")
def _folder(data_path: str | None, data_seed: int, val_fraction: float, test_fraction: float,
            **_: object) -> RawSource:
    return read_folder(_need_path(data_path, "folder"), val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=data_seed)


# the published releases (fer_core/data/<release>.py); each carves the splits its release lacks with
# data_seed and val_fraction (and test_fraction where it has no test split either)
@DATASETS.register("rafdb")
def _rafdb(data_path: str | None, data_seed: int, val_fraction: float, **_: object) -> RawSource:
    return read_rafdb(_need_path(data_path, "rafdb"), compound=False, val_fraction=val_fraction, seed=data_seed)


@DATASETS.register("rafdb_compound")
def _rafdb_compound(data_path: str | None, data_seed: int, val_fraction: float, **_: object) -> RawSource:
    return read_rafdb(_need_path(data_path, "rafdb_compound"), compound=True, val_fraction=val_fraction,
                      seed=data_seed)


@DATASETS.register("fer2013")
def _fer2013(data_path: str | None, **_: object) -> RawSource:
    return read_fer2013(_need_path(data_path, "fer2013"), plus=False)


@DATASETS.register("ferplus")
def _ferplus(data_path: str | None, ferplus_labels: str = "majority", **_: object) -> RawSource:
    return read_fer2013(_need_path(data_path, "ferplus"), plus=True, soft=ferplus_labels == "soft")


@DATASETS.register("affectnet")
def _affectnet(data_path: str | None, data_seed: int, val_fraction: float, affectnet_classes: int = 7,
               **_: object) -> RawSource:
    return read_affectnet(_need_path(data_path, "affectnet"), num_classes=affectnet_classes,
                          val_fraction=val_fraction, seed=data_seed)


@DATASETS.register("expw")
def _expw(data_path: str | None, data_seed: int, val_fraction: float, test_fraction: float,
          **_: object) -> RawSource:
    return read_expw(_need_path(data_path, "expw"), val_fraction=val_fraction, test_fraction=test_fraction,
                     seed=data_seed)


@DATASETS.register("ckplus")
def _ckplus(data_path: str | None, data_seed: int, val_fraction: float, test_fraction: float,
            **_: object) -> RawSource:
    return read_ckplus(_need_path(data_path, "ckplus"), val_fraction=val_fraction, test_fraction=test_fraction,
                       seed=data_seed)


def load_dataset(
    dataset: str = "synthetic",
    data_path: str | None = None,
    img_size: int = 64,
    data_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    cache_dir: str | Path | None = None,
    ferplus_labels: str = "majority",
    affectnet_classes: int = 7,
) -> FerDataset:
    """Read, decode once and cache a data source; ``info["from_cache"]`` says whether it decoded."""
    reader = lookup(DATASETS, dataset)
    if not isinstance(img_size, int) or isinstance(img_size, bool) or not 16 <= img_size <= 1024:
        raise ConfigError(f"img_size: {img_size!r} must be an integer in 16..1024")
    cache = cache_root(cache_dir)
    raw = reader(data_path=str(data_path) if data_path is not None else None, img_size=img_size,
                 data_seed=data_seed, val_fraction=val_fraction, test_fraction=test_fraction, cache=cache,
                 ferplus_labels=ferplus_labels, affectnet_classes=affectnet_classes)
    ds = build_dataset(raw, img_size, cache)
    ds.info["dataset"] = dataset
    return ds


def data_key(cfg: dict[str, Any]) -> tuple:
    """Which decoded data set a trial config needs (trials differing only in recipe share one)."""
    from fer_core.config import resolve_config

    c = resolve_config(cfg, check_names=False)
    return tuple(getattr(c, k) for k in DATA_KEYS)


def dataset_for(cfg: TrainConfig) -> FerDataset:
    """The decoded data set a config trains on; one that cannot be trained on (one class, no
    validation image) is refused here, before ``train`` trains or ``launch`` stores anything."""
    ds = load_dataset(
        dataset=cfg.dataset,
        data_path=cfg.data_path,
        img_size=cfg.img_size,
        data_seed=cfg.data_seed,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        cache_dir=cfg.cache_dir,
        ferplus_labels=cfg.ferplus_labels,
        affectnet_classes=cfg.affectnet_classes,
    )
    ds.check_trainable(cfg.data_path or cfg.dataset)
    return ds

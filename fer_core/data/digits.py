"""A long-tailed cut of real data that no one here wrote: scikit-learn's bundled digits.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 scans of handwritten digits (UCI
"Optical Recognition of Handwritten Digits"), about 180 per class, offline. The cut follows
the long-tail benchmarks' recipe (Cao et al., NeurIPS 2019, CIFAR-10-LT: an exponential
profile n_c = n_max * ratio^(-c / (K - 1))) with imbalance ratio 50: training images per
class 100, 65, 42, 27, 18, 11, 7, 5, 3, 2 (digit 0 is the head, digit 9 the tail), and a
*balanced* validation and test split of 30 images per class each, so every class is judged
on as many images as every other. Which scans go where is drawn with ``data_seed``.

The images are written once as PNG split folders (``train|val|test/digit-N/*.png``) under the
cache and read through the ordinary image-folder reader, so they travel the same path as a
user's own data. They carry no AU labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMBALANCE_RATIO = 50
N_MAX = 100
PER_EVAL_SPLIT = 30
DIGITS_VERSION = 1


def train_counts(k: int = 10, n_max: int = N_MAX, ratio: float = IMBALANCE_RATIO) -> list[int]:
    return [round(n_max * ratio ** (-c / (k - 1))) for c in range(k)]


def _ready(target: Path) -> bool:
    try:
        return json.loads((target / "DIGITS.json").read_text()).get("version") == DIGITS_VERSION
    except (OSError, ValueError):
        return False


def write_digits(out: Path, seed: int) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255 / 16), 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    rng = np.random.default_rng(seed)
    counts = train_counts()
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        parts = {"test": idx[:PER_EVAL_SPLIT], "val": idx[PER_EVAL_SPLIT:2 * PER_EVAL_SPLIT],
                 "train": idx[2 * PER_EVAL_SPLIT:2 * PER_EVAL_SPLIT + counts[c]]}
        for split, members in parts.items():
            folder = out / split / f"digit-{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in members:
                Image.fromarray(images[i]).convert("RGB").save(folder / f"scan-{i:04d}.png")
    (out / "DIGITS.json").write_text(json.dumps({"version": DIGITS_VERSION, "seed": seed, "train_counts": counts,
                                                 "per_eval_split": PER_EVAL_SPLIT}))


def digits_dir(root: Path, seed: int) -> Path:
    from fer_core.data.cache import build_once  # torch: not needed for train_counts (validate's plan)

    return build_once(root / f"digits-lt-r{IMBALANCE_RATIO}-seed{seed}", _ready, lambda tmp: write_digits(tmp, seed))

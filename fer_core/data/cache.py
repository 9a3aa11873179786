"""Decode a ``RawSource`` once into a ``FerDataset`` and cache it on disk by content fingerprint.

The fingerprint is a sha256 over the reader version, the decode size, the label files, the
parsed targets and every image's bytes, so editing a label or an image gives a new cache
entry while a second load of unchanged data only hashes files and skips JPEG decoding.
Cache dir: the ``cache_dir`` argument, else ``$FER_STUDY_CACHE``, else ``~/.cache/fer-study``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fer_core.data.dataset import FerDataset
from fer_core.data.raw import RawSource, check_train_classes
from fer_core.errors import DataError

READER_VERSION = 1  # bump when decoding or parsing changes what a source turns into


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FER_STUDY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fer-study"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def decode_image(path: Path, size: int, box: np.ndarray | None = None) -> np.ndarray:
    """One image file -> uint8 (3,size,size) RGB; ``box`` (x0, y0, x1, y1) is cropped first (clipped to
    the image: published face boxes overhang the border). Module-level so tests can count calls."""
    try:
        with Image.open(path) as im:
            if box is None:
                im.draft("RGB", (size, size))  # JPEG: let libjpeg downscale large photos while decoding
            im.load()  # raises on truncated data (PIL's LOAD_TRUNCATED_IMAGES stays off)
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot decode image ({_one_line(err)})") from None
    if box is not None:
        w, h = rgb.size
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise DataError(f"{path}: face box {[int(v) for v in box]} lies outside the {w}x{h} image")
        rgb = rgb.crop((x0, y0, x1, y1))
    if rgb.size != (size, size):
        # non-square crops are stretched: aligned face crops are square already
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _file_digest(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def fingerprint(raw: RawSource, img_size: int) -> str:
    h = hashlib.sha256()
    header = {"version": READER_VERSION, "kind": raw.kind, "img_size": img_size,
              "classes": list(raw.class_names), "has_aus": raw.has_aus, "extra": raw.fingerprint_extra}
    h.update(json.dumps(header, sort_keys=True).encode())
    for f in raw.label_files:
        h.update(f.name.encode() + b"\0")
        h.update(_file_digest(f))
    for arr in (raw.labels, raw.aus, raw.split, raw.boxes, raw.soft_labels):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    with ThreadPool(_threads()) as pool:
        digests = pool.map(_file_digest, raw.paths, chunksize=64)
    for key, path, d in zip(raw.keys, raw.paths, digests):
        h.update(f"{key}\0{path.name}\0".encode())
        h.update(d)
    return h.hexdigest()


def _threads() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def decode_all(paths: list[Path], size: int, boxes: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        # global lookup: monkeypatching decode_image works
        out[i] = decode_image(paths[i], size) if boxes is None else decode_image(paths[i], size, boxes[i])

    with ThreadPool(_threads()) as pool:  # PIL releases the GIL while decoding
        pool.map(work, range(len(paths)), chunksize=32)
    return out


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """In-memory images (N,H,W) grey or (N,H,W,3) -> uint8 (N,3,size,size), resized as whole batches
    (torch, antialiased bilinear): FER2013's 35,887 48x48 rows in about a second, no per-image PIL round trip."""
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    out = torch.empty((x.shape[0], 3, size, size), dtype=torch.uint8)
    for lo in range(0, x.shape[0], 4096):  # bounded float memory whatever N is
        chunk = x[lo:lo + 4096]
        if chunk.shape[-2:] != (size, size):
            chunk = torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                                    antialias=True, align_corners=False)
            chunk = chunk.round().clamp(0, 255).to(torch.uint8)
        out[lo:lo + 4096] = chunk.expand(-1, 3, -1, -1)
    return out.numpy()


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_dataset(raw: RawSource, img_size: int, cache_dir: str | Path | None = None) -> FerDataset:
    """Fingerprint ``raw``; load the decoded tensors from the cache or decode and store them."""
    if raw.num_images == 0:
        raise DataError(f"{raw.root}: no images")
    check_train_classes(raw)
    fp = fingerprint(raw, img_size)
    path = cache_root(cache_dir) / "decoded" / f"{raw.kind}-{fp[:32]}.pt"
    images = None
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            if blob.get("fingerprint") == fp:
                images = blob["images"]
        except Exception:  # unreadable cache entry: decode again and overwrite it
            images = None
    from_cache = images is not None
    if images is None:
        images = torch.from_numpy(resize_pixels(raw.pixels(), img_size) if raw.pixels is not None
                                  else decode_all(raw.paths, img_size, raw.boxes))
        # labels/AUs/splits are re-parsed on every load (cheap); stored too so the file stands alone
        _atomic_save({"fingerprint": fp, "version": READER_VERSION, "images": images,
                      "labels": torch.from_numpy(raw.labels), "aus": torch.from_numpy(raw.aus),
                      "split": torch.from_numpy(raw.split), "class_names": list(raw.class_names),
                      "keys": list(raw.keys)}, path)
    info = dict(raw.info)
    info.update(from_cache=from_cache, cache_file=str(path), num_images=raw.num_images, img_size=img_size)
    return FerDataset(
        images=images,
        labels=torch.from_numpy(raw.labels.astype(np.int64)),
        aus=torch.from_numpy(raw.aus.astype(np.float32)),
        split=torch.from_numpy(raw.split.astype(np.int8)),
        class_names=tuple(raw.class_names),
        fingerprint=fp,
        has_aus=raw.has_aus,
        keys=tuple(raw.keys),
        info=info,
        soft_labels=None if raw.soft_labels is None else torch.from_numpy(raw.soft_labels.astype(np.float32)),
    )


def build_once(target: Path, ready: Callable[[Path], bool], write: Callable[[Path], object]) -> Path:
    """``target``, written by ``write(tmp_dir)`` unless ``ready(target)``; atomic and race-free."""
    if ready(target):
        return target
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    # one process renders, the others wait for it and use its result: drivers launched together on a
    # cold cache must not each treat the winner's finished stand-in as stale and move it from under
    # a reader (seen with 4 concurrent `fer-study launch`: "image for key ... not found")
    with open(root / f".{target.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready(target):
            return target
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{target.name}-"))
        try:
            write(tmp)
            if target.exists():  # stale generator version: move it aside, then swap the new one in
                old = Path(tempfile.mkdtemp(dir=root, prefix=f".old-{target.name}-"))
                os.replace(target, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, target)  # atomic: readers never see a half-written stand-in
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target

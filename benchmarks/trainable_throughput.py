"""Images/s of ``train_fer``'s loop vs a plain PyTorch loop, side by side in one run.

The plain loop is what a user writes by hand: torchvision ``ImageFolder`` over the same
JPEG files, PIL transforms of the same family and magnitude as ``aug_strength: 1``
(flip, affine, colour jitter, random erasing), a ``DataLoader``, the same timm model
(backbone + emotion head), image size, batch size, AdamW and cross-entropy.
Only training steps are timed (no evaluation), after one warm-up pass each.

    python benchmarks/trainable_throughput.py            # default config: resnet10t, 64 px, batch 64
    python benchmarks/trainable_throughput.py --tiny     # seconds; used by the test suite

The default config's ``amp: auto`` picks fp32 or bf16 by timing a few steps (fer_core/precision.py);
on a CPU with native bf16 (AVX512-BF16 or AMX) a second train_fer row forces ``amp: bf16``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from fer_core.data.dataset import TRAIN
from fer_core.data.sources import load_dataset
from fer_core.data.synthetic import synthesize_rafce
from fer_core.models import FerNet
from fer_core.train import train_fer


def image_folder(rafce_dir: Path, ds, out: Path) -> Path:
    """Symlink the stand-in's train JPEGs into ImageFolder layout (same files, no copy)."""
    names = {k: i for i, k in enumerate(ds.keys)}
    for key, idx in names.items():
        if int(ds.split[idx]) != TRAIN:
            continue
        cls = out / f"{int(ds.labels[idx]):02d}"
        cls.mkdir(parents=True, exist_ok=True)
        stem = Path(key).stem
        src = rafce_dir / "aligned" / f"{stem}_aligned.jpg"
        (cls / f"{stem}.jpg").symlink_to(src)
    return out


def plain_loop(root: Path, backbone: str, size: int, batch: int, workers: int, max_batches: int) -> float:
    tf = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomAffine(15, translate=(0.1, 0.1), scale=(0.85, 1.15)),
        transforms.ColorJitter(0.4, 0.4, 0.4),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        transforms.RandomErasing(p=0.5, scale=(0.02, 0.2)),
    ])
    loader = DataLoader(datasets.ImageFolder(str(root), tf), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    model = FerNet(backbone, 14, 18)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    seen, t0 = 0, None
    for epoch in range(2):  # epoch 0 warms up (workers, allocator); epoch 1 is timed
        if epoch == 1:
            t0, seen = time.perf_counter(), 0
        for i, (x, y) in enumerate(loader):
            if i >= max_batches:
                break
            loss = F.cross_entropy(model(x)["logits"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def fer_loop(ds, backbone: str, size: int, batch: int, amp: str = "auto") -> float:
    rates: list[float] = []
    cfg = {"backbone": backbone, "img_size": size, "batch_size": batch, "epochs": 2, "warmup_epochs": 0,
           "aug_strength": 1.0, "amp": amp}
    train_fer(cfg, lambda m, checkpoint=None: rates.append(m["images_per_s"]), dataset=ds)
    return rates[-1]  # epoch 0 warms up; the trainer times training steps only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["resnet10t", "mobilenetv3_small_100", "test_resnet"],
                    help="timm models, each measured side by side (resnet10t is the default config's)")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers tried for the plain loop")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (median reported)")
    ap.add_argument("--tiny", action="store_true", help="test_resnet at 48 px on a few batches (for CI)")
    ap.add_argument("--no-bf16", action="store_true",
                    help="skip the forced row: train_fer with amp: bf16 on a CPU with native bf16 (AVX512-BF16/AMX)")
    args = ap.parse_args()
    if args.tiny:
        args.backbones, args.img_size, args.batch_size, args.workers, args.rounds = ["test_resnet"], 48, 32, [0], 1
    # the default config (amp: auto) trains in the precision it measured faster; a CPU whose oneDNN
    # has bf16 kernels gets a second train_fer row with `amp: bf16` forced
    amps = ["auto"] + (["bf16"] if not args.no_bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rafce = synthesize_rafce(tmp / "rafce", seed=0, img_size=args.img_size)
        ds = load_dataset(dataset="rafce", data_path=str(rafce), img_size=args.img_size, cache_dir=tmp / "cache")
        if args.tiny:  # a few batches' worth of training images keeps CI fast
            ds = ds.subset_per_class({0: 12, 1: 2, 2: 2})
        root = image_folder(rafce, ds, tmp / "folder")
        n_train = int((ds.split == TRAIN).sum())
        max_batches = n_train // args.batch_size
        print(f"img_size={args.img_size} batch={args.batch_size} train images={n_train} "
              f"threads={torch.get_num_threads()} device=cpu", flush=True)
        for backbone in args.backbones:
            # interleaved rounds, median of each: a shared VM's speed drifts between minutes. The rows'
            # order rotates each round: a row's place in the round moved its rate by ~6 % here (resnet10t,
            # the same bf16 config in both train_fer rows: 387 img/s first, 409 second; RESULTS.md)
            fers, plains = {a: [] for a in amps}, {w: [] for w in args.workers}
            rows = [("fer", a) for a in amps] + [("plain", w) for w in args.workers]
            for r in range(args.rounds):
                for kind, x in rows[r % len(rows):] + rows[:r % len(rows)]:
                    if kind == "fer":
                        fers[x].append(fer_loop(ds, backbone, args.img_size, args.batch_size, x))
                    else:
                        plains[x].append(plain_loop(root, backbone, args.img_size, args.batch_size, x, max_batches))
            plain = {w: statistics.median(v) for w, v in plains.items()}
            best_w = max(plain, key=plain.get)
            for w, r in plain.items():
                print(f"{backbone:22s} plain loop (ImageFolder+PIL+DataLoader, workers={w}): {r:8.1f} images/s")
            for a in amps:
                fer = statistics.median(fers[a])
                what = "amp: auto, the default" if a == "auto" else "amp: bf16, forced"
                print(f"{backbone:22s} train_fer loop ({what}):{' ' * (20 - len(what))}{fer:8.1f} images/s")
                print(f"{backbone:22s} ratio train_fer ({what}) / best plain loop (workers={best_w}): "
                      f"{fer / plain[best_w]:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

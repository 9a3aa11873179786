"""What do class activation maps (``cam_samples``) add to a trial's wall time? (issue 22: at most 5 %)

At the cpu profile of studies/au-attention.yaml (test_resnet, 64 px, 8 epochs, AU loss 0.5), for the
linear and the au_attention head: one trial without maps, timed from ``train_fer`` to its outputs
written (``write_trial_outputs``), then, side by side on that trial's selected model, exactly what
``cam_samples: 8`` adds to it (train_fer's step 12: the AU halves per class, Grad-CAM and attention
maps of the seeded sample; then ``write_cams``: cams.npz and the PNG grids). Timing the maps on the
same model rather than as a second whole trial keeps the figure out of the noise of a shared CPU
(two runs of one trial differ by more than the maps cost there). The grad-cam import is paid once per
worker process (Ray reuses workers across trials) and printed on its own. ``--epochs`` below the
profile's 8 (a slow machine): the ratio at 8 epochs is also given, from the measured epoch times.

    python benchmarks/cam_overhead.py            # cpu profile, seed 0, both heads
    python benchmarks/cam_overhead.py --tiny     # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import statistics as st
import tempfile
import time
from pathlib import Path

import numpy as np

from fer_core.cam import class_activation_maps, class_regions
from fer_core.config import resolve_config
from fer_core.data.dataset import AU_VOCAB, TEST, TRAIN, VAL
from fer_core.data.sources import dataset_for
from fer_core.models import FerNet
from fer_core.study.outputs import write_cams, write_trial_outputs
from fer_core.train import train_fer

PROFILE_EPOCHS = 8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores of this process)")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.seeds, args.epochs, args.img_size = [0], 1, 48
    base = resolve_config({"backbone": "test_resnet", "img_size": args.img_size, "batch_size": 32,
                           "epochs": args.epochs, "warmup_epochs": 0 if args.epochs < 2 else 1, "au_weight": 0.5,
                           "device": "cpu", "num_threads": args.threads}).model_dump()
    ds = dataset_for(resolve_config(base))
    if args.tiny:
        ds = ds.subset_per_class({TRAIN: 24, VAL: 8, TEST: 8})
    t0 = time.perf_counter()
    import pytorch_grad_cam  # noqa: F401  (once per worker process, not per trial)

    print(f"import pytorch_grad_cam: {time.perf_counter() - t0:.2f} s (once per worker process)", flush=True)
    train_idx, val_idx = ds.indices(TRAIN), ds.indices(VAL)
    ratios, ratios8 = [], []
    for head in ("linear", "au_attention"):
        for seed in args.seeds:
            cfg = {**base, "head": head, "seed": seed}
            with tempfile.TemporaryDirectory() as d:
                start = time.perf_counter()
                result = train_fer(cfg, dataset=ds)
                write_trial_outputs(d, result)
                trial = time.perf_counter() - start
                model = FerNet("test_resnet", ds.num_classes, len(AU_VOCAB), head=head)
                model.load_state_dict(result["model_state"])
                start = time.perf_counter()  # what cam_samples adds: train_fer's step 12, then write_cams
                regions = class_regions(ds.aus[train_idx].numpy(), ds.labels[train_idx].numpy(), ds.num_classes)
                cams = class_activation_maps(model, ds.images, val_idx, ds.labels[val_idx].numpy(), ds.class_names,
                                             regions, args.samples, seed)
                write_cams(Path(d), cams, list(ds.class_names))
                maps = time.perf_counter() - start
            epoch_s = float(np.mean([h["epoch_s"] for h in result["history"]]))
            at8 = trial + max(0, PROFILE_EPOCHS - args.epochs) * epoch_s
            ratios.append((trial + maps) / trial)
            ratios8.append((at8 + maps) / at8)
            print(f"{head:12s} seed {seed}: trial {trial:.1f} s ({args.epochs} epochs, {epoch_s:.1f} s each), maps "
                  f"{maps:.2f} s ({sum(e['n'] for e in cams.values())} images)", flush=True)
        print(f"{head}: trial wall time ratio with/without maps: {st.mean(ratios[-len(args.seeds):]):.3f}x "
              f"at {args.epochs} epochs; at the profile's {PROFILE_EPOCHS} epochs: "
              f"{st.mean(ratios8[-len(args.seeds):]):.3f}x", flush=True)
    print(f"\ntest_resnet {args.img_size}px, seeds {args.seeds}; overall ratio with/without maps: {st.mean(ratios):.3f}x "
          f"at {args.epochs} epochs, {st.mean(ratios8):.3f}x at {PROFILE_EPOCHS} (extrapolated from epoch times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

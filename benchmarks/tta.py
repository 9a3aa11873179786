"""What does test-time augmentation add, per class? (issue 7)

Trains one model per seed on the synthetic RAF-CE stand-in, then evaluates its selected
epoch with every ``tta`` entry (``none``, ``flip``, ``multi_crop``) on validation and test:
macro-F1, tail macro-F1 and the per-class validation F1 change vs no TTA.

    python benchmarks/tta.py                      # test_resnet 48 px, 8 epochs, seeds 0 1
    python benchmarks/tta.py --tiny               # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import statistics as st
import sys
import time

import torch

from fer_core.config import resolve_config
from fer_core.data.dataset import AU_VOCAB, TEST, VAL
from fer_core.data.sources import dataset_for
from fer_core.metrics import classification_metrics
from fer_core.models import FerNet
from fer_core.train import predict, train_fer
from fer_core.tta import TTA


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.seeds, args.epochs = [0], 1
    cfg = resolve_config({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "warmup_epochs": 0,
                          "epochs": args.epochs})
    ds = dataset_for(cfg)
    t0 = time.time()
    scores: dict[str, dict[str, list]] = {name: {"val": [], "test": [], "tail": [], "f1": []} for name in TTA}
    for seed in args.seeds:
        result = train_fer({**cfg.model_dump(), "seed": seed}, dataset=ds)
        model = FerNet(cfg.backbone, ds.num_classes, len(AU_VOCAB))
        model.load_state_dict(result["model_state"])
        for name in TTA:
            for split, key in ((VAL, "val"), (TEST, "test")):
                idx = ds.indices(split)
                probs = predict(model, ds.images, idx, cfg, False, False, tta=name)["probs"]
                m = classification_metrics(ds.labels[idx].numpy(), probs.argmax(1), ds.num_classes, result["groups"])
                scores[name][key].append(m["macro_f1"])
                if key == "val":
                    scores[name]["tail"].append(m["tail_f1"])
                    scores[name]["f1"].append(m["f1"])
            print(f"seed {seed} tta {name:10s}: val macro-F1 {scores[name]['val'][-1]:.3f} "
                  f"test {scores[name]['test'][-1]:.3f}", flush=True)

    def ms(vals: list[float]) -> str:
        return f"{st.mean(vals):.3f} ± {st.stdev(vals) if len(vals) > 1 else 0.0:.3f}"

    print(f"\n{cfg.backbone} {cfg.img_size}px {args.epochs} epochs, seeds {args.seeds}; {time.time() - t0:.0f} s")
    print("| tta | val macro-F1 | Δ val vs none | test macro-F1 | Δ test vs none | val tail F1 |")
    print("|---|---|---|---|---|---|")
    base = scores["none"]
    for name, s in scores.items():
        dv = [a - b for a, b in zip(s["val"], base["val"])]
        dt = [a - b for a, b in zip(s["test"], base["test"])]
        print(f"| {name} | {ms(s['val'])} | {ms(dv)} | {ms(s['test'])} | {ms(dt)} | {ms(s['tail'])} |")
    print("\nper-class Δ validation F1 vs none (mean over seeds):")
    for name in TTA:
        if name == "none":
            continue
        d = torch.tensor(scores[name]["f1"]).mean(0) - torch.tensor(base["f1"]).mean(0)
        print(f"{name:10s} " + " ".join(f"{c}:{v:+.2f}" for c, v in enumerate(d.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does distillation from a teacher improve a tiny student over training alone? (issue 7 acceptance)

On the synthetic RAF-CE stand-in: a teacher trains on the whole training split; a tiny
student trains on a small per-class subset of it (the few-images regime of the tail
classes), once alone and once with the teacher's soft targets (``teacher``,
``distill_alpha``, ``distill_temperature``), same seeds, same budget. Prints validation
and test macro-F1 (mean ± sd over seeds, on the full validation and test splits) and
the paired gain.

    python benchmarks/distillation.py                        # few images: <= 40 per class, 6 epochs
    python benchmarks/distillation.py --per-class 0 --student-epochs 2   # all images, a short budget
    python benchmarks/distillation.py --tiny                 # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import statistics as st
import sys
import tempfile
import time
from pathlib import Path

import torch

from fer_core.checkpoint import model_payload
from fer_core.config import resolve_config
from fer_core.data.dataset import TEST, TRAIN, VAL
from fer_core.data.sources import dataset_for
from fer_core.train import train_fer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--student-epochs", type=int, default=6)
    ap.add_argument("--per-class", type=int, default=40,
                    help="student training images per class (at most; 0 = the whole training split)")
    ap.add_argument("--alpha", type=float, default=0.7)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.seeds, args.teacher_epochs, args.student_epochs, args.per_class = [0], 1, 1, 8
    base = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "warmup_epochs": 0}
    full = dataset_for(resolve_config(base))
    n_eval = 10_000 if not args.tiny else 8
    student_ds = full.subset_per_class({TRAIN: args.per_class, VAL: n_eval, TEST: n_eval}) if args.per_class else full
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        teacher = train_fer({**base, "epochs": args.teacher_epochs, "seed": 100}, dataset=full)
        path = str(Path(d) / "teacher.pt")
        torch.save(model_payload(teacher), path)
        print(f"teacher ({args.teacher_epochs} epochs, {int((full.split == TRAIN).sum())} images): val macro-F1 "
              f"{teacher['val']['macro_f1']:.3f}, test {teacher['test']['macro_f1']:.3f}", flush=True)
        runs: dict[str, list[dict]] = {"alone": [], "distilled": []}
        for seed in args.seeds:
            cfg = {**base, "epochs": args.student_epochs, "seed": seed}
            for name, extra in (("alone", {}), ("distilled", {"teacher": path, "distill_alpha": args.alpha,
                                                               "distill_temperature": args.temperature})):
                r = train_fer({**cfg, **extra}, dataset=student_ds)
                runs[name].append(r)
                print(f"student {name:9s} seed {seed}: val macro-F1 {r['val']['macro_f1']:.3f} | "
                      f"test macro-F1 {r['test']['macro_f1']:.3f}", flush=True)

    def ms(vals: list[float]) -> str:
        return f"{st.mean(vals):.3f} ± {st.stdev(vals) if len(vals) > 1 else 0.0:.3f}"

    print(f"\nstudent: test_resnet 48px, {args.student_epochs} epochs on {int((student_ds.split == TRAIN).sum())} "
          f"training images ({f'<= {args.per_class} per class' if args.per_class else 'all'}); alpha {args.alpha}, T {args.temperature}; "
          f"seeds {args.seeds}; {time.time() - t0:.0f} s")
    print("| student | val macro-F1 | test macro-F1 |")
    print("|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {ms([r['val']['macro_f1'] for r in rs])} | {ms([r['test']['macro_f1'] for r in rs])} |")
    for split in ("val", "test"):
        gain = [b[split]["macro_f1"] - a[split]["macro_f1"] for a, b in zip(runs["alone"], runs["distilled"])]
        print(f"gain {split} macro-F1 (distilled - alone, paired by seed): {ms(gain)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a re-balancing recipe beat plain CE on the tail classes of the stand-in? (issue 2 acceptance)

Trains each recipe with the same budget (the default config) over several seeds on the
synthetic RAF-CE stand-in and prints validation/test macro-F1 and tail macro-F1
(tail = classes with <= 100 training images: 12, 13, 8, 4), mean ± sd over seeds.

    python benchmarks/tail_recipes.py                      # default config, seeds 0 1 2
    python benchmarks/tail_recipes.py --seeds 0 --set epochs=2 --set backbone=test_resnet --set img_size=48
"""

from __future__ import annotations

import argparse
import statistics as st
import sys

from fer_core.config import build_config
from fer_core.data.sources import dataset_for
from fer_core.train import train_fer

RECIPES = {
    "ce": {},
    "balanced_softmax": {"loss": "balanced_softmax"},
    "sampler=sqrt": {"sampler": "sqrt"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = ap.parse_args()
    base = build_config(None, args.set)
    ds = dataset_for(base)
    rows = {}
    for name in args.recipes:
        runs = []
        for seed in args.seeds:
            cfg = {**base.model_dump(), **RECIPES[name], "seed": seed}
            r = train_fer(cfg, dataset=ds)
            runs.append(r)
            print(f"{name:18s} seed {seed}: val macro-F1 {r['val']['macro_f1']:.3f} tail {r['val']['tail_f1']:.3f} | "
                  f"test macro-F1 {r['test']['macro_f1']:.3f} tail {r['test']['tail_f1']:.3f}", flush=True)
        rows[name] = runs

    def ms(vals: list[float]) -> str:
        return f"{st.mean(vals):.3f} ± {st.stdev(vals) if len(vals) > 1 else 0.0:.3f}"

    print(f"\n{base.backbone} {base.img_size}px {base.epochs} epochs, seeds {args.seeds}")
    print("| recipe | val macro-F1 | val tail F1 | test macro-F1 | test tail F1 |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        cols = [ms([r[s][k] for r in runs]) for s, k in
                (("val", "macro_f1"), ("val", "tail_f1"), ("test", "macro_f1"), ("test", "tail_f1"))]
        print(f"| {name} | " + " | ".join(cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fer-study`` command line.

Every user error (``FerError``) becomes one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fer_core.errors import FerError

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default,
# so per-class tables are not truncated.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "140"))
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

def _fmt(v: float) -> str:
    return "  -  " if v != v else f"{v:.3f}"  # NaN (class absent) shows as a dash

def per_class_table(result: dict, title: str) -> Table:
    names, counts = result["class_names"], result["train_counts"]
    val, test = result["val"], result["test"]
    tail = set(result["groups"].get("tail", []))
    table = Table(title=title)
    for col in ("#", "class", "train n", "val F1", "val P", "val R", "test F1", "test n"):
        table.add_column(col, justify="right" if col not in ("class",) else "left")
    for c, name in enumerate(names):
        table.add_row(
            str(c), name + (" (tail)" if c in tail else ""), str(counts[c]),
            _fmt(val["f1"][c]), _fmt(val["precision"][c]), _fmt(val["recall"][c]),
            _fmt(test["f1"][c]), str(test["support"][c]),
        )
    return table

def cmd_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fer_core.config import build_config
    from fer_core.train import dataset_for, train_fer

    cfg = build_config(args.config, args.set or [])
    console.print(f"[bold]config[/]: loss={cfg.loss} sampler={cfg.sampler} backbone={cfg.backbone} "
                  f"img_size={cfg.img_size} epochs={cfg.epochs} seed={cfg.seed} dataset={cfg.dataset}")
    with console.status("loading data (decoded once, then cached)..."):
        ds = dataset_for(cfg)
    console.print(f"data: {len(ds.labels)} images, fingerprint {ds.fingerprint[:12]}, "
                  f"{'from cache' if ds.info.get('from_cache') else 'decoded'}")
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[msg]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task("train", total=cfg.epochs, msg="")

        def report(m: dict, checkpoint: dict | None = None) -> None:
            progress.update(task, advance=1, msg=f"loss {m['loss']:.3f} val macro-F1 {m['macro_f1']:.3f} "
                                                 f"(best {m['best_macro_f1']:.3f} @ {m['best_epoch']})")

        result = train_fer(cfg, report, dataset=ds)
    val, test = result["val"], result["test"]
    console.print(per_class_table(result, f"per-class F1 (selected epoch {result['best_epoch']})"))
    summary = Table(title="summary")
    for col in ("split", "macro-F1", "accuracy", "balanced acc", "head F1", "medium F1", "tail F1"):
        summary.add_column(col, justify="right")
    for name, m in (("val", val), ("test", test)):
        summary.add_row(name, *(_fmt(m[k]) for k in ("macro_f1", "accuracy", "balanced_accuracy",
                                                      "head_f1", "medium_f1", "tail_f1")))
    console.print(summary)
    console.print(f"validation macro-F1 {val['macro_f1']:.4f} | test macro-F1 {test['macro_f1']:.4f} "
                  f"(selected epoch {result['best_epoch']}, {result['epochs_run']} epochs run, "
                  f"{result['seconds']:.0f} s on {result['device']})")
    if args.save:
        import torch

        torch.save({"model": result["model_state"], "config": result["config"],
                    "class_names": result["class_names"]}, args.save)
        console.print(f"model saved to {args.save}")
    return 0

def cmd_data_synth(args: argparse.Namespace) -> int:
    from fer_core.data.synthetic import synthesize_rafce

    out = synthesize_rafce(args.out, seed=args.seed, img_size=args.img_size)
    console.print(f"synthetic RAF-CE stand-in written to {out}")
    return 0

def cmd_data_inspect(args: argparse.Namespace) -> int:
    from fer_core.data.inspect import detect_source, format_summary, summarize
    from fer_core.data.sources import load_dataset

    path = Path(args.path)
    if not path.exists():
        raise FerError(f"{path}: no such file or directory")
    kind = args.kind or detect_source(path)
    ds = load_dataset(dataset=kind, data_path=str(path), img_size=args.img_size, cache_dir=args.cache_dir)
    console.print(format_summary(summarize(ds)))
    return 0

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-study", description="FER imbalance ablation and HPO studies")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run one training trial and print per-class metrics")
    t.add_argument("--config", help="flat YAML config (keys: see fer_core/config.py); defaults are embedded")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--save", help="write the selected epoch's model, config and class names to this file")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="data set tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="render the synthetic RAF-CE stand-in in the RAF-CE on-disk format")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--img-size", type=int, default=64)
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("inspect", help="per-split class counts, AU frequencies and AU-label quirks")
    i.add_argument("path")
    i.add_argument("--kind", choices=["rafce", "manifest", "folder"], help="source kind (detected if omitted)")
    i.add_argument("--img-size", type=int, default=64)
    i.add_argument("--cache-dir")
    i.set_defaults(func=cmd_data_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130

if __name__ == "__main__":
    sys.exit(main())

"""Epochs (and wall time) until the best imbalance recipe is found: three ways, side by side.

(a) random search without pruning, written by hand: a for-loop over ``train_fer`` with
    configs drawn at random from ``search_spaces/imbalance.yaml``;
(b) Ray Tune's stock ``OptunaSearch`` (TPE) with ASHA over the same space;
(c) fer-study's ``imbalance-hpo`` study (TPE through our searcher bridge, pruning on macro-F1).

All three train the same trials on the synthetic stand-in (same base config, trial budget
and concurrency) and count compute the same way: a trial's epochs are added when the trial
ends (complete or stopped); a trial that ran to the end is a candidate for the best recipe
(its selected epoch's validation macro-F1). Reported per method, median over repetitions:
epochs and wall time until the best validation macro-F1 is within 0.01 of the best any run
found (and, paired, within 0.01 of the best of the run's own repetition, which shares its
training seed), and the validation and test macro-F1 of the best-so-far trial at equal
compute (the smallest total any run consumed). A method that misses the target in most runs
gets a bound, not a ratio. A plot of best-so-far vs epochs is saved beside.

    python benchmarks/search_efficiency.py                  # 24 trials x 8 epochs, 3 repetitions
    python benchmarks/search_efficiency.py --reps 5 --traces se.json   # ~1 h; curves saved per run
    python benchmarks/search_efficiency.py --from-traces se.json       # the table again, no training
    python benchmarks/search_efficiency.py --extend-random se.json --random-trials 48 --traces se48.json
        # (a) goes on to 48 trials where it stopped (same seeds: same first trials), so that its
        # epochs to the target are measured instead of cut off by the shared budget
    python benchmarks/search_efficiency.py --reps 5 --trials 40 --epochs 12 --backbone resnet10t --img-size 64
    python benchmarks/search_efficiency.py --confirm se.json  # the held-out confirmation of saved searches
    python benchmarks/search_efficiency.py --tiny           # 2 trials x 1 epoch, one repetition (CI)

Held-out confirmation (issue 21): a search's best validation value is partly the luck of its
training seed (winner's curse), and its test macro-F1 is one seed's. So every run's chosen config
at equal compute (its best-so-far trial, chosen on validation only) is re-trained with
``--confirm-seeds`` fresh seeds that no search used, in one loop with the same data and settings for
all three methods, and scored on the test split. Per method: mean test macro-F1 with a 95 %
interval, and the paired Δs (c)-(a) and (c)-(b) (same fresh seeds, same test images), Holm over the
two. The intervals are the report's (``fer_core.report.stats.estimate_nested``): the unit is a
repetition (its fresh seeds averaged), so the seed part carries the search's randomness and the
training seeds, and the image part the finite test set (a simulation with a known truth in
tests/report/test_stats_simulation.py shows that this covers and that pooling the seeds of all
repetitions as independent units does not); with one repetition (tiny) the unit is a fresh seed
and the search's randomness is not carried, which the output says.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TARGET_GAP = 0.01


def base_config(args) -> dict:
    return {"backbone": args.backbone, "img_size": args.img_size, "epochs": args.epochs, "warmup_epochs": 0,
            "batch_size": 32}


def trial_end(trace: list, seconds: float, epochs: int, value: float | None, test: float | None,
              params: dict | None = None) -> None:
    """One ended trial: (epochs consumed so far, seconds, value if it ran to the end, its test macro-F1,
    its searched params if it ran to the end: what the confirmation re-trains)."""
    used = (trace[-1][0] if trace else 0) + epochs
    trace.append((used, seconds, value, test, params if value is not None else None))


def run_random(spec, ds, args, rep: int, done: list | None = None) -> list:
    """(a) what a user writes by hand: random configs, every trial trained to the end.

    ``done``: a saved curve of this repetition's first trials. Their configs are drawn again but not
    trained (the sampler and ``train_fer`` are deterministic given the seed, so they are the same
    trials; the first one is re-trained to check that), and the loop goes on from there."""
    import optuna

    from fer_core.train import train_fer

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=rep))
    trace: list = [tuple(p) for p in done or []]
    skip = len(trace)  # trials already in the saved curve
    t0 = time.perf_counter() - (trace[-1][1] if trace else 0.0)
    for i in range(args.random_trials or args.trials):
        trial = study.ask()
        params = spec.space.sample(trial)
        cfg = {**spec.trial_config(params), "seed": rep, "num_threads": len(os.sched_getaffinity(0))}
        if i < skip:
            if i == 0:
                value = train_fer(cfg, dataset=ds)["val"]["macro_f1"]
                if abs(value - trace[0][2]) > 1e-9:
                    sys.exit(f"--extend-random: repetition {rep}'s first trial gave {value:.6f}, the saved curve "
                             f"{trace[0][2]:.6f}: not the same run (other code, data or settings)")
            continue
        result = train_fer(cfg, dataset=ds)
        study.tell(trial, result["val"]["macro_f1"])
        trial_end(trace, time.perf_counter() - t0, result["epochs_run"], result["val"]["macro_f1"],
                  result["test"]["macro_f1"], params)
    return trace


@dataclasses.dataclass(frozen=True)
class SampleSpace:
    """A define-by-run space for OptunaSearch; module-level because Tune pickles it."""

    spec: Any
    seed: int

    def __call__(self, trial) -> dict:
        params = self.spec.space.sample(trial)
        return {"train": {**self.spec.trial_config(params), "seed": self.seed}, "params": params}


def run_stock(spec, ds, args, rep: int) -> list:
    """(b) Ray Tune's OptunaSearch (TPE) + ASHA on the same space, as its docs show."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from fer_core.train import train_fer

    trace: list = []
    t0 = time.perf_counter()

    epochs: dict[str, int] = {}

    class Count(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if not result.get("done_flag"):
                epochs[trial.trial_id] = epochs.get(trial.trial_id, 0) + 1

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            last = trial.last_result or {}
            done = bool(last.get("done_flag"))  # ran to the end, not stopped by ASHA
            trial_end(trace, time.perf_counter() - t0, epochs.get(trial.trial_id, 0),
                      last.get("macro_f1") if done else None,
                      last.get("test_macro_f1") if done else None, trial.config["params"])

    def trainable(config: dict, data=None) -> None:
        def report(metrics: dict, checkpoint=None) -> None:
            tune.report({"macro_f1": metrics["macro_f1"]})

        result = train_fer({**config["train"], "num_threads": 1}, report, dataset=data)
        # the selected epoch's value and its test macro-F1; "done" is Tune's own key, hence done_flag
        tune.report({"macro_f1": result["val"]["macro_f1"], "done_flag": 1,
                     "test_macro_f1": result["test"]["macro_f1"]})

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=ds), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=SampleSpace(spec, rep), metric="macro_f1", mode="max", seed=rep),
            scheduler=ASHAScheduler(metric="macro_f1", mode="max", max_t=args.epochs + 1, grace_period=1,
                                    reduction_factor=3),
            num_samples=args.trials, max_concurrent_trials=args.concurrent),
        run_config=tune.RunConfig(storage_path=str(Path(args.tmp) / "stock"), verbose=0, callbacks=[Count()]),
    )
    tuner.fit()
    return trace


def run_fer_study(spec, args, rep: int) -> list:
    """(c) ``fer-study launch imbalance-hpo`` with the same base config, budget and concurrency."""
    import optuna
    from optuna.trial import TrialState

    from fer_core.report.export import refresh_note
    from fer_core.study.runner import LaunchOptions, launch

    path = Path(args.tmp) / f"hpo-{rep}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"efficiency-{rep}", "extends": "imbalance-hpo.yaml", "question": "search efficiency",
        "seeds": [rep], "resources": {"cpu": 1, "gpu": 0},
        # the parent's cpu profile would patch the base: the benchmark's budget goes into it
        "profiles": {"cpu": {"base": base_config(args),
                             "budget": {"trials": args.trials, "max_concurrent": args.concurrent}}},
    }))
    url = f"sqlite:///{Path(args.tmp) / f'hpo-{rep}.db'}"
    start = time.time()
    launch(str(path), LaunchOptions(storage=url, profile="cpu", show_progress=False,
                                    runs_dir=str(Path(args.tmp) / "runs"), note=refresh_note))
    trials = optuna.load_study(study_name=f"efficiency-{rep}", storage=url).get_trials()
    trace: list = []
    for t in sorted((t for t in trials if t.datetime_complete), key=lambda t: t.datetime_complete):
        done = t.state == TrialState.COMPLETE
        # wall time from the stored completion time, not from when this loop reads it
        trial_end(trace, t.datetime_complete.timestamp() - start, len(t.intermediate_values),
                  t.value if done else None, t.user_attrs.get("test_macro_f1") if done else None,
                  spec.space.complete({k: v for k, v in t.params.items() if k != "seed"}))
    return trace


def best_so_far(trace: list) -> list[tuple]:
    """(epochs, seconds, best value so far, test macro-F1 of that best trial, its params) after every
    ended trial. A point of a curve saved before the params were kept has four fields."""
    out, best, test, params = [], float("-inf"), float("nan"), None
    for used, secs, value, t, *p in trace:
        if value is not None and value > best:
            best, test, params = value, t, (p[0] if p else None)
        out.append((used, secs, best, test, params))
    return out


def equal_compute(runs: dict[str, list[list]], args) -> int:
    """The least total epochs any run consumed within the shared budget: where methods are compared."""
    return min(c[: args.trials][-1][0] for curves in runs.values() for c in curves if c)


def chosen_at(curve: list, equal: int) -> dict | None:
    """The params of a run's best-so-far trial (chosen on validation) at equal compute, if any."""
    pts = [p for p in curve if p[0] <= equal]
    return pts[-1][4] if pts and len(pts[-1]) > 4 else None


def confirm(runs: dict[str, list[list]], spec, ds, args) -> dict:
    """Every run's chosen config at equal compute re-trained with fresh seeds: the test predictions.
    A config that two runs chose is trained once per seed (``train_fer`` is deterministic per seed)."""
    from fer_core.train import train_fer

    equal = equal_compute(runs, args)
    used = set(range(args.reps))  # the searches train with seed = repetition
    seeds = [s for s in range(1000, 1000 + args.confirm_seeds + len(used)) if s not in used][: args.confirm_seeds]
    out: dict[str, Any] = {"seeds": seeds, "equal": equal, "labels": None, "runs": {}}
    done: dict[tuple[str, int], list[int]] = {}
    for name, curves in runs.items():
        out["runs"][name] = []
        for rep, curve in enumerate(curves):
            params = chosen_at(curve[: args.trials], equal)
            if params is None:
                out["runs"][name].append(None)
                continue
            key = json.dumps(params, sort_keys=True)
            for seed in seeds:
                if (key, seed) not in done:
                    # complete: (c)'s curves saved before it kept whole assignments lack the fixed values
                    r = train_fer({**spec.trial_config(spec.space.complete(params)), "seed": seed,
                                   "num_threads": len(os.sched_getaffinity(0))}, dataset=ds)
                    held = r["predictions"]["test"]
                    done[key, seed] = held["probs"].argmax(1).tolist()
                    out["labels"], out["classes"] = held["labels"].tolist(), len(r["class_names"])
            out["runs"][name].append({"params": params, "preds": [done[key, s] for s in seeds]})
            print(f"confirm rep {rep} {name}: {len(seeds)} fresh seeds trained", flush=True)
    return out


def confirm_table(conf: dict) -> None:
    """Test macro-F1 of each method's confirmed configs and the paired Δs of (c), with intervals."""
    import numpy as np

    from fer_core.report.evidence import metric_parts
    from fer_core.report.stats import estimate, estimate_nested, holm

    labels, k = np.asarray(conf["labels"]), conf["classes"]
    names = list(conf["runs"])
    reps = len(next(iter(conf["runs"].values())))
    by_rep = reps >= 2

    def units(name: str, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(R, S) test macro-F1 and (R, S, N) influences of the kept repetitions' confirmed configs."""
        parts = [metric_parts("macro_f1", labels, np.asarray(conf["runs"][name][rep]["preds"]), k) for rep in keep]
        return np.stack([v for v, _ in parts]), np.stack([g for _, g in parts])

    def est(*arrays: np.ndarray):
        """Repetitions as units (seeds averaged within each); one repetition: its seeds as units."""
        if by_rep:
            return estimate_nested(*arrays)
        return estimate(*(a[0] for a in arrays))

    def ci(e, sign: str = "") -> str:
        lo, hi = e.ci()
        return f"[{float(lo):{sign}.3f}, {float(hi):{sign}.3f}]"

    unit = (f"{reps} repetitions (each the mean of {len(conf['seeds'])} fresh seeds)" if by_rep
            else f"{len(conf['seeds'])} fresh seeds of one repetition: the search's randomness is NOT carried")
    print(f"held-out confirmation: each run's chosen config at equal compute ({conf['equal']} epochs) re-trained "
          f"with fresh seeds {conf['seeds']}; test macro-F1 with 95 % intervals over {unit}, and over the "
          f"{len(labels)} test images")
    full = {n: [r for r, x in enumerate(conf["runs"][n]) if x is not None] for n in names}
    for n in names:
        if not full[n]:
            print(f"confirmed {n:28s}: no complete trial within equal compute")
            continue
        e = est(*units(n, full[n]))
        print(f"confirmed {n:28s}: test macro-F1 {float(e.mean):.3f} {ci(e)}")
    c = names[-1]
    rows = []
    for other in names[:-1]:
        keep = [r for r in full[c] if r in full[other]]
        if not keep:
            continue
        rows.append((other, est(*units(c, keep), *units(other, keep))))
    adjusted = holm([float(e.p_value) for _, e in rows])
    for (other, e), p in zip(rows, adjusted):
        if np.isnan(p):
            word = "no interval (one unit)"
        elif p < 0.05:
            word = "(c) better" if float(e.mean) > 0 else "(c) worse"
        else:
            word = "no detectable held-out difference"
        print(f"confirmed Δ (c) - {other[:3]}: {float(e.mean):+.3f} {ci(e, '+')}, Holm p {p:.3f}: {word}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--concurrent", type=int, default=2, help="trials at a time for (b) and (c); (a) is a loop")
    ap.add_argument("--backbone", default="test_resnet")
    ap.add_argument("--img-size", type=int, default=48)
    ap.add_argument("--plot", default="benchmarks/search_efficiency.png")
    ap.add_argument("--traces", default="", help="also save every run's best-so-far curve as JSON here")
    ap.add_argument("--from-traces", default="", help="print the table and plot of a saved --traces file")
    ap.add_argument("--random-trials", type=int, default=0,
                    help="(a)'s trial budget (default --trials): longer, so that its epochs to the target are "
                         "measured, not cut off by the budget")
    ap.add_argument("--extend-random", default="",
                    help="a saved --traces file: continue its (a) runs to --random-trials, save, print the table")
    ap.add_argument("--confirm-seeds", type=int, default=3,
                    help="fresh seeds each run's chosen config is re-trained with for the held-out comparison "
                         "(0: none)")
    ap.add_argument("--confirm", default="",
                    help="a saved --traces file: train its held-out confirmation (no search), save it to --traces "
                         "(default: the same file), print the table")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.reps, args.trials, args.epochs, args.confirm_seeds = 1, 2, 1, min(args.confirm_seeds, 2)

    conf = None  # the held-out confirmation, once trained (or as saved)
    if args.from_traces or args.extend_random or args.confirm:
        saved = json.loads(Path(args.from_traces or args.extend_random or args.confirm).read_text())
        cli_random = args.random_trials
        vars(args).update({k: v for k, v in saved["args"].items() if k not in (
            "plot", "traces", "extend_random", "from_traces", "confirm", "confirm_seeds")})
        args.traces = args.traces or args.confirm
        args.random_trials = cli_random or args.random_trials
        args.reps = min(len(c) for c in saved["runs"].values())  # whole repetitions only
        conf = saved.get("confirm")  # --extend-random keeps it: it was chosen within the shared budget
        runs = {k: [[tuple(p) for p in c] for c in v[:args.reps]] for k, v in saved["runs"].items()}
        if args.from_traces:
            return summarize(runs, args, conf)

    import ray

    from fer_core.data.sources import load_dataset
    from fer_core.study.runner import init_ray
    from fer_core.study.spec import load_study

    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        os.environ.setdefault("FER_STUDY_CACHE", str(Path(tmp) / "cache"))
        spec = load_study("imbalance-hpo", "cpu")
        spec = dataclasses.replace(spec, base={**spec.base, **base_config(args)})
        ds = load_dataset(dataset="synthetic", img_size=args.img_size, cache_dir=os.environ["FER_STUDY_CACHE"])
        if args.confirm:  # the saved searches as they are: only their confirmation is trained
            methods = {}
        elif args.extend_random:  # (a) only, from where each saved run ended: a plain loop, no Ray
            first = next(iter(runs))
            methods = {first: lambda rep: run_random(spec, ds, args, rep, done=runs[first][rep])}
        else:
            init_ray(None)
            runs = {"(a) random, no pruning": [], "(b) Ray OptunaSearch + ASHA": [], "(c) fer-study imbalance-hpo": []}
            methods = dict(zip(runs, (lambda rep: run_random(spec, ds, args, rep),
                                      lambda rep: run_stock(spec, ds, args, rep), lambda rep: run_fer_study(spec, args, rep))))
        for rep in range(args.reps if methods else 0):
            for name, run in methods.items():
                curve = best_so_far(run(rep))
                if args.extend_random:
                    runs[name][rep] = curve
                else:
                    runs[name].append(curve)
                # progress as it goes (a full run takes about an hour on 2 cores), and the curves so far,
                # so that a run cut short still leaves its figures: --from-traces prints their table
                print(f"rep {rep} {name}: {curve[-1][0]} epochs, {curve[-1][1]:.0f} s, best val {curve[-1][2]:.4f}",
                      flush=True)
                save(args, runs, conf)
        ray.shutdown()
        if args.confirm_seeds and not args.extend_random:
            conf = confirm(runs, spec, ds, args)
            save(args, runs, conf)
    return summarize(runs, args, conf)


def save(args, runs: dict[str, list[list]], conf: dict | None = None) -> None:
    if args.traces:
        Path(args.traces).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in (
            "tmp", "from_traces", "extend_random", "confirm")}, "runs": runs, **({"confirm": conf} if conf else {})}))


def summarize(runs: dict[str, list[list]], args, conf: dict | None = None) -> int:
    """The table of medians and ratios, and the plot, from every run's best-so-far curve."""
    # the targets and equal compute come from the budget all three had (a curve has a point per trial):
    # with --random-trials, (a)'s further trials only tell when it gets there, they do not move the bar
    shared = {name: [c[:args.trials] for c in curves] for name, curves in runs.items()}
    best = max(c[-1][2] for curves in shared.values() for c in curves if c)
    target = best - TARGET_GAP
    equal = equal_compute(runs, args)

    def at_equal(curve, idx: int) -> float:
        """The best-so-far trial's validation (idx 2) or test (idx 3) macro-F1 at equal compute."""
        return [p for p in curve if p[0] <= equal][-1][idx] if curve and curve[0][0] <= equal else float("nan")

    # a second target, paired: every method of one repetition trains with the same seed, and the seed
    # moves all of a repetition's values together (by more than 0.01 on the stand-in), so here each
    # run is measured against the best that any method found in its own repetition
    rep_target = [max(curves[r][-1][2] for curves in shared.values()) - TARGET_GAP for r in range(args.reps)]

    def first(curve, level: float, idx: int) -> float:
        return next((p[idx] for p in curve if p[2] >= level), float("inf"))

    budget = f"{args.trials} trials" + (f" ((a): {args.random_trials}; targets from the first {args.trials})"
                                         if args.random_trials else "")
    print(f"{args.reps} repetitions x {budget} x {args.epochs} epochs, {args.backbone} {args.img_size} px; "
          f"best val macro-F1 found {best:.4f}, target {target:.4f}; equal compute = {equal} epochs; "
          f"per-repetition targets {' '.join(f'{t:.4f}' for t in rep_target)}")
    print(f"{'method':28s} {'epochs to target':>16s} {'reached':>7s} {'wall s to target':>16s} "
          f"{'epochs to rep target':>20s} {'reached':>7s} {'best val':>8s} {'val @ equal':>11s} {'test @ equal':>12s} "
          f"{'epochs total':>12s}")
    med: dict[str, float] = {}
    med_rep: dict[str, float] = {}
    spent: dict[str, float] = {}  # median epochs a method's runs spent in all
    for name, curves in runs.items():
        to_target = [first(c, target, 0) for c in curves]
        to_rep = [first(c, t, 0) for c, t in zip(curves, rep_target)]
        med[name], med_rep[name] = statistics.median(to_target), statistics.median(to_rep)
        spent[name] = statistics.median(c[-1][0] for c in curves)
        print(f"{name:28s} {med[name]:16.0f} {sum(e < float('inf') for e in to_target):>3d} of {len(curves):<2d} "
              f"{statistics.median(first(c, target, 1) for c in curves):16.1f} "
              f"{med_rep[name]:20.0f} {sum(e < float('inf') for e in to_rep):>3d} of {len(curves):<2d} "
              f"{statistics.median(c[-1][2] for c in curves):8.4f} {statistics.median(at_equal(c, 2) for c in curves):11.4f} "
              f"{statistics.median(at_equal(c, 3) for c in curves):12.4f} {spent[name]:12.0f}")
    spent_a, spent_b, _ = spent.values()
    for what, m in (("epochs to target", med), ("epochs to rep target", med_rep)):
        a, b, c = m.values()
        for label, num, den, den_spent in (("(c)/(a)", c, a, spent_a), ("(c)/(b)", c, b, spent_b)):
            other = label[4:7]
            if num == float("inf"):
                text = "n/a, neither reached it in most runs" if den == float("inf") else "(c) did not reach it in most runs"
            elif den == float("inf"):
                # censored: the other method's median lies beyond the epochs it spent
                text = (f"< {num / den_spent:.2f}x ({other} did not reach it in most runs, within its median "
                        f"{den_spent:.0f} epochs)")
            else:
                text = f"{num / den:.2f}x"
            print(f"ratio {what} {label}: {text}")
    print("target: (c)/(a) <= 0.33 and (c)/(b) <= 1.00")
    if conf:
        confirm_table(conf)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, curves), color in zip(runs.items(), ("tab:gray", "tab:orange", "tab:blue")):
        for i, curve in enumerate(curves):
            pts = [p for p in curve if p[2] > float("-inf")]
            ax.step([p[0] for p in pts], [p[2] for p in pts], where="post", color=color, alpha=0.7,
                    label=name if i == 0 else None)
    ax.axhline(target, ls="--", color="k", lw=0.8, label=f"target (best - {TARGET_GAP})")
    ax.set_xlabel("training epochs consumed")
    ax.set_ylabel("best validation macro-F1 so far")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

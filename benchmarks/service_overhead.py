"""Wall time of N short trials through the service vs the same trainings back to back in one process.

All three sides run as fresh processes from the same starting line (Python start, imports,
data from the same disk cache), so the ratios show what the service adds: Ray start,
actor start, checkpoints each epoch, storage writes, progress. The service runs the N
trials one at a time with both cores per trial, exactly like the plain loop.

The middle side is the floor any Ray Tune service pays: the same trainings as a bare Tune
run as Tune's docs show it (a function trainable, the data through ``tune.with_parameters``,
``reuse_actors``, a metrics-only ``tune.report`` each epoch; no checkpoints, no Optuna, no
storage). fer-study's own share is the service's time minus that floor.

    python benchmarks/service_overhead.py              # 8 trials of ~10 s (test_resnet, 48 px), 3 runs a side
    python benchmarks/service_overhead.py --tiny       # 2 trials of 1 epoch, 1 run a side (CI)

The number of epochs is calibrated so that one trial takes about ``--trial-seconds`` on
this machine (one trial of 1 epoch is timed first), unless ``--epochs`` is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PLAIN = """
import sys, time
from fer_core.data.sources import dataset_for
from fer_core.train import train_fer
from fer_core.config import resolve_config
base = {base!r}
ds = dataset_for(resolve_config(base))
for seed in range({n}):
    t0 = time.perf_counter()
    train_fer(dict(base, seed=seed), dataset=ds)
    print("trial_seconds", time.perf_counter() - t0)
"""

# Ray's own start, one actor's start and imports and Tune's loop, without anything of fer-study's
# service: the floor a service built on Ray Tune starts from (fer-study can undercut it only by
# overlapping that work with its own, as it does starting Ray while the data decode)
BARE = """
import os, sys, logging
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
import ray
from ray import tune
from fer_core.data.sources import dataset_for
from fer_core.config import resolve_config
base = {base!r}
ds = dataset_for(resolve_config(base))

def trainable(config, data=None):
    from fer_core.train import train_fer

    def report(metrics, checkpoint=None):
        tune.report({{"macro_f1": metrics["macro_f1"]}})

    train_fer(dict(base, seed=config["seed"], num_threads={cpus}), report, dataset=data)

ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
tune.Tuner(
    tune.with_resources(tune.with_parameters(trainable, data=ds), {{"cpu": {cpus}}}),
    param_space={{"seed": tune.grid_search(list(range({n})))}},
    tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
    run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0),
).fit()
ray.shutdown()
"""

WARM = """
from fer_core.data.sources import dataset_for
from fer_core.config import resolve_config
dataset_for(resolve_config({base!r}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=0, help="epochs per trial (default: calibrated)")
    ap.add_argument("--trial-seconds", type=float, default=10.0, help="calibration target for one trial")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, in turn (the median is reported)")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.trials, args.epochs, args.repeats = 2, 1, 1
    base = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": args.epochs, "warmup_epochs": 0}
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "FER_STUDY_CACHE": os.environ.get("FER_STUDY_CACHE", str(tmp / "cache")),
               "FER_STUDY_RUNS": str(tmp / "runs")}
        # warm the data cache so neither side pays the stand-in's rendering; without --epochs also time a
        # 1-epoch trial twice (the second is warm) to size the trials at about --trial-seconds (with
        # --epochs, as --tiny sets, decoding the data is all the warm-up needs: two trainings less)
        if args.epochs:
            run([sys.executable, "-c", WARM.format(base=base)], env)
        else:
            _, out = run([sys.executable, "-c", PLAIN.format(base={**base, "epochs": 1}, n=2)], env)
            args.epochs = max(1, round(args.trial_seconds / float(out.split()[-1])))
        base["epochs"] = args.epochs
        study = {
            "name": "overhead", "question": "What does the service add per trial?", "data": {"dataset": "synthetic"},
            "base": base, "seeds": list(range(args.trials)),
            "design": {"kind": "grid", "factors": {"loss": ["ce"]}},
            "budget": {"max_concurrent": 1}, "resources": {"cpu": cpus, "gpu": 0}, "max_failures": 0,
        }
        (tmp / "overhead.yaml").write_text(yaml.safe_dump(study))
        # the three sides in turn, --repeats times: this machine's speed drifts by ~10 % within minutes,
        # so one run of each side, back to back, can show a difference that is only the drift
        walls: dict[str, list[float]] = {"plain": [], "bare": [], "service": []}
        for rep in range(args.repeats):
            walls["plain"].append(run([sys.executable, "-c", PLAIN.format(base=base, n=args.trials)], env)[0])
            walls["bare"].append(run([sys.executable, "-c", BARE.format(base=base, n=args.trials, cpus=cpus),
                                      str(tmp / f"bare-{rep}")], env)[0])
            walls["service"].append(run([sys.executable, "-m", "fer_core.cli", "launch", str(tmp / "overhead.yaml"),
                                         "--profile", "cpu", "--storage", f"sqlite:///{tmp / f'o-{rep}.db'}"], env)[0])
    plain, bare, service = (statistics.median(walls[k]) for k in ("plain", "bare", "service"))

    def each(side: str) -> str:
        return f" (runs: {', '.join(f'{w:.1f}' for w in walls[side])})" if args.repeats > 1 else ""

    per_trial = plain / args.trials
    print(f"{args.trials} trials of ~{per_trial:.1f} s (test_resnet 48 px, {args.epochs} epochs, {cpus} CPUs per trial); "
          f"median of {args.repeats} run(s) per side, the sides in turn")
    print(f"plain process, back to back:        {plain:7.1f} s{each('plain')}")
    print(f"bare Ray Tune, same trainings:      {bare:7.1f} s{each('bare')}")
    print(f"fer-study launch (Ray + Optuna):    {service:7.1f} s{each('service')}")
    print(f"ratio bare Tune / plain: {bare / plain:.2f}x (the floor under Ray Tune: Ray, actor, Tune loop)")
    print(f"ratio service / plain: {service / plain:.2f}x (target <= 1.10, issue 21)")
    print(f"ratio service / bare Tune: {service / bare:.2f}x (what fer-study's own layers add)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

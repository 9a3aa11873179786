"""Wall time of N short trials through the service vs the same trainings back to back in one process.

Both sides run as fresh processes from the same starting line (Python start, imports,
data from the same disk cache), so the ratio shows what the service adds: Ray start,
actor start, checkpoints each epoch, storage writes, progress. The service runs the N
trials one at a time with both cores per trial, exactly like the plain loop.

    python benchmarks/service_overhead.py              # 8 trials of ~10 s (test_resnet, 48 px)
    python benchmarks/service_overhead.py --tiny       # 2 trials of 1 epoch (CI)

The number of epochs is calibrated so that one trial takes about ``--trial-seconds`` on
this machine (one trial of 1 epoch is timed first), unless ``--epochs`` is given.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.trials, args.epochs = 2, 1
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
        plain, _ = run([sys.executable, "-c", PLAIN.format(base=base, n=args.trials)], env)
        service, _ = run([sys.executable, "-m", "fer_core.cli", "launch", str(tmp / "overhead.yaml"), "--profile", "cpu",
                       "--storage", f"sqlite:///{tmp / 'o.db'}"], env)
    per_trial = plain / args.trials
    print(f"{args.trials} trials of ~{per_trial:.1f} s (test_resnet 48 px, {args.epochs} epochs, {cpus} CPUs per trial)")
    print(f"plain process, back to back:        {plain:7.1f} s")
    print(f"fer-study launch (Ray + Optuna):    {service:7.1f} s")
    print(f"ratio service / plain: {service / plain:.2f}x (target <= 1.10, issue 21)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

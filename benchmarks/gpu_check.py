"""The GPU check: one command on one GPU, four figures beside their anchors; sized to take under
8 minutes, not yet run on a GPU.

1. ResNet-50 at 224 px, bf16 autocast, channels_last: training images/s through the project's own
   step (uint8 images on the device, gathered per batch, ``fer_core.train.train_step``, fused AdamW),
   eager and (unless ``--no-compile``) with ``torch.compile``. Anchor: MLPerf Training ResNet-50,
   7,161 img/s per H100 and 7,950 per H200 (without DALI).
2. Packing: ``--packed`` resnet18@112 trials launched together with ``resources: {gpu: auto}`` (the
   GPU memory probe, ``fer_core/study/gpu.py``, sets each trial's fraction) against one trial alone,
   both through ``fer-study launch``: summed images/s (each trial's trained images over its training
   seconds, the trials overlapping) over one trial's. Target >= 3x.
3. Per-trial fixed cost: a study of ``--many`` one-epoch test_resnet trials minus a study of one,
   per extra trial (Ray start/stop and imports cancel out). Anchor: Ray Tune's scalability test,
   ~0.14 s per trial; target <= 0.2 s.
4. ``fer-study launch smoke --profile gpu`` end to end, then ``fer-study report smoke``.

    python benchmarks/gpu_check.py --out gpu_check.json    # on a machine with CUDA
    python benchmarks/gpu_check.py --dry                    # every section on CPU, tiny shapes (the suite)

The dry run's figures are CPU figures of tiny shapes: they show the script works, not performance.
Without CUDA the GPU mode stops with one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

MLPERF = {"H100": 7161.0, "H200": 7950.0}  # MLPerf Training ResNet-50 images/s per GPU, without DALI
RAY_PER_TRIAL_S = 0.14  # Ray Tune's scalability test: fixed cost per trial


def resnet50_images_per_s(backbone: str, size: int, batch: int, steps: int, compile_: bool, device: str) -> float:
    """Training images/s of the trainable's step: uint8 data set on the device, gather, /255,
    channels_last, bf16 autocast, ``train_step``, backward, fused AdamW (``make_optimizer``)."""
    from fer_core.config import resolve_config
    from fer_core.data.dataset import AU_VOCAB
    from fer_core.losses import LOSSES
    from fer_core.models import FerNet
    from fer_core.registry import lookup
    from fer_core.train import lr_lambda, make_optimizer, train_step

    dev = torch.device(device)
    cfg = resolve_config({"backbone": backbone, "img_size": size, "batch_size": batch, "amp": "bf16", "device": device})
    k = 7
    model = FerNet(backbone, k, len(AU_VOCAB)).to(dev).to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_ else model
    opt, sched = make_optimizer(model.named_parameters(), cfg, dev, lr_lambda(cfg, steps))
    loss_fn = lookup(LOSSES, "ce")(cfg.model_dump(), [100] * k, 1).to(dev)
    images = torch.randint(0, 256, (4 * batch, 3, size, size), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, k, (4 * batch,), device=dev)
    au = torch.zeros(batch, len(AU_VOCAB), device=dev)

    def step() -> None:
        idx = torch.randint(0, 4 * batch, (batch,), device=dev)
        x = images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)
        target = torch.nn.functional.one_hot(labels[idx], k).float()
        out = train_step(step_model, x, target, au, loss_fn, 0.0, 0, True)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()

    for _ in range(max(3, steps // 5)):  # warm-up: cuDNN autotuning, compilation, allocator
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return steps * batch / (time.perf_counter() - t0)


def run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


_LAUNCHED: dict[str, tuple[float, list]] = {}


def launch(tmp: Path, env: dict, name: str, base: dict, seeds: int, resources: dict, concurrent: int) -> tuple[float, list]:
    """``fer-study launch`` of a one-cell study with ``seeds`` trials; its wall time and finished trials.
    The same study twice is launched once (the dry run's sections 2 and 3 share both their launches)."""
    import optuna

    # one trial runs alone at any concurrency: the dry run's sections 2 ("alone") and 3 ("one") share it
    memo = json.dumps([base, seeds, resources, concurrent if seeds > 1 else 1], sort_keys=True)
    if memo in _LAUNCHED:
        return _LAUNCHED[memo]
    data = {"dataset": base["dataset"]}
    base = {k: v for k, v in base.items() if k != "dataset"}
    study = {"name": name, "question": "How fast is the service on this machine?", "data": data,
             "base": base, "seeds": list(range(seeds)), "design": {"kind": "grid", "factors": {"loss": ["ce"]}},
             "budget": {"max_concurrent": concurrent}, "resources": resources, "max_failures": 0}
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(study))
    url = f"sqlite:///{tmp / (name + '.db')}"
    wall, _ = run([sys.executable, "-m", "fer_core.cli", "launch", str(tmp / f"{name}.yaml"), "--profile", "cpu",
                   "--storage", url], env, tmp)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [t for n in optuna.get_all_study_names(url) for t in optuna.load_study(study_name=n, storage=url).trials
              if t.state == optuna.trial.TrialState.COMPLETE]
    if len(trials) != seeds:
        raise SystemExit(f"{name}: {len(trials)} of {seeds} trials finished")
    _LAUNCHED[memo] = wall, trials
    return wall, trials


def images_per_epoch(base: dict) -> int:
    """Training images one epoch of this config draws (its data sampler's batches)."""
    from fer_core.config import resolve_config
    from fer_core.data.dataset import TRAIN
    from fer_core.data.sources import dataset_for
    from fer_core.stages import SamplerSchedule

    ds = dataset_for(cfg := resolve_config(base))
    plans = SamplerSchedule(cfg, ds.labels[ds.indices(TRAIN)])
    return sum(len(b) for b in plans.batches(0, torch.Generator().manual_seed(0)))


def packing(tmp: Path, env: dict, base: dict, n: int, gpu: object) -> dict:
    """One trial alone, then ``n`` launched together with ``gpu: auto``: summed images/s over one's."""
    per_epoch = images_per_epoch(base)

    def rate(t) -> float:
        return per_epoch * t.user_attrs["epochs_run"] / t.user_attrs["train_seconds"]

    _, alone = launch(tmp, env, "alone", base, 1, {"cpu": 1, "gpu": gpu}, 1)
    wall, packed = launch(tmp, env, "packed", base, n, {"cpu": 1, "gpu": gpu}, n)
    one, summed = rate(alone[0]), sum(rate(t) for t in packed)
    return {"trials": n, "one_images_per_s": one, "summed_images_per_s": summed, "ratio": summed / one,
            "packed_wall_s": wall, "devices": sorted({t.user_attrs["device"] for t in packed})}


def fixed_cost(tmp: Path, env: dict, base: dict, n: int, concurrent: int, gpu: object) -> dict:
    """Wall time of a study of ``n`` trials minus a study of one, per extra trial."""
    one, _ = launch(tmp, env, "one", base, 1, {"cpu": 1, "gpu": gpu}, concurrent)
    wall, trials = launch(tmp, env, "many", base, n, {"cpu": 1, "gpu": gpu}, concurrent)
    train = sum(t.user_attrs["train_seconds"] for t in trials) / n
    return {"trials": n, "concurrent": concurrent, "one_trial_wall_s": one, "wall_s": wall,
            "s_per_extra_trial": (wall - one) / (n - 1), "train_s_per_trial": train}


def smoke(tmp: Path, env: dict, profile: str, sets: list[str]) -> dict:
    url = f"sqlite:///{tmp / 'smoke.db'}"
    wall, _ = run([sys.executable, "-m", "fer_core.cli", "launch", "smoke", "--profile", profile, "--storage", url,
                   *(a for kv in sets for a in ("--set", kv))], env, tmp)
    report_s, out = run([sys.executable, "-m", "fer_core.cli", "report", "smoke", "--storage", url, "--out",
                         str(tmp / "smoke-report"), "--quiet"], env, tmp)
    text = " ".join(out.split())  # the console may wrap the line that names the files
    return {"profile": profile, "launch_s": wall, "report_s": report_s, "report": text[text.rfind("report written"):]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="every section on CPU with tiny shapes (seconds)")
    ap.add_argument("--out", help="also write the figures as JSON to this file")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row of section 1")
    ap.add_argument("--packed", type=int, default=8, help="trials packed on the GPU in section 2")
    ap.add_argument("--many", type=int, default=48, help="trials of the fixed-cost study in section 3")
    args = ap.parse_args()
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --dry for the CPU run",
              file=sys.stderr)
        return 2
    if args.dry:
        device, gpu, name = "cpu", 0, "CPU (dry run: tiny shapes, not a performance figure)"
        r50 = {"backbone": "test_resnet", "size": 32, "batch": 8, "steps": 3, "compile_": False}
        # scikit-learn's digits (280 training images): seconds per trial even on a loaded 2-core CPU
        small = {"dataset": "digits", "backbone": "test_resnet", "img_size": 32, "batch_size": 64, "epochs": 1,
                 "warmup_epochs": 0}
        tiny = small  # sections 2 and 3 then share their two launches
        args.packed = args.many = concurrent = 2
        profile, sets = "smoke", ["dataset=digits", "img_size=32", "epochs=1"]
    else:
        device, gpu, name = "cuda", "auto", torch.cuda.get_device_name(0)
        r50 = {"backbone": "resnet50", "size": 224, "batch": 256, "steps": 60, "compile_": False}
        small = {"dataset": "synthetic", "backbone": "resnet18", "img_size": 112, "batch_size": 128, "epochs": 15, "warmup_epochs": 0,
                 "pretrained": False}
        tiny = {"dataset": "synthetic", "backbone": "test_resnet", "img_size": 48, "batch_size": 256, "epochs": 1, "warmup_epochs": 0}
        concurrent, profile, sets = 8, "gpu", []
    anchor = next((v for k, v in MLPERF.items() if k in name), None)
    figures: dict = {"device": name, "dry": args.dry}
    t_all = time.perf_counter()
    print(f"GPU check on {name}")

    # 1. ResNet-50 through the project's train step
    figures["resnet50"] = {"eager_images_per_s": resnet50_images_per_s(device=device, **r50)}
    if not args.dry and not args.no_compile:
        figures["resnet50"]["compiled_images_per_s"] = resnet50_images_per_s(device=device, **{**r50, "compile_": True})
    shape = f"{r50['backbone']} {r50['size']} px, batch {r50['batch']}, bf16, channels_last"
    for mode, v in figures["resnet50"].items():
        vs = f" = {v / anchor:.2f}x MLPerf's {anchor:,.0f}" if anchor else " (MLPerf: 7,161 H100 / 7,950 H200)"
        print(f"1. {shape}, {mode.split('_')[0]}: {v:,.0f} images/s{vs}")

    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        env = {**os.environ, "FER_STUDY_CACHE": os.environ.get("FER_STUDY_CACHE", str(tmp / "cache")),
               "FER_STUDY_RUNS": str(tmp / "runs"), "PYTHONPATH": os.pathsep.join(
                   p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)}
        os.environ["FER_STUDY_CACHE"] = env["FER_STUDY_CACHE"]  # images_per_epoch decodes into the same cache

        # 2. packing small trials on one GPU
        p = figures["packing"] = packing(tmp, env, small, args.packed, gpu)
        print(f"2. {args.packed} x {small['backbone']}@{small['img_size']} packed by gpu: {gpu} on {p['devices']}: "
              f"{p['summed_images_per_s']:,.0f} images/s summed vs {p['one_images_per_s']:,.0f} alone: "
              f"ratio {p['ratio']:.2f}x (target >= 3)")

        # 3. per-trial fixed cost of a short study
        f = figures["fixed_cost"] = fixed_cost(tmp, env, tiny, args.many, concurrent, gpu)
        print(f"3. {args.many} one-epoch trials, {concurrent} at once: {f['wall_s']:.1f} s vs {f['one_trial_wall_s']:.1f} s "
              f"for one: {f['s_per_extra_trial']:.2f} s per extra trial (of which training {f['train_s_per_trial']:.2f} s "
              f"/ trial; Ray's scalability test ~{RAY_PER_TRIAL_S} s, target <= 0.2)")

        # 4. the smoke study end to end, with its report
        s = figures["smoke"] = smoke(tmp, env, profile, sets)
        print(f"4. fer-study launch smoke --profile {profile}{''.join(' --set ' + kv for kv in sets)}: {s['launch_s']:.1f} s, report {s['report_s']:.1f} s "
              f"({s['report']})")
    figures["total_s"] = time.perf_counter() - t_all
    print(f"total: {figures['total_s']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Precision chosen by measurement (config ``amp: auto``).

bf16 autocast is not faster everywhere: on a CPU with native bf16 it trained resnet10t 1.6x faster
but mobilenetv3 slower (benchmarks/RESULTS.md), and on a GPU the answer depends on the card and the
shape. So ``auto`` times a few training steps of the trial's shape (backbone, image size, batch size,
memory format) in each precision the device runs natively, and keeps the faster: bf16 only when it is
at least ``MARGIN`` faster, so timing noise does not flip a close call. The verdict is cached per
device and shape in ``<cache dir>/precision.json`` (the data cache's directory: ``cache_dir``, else
``$FER_STUDY_CACHE``, else ``~/.cache/fer-study``); one process measures at a time (a file lock), so
trials started together on one machine agree. The timing runs on a throwaway model under a forked RNG:
the trial's random streams are the same whether the verdict was measured or read, so a trial is
deterministic given its verdict. ``amp: bf16`` / ``off`` force a precision without measuring.

A verdict that depends on timing differs between machines and between a busy and a quiet hour.
Where results must not (the test suite, which compares trainings with fp32 hand computations; nodes
of one cluster that should all train alike), ``$FER_STUDY_AMP_AUTO`` (``off`` or ``bf16``) is the
verdict ``auto`` takes everywhere, measured nowhere; a device without native bf16 still trains fp32.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fer_core.config import TrainConfig
from fer_core.data.cache import cache_root
from fer_core.errors import ConfigError

ENV_VERDICT = "FER_STUDY_AMP_AUTO"  # a fixed verdict for amp: auto (off | bf16), measured nowhere
MARGIN = 1.05  # bf16 must be >= 5 % faster than fp32 to be chosen (fp32 is the safer default)
CACHE_FILE = "precision.json"
STEPS, ROUNDS = 2, 2  # timed steps per call; calls per precision after one warm-up call, interleaved

StepTimer = Callable[[bool], float]  # autocast bf16 on/off -> seconds per training step
TrainStep = Callable[..., dict]  # fer_core.train.train_step (passed in: train imports this module)


def native_precisions(device: torch.device) -> list[str]:
    """The precisions worth timing: fp32 always, bf16 where the device has fast bf16 kernels."""
    if device.type == "cuda":
        return ["off", "bf16"] if torch.cuda.is_bf16_supported() else ["off"]
    if device.type == "cpu":
        try:  # oneDNN's own test: AVX512-BF16 or AMX (emulated bf16 is far slower than fp32)
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # an op this build lacks: let the measurement decide
            native = True
        return ["off", "bf16"] if native else ["off"]
    return ["off"]


def device_name(device: torch.device) -> str:
    """What the verdict depends on besides the shape: the card, or the CPU model and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{device.type}: {model} x{torch.get_num_threads()} threads"


def verdict_key(cfg: TrainConfig, device: torch.device, cl: bool) -> str:
    return " | ".join([device_name(device), cfg.backbone, f"{cfg.img_size} px", f"batch {cfg.batch_size}",
                       "channels_last" if cl else "contiguous"])


def pick(seconds: dict[str, float]) -> str:
    """The faster precision of measured seconds per step; bf16 must win by ``MARGIN``."""
    return "bf16" if "bf16" in seconds and seconds["bf16"] * MARGIN <= seconds["off"] else "off"


def measure(timer: StepTimer, options: list[str]) -> dict[str, float]:
    """Seconds per step of each precision: one warm-up call each, then the best of ``ROUNDS``
    interleaved calls (interleaved so a burst of load on a shared machine hits both)."""
    for amp in options:
        timer(amp == "bf16")
    best = {amp: float("inf") for amp in options}
    for _ in range(ROUNDS):
        for amp in options:
            best[amp] = min(best[amp], timer(amp == "bf16"))
    return best


def step_timer(cfg: TrainConfig, device: torch.device, cl: bool, train_step: TrainStep) -> StepTimer:
    """Times the trainable's own step (uint8 gather, ``train_step``, backward, fused AdamW) on a fresh
    model of the trial's backbone and head with a random batch of the trial's shape."""
    from fer_core.data.dataset import AU_VOCAB
    from fer_core.losses import LOSSES
    from fer_core.models import FerNet
    from fer_core.registry import lookup

    k, b, s = 7, cfg.batch_size, cfg.img_size
    model = FerNet(cfg.backbone, k, len(AU_VOCAB), drop_rate=cfg.drop_rate, head=cfg.head,
                   cosine_scale=cfg.cosine_scale).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=device.type in ("cpu", "cuda"))  # as the trial's
    loss_fn = lookup(LOSSES, cfg.loss)(cfg.model_dump(), [100] * k, cfg.epochs).to(device)
    images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=device)
    idx = torch.randperm(b, device=device)
    target = torch.nn.functional.one_hot(torch.randint(0, k, (b,), device=device), k).float()
    au = torch.rand(b, len(AU_VOCAB), device=device)

    def timer(amp: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(STEPS):
            x = images[idx].float().div_(255)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            out = train_step(model, x, target, au, loss_fn, cfg.au_weight, 0, amp)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / STEPS

    return timer


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as f:
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): concurrent first trials may measure twice
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, or unreadable: measure again and rewrite it
        return {}


def choose_amp(cfg: TrainConfig, device: torch.device, cl: bool, make_timer: Callable[[], StepTimer]) -> str:
    """``"bf16"`` or ``"off"``: the forced value, the cached verdict for this device and shape, or
    a fresh measurement by ``make_timer()`` (``step_timer``, or a test's stand-in), which is then cached."""
    options = native_precisions(device)
    if cfg.amp != "auto":
        if cfg.amp == "bf16" and "bf16" not in options:
            # emulated bf16: on an AVX2-only CPU oneDNN falls back to aten's slow convolutions, and a
            # test_resnet step measured ~8x slower than fp32 (benchmarks/RESULTS.md, GPU check section)
            warnings.warn(f"amp: bf16 is forced on {device_name(device)}, which has no native bf16 kernels: it runs "
                          "emulated and much slower than fp32 (amp: auto or off would train in fp32)",
                          RuntimeWarning, stacklevel=2)
        return cfg.amp
    fixed = os.environ.get(ENV_VERDICT)
    if fixed:
        if fixed not in ("off", "bf16"):
            raise ConfigError(f"${ENV_VERDICT}: {fixed!r} is not a precision; allowed: off, bf16 (or unset: measure)")
        return fixed if fixed in options else "off"
    if len(options) == 1:
        return options[0]
    path, key = cache_root(cfg.cache_dir) / CACHE_FILE, verdict_key(cfg, device, cl)
    with _locked(path):
        verdicts = _read(path)
        if isinstance(verdicts.get(key), dict) and verdicts[key].get("amp") in options:
            return verdicts[key]["amp"]
        fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):  # the trial's RNG streams stay as they were
            seconds = measure(make_timer(), options)
        verdicts[key] = {"amp": pick(seconds), "s_per_step": seconds}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verdicts, indent=1, sort_keys=True))
        os.replace(tmp, path)  # readers without the lock never see half a file
    return verdicts[key]["amp"]

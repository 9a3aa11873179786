"""GPU packing: how many trials of a backbone share one GPU (``resources: {gpu: auto}``).

Small backbones on RAF-CE-sized data use a fraction of a modern GPU, so several trials can
train on one card at once. The fraction is measured, not guessed: a probe task on a GPU node
of the Ray cluster trains a few steps of the trial's model at its image size, batch size,
precision and memory format (the same ``train_step`` as the trainable), reads the peak of
``torch.cuda.max_memory_allocated`` and adds the uint8 data set that the trainable keeps on
the GPU for the whole trial. ``1 / n`` of a GPU goes to each trial, with ``n`` the number of
such trials that fit with headroom. On a cluster without GPUs the answer is 0.
"""

from __future__ import annotations

import math
from typing import Any

HEADROOM = 1.3  # allocator fragmentation, cuDNN workspaces and the CUDA context of each process
CONTEXT_BYTES = 600 * 2**20  # a CUDA context per trial process, outside max_memory_allocated
MAX_PER_GPU = 8  # beyond this the trials fight over SMs more than they gain from packing


def packing_fraction(peak_bytes: int, total_bytes: int, headroom: float = HEADROOM,
                     max_per_gpu: int = MAX_PER_GPU) -> float:
    """The GPU fraction per trial: ``1 / n`` for the largest ``n`` trials that fit (at least 1)."""
    if total_bytes <= 0:
        raise ValueError("total GPU memory must be positive")
    need = (peak_bytes + CONTEXT_BYTES) * headroom
    n = max(1, min(max_per_gpu, math.floor(total_bytes / need)))
    return 1.0 / n


def probe_key(train: dict[str, Any]) -> tuple:
    """Trials that share this key need the same GPU memory."""
    return tuple(train.get(k) for k in ("backbone", "img_size", "batch_size", "amp", "channels_last", "compile"))


def measure_peak(train: dict[str, Any], data_bytes: int, steps: int = 3) -> dict[str, int]:
    """Peak GPU bytes of ``steps`` training steps of this trial config (runs on a GPU)."""
    import torch

    from fer_core.config import resolve_config
    from fer_core.data.dataset import AU_VOCAB
    from fer_core.losses import LOSSES
    from fer_core.models import FerNet
    from fer_core.registry import lookup
    from fer_core.train import amp_and_channels_last, train_step

    cfg = resolve_config(train)
    device = torch.device("cuda")
    amp, cl = amp_and_channels_last(cfg, device)
    torch.cuda.reset_peak_memory_stats(device)
    model = FerNet(cfg.backbone, 14, len(AU_VOCAB)).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=True)
    counts = [100] * 14
    loss_fn = lookup(LOSSES, cfg.loss)(cfg.model_dump(), counts, cfg.epochs).to(device)
    for _ in range(steps):
        x = torch.rand(cfg.batch_size, 3, cfg.img_size, cfg.img_size, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        target = torch.nn.functional.one_hot(torch.randint(0, 14, (cfg.batch_size,), device=device), 14).float()
        au = torch.rand(cfg.batch_size, len(AU_VOCAB), device=device)
        out = train_step(step_model, x, target, au, loss_fn, cfg.au_weight, 0, amp)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device)) + int(data_bytes)
    return {"peak": peak, "total": int(torch.cuda.get_device_properties(device).total_memory)}


class AutoGpuResources:
    """Per-trial resources for ``tune.with_resources`` with ``gpu: auto``: the first trial of each
    shape (``probe_key``) runs the probe on a GPU node of the running Ray cluster; later trials of
    that shape reuse the answer. A cluster without GPUs gives 0."""

    def __init__(self, cpu: float, n_images: int) -> None:
        self.cpu, self.n_images = cpu, n_images
        self.fractions: dict[tuple, float] = {}

    def gpu_for(self, train: dict[str, Any]) -> float:
        import ray

        key = probe_key(train)
        if key not in self.fractions:
            if ray.cluster_resources().get("GPU", 0) <= 0:
                self.fractions[key] = 0.0
            else:
                from fer_core.config import resolve_config

                size = resolve_config(train, check_names=False).img_size  # the trial's size, or the default
                probe = ray.remote(num_gpus=1, num_cpus=0)(measure_peak)
                self.fractions[key] = packing_fraction(**ray.get(probe.remote(train, self.n_images * 3 * size * size)))
        return self.fractions[key]

    def __call__(self, config: dict[str, Any]):
        from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

        return resource_dict_to_pg_factory({"cpu": self.cpu, "gpu": self.gpu_for(config["train"])})

"""Batched image augmentation on the training device, scaled per sample by a strength.

``augment_batch(x, strength, generator)`` takes a float batch (B,3,H,W) in [0,1] and
a strength s_i in [0,1] per sample; every magnitude scales with s_i and s_i = 0 leaves
sample i exactly unchanged. All randomness comes from ``generator`` (which must live on
x's device), so a seed reproduces the batch. No Python loop over samples: one
affine_grid/grid_sample for geometry, broadcasting for the rest.

``sample_strength`` turns ``aug_strength`` + ``minority_boost`` into the per-sample
strengths: rare classes get stronger augmentation.

``AUG_POLICIES`` (config ``aug_policy``): what runs on the uint8 images before the batched
pipeline. ``batched``: nothing (the pipeline alone, exactly as before the registry);
``randaugment`` / ``trivialaugment``: torchvision's ``transforms.v2`` RandAugment (2 ops,
magnitude 9) / TrivialAugmentWide, each image its own ops. The batched pipeline then runs at
the per-sample strengths as always, so ``aug_strength`` and ``minority_boost`` keep their
meaning (``aug_strength: 0, minority_boost: 0``: the policy alone). torchvision draws from
torch's global CPU RNG; ``augment`` seeds it for the policy from the trial's generator inside
``torch.random.fork_rng``, so a seed reproduces the batch and the global RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from fer_core.errors import ConfigError
from fer_core.registry import Registry, lookup

AUG_POLICIES = Registry("augmentation policy", "aug_policy")

# Magnitudes at strength 1.
MAX_ROTATION_DEG = 15.0
MAX_TRANSLATE = 0.10  # fraction of width/height
MAX_SCALE = 0.15  # zoom 1 ± this
MAX_JITTER = 0.40  # brightness / contrast / saturation factor 1 ± this
BLUR_NOISE_PROB = 0.30
MAX_NOISE_STD = 0.05
ERASE_PROB = 0.50
MAX_ERASE_AREA = 0.20  # fraction of the image
ERASE_RATIO = (0.3, 3.3)  # aspect ratio range of the erased rectangle

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as in torchvision; sums to 1
_BLUR = (0.27406862, 0.45186276)  # 3-tap gaussian (side, centre), sigma 1


def _blur(x: Tensor) -> Tensor:
    """Separable 3x3 gaussian with replicated borders (cheaper than conv2d on small subsets)."""
    side, centre = _BLUR
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    p = side * (p[..., :-2, :] + p[..., 2:, :]) + centre * p[..., 1:-1, :]
    return side * (p[..., :-2] + p[..., 2:]) + centre * p[..., 1:-1]


def _base_grid(h: int, w: int, device: torch.device) -> Tensor:
    """Homogeneous pixel-centre coordinates (1, H*W, 3) in [-1, 1], x first."""
    gx = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    gy = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    ones = torch.ones(h, w, device=device)
    return torch.stack([gx.expand(h, w), gy.view(h, 1).expand(h, w), ones], dim=-1).view(1, h * w, 3)


def augment_batch(x: Tensor, strength: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip, affine, colour jitter, blur/noise and erasing, each scaled by strength."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"augment_batch: expected (B,3,H,W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    s = strength.to(device=x.device, dtype=torch.float32).reshape(b).clamp(0.0, 1.0)
    active = s > 0
    if not bool(active.any()):
        return x.clone()
    xf = x.float()
    # One draw of every per-sample random number; column k is one parameter.
    u = torch.rand(b, 19, generator=generator, device=x.device)

    def sym(k: int) -> Tensor:  # uniform in [-1, 1]
        return u[:, k] * 2.0 - 1.0

    def per_sample(v: Tensor) -> Tensor:
        return v.view(b, 1, 1, 1)

    # Geometry: the flip is folded into the affine so one grid_sample does both. The
    # grid (output -> input coordinates) is what affine_grid(align_corners=False) builds,
    # as one matmul against the pixel-centre coordinates: 3x faster than affine_grid on CPU.
    flip = torch.where((u[:, 0] < 0.5) & active, -1.0, 1.0)
    angle = sym(1) * math.radians(MAX_ROTATION_DEG) * s
    zoom = 1.0 + sym(2) * MAX_SCALE * s
    tx, ty = sym(3) * 2 * MAX_TRANSLATE * s, sym(4) * 2 * MAX_TRANSLATE * s  # grid spans [-1, 1]
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta_t = torch.stack([cos * flip, sin * flip, -sin, cos, tx, ty], dim=1).view(b, 3, 2)  # theta^T
    grid = torch.matmul(_base_grid(h, w, x.device), theta_t).view(b, h, w, 2)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Colour jitter: brightness, contrast, saturation factors 1 ± 0.4*s composed into one
    # per-sample 3x3 colour matrix + offset (one pass; torchvision's per-step clamps are
    # skipped; one clamp after erasing bounds the result).
    bright = 1.0 + sym(5) * MAX_JITTER * s
    contrast = 1.0 + sym(6) * MAX_JITTER * s
    sat = 1.0 + sym(7) * MAX_JITTER * s
    luma = torch.tensor(_GRAY, device=x.device)
    mean_gray = out.mean(dim=(2, 3)) @ luma  # (B,)
    # saturation: sat*I + (1-sat)*1 luma^T; it maps the all-ones colour to itself
    eye, gray_rows = torch.eye(3, device=x.device), luma.view(1, 1, 3)
    sat_matrix = sat.view(b, 1, 1) * eye + (1.0 - sat).view(b, 1, 1) * gray_rows
    matrix = (contrast * bright).view(b, 1, 1) * sat_matrix
    offset = ((1.0 - contrast) * bright * mean_gray).view(b, 1, 1).expand(b, 3, 1)
    out = torch.baddbmm(offset, matrix, out.reshape(b, 3, h * w)).view(b, 3, h, w)

    # Blur or noise with probability 0.3*s (half each); blur blends toward a sigma-1
    # gaussian by s, noise std is up to 0.05*s. Only the chosen samples are touched.
    degrade = u[:, 8] < BLUR_NOISE_PROB * s
    blur = torch.nonzero(degrade & (u[:, 9] < 0.5), as_tuple=False).flatten()
    noise = torch.nonzero(degrade & (u[:, 9] >= 0.5), as_tuple=False).flatten()
    if blur.numel():
        sub = out[blur]
        out[blur] = torch.lerp(sub, _blur(sub), s[blur].view(-1, 1, 1, 1))
    if noise.numel():
        std = (u[noise, 10] * MAX_NOISE_STD * s[noise]).view(-1, 1, 1, 1)
        out[noise] += torch.randn((noise.numel(), 3, h, w), generator=generator, device=x.device) * std

    # Random erasing: one rectangle per chosen sample, filled with a random colour.
    erase = u[:, 11] < ERASE_PROB * s
    area = (0.1 + 0.9 * u[:, 12]) * MAX_ERASE_AREA * s
    lo, hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    ratio = torch.exp(lo + u[:, 13] * (hi - lo))
    eh = (area * ratio).sqrt().clamp(max=1.0) * h
    ew = (area / ratio).sqrt().clamp(max=1.0) * w
    top, left = u[:, 14] * (h - eh), u[:, 15] * (w - ew)
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, 1, h, 1) + 0.5  # pixel centres
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, 1, w) + 0.5
    in_rows = (rows >= per_sample(top)) & (rows < per_sample(top + eh)) & per_sample(erase)
    in_cols = (cols >= per_sample(left)) & (cols < per_sample(left + ew))
    # lerp with a 0/1 weight is exact and much faster than a broadcast torch.where on CPU
    inside = (in_rows & in_cols).float()
    out = torch.lerp(out.clamp(0.0, 1.0), u[:, 16:19].view(b, 3, 1, 1).expand_as(out), inside)

    if not bool(active.all()):  # samples with strength 0 come back untouched
        out = torch.lerp(xf, out, per_sample(active.float()))
    return out.to(x.dtype)


def sample_strength(
    labels: Tensor, aug_strength: float, minority_boost: float, class_counts: Sequence[int]
) -> Tensor:
    """Per-sample strength: clamp(aug_strength + minority_boost * rarity(label), 0, 1).

    rarity_c = 1 - sqrt(n_c / n_max): 0 for the largest class, close to 1 for the
    rarest (RAF-CE: 582 vs 6 images -> 0.90); the square root keeps mid-sized classes
    well boosted rather than only the extreme tail. Returns float32 on labels' device.
    """
    for key, value in (("aug_strength", aug_strength), ("minority_boost", minority_boost)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}: must be a number in [0, 1], got {value!r}")
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32, device=labels.device)
    rarity = 1.0 - (counts.clamp_min(0) / counts.max()).sqrt()
    return (aug_strength + minority_boost * rarity[labels.long()]).clamp(0.0, 1.0)


@AUG_POLICIES.register("batched")
def no_policy(images: Tensor) -> Tensor:
    return images  # the batched pipeline alone


def _per_image(transform: v2.Transform) -> Callable[[Tensor], Tensor]:
    def policy(images: Tensor) -> Tensor:
        # each image draws its own ops and magnitudes (on a batch tensor torchvision draws once for all)
        return torch.stack([transform(img) for img in images])

    return policy


AUG_POLICIES.register("randaugment")(_per_image(v2.RandAugment()))
AUG_POLICIES.register("trivialaugment")(_per_image(v2.TrivialAugmentWide()))


def augment(images: Tensor, strength: Tensor, generator: torch.Generator, policy: str = "batched") -> Tensor:
    """uint8 (B,3,H,W) -> float in [0, 1]: the ``policy`` on the uint8 images, then ``augment_batch``
    at ``strength``. The policy's draws come from ``generator`` (one seed per batch for torch's
    global CPU RNG, which torchvision reads; restored afterwards)."""
    fn = lookup(AUG_POLICIES, policy)
    if fn is not no_policy:
        seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            images = fn(images)
    return augment_batch(images.float().div_(255), strength, generator)

"""Test-time augmentation (config key ``tta``): the views a model is evaluated on.

Each entry of ``TTA`` maps a float image batch (B,3,H,W) in [0, 1] to a list of views
of the same shape; ``predict`` averages the softmax over the views. TTA runs only at
the selected epoch and is reported beside the plain metrics (``tta_macro_f1``...), never
used for selection, so a study can show what it adds per class without changing what
was trained or selected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_core.registry import Registry

TTA = Registry("test-time augmentation", "tta")
CROP_SCALE = 0.875  # the usual 224/256 crop ratio


@TTA.register("none")
def no_tta(x: torch.Tensor) -> list[torch.Tensor]:
    return [x]


@TTA.register("flip")
def flip(x: torch.Tensor) -> list[torch.Tensor]:
    """The image and its mirror (faces are close to left-right symmetric)."""
    return [x, x.flip(-1)]


@TTA.register("multi_crop")
def multi_crop(x: torch.Tensor) -> list[torch.Tensor]:
    """The image plus five crops (four corners, centre) at 87.5 % side, resized back to full size."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * CROP_SCALE)), max(1, round(w * CROP_SCALE))
    tops = (0, 0, h - ch, h - ch, (h - ch) // 2)
    lefts = (0, w - cw, 0, w - cw, (w - cw) // 2)
    crops = [x[..., t:t + ch, left:left + cw] for t, left in zip(tops, lefts)]
    return [x, *(F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
                 for c in crops)]

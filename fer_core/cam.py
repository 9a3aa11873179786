"""Class activation maps of a trained model: where it looks, per class (config key ``cam_samples``).

Grad-CAM comes from the maintained ``grad-cam`` library (``pytorch_grad_cam``, Selvaraju et al. 2017),
on the backbone's last feature stage (timm's ``feature_info[-1]``): for a fixed, seeded sample of
validation images per class (every image of a class with fewer than ``cam_samples``), each map is
taken for the image's true class, min-max scaled per image by the library and averaged per class.
With ``head: au_attention`` the head's own attention maps are averaged beside them.

One number summarises a map: the share of its mass in the face half where the class's defining
Action Units sit (``half_mass``; upper face AUs 1, 2, 4, 5, 6, 7, lower face 9-27). The half comes
from the training split's AU statistics (``class_regions``): the AUs a class shows more often than
the data set as a whole, weighted by how much more. The face images are aligned (eyes in the upper
half), so the split is a row split at H/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fer_core.data.dataset import AU_VOCAB

UPPER_FACE_AUS = frozenset({1, 2, 4, 5, 6, 7})  # brows, lids, cheeks; 9-27 (nose, lips, jaw) are lower face
UPPER = np.array([au in UPPER_FACE_AUS for au in AU_VOCAB])


def class_regions(aus: np.ndarray, labels: np.ndarray, num_classes: int) -> list[str | None]:
    """Per class, ``"upper"`` or ``"lower"``: the half holding more of the class's excess AU prevalence
    (P(AU | class) - P(AU), the positive part, summed per half); None for a class without images or
    without any over-represented AU (a data set without AU labels: every class)."""
    aus = np.asarray(aus, dtype=np.float64)
    overall = aus.mean(axis=0) if len(aus) else np.zeros(aus.shape[1])
    out: list[str | None] = []
    for c in range(num_classes):
        rows = aus[labels == c]
        if not len(rows):
            out.append(None)
            continue
        excess = np.clip(rows.mean(axis=0) - overall, 0.0, None)
        up, low = excess[UPPER].sum(), excess[~UPPER].sum()
        out.append(None if up == low == 0 else "upper" if up > low else "lower")
    return out


def half_mass(m: np.ndarray, region: str) -> float:
    """Share of the (non-negative part of the) map's mass in its upper or lower half (rows < H/2 are
    upper; with an odd H the middle row counts half to each); NaN for an all-zero map."""
    m = np.clip(np.asarray(m, dtype=np.float64), 0.0, None)
    h = m.shape[0]
    rows = m.sum(axis=1)
    total = rows.sum()
    if total <= 0:
        return float("nan")
    upper = rows[: h // 2].sum() + (rows[h // 2] / 2 if h % 2 else 0.0)
    return float((upper if region == "upper" else total - upper) / total)


def cam_sample(labels: np.ndarray, per_class: int, seed: int, num_classes: int) -> dict[int, np.ndarray]:
    """Positions (into ``labels``) of up to ``per_class`` images per class, drawn once with ``seed``:
    every image of a class that has no more than that."""
    rng = np.random.default_rng(seed)
    return {c: np.sort(rng.permutation(np.flatnonzero(labels == c))[:per_class]) for c in range(num_classes)}


def target_layer(model: Any):
    """The backbone's last feature stage (timm ``feature_info``), or None when the model has none
    that outputs a (B,C,H,W) map (a ViT's blocks give tokens: no Grad-CAM here)."""
    import torch

    info = getattr(model.backbone, "feature_info", None)
    if not info:
        return None
    layer = model.backbone.get_submodule(info[-1]["module"])
    shapes = []
    hook = layer.register_forward_hook(lambda _m, _i, o: shapes.append(tuple(o.shape)))
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32, device=model.mean.device))
        model.train(was)
    except RuntimeError:
        return None
    finally:
        hook.remove()
    return layer if shapes and len(shapes[-1]) == 4 else None


def grad_cams(model: Any, x, classes: Sequence[int], layer) -> np.ndarray:
    """Grad-CAM maps (B,H,W) in [0, 1] of ``x`` (float images in [0, 1]) for the given classes, from
    ``pytorch_grad_cam`` on ``layer``; the model is left in eval mode with its gradients cleared."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class Logits(torch.nn.Module):  # FerNet returns a dict; the library wants the class scores
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)["logits"]

    model.eval()
    with GradCAM(model=Logits(model), target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    model.zero_grad(set_to_none=True)
    return np.asarray(maps, dtype=np.float32)


def attention_maps(model: Any, x) -> np.ndarray | None:
    """The au_attention head's maps of ``x`` at the input's resolution, each scaled to max 1 (a share
    of mass does not depend on the scale; float16 keeps max-scaled maps, not 1/(H*W) values)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = model(x)
    if "attention" not in out:
        return None
    a = F.interpolate(out["attention"].float()[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (a / a.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).cpu().numpy()


def grid_image(images: np.ndarray, rows: Sequence[np.ndarray], cols: int = 8) -> np.ndarray:
    """One RGB uint8 grid: for every map set in ``rows`` (Grad-CAM, attention), its overlays on the
    images (``show_cam_on_image``), at most ``cols`` images per line."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    n = min(len(images), cols)
    h, w = images.shape[1:3]
    out = np.full((len(rows) * h, n * w, 3), 255, dtype=np.uint8)
    for r, maps in enumerate(rows):
        for i in range(n):
            out[r * h:(r + 1) * h, i * w:(i + 1) * w] = show_cam_on_image(images[i], maps[i], use_rgb=True)
    return out


def class_activation_maps(model: Any, images, idx, labels: np.ndarray, class_names: Sequence[str],
                          regions: Sequence[str | None], per_class: int, seed: int, cl: bool = False,
                          batch_size: int = 64) -> dict[str, dict[str, Any]] | None:
    """Per class name: ``mean`` (float16 Grad-CAM mean map), ``attention_mean`` (au_attention only),
    ``n`` (images), ``region`` (``class_regions``) and ``grid`` (uint8 RGB overlays of the first
    images). ``images`` uint8 (N,3,H,W) on the model's device, ``idx`` the validation positions,
    ``labels`` their classes. None when the backbone has no feature map to take Grad-CAM on."""
    import torch

    layer = target_layer(model)
    if layer is None:
        return None
    sample = {c: pos for c, pos in cam_sample(labels, per_class, seed, len(class_names)).items() if len(pos)}
    pos = np.concatenate(list(sample.values()))
    classes = np.concatenate([[c] * len(p) for c, p in sample.items()])
    cams, atts, rgbs = [], [], []
    for chunk in np.array_split(np.arange(len(pos)), -(-len(pos) // batch_size)):  # batches, not one per class
        x = images[idx[torch.as_tensor(pos[chunk])]].float().div_(255)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)  # after stage 2 the backbone is frozen: the input carries the graph to the layer
        cams.append(grad_cams(model, x, classes[chunk], layer))
        atts.append(attention_maps(model, x.detach()))
        rgbs.append(x.detach().permute(0, 2, 3, 1).cpu().numpy())
    cam, rgb = np.concatenate(cams), np.concatenate(rgbs)
    att = None if atts[0] is None else np.concatenate(atts)
    out: dict[str, dict[str, Any]] = {}
    for c in sample:
        m = classes == c
        entry = {"mean": cam[m].mean(axis=0).astype(np.float16), "n": int(m.sum()), "region": regions[c],
                 "grid": grid_image(rgb[m], [cam[m]] if att is None else [cam[m], att[m]])}
        if att is not None:
            entry["attention_mean"] = att[m].mean(axis=0).astype(np.float16)
        out[class_names[c]] = entry
    return out

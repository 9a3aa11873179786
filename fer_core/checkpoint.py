"""Model files: what is saved for a trained model, and how a FerNet is rebuilt from one.

Model files are written by ``fer-study train --save``, by a study's finished trials (its kept
checkpoints) and by ``fer-study export``, and read back as teachers for distillation and for
inference. This is core code: the trainer (a teacher) and the study layer (export) both use it,
so it lives below ``fer_core.study``, which the core never imports.
"""

from __future__ import annotations

import os
from typing import Any

from fer_core.errors import FerError


def model_payload(result: dict[str, Any]) -> dict[str, Any]:
    """What ``load_model`` rebuilds a FerNet from (a study's kept checkpoints, ``fer-study train --save``)."""
    return {"model": result["model_state"], "config": result["config"], "class_names": result["class_names"],
            "best_epoch": result["best_epoch"], "val_macro_f1": result["val"]["macro_f1"]}


def load_model(path: str | os.PathLike):
    """(FerNet in eval mode, payload) from an exported or ``train --save`` file."""
    import torch

    from fer_core.data.dataset import AU_VOCAB
    from fer_core.models import FerNet

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        cfg = payload["config"]
        names = payload["class_names"]
    except (OSError, RuntimeError, KeyError, TypeError) as err:
        raise FerError(f"{path}: not a fer-study model file ({type(err).__name__})") from None
    model = FerNet(cfg["backbone"], len(names), len(AU_VOCAB), drop_rate=cfg.get("drop_rate", 0.0))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise FerError(f"{path}: the weights do not fit a {cfg['backbone']} with {len(names)} classes "
                       f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})") from None
    return model.eval(), payload

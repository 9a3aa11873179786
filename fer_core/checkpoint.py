"""Model files and training-state files: what is saved, and how it is read back without running code.

Three kinds of file cross from one process (or one person) to another as ``torch.save`` pickles:

- model files (``fer-study train --save``, a study's kept checkpoints, ``fer-study export``):
  ``model_payload`` -> weights, config, class names, provenance, the precision it predicted in;
  ``load_model`` rebuilds the FerNet, ``fer_core.train.predict_model`` predicts as the trial did;
- teachers for distillation (model files, often someone else's);
- training states (``train_fer``'s per-epoch checkpoint, Tune's ``trial.pt`` on a retry).

A pickle can run any code when loaded, and these files come from shared directories, other
studies and other people, so every one of them is read with ``torch.load(weights_only=True)``
(tensors and plain containers only). What we write is kept inside that vocabulary: numpy
arrays and RNG tuples become tensors and lists (``rng_state``, ``pred_to_state``). A file that
needs more is refused with one line naming it; its payload never runs.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from fer_core.errors import ModelFileError

# the one weights-only reader, re-exported here where it always was (also used by fer_core/pretrained.py)
from fer_core.safeload import load_weights_only as load_weights_only


# -- model files ---------------------------------------------------------------------------------
def model_payload(result: dict[str, Any]) -> dict[str, Any]:
    """What ``load_model`` rebuilds a FerNet from (a study's kept checkpoints, ``fer-study train --save``);
    ``amp``: the precision the trial validated and tested in (``predict_model`` predicts in it)."""
    return {"model": result["model_state"], "config": result["config"], "class_names": result["class_names"],
            "best_epoch": result["best_epoch"], "val_macro_f1": result["val"]["macro_f1"], "amp": result["amp"]}


def read_model_file(path: str | os.PathLike) -> dict:
    """An exported or ``train --save`` file's payload (weights only), its config, classes and weights
    present; no model is built, so a teacher file is checked in a second, before data and models load."""
    payload = load_weights_only(path)
    try:
        payload["config"].get, payload["class_names"][0], payload["model"].keys
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise ModelFileError(f"{path}: not a fer-study model file ({type(err).__name__})") from None
    return payload


def load_model(path: str | os.PathLike):
    """(FerNet in eval mode, payload) from an exported or ``train --save`` file."""
    from fer_core.data.dataset import AU_VOCAB
    from fer_core.models import FerNet

    payload = read_model_file(path)
    cfg, names = payload["config"], payload["class_names"]
    # the head and LWS scales as trained (files from before those keys: a linear head, no scales)
    model = FerNet(cfg["backbone"], len(names), len(AU_VOCAB), drop_rate=cfg.get("drop_rate", 0.0),
                   head=cfg.get("head", "linear"), cosine_scale=cfg.get("cosine_scale", 30.0),
                   class_scales=cfg.get("stage2") == "lws",
                   # the input normalisation it was trained with (a buffer no state dict carries)
                   norm_mean=cfg.get("norm_mean"), norm_std=cfg.get("norm_std"))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise ModelFileError(f"{path}: the weights do not fit a {cfg['backbone']} with {len(names)} classes "
                             f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})"
                             ) from None
    return model.eval(), payload


# -- training states -----------------------------------------------------------------------------
def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A ``train_fer`` checkpoint state saved with ``torch.save`` (Tune's ``trial.pt``)."""
    state = load_weights_only(path, "training state")
    if not isinstance(state, dict) or "rng" not in state:
        raise ModelFileError(f"{path}: not a fer-study training state")
    return state


def rng_state(sampler_gen: torch.Generator, aug_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG a training run draws from, as tensors and lists (weights_only-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # numpy: timm's Mixup draws lambda here
    version, internal, gauss_next = random.getstate()
    return {
        "sampler": sampler_gen.get_state(), "aug": aug_gen.get_state(), "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [version, list(internal), gauss_next],
    }


def restore_rng(state: dict[str, Any], sampler_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    """The inverse of ``rng_state``: every generator continues exactly where it was."""
    sampler_gen.set_state(state["sampler"])
    aug_gen.set_state(state["aug"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def pred_to_state(pred: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    """Predicted probabilities (numpy) as tensors for a training state; ``pred_from_state`` undoes it."""
    return None if pred is None else {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in pred.items()}


def pred_from_state(pred: dict[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    return None if pred is None else {k: v.numpy() for k, v in pred.items()}

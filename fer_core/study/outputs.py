"""Trial outputs beyond metrics: class logits and the selected epoch's model.

Logits (validation and test, at the selected epoch, plain and with TTA) are what ensembles
average, calibration is measured on and post-hoc methods adjust; the model is what teachers and ``fer-study
export`` rebuild (its format and its weights-only loader: ``fer_core.checkpoint``). Neither
travels in Tune's results (a result is kept per trial by the controller and would grow
with every image): the worker writes them to a per-trial scratch directory under the
runs directory, which every Ray node sees like Tune's own checkpoints, and the driver,
the only process that writes the storage, then

- uploads ``probabilities.npz`` (float32 logits, ~50 KB per 1000 images of 14 classes; its
  name kept from when it held float16 probabilities, which flush tail classes to zero, and
  which ``read_probabilities`` still reads) as an Optuna artifact, beside ``predictions.json``;
- uploads ``cams.npz`` (per-class mean Grad-CAM maps, float16, and the au_attention head's mean
  attention maps) and one PNG grid per class (``cam_NN_<class>.png``) when the trial computed class
  activation maps (config key ``cam_samples``, fer_core/cam.py);
- keeps ``model.pt`` as a checkpoint in ``<artifact store>/checkpoints/<study>/`` while the
  trial is among the study's best ``keep_checkpoints`` trials (best epoch only), and
  deletes checkpoints that fall out of the top, so disk use stays bounded.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from fer_core.errors import FerError, first_line

PROBABILITIES_NPZ = "probabilities.npz"
CAMS_NPZ = "cams.npz"
CAM_PNG = re.compile(r"cam_\d\d_[A-Za-z0-9_]*\.png")  # one grid per class: cam_<class index>_<name>.png
MODEL_FILE = "model.pt"
CHECKPOINTS = "checkpoints"


# -- worker side ------------------------------------------------------------------------------
def write_trial_outputs(out_dir: str | os.PathLike, result: dict[str, Any]) -> None:
    """Logits (float32) and the selected epoch's model of a finished ``train_fer`` result."""
    import torch

    from fer_core.checkpoint import model_payload

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for split, p in result["predictions"].items():
        arrays[f"{split}_logits"] = np.asarray(p["logits"], dtype=np.float32)
        arrays[f"{split}_labels"] = np.asarray(p["labels"], dtype=np.int16)
    tta = result.get("tta")
    if tta:
        arrays["tta"] = np.array(tta["name"])
        for split, probs in tta["predictions"].items():  # log of the views' mean probabilities
            arrays[f"{split}_tta_logits"] = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None)) \
                .astype(np.float32)
    np.savez_compressed(out / PROBABILITIES_NPZ, **arrays)
    torch.save(model_payload(result), out / MODEL_FILE)
    if result.get("cams"):
        write_cams(out, result["cams"], list(result["class_names"]))


def write_cams(out: Path, cams: dict[str, dict[str, Any]], class_names: list[str]) -> None:
    """``cams.npz``: per class with maps, ``mean_<c>`` (and ``attention_<c>``) float16, with ``classes``,
    ``regions`` ("" where none) and ``n``; and each class's overlay grid as ``cam_<c>_<name>.png``."""
    from PIL import Image

    arrays: dict[str, np.ndarray] = {}
    classes = [class_names.index(name) for name in cams]
    for c, entry in zip(classes, cams.values()):
        arrays[f"mean_{c}"] = np.asarray(entry["mean"], dtype=np.float16)
        if entry.get("attention_mean") is not None:
            arrays[f"attention_{c}"] = np.asarray(entry["attention_mean"], dtype=np.float16)
        Image.fromarray(entry["grid"]).save(out / f"cam_{c:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', class_names[c])}.png")
    arrays["classes"] = np.array(classes, dtype=np.int16)
    arrays["regions"] = np.array([e["region"] or "" for e in cams.values()])
    arrays["n"] = np.array([e["n"] for e in cams.values()], dtype=np.int32)
    np.savez_compressed(out / CAMS_NPZ, **arrays)


# -- driver side --------------------------------------------------------------------------------
def checkpoint_dir(store_path: str | os.PathLike, study_name: str) -> Path:
    return Path(store_path) / CHECKPOINTS / study_name


def checkpoint_path(store_path: str | os.PathLike, study_name: str, number: int) -> Path:
    return checkpoint_dir(store_path, study_name) / f"trial-{number:05d}.pt"


def real_trials(study: optuna.Study, states=(TrialState.COMPLETE,)) -> list[optuna.trial.FrozenTrial]:
    """Trials that trained a model (never a derived entry such as an ensemble)."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("derived")]


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The best ``k`` complete trials by the objective (ties: earlier trial first)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [t for t in real_trials(study) if t.value is not None]
    return sorted(done, key=lambda t: (sign * t.value, t.number))[:k]


def retain_checkpoint(store_path: str | os.PathLike | None, study: optuna.Study, number: int,
                      out_dir: str | os.PathLike | None, keep: int) -> Path | None:
    """Keep trial ``number``'s model if it is in the study's top ``keep``; drop those that fell out;
    remove the scratch directory. Returns the kept checkpoint's path (None if not kept)."""
    kept = None
    try:
        if store_path is None:
            return None
        top = {t.number for t in top_trials(study, keep)}
        folder = checkpoint_dir(store_path, study.study_name)
        src = Path(out_dir) / MODEL_FILE if out_dir else None
        if number in top and src is not None and src.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            kept = checkpoint_path(store_path, study.study_name, number)
            tmp = kept.with_suffix(".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, kept)  # a reader never sees half a file
        for f in folder.glob("trial-*.pt") if folder.is_dir() else []:
            if int(f.stem.split("-")[1]) not in top:
                f.unlink(missing_ok=True)
    finally:
        if out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    return kept


def _read_npz(store, storage, trial: optuna.trial.FrozenTrial, filename: str, parse: Callable[[Any], Any]) -> Any:
    """``parse(npz)`` of a trial's last stored ``filename``; None if never stored or not in this store;
    a FerError naming the trial and artifact if the file is corrupt."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta
    from optuna.artifacts.exceptions import ArtifactNotFound

    if store is None:
        return None
    metas = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == filename]
    if not metas:
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, filename)
        try:
            download_artifact(artifact_store=store, file_path=path, artifact_id=metas[-1].artifact_id)
        except (ArtifactNotFound, OSError):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return parse(z)
        except (ValueError, OSError, KeyError) as err:
            raise FerError(f"trial {trial.number}: artifact {filename} ({metas[-1].artifact_id}) is "
                           f"corrupt: {first_line(err)}") from None


def read_probabilities(store, storage, trial: optuna.trial.FrozenTrial) -> dict[str, np.ndarray] | None:
    """A trial's stored outputs: {val,test}_logits and their softmax _probs (float32), _labels,
    _tta_logits/_tta_probs with TTA; files of older trials hold float16 probabilities only (then
    there are no logits). None if never stored or not in this store; a FerError if corrupt."""
    out = _read_npz(store, storage, trial, PROBABILITIES_NPZ,
                    lambda z: {k: (z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k]) for k in z.files})
    if out is None:
        return None
    from fer_core.metrics import softmax  # here: sklearn stays out of the read-only commands' imports

    for k in [k for k in out if k.endswith("_logits")]:
        out[k[: -len("_logits")] + "_probs"] = softmax(out[k]).astype(np.float32)
    return out


def read_cams(store, storage, trial: optuna.trial.FrozenTrial) -> dict[int, dict[str, Any]] | None:
    """A trial's stored class activation maps: {class index: {mean, attention_mean (None without the
    au_attention head), region (None where no AU points to a half), n}} as float32 maps; None if the
    trial stored none or its file is not in this store; a FerError if corrupt."""
    return _read_npz(store, storage, trial, CAMS_NPZ, lambda z: {
        int(c): {"mean": z[f"mean_{c}"].astype(np.float32),
                 "attention_mean": z[f"attention_{c}"].astype(np.float32) if f"attention_{c}" in z.files else None,
                 "region": str(r) or None, "n": int(n)}
        for c, r, n in zip(z["classes"], z["regions"], z["n"])})


def pack_classes(values: Any) -> str:
    """Class (or image) indices as a short string for a trial user attr (base64 of uint8/16/32):
    the held-out predictions every report interval needs, kept in the storage itself."""
    a = np.asarray(values, dtype=np.int64)
    kind = "u1" if a.size == 0 or a.max() < 256 else "u2" if a.max() < 65536 else "u4"
    return f"{kind}:" + base64.b64encode(a.astype("<" + kind).tobytes()).decode()


def unpack_classes(text: str) -> np.ndarray:
    kind, _, body = text.partition(":")
    if kind not in ("u1", "u2", "u4"):
        raise FerError(f"stored predictions: unknown encoding {kind!r}")
    return np.frombuffer(base64.b64decode(body), dtype="<" + kind).astype(np.int64)


# -- fer-study export -----------------------------------------------------------------------------
def export_trial(study: optuna.Study, number: int, store_path: str | os.PathLike, out: str | None) -> Path:
    """Write trial ``number``'s kept checkpoint with its config, class names and provenance."""
    import torch

    from fer_core.checkpoint import load_weights_only

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    t = trials.get(number)
    if t is None or t.state != TrialState.COMPLETE or t.user_attrs.get("derived"):
        raise FerError(f"--trial {number}: study {study.study_name!r} has no complete trial {number}")
    src = checkpoint_path(store_path, study.study_name, number)
    if not src.is_file():
        kept = sorted(int(f.stem.split("-")[1]) for f in checkpoint_dir(store_path, study.study_name).glob("trial-*.pt"))
        raise FerError(f"--trial {number}: no checkpoint kept for it in {src.parent} (the study keeps its best "
                       f"trials' models only; kept: {', '.join(map(str, kept)) or 'none'})")
    payload = load_weights_only(src)  # a kept checkpoint is a file on a shared disk: weights only, nothing runs
    if not isinstance(payload, dict):
        raise FerError(f"{src}: not a fer-study model file ({type(payload).__name__})")
    payload.update(study=study.study_name, trial=number, value=t.value, params=dict(t.params))
    dest = Path(out or f"{study.study_name}-trial-{number}.pt")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, dest)
    except OSError as err:
        raise FerError(f"--out {dest}: cannot write ({err.strerror or err})") from None
    return dest

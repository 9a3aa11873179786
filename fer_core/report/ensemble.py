"""``fer-study ensemble``: average the stored class probabilities of a study's best trials.

An ensemble is derived from trials, it is not one: it is stored as a study user attr
``ensemble:<name>`` (members, selection rule, validation and test metrics per class,
predicted classes), never as an Optuna trial. A trial with a value would be taken by
``study.best_trial``, by TPE and by fANOVA as a point of the search space it does not
belong to, and optuna-dashboard would plot it among the real trials; a study user attr
is ignored by all of them. The report and the dashboard note show ensembles as their
own marked rows.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import optuna

from fer_core.errors import FerError
from fer_core.metric_names import CLASSIFICATION_METRICS, SELECT_METRICS
from fer_core.metrics import classification_metrics
from fer_core.study.outputs import read_probabilities, real_trials
from fer_core.study.result import stored_result

ENSEMBLE_ATTR = "ensemble:"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BY = SELECT_METRICS  # validation metrics only: test never selects
KEEP = (*CLASSIFICATION_METRICS, "f1", "precision", "recall", "support", "confusion_matrix")


def _score(t: optuna.trial.FrozenTrial, by: str) -> float:
    v = (stored_result(t)["val_metrics"] or {}).get(by)
    if v is None and by == t.user_attrs.get("metric", "macro_f1"):
        v = t.value
    return float("-inf") if v is None or v != v else float(v)


def _config_key(t: optuna.trial.FrozenTrial) -> str:
    return repr(sorted((k, v) for k, v in t.params.items() if k != "seed"))


def rank_trials(study: optuna.Study, by: str, diverse: bool) -> list[optuna.trial.FrozenTrial]:
    """Complete real trials, best validation ``by`` first; ``diverse``: the best trial of each config only,
    so the members differ in recipe, not only in seed."""
    if by not in BY:
        raise FerError(f"--by: unknown metric {by!r}; valid: {', '.join(BY)}")
    ranked = sorted(real_trials(study), key=lambda t: (-_score(t, by), t.number))
    if diverse:
        seen: set[str] = set()
        ranked = [t for t in ranked if not (_config_key(t) in seen or seen.add(_config_key(t)))]
    return ranked


def average_probabilities(members: list[dict[str, np.ndarray]], split: str,
                          kind: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """(labels, mean probabilities) of one split; the members must share its images. ``kind``:
    ``probs`` (plain evaluation) or ``tta_probs`` (the trial's test-time augmentation)."""
    labels = members[0][f"{split}_labels"]
    for m in members[1:]:
        if not np.array_equal(m[f"{split}_labels"], labels):
            raise FerError(f"the selected trials were evaluated on different {split} images (other data); "
                           "an ensemble needs the same split")
    return labels, np.mean([m[f"{split}_{kind}"] for m in members], axis=0)


def build_ensemble(study: optuna.Study, store, top: int, by: str = "macro_f1", diverse: bool = False,
                   name: str | None = None, groups: dict[str, list[int]] | None = None,
                   tta: bool = False) -> dict[str, Any]:
    """The ensemble entry of the ``top`` best trials with stored probabilities (not yet saved).
    ``tta``: average the members' test-time-augmented probabilities (trials run with ``tta:``;
    a trial without them is passed over like one without probabilities)."""
    if top < 1:
        raise FerError(f"--top: must be >= 1, got {top}")
    if name is not None and not NAME_RE.match(name):
        raise FerError(f"--name: {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    if (study.user_attrs.get("spec") or {}).get("cv"):
        # each fold's trial is scored on its own held-out fold: averaging members would mix images
        # (their label sequences may even coincide), so k-fold studies are refused, not guessed at
        raise FerError(f"study {study.study_name!r} is a k-fold CV study: its trials are scored on different "
                       "held-out folds, and an ensemble needs members scored on the same images (ensemble the "
                       "trials of a study without cv:)")
    k = len(study.user_attrs.get("class_names") or [])
    chosen, probs, skipped = [], [], []
    for t in rank_trials(study, by, diverse):
        if len(chosen) == top:
            break
        p = read_probabilities(store, study._storage, t)
        if p is None or (tta and "val_tta_probs" not in p):
            skipped.append(t.number)
            continue
        chosen.append(t)
        probs.append(p)
    if not chosen:
        if tta:
            raise FerError(f"study {study.study_name!r}: no complete trial with stored TTA probabilities "
                           "(--tta needs trials run with tta: flip or multi_crop)")
        raise FerError(f"study {study.study_name!r}: no complete trial with stored probabilities "
                       "(trials store them since fer-study ensembles exist; is --artifacts the study's store?)")
    entry: dict[str, Any] = {
        "derived": "ensemble",
        "name": name or f"top{top}-{by}" + ("-diverse" if diverse else "") + ("-tta" if tta else ""),
        "tta": sorted({str(p["tta"]) for p in probs}) if tta else None,
        "members": [t.number for t in chosen], "member_values": [_score(t, by) for t in chosen],
        "by": by, "top": top, "diverse": diverse, "skipped_without_probabilities": skipped,
        "created": time.time(), "predictions": {},
    }
    for split in ("val", "test"):
        labels, mean = average_probabilities(probs, split, "tta_probs" if tta else "probs")
        pred = mean.argmax(1)
        m = classification_metrics(labels, pred, k or mean.shape[1], groups)
        entry[split] = {key: m[key] for key in KEEP if key in m}
        entry["predictions"][split] = {"labels": labels.astype(int).tolist(), "pred": pred.astype(int).tolist()}
    return entry


def save_ensemble(study: optuna.Study, entry: dict[str, Any]) -> str:
    key = ENSEMBLE_ATTR + entry["name"]
    study.set_user_attr(key, entry)
    return key


def stored_ensembles(study_user_attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in sorted(study_user_attrs.items())
            if k.startswith(ENSEMBLE_ATTR) and isinstance(v, dict) and v.get("derived") == "ensemble"]

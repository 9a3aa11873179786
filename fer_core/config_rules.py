"""Config-time rules and component names, without torch or timm.

``fer-study validate`` checks every planned config (names, head/loss coherence, double re-weighting)
and must answer in well under 2 s: importing torch alone takes ~2 s. So the names every registry
holds and the rules that only read a config live here; the component modules (losses, sampling,
stages, tta, models, data.sources) import them from here, and tests/test_config_rules.py checks
that the names below are exactly the registries' (a new loss added there and not here fails it).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from fer_core.errors import ConfigError
from fer_core.registry import Registry

# Samplers that change the class mix away from the empirical one; combined with a
# class-reweighting loss they correct for imbalance twice (see check_double_weighting).
REBALANCING_SAMPLERS = frozenset({"weighted", "sqrt", "balanced", "curriculum"})
# the per-epoch metric that tells a scheduler when the trial's schedule has settled (fer_core/stages.py)
SETTLED_KEY = "schedule_settled_epoch"
GENERATED = ("synthetic", "digits")  # data sets made in the cache on first use: no data_path


def _names(kind: str, key: str, names: Sequence[str]) -> Registry:
    """A registry of names only (the factories live in the torch modules): ``lookup`` gives the same
    one-line error, valid names listed, as the real registry."""
    r = Registry(kind, key)
    r.update(dict.fromkeys(names))
    return r


LOSS_NAMES = _names("loss", "loss", ["balanced_softmax", "ce", "class_balanced", "focal", "label_smoothing", "ldam",
                                     "ldam_cosine", "ldam_drw", "ldam_drw_cosine", "weighted_ce"])
HEAD_NAMES = _names("classifier head", "head", ["au_attention", "cosine", "linear"])
# heads that pool the backbone's feature map themselves (forward_features, (B,C,H,W)): a backbone
# without one is refused when the model is built (fer_core/models.py check_feature_map)
SPATIAL_HEADS = frozenset({"au_attention"})
STAGE2_NAMES = _names("stage-2 method", "stage2", ["crt", "lws", "none"])
DATA_SAMPLER_NAMES = _names("data sampler", "sampler", ["balanced", "curriculum", "none", "sqrt", "weighted"])
TTA_NAMES = _names("test-time augmentation", "tta", ["flip", "multi_crop", "none"])
AUG_POLICY_NAMES = _names("augmentation policy", "aug_policy", ["batched", "randaugment", "trivialaugment"])
DATASET_NAMES = _names("dataset", "dataset", ["affectnet", "ckplus", "digits", "expw", "fer2013", "ferplus", "folder",
                                              "manifest", "rafce", "rafdb", "rafdb_compound", "synthetic"])


@lru_cache(maxsize=1)
def timm_model_names() -> frozenset[str]:
    """timm's model names. Read from a file per timm version in the cache ($FER_STUDY_CACHE, else
    ~/.cache/fer-study) when there is one: ``timm.list_models()`` needs ``import timm``, which imports
    torch (~2 s of a 0.3 s validate). The first call on a machine writes it (best effort)."""
    try:
        version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    root = Path(os.environ.get("FER_STUDY_CACHE") or Path.home() / ".cache" / "fer-study").expanduser()
    path = root / f"timm-models-{version}.txt" if version else None
    try:
        if path is not None and path.is_file():
            names = frozenset(path.read_text().split())
            if names:
                return names
    except OSError:
        pass
    import timm

    names = frozenset(timm.list_models())
    if path is not None:
        try:  # written whole or not at all: a reader never sees half a list
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=root, delete=False, prefix=".timm-models-") as fh:
                fh.write("\n".join(sorted(names)))
            os.replace(fh.name, path)
        except OSError:
            pass
    return names


def check_backbone(name: str) -> None:
    """Reject unknown timm names before any trial starts (with the closest matches)."""
    base = name.split(".", 1)[0]  # allow pretrained tags such as resnet50.a1_in1k
    if base in timm_model_names():
        return
    close = difflib.get_close_matches(base, sorted(timm_model_names()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ConfigError(f"backbone: unknown timm model {name!r}{hint}")


def _choice(params: Mapping[str, Any], key: str, default: str, allowed: Sequence[str]) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_group_by(group_by: str) -> None:
    """Config-time check of ``cv_group_by`` (no data needed): a compilable pattern or a column name."""
    if group_by.startswith("re:"):
        try:
            re.compile(group_by[3:])
        except re.error as err:
            raise ConfigError(f"cv_group_by: invalid regex {group_by[3:]!r} ({err})") from None
    elif not group_by or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", group_by):
        raise ConfigError(f"cv_group_by: {group_by!r}; allowed: none, a manifest column name, or re:<regex> "
                          "over the image file names")


# Losses that always re-balance classes. focal counts only when focal_alpha != "none";
# use reweights_classes(config), which knows that.
CLASS_WEIGHTED_LOSSES: frozenset[str] = frozenset(
    {"weighted_ce", "class_balanced", "balanced_softmax", "ldam_drw", "ldam_drw_cosine"}
)
# The classifier head each LDAM entry is coherent with (config ``head``): the margin is in
# logit units, ldam_scale * m_c on a linear head, cosine_scale * m_c = s * m_c on the cosine one
HEAD_OF_LOSS: dict[str, str] = {"ldam": "linear", "ldam_drw": "linear",
                                "ldam_cosine": "cosine", "ldam_drw_cosine": "cosine"}

WEIGHTINGS = ("inverse", "sqrt")


def check_head(config: Mapping[str, Any]) -> None:
    """Refuse an LDAM entry on the head its margin does not fit (one line naming both keys)."""
    loss, head = config.get("loss", "ce"), config.get("head", "linear")
    want = HEAD_OF_LOSS.get(loss)
    if want is not None and head != want:
        other = {"linear": "ldam_cosine or ldam_drw_cosine", "cosine": "ldam or ldam_drw"}[head] \
            if head in ("linear", "cosine") else "another loss"
        raise ConfigError(f"loss: {loss!r} needs head: {want} (its margin is in that head's logit units), got "
                          f"head: {head!r}; use head: {want}, or loss {other} with head: {head}")


def reweights_classes(config: Mapping[str, Any]) -> bool:
    """True when the configured loss re-balances classes (focal only with focal_alpha)."""
    loss = config.get("loss", "ce")
    if loss == "focal":
        return _choice(config, "focal_alpha", "none", ("none", *WEIGHTINGS)) != "none"
    return loss in CLASS_WEIGHTED_LOSSES


def check_double_weighting(config: Mapping[str, Any]) -> None:
    """Reject re-balancing twice: a class-reweighting loss or deferred class weights (DRW) on top of
    a re-balancing data sampler, in any phase of the run (stage 1, after the deferred switch
    ``defer_start``, stage 2), or deferred weights on top of a loss that already re-weights."""
    allow = config.get("allow_double_weighting", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"allow_double_weighting: must be true or false, got {allow!r}")
    if allow:
        return
    loss = config.get("loss", "ce")
    own = [f"loss: {loss!r}"] if reweights_classes(config) else []
    deferring = config.get("defer_start", 0.0) not in (0, 0.0, None)
    defer_w = config.get("defer_weighting", "none")
    deferred = [f"defer_weighting: {defer_w!r}"] if deferring and defer_w != "none" else []
    if own and deferred:
        raise ConfigError(
            f"{deferred[0]} re-weights classes on top of {own[0]}, which already re-balances them "
            "(the tail gets counted twice); use defer_weighting 'none' or a plain loss, or set "
            "allow_double_weighting: true to run it anyway")
    defer_s = config.get("defer_sampler", "keep") if deferring else "keep"
    # (key, data sampler, what re-weights classes while that sampler draws)
    phases = [("sampler", config.get("sampler", "none"), own)]
    if deferred or defer_s != "keep":
        phases.append(("defer_sampler", defer_s, own + deferred) if defer_s != "keep"
                      else ("sampler", config.get("sampler", "none"), own + deferred))
    if config.get("stage2", "none") != "none":
        phases.append(("stage2_sampler", config.get("stage2_sampler", "balanced"), own + deferred))
    for key, sampler, weighting in phases:
        if sampler in REBALANCING_SAMPLERS and weighting:
            use = "sampler 'none' or a plain loss" if key == "sampler" else \
                f"a {key} that keeps the class mix ('none') or a plain loss without deferred weights"
            raise ConfigError(
                f"{weighting[0]} re-weights classes and {key} {sampler!r} already re-balances "
                f"them, which over-corrects (the tail gets counted twice); use {use}, "
                "or set allow_double_weighting: true to run it anyway")


def parse_teacher(value: Any, src: str) -> tuple[str | None, dict[str, Any] | None]:
    """A study's ``teacher:``: (a model file path, None) or (None, {study, top})."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and set(value) <= {"study", "top"} and isinstance(value.get("study"), str):
        top = value.get("top", 1)
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"{src}: teacher.top must be an integer >= 1, got {top!r}")
        return None, {"study": value["study"], "top": top}
    raise ConfigError(f"{src}: teacher must be a model file path or {{study: NAME, top: k}}, got {value!r}")

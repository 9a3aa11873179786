"""The flat trial config, validated once at the edge into a frozen pydantic model.

Keys map 1:1 onto Optuna params (DESIGN.md "Contracts"). Unknown keys and invalid
values are rejected here, before any data is loaded or any trial starts, with a
one-line ``ConfigError`` naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fer_core.errors import ConfigError
from fer_core.metric_names import SELECT_METRICS
from fer_core.yamlsafe import load_yaml


class TrainConfig(BaseModel):
    """Every knob of one training run. Defaults are the plain-CE baseline on the stand-in."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # emotion loss and its parameters (each loss reads only its own keys)
    loss: str = "ce"
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    focal_alpha: Literal["none", "inverse", "sqrt"] = "none"
    cb_beta: float = Field(0.999, ge=0.9, le=0.99999)
    cb_base: Literal["ce", "focal"] = "ce"
    label_smoothing: float = Field(0.1, ge=0.0, lt=0.5)
    class_weighting: Literal["inverse", "sqrt"] = "inverse"
    logit_adjust_tau: float = Field(1.0, ge=0.0, le=5.0)
    ldam_max_margin: float = Field(0.5, gt=0.0, le=2.0)
    ldam_scale: float = Field(5.0, gt=0.0, le=100.0)  # margin in logit units = ldam_scale * m_c (plain linear head)
    drw_start: float = Field(0.8, gt=0.0, le=1.0)
    # data sampler (indices only) and the double-weighting guard
    sampler: str = "none"
    allow_double_weighting: bool = False
    # schedule switches (fer_core/stages.py). Deferred re-sampling / re-weighting (DRS / DRW for any
    # loss): from epoch max(1, int(defer_start * epochs)) the data sampler becomes defer_sampler
    # ("keep": unchanged) and/or class weights defer_weighting multiply the loss; 0 = no switch
    defer_start: float = Field(0.0, ge=0.0, lt=1.0)
    defer_sampler: str = "keep"
    defer_weighting: Literal["none", "effective", "inverse", "sqrt"] = "none"
    # stage 2 after the `epochs` of stage 1 (Kang et al. 2020): none | crt | lws, trained for
    # stage2_epochs more epochs with the data sampler stage2_sampler (class-balanced by default)
    stage2: str = "none"
    stage2_epochs: int = Field(0, ge=0, le=1000)
    stage2_sampler: str = "balanced"
    # stage 2's peak lr (0: lr). LWS learns one scale per class: at a fine-tuning lr its scales barely
    # move in a few epochs (measured on the digits: LWS equal to its stage 1 on every image)
    stage2_lr: float = Field(0.0, ge=0.0, le=10.0)
    # augmentation
    aug_strength: float = Field(0.3, ge=0.0, le=1.0)
    minority_boost: float = Field(0.0, ge=0.0, le=1.0)
    mixup_alpha: float = Field(0.0, ge=0.0, le=10.0)
    cutmix_alpha: float = Field(0.0, ge=0.0, le=10.0)
    mixup_prob: float = Field(1.0, ge=0.0, le=1.0)
    # augmentation policy (fer_core/augment.py AUG_POLICIES): batched = the pipeline above alone;
    # randaugment / trivialaugment (torchvision) run first on the uint8 images, then the batched pipeline
    # at aug_strength (+ minority_boost) as before: aug_strength 0 for the policy alone
    aug_policy: str = "batched"
    # model
    backbone: str = "resnet10t"  # fast on a laptop CPU at 64 px; resnet50 at 224 px on GPUs
    # starting weights (fer_core/pretrained.py): false = scratch, true = timm's own (hub cache), file =
    # pretrained_path (read only by file); norm_mean/norm_std: the input normalisation (RGB, images in
    # [0, 1]); unset: the backbone's pretrained_cfg, as its timm weights expect
    pretrained: bool | Literal["file"] = False
    pretrained_path: str | None = None
    norm_mean: tuple[float, float, float] | None = None
    norm_std: tuple[float, float, float] | None = None
    img_size: int = Field(64, ge=32, le=512)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth (timm's, rate of the last block); 0 = off
    au_weight: float = Field(0.0, ge=0.0, le=10.0)
    # AU BCE: balanced = pos_weight n_neg/n_pos per AU from the training split (AU prevalence runs from ~1 % to 87 %)
    au_pos_weight: Literal["none", "balanced"] = "none"
    # the emotion head: linear | cosine (normalised, logits cosine_scale * cos; LDAM as published)
    head: str = "linear"
    cosine_scale: float = Field(30.0, gt=0.0, le=100.0)
    # head au_attention: weight of the weak AU-location prior on its attention map (upper/lower face half of
    # the image's active AUs, fer_core/losses.py attention_prior_loss; acts only with AU labels); 0 = off
    au_attention_prior: float = Field(0.0, ge=0.0, le=10.0)
    # knowledge distillation (fer_core/distill.py): teacher model file(s), weight of its soft targets, temperature
    teacher: tuple[str, ...] = ()
    distill_alpha: float = Field(0.5, ge=0.0, le=1.0)
    distill_temperature: float = Field(4.0, gt=0.0, le=100.0)
    # optimisation
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.05, ge=0.0, le=1.0)
    batch_size: int = Field(64, ge=2, le=4096)
    epochs: int = Field(12, ge=1, le=1000)
    warmup_epochs: int = Field(1, ge=0, le=100)
    # fine-tuning features (docs/concepts/methods.md, "Fine-tuning features"), each off by default: EMA of the weights
    # (timm ModelEmaV3; the EMA is the model validated, selected and tested), layer-wise lr decay (timm's
    # layer groups, heads at the full lr), max global gradient norm, micro-batches per optimizer step
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    layer_decay: float | None = Field(None, ge=0.0, le=1.0)  # None or 0 = off
    grad_clip: float = Field(0.0, ge=0.0)
    grad_accum: int = Field(1, ge=1, le=1024)
    early_stopping_patience: int = Field(0, ge=0, le=1000)  # 0 = train all epochs
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # the validation metric that selects the epoch (a study sets its objective's metric here)
    select_metric: Literal[SELECT_METRICS] = "macro_f1"  # type: ignore[valid-type]  # a tuple of names
    # metrics: classes with <= tail_max_count train images are "tail", >= head_min_count "head"
    tail_max_count: int = Field(100, ge=0)
    head_min_count: int = Field(300, ge=1)
    # data
    dataset: str = "synthetic"
    data_path: str | None = None
    data_seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    cache_dir: str | None = None
    # published releases (fer_core/data/fer2013.py, affectnet.py): FER+ trains on the majority vote or on the
    # annotators' vote distribution (soft targets, same images); AffectNet's 7-class setting drops contempt
    ferplus_labels: Literal["majority", "soft"] = "majority"
    affectnet_classes: Literal[7, 8] = 7
    # k-fold cross-validation over the train+val pool (fer_core/data/folds.py); 0 = the source's own split
    cv_folds: int = Field(0, ge=0, le=50)
    cv_fold: int = Field(0, ge=0, lt=50)
    cv_repeat: int = Field(0, ge=0, lt=100)  # which partition of repeated k-fold (cv.repeats)
    cv_group_by: str = "none"  # none | a manifest column | re:<regex> over image file names
    # execution (chosen automatically; explicit values are for benchmarks and debugging)
    device: str = "auto"
    num_threads: int = Field(0, ge=0, le=1024)  # 0 = all cores of this process
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast if measured faster (fer_core/precision.py)
    compile: bool = False
    eval_batch_size: int = Field(256, ge=1, le=65536)
    # evaluation: test-time augmentation at the selected epoch, reported beside the plain metrics
    tta: str = "none"
    # a post-hoc correction for the label prior as the trial's own output (fer_core/posthoc.py: logit_adjust,
    # tau_norm; tau chosen on validation); every trial reports all of them beside its plain metrics anyway
    posthoc: str = "none"
    # class activation maps at the selected epoch (fer_core/cam.py): Grad-CAM of up to cam_samples seeded
    # validation images per class, per-class mean maps and PNG grids as trial artifacts; 0 = off (the
    # maps cost a backward pass per image and a few files per trial: a study that wants them asks)
    cam_samples: int = Field(0, ge=0, le=256)

    @field_validator("pretrained", mode="before")
    @classmethod
    def _regime(cls, v: Any) -> Any:
        if isinstance(v, bool) or v == "file":
            return v
        raise ValueError("must be false (scratch), true (timm's pretrained weights) or file (pretrained_path)")

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_list(cls, v: Any) -> Any:
        return () if v is None or v == "" else (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        if self.head_min_count <= self.tail_max_count:
            raise ValueError("head_min_count must be larger than tail_max_count")
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.batch_size % 2:
            raise ValueError(f"batch_size must be even with mixup/cutmix (got {self.batch_size})")
        if self.cv_folds in (1, 2):
            raise ValueError(f"cv_folds must be 0 (no cross-validation) or at least 3 (one fold held out, one "
                             f"selecting the epoch, the rest training), got {self.cv_folds}")
        if self.cv_fold >= max(self.cv_folds, 1):
            raise ValueError(f"cv_fold ({self.cv_fold}) must be smaller than cv_folds ({self.cv_folds})")
        for key, lo, hi in (("norm_mean", 0.0, 1.0), ("norm_std", 0.0, 1.0)):
            v = getattr(self, key)
            if v is not None and not all((lo < x if key == "norm_std" else lo <= x) and x <= hi for x in v):
                raise ValueError(f"{key} must be 3 numbers (R, G, B) in {'(0, 1]' if key == 'norm_std' else '[0, 1]'} "
                                 f"for images scaled to [0, 1], got {list(v)}")
        if self.au_attention_prior > 0 and self.head != "au_attention":
            raise ValueError(f"au_attention_prior is a prior on the attention map of head: au_attention, got head: "
                             f"{self.head}; set head: au_attention or au_attention_prior: 0")
        if self.stage2 != "none" and self.stage2_epochs < 1:
            raise ValueError(f"stage2_epochs must be at least 1 with stage2 {self.stage2!r} (got {self.stage2_epochs})")
        switches = self.defer_sampler != "keep" or self.defer_weighting != "none"
        if self.defer_start > 0 and not switches:
            raise ValueError("defer_start is set but nothing is deferred: set defer_sampler (a data sampler) "
                             "and/or defer_weighting (effective, inverse, sqrt)")
        if switches and self.defer_start == 0:
            raise ValueError("defer_sampler/defer_weighting need defer_start in (0, 1): the fraction of the "
                             "epochs after which they take over")
        if switches and self.epochs < 2:
            raise ValueError(f"defer_start: with epochs {self.epochs} a deferred switch never acts (needs epochs >= 2)")
        return self


KEYS: tuple[str, ...] = tuple(TrainConfig.model_fields)


# the keys a stage 2 alone reads (fer_core/stages.py)
STAGE2_KEYS = frozenset({"stage2_epochs", "stage2_sampler", "stage2_lr"})


def unread_keys(cfg: Mapping[str, Any]) -> frozenset[str]:
    """Keys a (dumped) config never reads: without a stage 2, its epochs, sampler and lr. Two configs
    that differ only there train alike (a warm start may treat them as one point)."""
    return STAGE2_KEYS if cfg.get("stage2", "none") == "none" else frozenset()


def _one_line(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc, KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown config key {loc!r}{hint}"
    if not loc:
        return msg
    return f"config key {loc!r}: {msg} (got {e.get('input')!r})"


def resolve_config(config: Mapping[str, Any] | TrainConfig, *, check_names: bool = True,
                   check_weights: bool = True) -> TrainConfig:
    """Validate a flat config dict into a frozen TrainConfig; resolve every registry name; with
    ``check_weights``, the starting weights must be here (``check_weight_files``)."""
    if isinstance(config, TrainConfig):
        cfg = config
    else:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping of key: value, got {type(config).__name__}")
        try:
            cfg = TrainConfig(**dict(config))
        except ValidationError as err:
            raise ConfigError(_one_line(err)) from None
        except TypeError as err:  # non-string keys
            raise ConfigError(f"config keys must be strings: {err}") from None
    if check_names:
        check_registry_names(cfg)
        if check_weights:
            check_weight_files(cfg)
    return cfg


def check_registry_names(cfg: TrainConfig) -> None:
    # names and rules from config_rules, not the component modules: those import torch (~2 s), which
    # `fer-study validate` must not wait for (tests/test_config_rules.py keeps the names in step)
    from fer_core import config_rules as rules
    from fer_core.posthoc import POSTHOC
    from fer_core.registry import lookup

    LOSSES, HEADS, STAGE2, TTA = rules.LOSS_NAMES, rules.HEAD_NAMES, rules.STAGE2_NAMES, rules.TTA_NAMES
    DATA_SAMPLERS, DATASETS, GENERATED = rules.DATA_SAMPLER_NAMES, rules.DATASET_NAMES, rules.GENERATED
    check_head, check_double_weighting, check_backbone = rules.check_head, rules.check_double_weighting, \
        rules.check_backbone
    lookup(LOSSES, cfg.loss)
    lookup(HEADS, cfg.head)
    check_head(cfg.model_dump())
    lookup(STAGE2, cfg.stage2)
    lookup(DATA_SAMPLERS, cfg.stage2_sampler, key="stage2_sampler")
    if cfg.defer_sampler != "keep":
        try:
            lookup(DATA_SAMPLERS, cfg.defer_sampler, key="defer_sampler")
        except ConfigError as err:  # "keep" (no deferred sampler) is valid too
            raise ConfigError(f"{err}, keep") from None
    lookup(TTA, cfg.tta)
    lookup(rules.AUG_POLICY_NAMES, cfg.aug_policy)
    if cfg.posthoc != "none" and cfg.posthoc not in POSTHOC:
        raise ConfigError(f"posthoc: unknown post-hoc method {cfg.posthoc!r}; valid: none, {', '.join(sorted(POSTHOC))}")
    if cfg.posthoc == "tau_norm" and (cfg.head != "linear" or cfg.stage2 == "lws"):
        # tau-norm rescales a linear head's class weights: a cosine head's are unit length, LWS scales sit outside
        raise ConfigError(f"posthoc: tau_norm needs a plain linear head (head: linear, no stage2: lws), got "
                          f"head: {cfg.head}, stage2: {cfg.stage2}; use posthoc: logit_adjust")
    if cfg.cv_group_by != "none":
        from fer_core.config_rules import check_group_by

        check_group_by(cfg.cv_group_by)
    lookup(DATA_SAMPLERS, cfg.sampler)
    lookup(DATASETS, cfg.dataset)
    check_backbone(cfg.backbone)
    check_double_weighting(cfg.model_dump())
    if cfg.dataset not in GENERATED and not cfg.data_path:
        raise ConfigError(f"data_path is required for dataset {cfg.dataset!r}")
    if cfg.dataset not in GENERATED and not Path(cfg.data_path).expanduser().exists():
        # found here, not 20 s into a launch once Ray is up and the data is being decoded
        raise ConfigError(f"data_path: {cfg.data_path}: no such file or directory (dataset {cfg.dataset!r})")
    for path in cfg.teacher:
        if not Path(path).is_file():
            raise ConfigError(f"teacher: model file not found: {path}")

def check_weight_files(cfg: TrainConfig) -> None:
    """The starting weights are to be had here (fer_core/pretrained.py: a file, timm's hub cache).
    Part of resolving a config for a run; a study checks it at launch, not in ``validate`` (the
    weights are a property of the machine that trains, like its GPU)."""
    from fer_core.pretrained import check_weights

    check_weights(cfg)
    if cfg.teacher and cfg.distill_alpha > 0:  # read now, not after the data and the student are loaded
        from fer_core.checkpoint import read_model_file

        for path in cfg.teacher:
            read_model_file(path)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is parsed as YAML (so 1e-3, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = load_yaml(raw, f"--set {key[:60]}") if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; users mean a number
        try:
            value = float(value) if any(ch.isdigit() for ch in value) else value
        except ValueError:
            pass
    return key, value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML config; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: config file is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except ValueError:  # a NUL in the name: no file can have it
        raise ConfigError(f"--config {str(path)!r}: not a valid file name") from None
    try:
        data = load_yaml(text, str(p))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} invalid YAML") from None
    if data is None or data == {}:  # '' or /dev/null: training on defaults is not what --config asked for
        raise ConfigError(f"{p}: empty config file (no keys); give config keys in it, or leave --config out to "
                          "train on the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Config file (optional) + ``--set`` overrides -> validated TrainConfig."""
    if path is not None and not str(path).strip():
        raise ConfigError("--config: empty file name; give a YAML config file, or leave --config out to train on "
                          "the defaults")
    data: dict[str, Any] = load_config_file(path) if path is not None else {}
    for item in overrides:
        key, value = parse_override(item)
        data[key] = value
    try:
        return resolve_config(data)
    except ConfigError as err:
        if path:
            raise ConfigError(f"{path}: {err}") from None
        raise

"""The trainable: ``train_fer(config, report=...)``, a pure function of a flat config dict.

Everything a study varies is a key of the config (see ``fer_core.config.TrainConfig``).
The loop keeps the decoded uint8 data set on the training device for the whole run,
draws index batches from the data sampler, augments whole batches as tensor ops, and
selects the epoch on validation by ``select_metric`` (the study's objective; macro-F1 by
default). The test split is evaluated once, at the selected epoch, never used for selection
or early stopping. Schedule switches (deferred re-sampling/re-weighting, stage 2: cRT, LWS)
live in ``fer_core/stages.py``; with a stage 2 the selected epoch is stage 2's. With ``ema_decay``
the exponential moving average of the weights is the model that is validated, selected and tested
(stage 2 restarts it from stage 1's selected weights, so it averages stage 2's steps only).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3

from fer_core.augment import augment, sample_strength
from fer_core.cam import class_activation_maps, class_regions
from fer_core.checkpoint import pred_from_state, pred_to_state, restore_rng, rng_state
from fer_core.config import TrainConfig, resolve_config
from fer_core.data.dataset import AU_VOCAB, TEST, TRAIN, VAL, FerDataset
from fer_core.data.folds import fold_dataset, partition_seed
from fer_core.data.sources import dataset_for
from fer_core.distill import Teacher
from fer_core.losses import LOSSES, attention_prior_loss
from fer_core.metric_names import SCALAR_METRICS
from fer_core.metrics import (
    au_macro_f1,
    au_metrics,
    au_pos_weight,
    choose_au_thresholds,
    class_groups,
    classification_metrics,
    mean_nll,
    softmax,
)
from fer_core.models import FerNet
from fer_core.posthoc import POSTHOC, Head, applicable, choose_tau
from fer_core.precision import choose_amp, step_timer
from fer_core.registry import lookup
from fer_core.stages import (
    SETTLED_KEY,
    SamplerSchedule,
    begin_stage2,
    first_selectable_epoch,
    schedule_settled_epoch,
    stage2_lr_lambda,
    stage_mode,
    stage_summary,
    total_epochs,
    with_deferred_weights,
)
from fer_core.tta import TTA

Report = Callable[..., None]  # report(metrics: dict, checkpoint: dict) -> None
log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_and_channels_last(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """bf16 autocast where it measured faster for this shape (``amp: auto``, fer_core/precision.py) or
    forced; channels_last unless turned off (measured faster for convnets on CPU too)."""
    cl = cfg.channels_last != "off"
    return choose_amp(cfg, device, cl, lambda: step_timer(cfg, device, cl, train_step)) == "bf16", cl


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # timm's Mixup draws lambda from numpy's global RNG
    torch.manual_seed(seed)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warmup then cosine decay to 1 % of the peak, per optimizer step."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def make_optimizer(named_params, cfg: TrainConfig, device: torch.device, schedule: Callable[[int], float],
                   lr: float | None = None, model: FerNet | None = None,
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on norms/biases/scales) and its per-step LambdaLR schedule. With ``layer_decay``
    and the whole ``model`` (stage 1), timm's optimizer factory groups the parameters by depth
    (``FerNet.group_matcher``): lr * layer_decay^(layers below the heads), the heads at the full lr."""
    # fused: one kernel over all parameters (measured ~3x faster than foreach on this CPU), CPU and CUDA alike
    fused = device.type in ("cpu", "cuda")
    if cfg.layer_decay and model is not None:
        opt = create_optimizer_v2(model, "adamw", lr=lr or cfg.lr, weight_decay=cfg.weight_decay,
                                  layer_decay=cfg.layer_decay, fused=fused)
        for group in opt.param_groups:  # timm's lr_scale is read by timm's schedulers; LambdaLR scales each lr
            group["lr"] *= group["lr_scale"]
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    named = list(named_params)
    decay = [p for n, p in named if p.ndim > 1]
    no_decay = [p for n, p in named if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr or cfg.lr,
        fused=fused,
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def make_ema(model: FerNet, cfg: TrainConfig) -> ModelEmaV3 | None:
    """The EMA of the weights (``ema_decay``; buffers too), starting from the model's weights now."""
    return ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None


def no_best() -> dict:
    """The selection state before any epoch of a stage was validated."""
    return {"score": -2.0, "epoch": -1, "state": None, "val": None, "val_pred": None}


def train_step(model, x, target, au_target, loss_fn, au_weight: float, epoch: int, amp: bool,
               teacher: Teacher | None = None, alpha: float = 0.0, au_pos: torch.Tensor | None = None,
               au_prior: float = 0.0) -> dict:
    """One forward/loss; returns {"loss", "logits"} (timm task style). Backward is the caller's."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(x)
        soft_loss = teacher.loss(out["logits"], x) if teacher is not None else None
    logits = out["logits"].float()
    loss = loss_fn(logits, target, epoch=epoch)
    if soft_loss is not None:  # distillation: the labels' loss shares its weight with the teacher's soft targets
        loss = (1 - alpha) * loss + alpha * soft_loss
    if au_weight > 0:
        loss = loss + au_weight * F.binary_cross_entropy_with_logits(out["au_logits"].float(), au_target,
                                                                     pos_weight=au_pos)  # au_pos_weight
    if au_prior > 0:  # head au_attention: the weak AU-location prior on its attention map
        loss = loss + au_prior * attention_prior_loss(out["attention"], au_target)
    return {"loss": loss, "logits": logits}


@torch.inference_mode()
def predict(model, images: torch.Tensor, idx: torch.Tensor, cfg: TrainConfig, amp: bool, cl: bool,
            tta: str = "none") -> dict:
    """Class probabilities and AU probabilities for ``images[idx]`` (uint8 on the device),
    averaged over the views of the ``tta`` entry (``none``: the image itself)."""
    model.eval()
    views_of = lookup(TTA, tta)
    probs, logits, au_probs = [], [], []
    for chunk in idx.split(cfg.eval_batch_size):
        p = a = 0.0
        views = views_of(images[chunk].float().div_(255))
        for x in views:
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            p = p + out["logits"].float().softmax(1)
            a = a + out["au_logits"].float().sigmoid()
        probs.append((p / len(views)).cpu())
        # float32 logits are what post-hoc methods and calibration need (tail probabilities flush to
        # zero in float16); several views: the log of the averaged probabilities
        logits.append(out["logits"].float().cpu() if len(views) == 1 else probs[-1].clamp_min(1e-30).log())
        au_probs.append((a / len(views)).cpu())
    return {"probs": torch.cat(probs).numpy(), "logits": torch.cat(logits).numpy(),
            "au_probs": torch.cat(au_probs).numpy()}


def predict_model(model, payload: dict[str, Any], images: torch.Tensor) -> dict[str, np.ndarray]:
    """{"probs", "logits", "au_probs"} of a ``fer_core.checkpoint.load_model`` model for uint8 images (N, 3, H, W) on the
    model's device, computed as the trial computed its stored ones (``predict``): in the precision
    it trained and tested in (bf16 autocast where ``amp: auto`` chose it; files from before the key: fp32),
    in its memory format and evaluation batches. A plain fp32 forward differs from them by bf16's rounding."""
    cfg = resolve_config(payload["config"], check_names=False)
    cl = cfg.channels_last != "off"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    idx = torch.arange(len(images), device=images.device)
    return predict(model, images, idx, cfg, payload.get("amp", "off") == "bf16", cl)


def evaluate(pred: dict, ds: FerDataset, idx: torch.Tensor, groups: dict, with_aus: bool) -> dict:
    y = ds.labels[idx].numpy()
    probs = pred["probs"]
    m = classification_metrics(y, probs.argmax(1), ds.num_classes, groups)
    m["loss"] = mean_nll(probs, y)
    if with_aus:
        m["au_f1"] = au_macro_f1(ds.aus[idx].numpy(), pred["au_probs"])
        m["au_auc"] = au_metrics(ds.aus[idx].numpy(), pred["au_probs"])["au_auc"]
    return m


def with_au_thresholds(splits: dict[str, dict], preds: dict[str, dict], ds: FerDataset,
                       idx: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per-AU F1/AUC of each split with every AU's threshold chosen on validation (max F1 there),
    the same thresholds applied to test (``au_threshold``); ``au_f1`` stays the macro-F1 at 0.5."""
    th = choose_au_thresholds(ds.aus[idx["val"]].numpy(), preds["val"]["au_probs"])
    return {s: {**m, **au_metrics(ds.aus[idx[s]].numpy(), preds[s]["au_probs"], th)} for s, m in splits.items()}


def posthoc_predictions(model: FerNet, preds: dict[str, dict], labels: dict[str, np.ndarray], counts: list[int],
                        groups: dict, cfg: TrainConfig) -> dict[str, dict]:
    """Every applicable post-hoc correction of the selected model (``fer_core/posthoc.py``): its tau
    chosen on validation by ``select_metric``, then the corrected logits and metrics of each split."""
    layer = model.emotion_head
    # tau-norm rescales a linear head's class weights; a cosine head has unit weights, and LWS's
    # per-class scales sit outside the weights the formula reads
    linear = isinstance(layer, torch.nn.Linear) and model.emotion_scale is None
    head = Head(counts, layer.weight.detach().float().norm(dim=1).cpu().numpy() if linear else None,
                layer.bias.detach().float().cpu().numpy() if linear and layer.bias is not None else None)
    k = len(counts)

    def metrics(split: str, logits: np.ndarray) -> dict:
        y = labels[split]
        m = classification_metrics(y, logits.argmax(1), k, groups)
        m["loss"] = mean_nll(softmax(logits), y)
        return m

    out = {}
    for name in applicable(head):
        tau = choose_tau(name, preds["val"]["logits"], head, lambda z: metrics("val", z)[cfg.select_metric])
        logits = {split: POSTHOC[name](p["logits"], head, tau) for split, p in preds.items()}
        out[name] = {"tau": tau, "logits": logits, **{split: metrics(split, z) for split, z in logits.items()}}
    return out


def flat_epoch_metrics(epoch: int, train_loss: float, val: dict, extra: dict) -> dict:
    """The metrics reported every epoch (flat: they become Ray/Optuna values)."""
    out = {"epoch": epoch, "loss": train_loss, "val_loss": val["loss"]}
    for k in SCALAR_METRICS:
        if k in val and k != "loss":  # the epoch's training loss is "loss", the validation loss "val_loss"
            out[k] = val[k]
    out.update({f"f1_{c:02d}": v for c, v in enumerate(val["f1"])})
    out.update(extra)
    return out


def train_fer(
    config: Mapping[str, Any] | TrainConfig,
    report: Report | None = None,
    *,
    dataset: FerDataset | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> dict:
    """Train one model; return the selected epoch's validation and test metrics.

    ``report(metrics, checkpoint=state)`` is called after every epoch; ``state`` is a dict
    of tensors and plain containers (``torch.save`` it; ``fer_core.checkpoint.load_training_state``
    reads it back weights-only) that ``checkpoint=`` accepts to resume exactly where it was (a
    scheduler can pause and resume a trial). ``dataset`` skips loading (shared from the Ray object store).
    """
    # 1. validate at the edge, pick the device and precision (measured once per shape), seed everything
    cfg = resolve_config(config)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or len(os.sched_getaffinity(0)))
    amp, cl = amp_and_channels_last(cfg, device)
    seed_everything(cfg.seed)
    t_start = time.perf_counter()

    # 2. data: decoded once, kept on the device as uint8 for the whole run
    ds = dataset if dataset is not None else dataset_for(cfg)
    if cfg.cv_folds:  # k-fold CV: fold cv_fold of the train+val pool is held out (scored), the next selects
        ds = fold_dataset(ds, cfg.cv_folds, cfg.cv_fold, cfg.cv_group_by,
                          partition_seed(cfg.data_seed, cfg.seed, cfg.cv_repeat))
    if ds.images.shape[-1] != cfg.img_size:
        raise ValueError(f"data set is {ds.images.shape[-1]} px but img_size is {cfg.img_size}")
    images = ds.images.to(device)
    train_idx, val_idx, test_idx = (ds.indices(s) for s in (TRAIN, VAL, TEST))
    train_labels = ds.labels[train_idx]
    counts = ds.class_counts(TRAIN)
    groups = class_groups(counts, cfg.tail_max_count, cfg.head_min_count)
    with_aus = cfg.au_weight > 0 and ds.has_aus
    train_idx_dev, labels_dev = train_idx.to(device), train_labels.to(device)
    aus_dev = ds.aus[train_idx].to(device)
    # FER+ vote distributions (ferplus_labels: soft) replace the one-hot targets; the losses take both
    soft_dev = ds.soft_labels[train_idx].to(device) if ds.soft_labels is not None else None

    # 3. model, loss (with deferred class weights, if any), data sampler by epoch, optimizer, schedule
    model = FerNet(
        cfg.backbone, ds.num_classes, len(AU_VOCAB),
        # the regime (fer_core/pretrained.py): pretrained_path is read only by pretrained: file
        pretrained=cfg.pretrained is True, pretrained_path=cfg.pretrained_path if cfg.pretrained == "file" else None,
        drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, head=cfg.head, cosine_scale=cfg.cosine_scale,
        norm_mean=cfg.norm_mean, norm_std=cfg.norm_std,
    ).to(device)
    log.info("%s", model.weights_summary)
    au_pos = (torch.from_numpy(au_pos_weight(ds.aus[train_idx].numpy())).to(device)
              if with_aus and cfg.au_pos_weight == "balanced" else None)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile else model
    loss_fn = with_deferred_weights(lookup(LOSSES, cfg.loss)(cfg.model_dump(), counts, cfg.epochs), cfg, counts)
    loss_fn = loss_fn.to(device)
    teacher = (Teacher.load(cfg.teacher, ds.class_names, cfg.distill_temperature).to(device)
               if cfg.teacher and cfg.distill_alpha > 0 else None)
    plans = SamplerSchedule(cfg, train_labels)  # sampler, then defer_sampler (DRS), then stage2_sampler
    # the schedules count optimizer steps: grad_accum micro-batches make one (a partial last one per epoch)
    steps_per_epoch = math.ceil(plans.steps_per_epoch / cfg.grad_accum)
    opt, sched = make_optimizer(model.named_parameters(), cfg, device, lr_lambda(cfg, steps_per_epoch), model=model)
    ema = make_ema(model, cfg)
    mixup = (
        Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.mixup_prob,
              label_smoothing=0.0, num_classes=ds.num_classes)
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0 else None
    )
    sampler_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    history: list[dict] = []
    best = no_best()
    start_epoch, bad_epochs, stopped_early = 0, 0, False
    stage, stage1 = 1, None  # stage1: what stage 1 selected, once stage 2 has begun
    last_epoch, settled, selectable_from = total_epochs(cfg), schedule_settled_epoch(cfg), first_selectable_epoch(cfg)

    def start_stage2() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        # only the stage-2 method's parameters train (cRT: a fresh head; LWS: per-class scales)
        return make_optimizer(begin_stage2(cfg, model), cfg, device, stage2_lr_lambda(cfg, steps_per_epoch),
                              cfg.stage2_lr)

    # 4. resume from a checkpoint (a paused or restarted trial continues exactly, in the stage it was in)
    if checkpoint is not None:
        if checkpoint.get("stage", 1) == 2:  # stage 2's parameters and optimizer exist before their state loads
            stage, stage1 = 2, checkpoint["stage1"]
            opt, sched = start_stage2()
            ema = make_ema(model, cfg)  # stage 2's EMA (with its parameters: LWS scales)
        model.load_state_dict(checkpoint["model"])
        if ema is not None:
            ema.module.load_state_dict(checkpoint["ema"])
        opt.load_state_dict(checkpoint["optimizer"])
        sched.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["rng"], sampler_gen, aug_gen)
        history = list(checkpoint["history"])
        best = {**checkpoint["best"], "val_pred": pred_from_state(checkpoint["best"]["val_pred"])}
        start_epoch, bad_epochs = checkpoint["epoch"] + 1, checkpoint["bad_epochs"]
        stopped_early = checkpoint.get("stopped_early", False)
        if stage == 1 and cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
            start_epoch = cfg.epochs  # stage 1 had stopped early: on to stage 2, if any

    epoch = start_epoch
    while epoch < last_epoch:
        # 5. stage 2 begins after stage 1's epochs: from stage 1's selected weights, only the
        #    classifier trains, and stage 2 selects its own epoch (fer_core/stages.py); an EMA restarts there
        if stage == 1 and epoch >= cfg.epochs:
            model.load_state_dict(best["state"])
            stage, stage1, best, bad_epochs = 2, stage_summary(best), no_best(), 0
            opt, sched = start_stage2()
            ema = make_ema(model, cfg)

        # 6. one epoch: index batches -> uint8 gather -> augmentation (policy, then batched) -> mixup ->
        #    step: every grad_accum micro-batches (each loss / their number), clipped, then the EMA follows
        stage_mode(model, stage)
        t0, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
        batches, accum = plans.batches(epoch, sampler_gen), cfg.grad_accum
        for i, pos in enumerate(batches):
            pos = pos.to(device)
            y = labels_dev[pos]
            strength = sample_strength(y, cfg.aug_strength, cfg.minority_boost, counts)
            x = augment(images[train_idx_dev[pos]], strength.to(device), aug_gen, cfg.aug_policy)
            target = F.one_hot(y, ds.num_classes).float() if soft_dev is None else soft_dev[pos]
            au_target = aus_dev[pos]
            if mixup is not None:
                lam = mixup._mix_batch(x)  # lam is needed to mix the AU targets the same way
                target = lam * target + (1 - lam) * target.flip(0)
                au_target = lam * au_target + (1 - lam) * au_target.flip(0)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            out = train_step(step_model, x, target, au_target, loss_fn, cfg.au_weight if with_aus else 0.0, epoch, amp,
                             teacher, cfg.distill_alpha, au_pos, cfg.au_attention_prior if with_aus else 0.0)
            if i % accum == 0:  # an optimizer step begins: its micro-batches (the epoch's last step may have fewer)
                opt.zero_grad(set_to_none=True)
                micro = min(accum, len(batches) - i)
            (out["loss"] / micro).backward()  # the step's gradient: the mean of its micro-batches'
            if (i + 1) % accum == 0 or i + 1 == len(batches):
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model)
            loss_sum += out["loss"].detach() * len(pos)
            seen += len(pos)
        train_loss = float(loss_sum) / max(1, seen)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch} (lr {cfg.lr} too high?)")
        train_s = time.perf_counter() - t0

        # 7. validate; keep the best epoch's weights (selected on validation only, by the study's
        #    objective metric; an undefined score, e.g. tail F1 without tail classes, ranks last;
        #    with a deferred switch only from its epoch on: the method is the model after it; with
        #    ema_decay the EMA's weights are the model)
        evaluated = ema.module if ema is not None else model
        val_pred = predict(evaluated, images, val_idx.to(device), cfg, amp, cl)
        val = evaluate(val_pred, ds, val_idx, groups, with_aus)
        score = val[cfg.select_metric] if val[cfg.select_metric] == val[cfg.select_metric] else -1.0
        if stage == 1 and epoch < selectable_from:
            pass  # neither selected nor counted towards early stopping
        elif score > best["score"]:
            best = {"score": score, "epoch": epoch, "val": val, "val_pred": val_pred,
                    "state": {k: v.detach().clone() for k, v in evaluated.state_dict().items()}}
            bad_epochs = 0
        else:
            bad_epochs += 1
        metrics = flat_epoch_metrics(epoch, train_loss, val, {
            "lr": opt.param_groups[0]["lr"], "images_per_s": seen / train_s, "epoch_s": time.perf_counter() - t0,
            "best_macro_f1": (best["val"] or {}).get("macro_f1", float("nan")), "best_score": best["score"],
            "best_epoch": best["epoch"],
            # the stage, and the first epoch a pruner may judge (every schedule switch has acted)
            "stage": stage, SETTLED_KEY: settled,
        })
        history.append(metrics)

        # 8. report (a scheduler may stop us here) with a resumable checkpoint: tensors and plain
        #    containers only, so it loads back weights-only (fer_core.checkpoint)
        if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
            stopped_early = True
        if report is not None:
            state = {
                "epoch": epoch, "bad_epochs": bad_epochs, "history": history, "stopped_early": stopped_early,
                "best": {**best, "val_pred": pred_to_state(best["val_pred"])},
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng_state(sampler_gen, aug_gen), "stage": stage, "stage1": stage1,
                "ema": ema.module.state_dict() if ema is not None else None,
            }
            report(metrics, checkpoint=state)
        if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
            if stage == 2 or last_epoch == cfg.epochs:
                break
            epoch = cfg.epochs  # stage 1 stopped early; stage 2 still runs from its selected epoch
            continue
        epoch += 1

    # 9. the selected epoch: restore its weights (the EMA's, with ema_decay), evaluate the test split once
    model.load_state_dict(best["state"])
    test_pred = predict(model, images, test_idx.to(device), cfg, amp, cl)
    test = evaluate(test_pred, ds, test_idx, groups, with_aus)

    # 10. test-time augmentation of the same selected model: its own metrics, beside the plain ones
    tta = None
    if cfg.tta != "none":
        tta = {"name": cfg.tta, "predictions": {}}
        for split, idx in (("val", val_idx), ("test", test_idx)):
            pred = predict(model, images, idx.to(device), cfg, amp, cl, tta=cfg.tta)
            tta[split] = evaluate(pred, ds, idx, groups, with_aus)
            tta["predictions"][split] = pred["probs"]

    # 11. post-hoc corrections for the label prior (logit adjustment, tau-norm), tau chosen on
    #     validation; a study that asks for one (``posthoc``) gets it as the trial's own output
    preds = {"val": best["val_pred"], "test": test_pred}
    labels = {"val": ds.labels[val_idx].numpy(), "test": ds.labels[test_idx].numpy()}
    posthoc = posthoc_predictions(model, preds, labels, counts, groups, cfg)
    val = best["val"]
    if with_aus:  # AU decision thresholds chosen on validation, applied to test (per AU)
        tuned = with_au_thresholds({"val": val, "test": test}, preds, ds, {"val": val_idx, "test": test_idx})
        val, test = tuned["val"], tuned["test"]
    if cfg.posthoc != "none":
        chosen = posthoc[cfg.posthoc]
        val, test = {**val, **chosen["val"]}, {**test, **chosen["test"]}
        preds = {split: {**p, "logits": chosen["logits"][split], "probs": softmax(chosen["logits"][split]).astype(np.float32)}
                 for split, p in preds.items()}

    # 12. class activation maps of the selected model on a seeded sample of validation images
    #     (cam_samples per class), with the face half each class's AUs point to (training split)
    cams = None
    if cfg.cam_samples:
        regions = (class_regions(ds.aus[train_idx].numpy(), train_labels.numpy(), ds.num_classes) if ds.has_aus
                   else [None] * ds.num_classes)
        cams = class_activation_maps(model, images, val_idx.to(device), labels["val"], ds.class_names, regions,
                                     cfg.cam_samples, cfg.seed, cl)
    held_out = {
        "val": {"probs": preds["val"]["probs"], "logits": preds["val"]["logits"], "labels": labels["val"]},
        # index: the images' positions in the data set (k-fold CV: the report pools the folds by it)
        "test": {"probs": preds["test"]["probs"], "logits": preds["test"]["logits"], "labels": labels["test"],
                 "index": test_idx.numpy()},
    }
    if with_aus:  # the AU probabilities the per-AU thresholds were chosen and applied on
        for split, p in held_out.items():
            p["au_probs"] = preds[split]["au_probs"]
    return {
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "stage1": stage1,  # None without a stage 2; else stage 1's selected epoch and its validation metrics
        "val": val,
        "test": test,
        "history": history,
        "tta": tta,  # None without TTA
        "posthoc": {name: {"tau": r["tau"], "val": r["val"], "test": r["test"], "test_pred": r["logits"]["test"].argmax(1)}
                    for name, r in posthoc.items()},
        "predictions": held_out,
        "class_names": list(ds.class_names),
        "train_counts": counts,
        "groups": groups,
        "fingerprint": ds.fingerprint,
        "config": cfg.model_dump(),
        "device": str(device),
        "amp": "bf16" if amp else "off",  # the precision it trained in (amp: auto measured or read it)
        "weights": model.weights_summary,  # where the starting weights came from (a file: what was loaded)
        "seconds": time.perf_counter() - t_start,
        "model_state": best["state"],  # already a detached clone
        "cams": cams,  # None unless cam_samples: {class name: {mean, attention_mean?, n, region, grid}}
    }

"""Fine-tuning features (docs/concepts/methods.md, "Fine-tuning features"): EMA of the weights, layer-wise lr decay, drop path,
gradient clipping, gradient accumulation and the augmentation policies each do what they claim in a real run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.utils import ModelEmaV3
from torch.optim.optimizer import register_optimizer_step_pre_hook

import fer_core.train as train_mod
from fer_core.augment import AUG_POLICIES, augment, augment_batch
from fer_core.checkpoint import load_training_state
from fer_core.config import resolve_config
from fer_core.data.dataset import AU_VOCAB, TEST, TRAIN, VAL
from fer_core.errors import ConfigError
from fer_core.losses import LOSSES
from fer_core.models import FerNet
from fer_core.stages import SamplerSchedule
from fer_core.train import train_fer

# fp32: the hand computations below are fp32 (amp: auto may measure bf16 faster on this CPU)
ONE_EPOCH = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0,
             "amp": "off"}


@pytest.fixture(scope="module")
def few(small):
    """~170 training images: 5 optimizer steps an epoch, enough for every feature here."""
    return small.subset_per_class({TRAIN: 12, VAL: 4, TEST: 4})


@pytest.fixture(scope="module")
def plain(few) -> dict:
    """One epoch without augmentation and without any fine-tuning feature: what each feature changes."""
    return train_fer({**ONE_EPOCH, "aug_strength": 0.0}, dataset=few)


def _clone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def nets(monkeypatch) -> list[FerNet]:
    """Every FerNet train_fer builds, as built."""
    made: list[FerNet] = []

    class Recorded(FerNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_mod, "FerNet", Recorded)
    return made


@pytest.fixture
def steps():
    """Calls the hook(optimizer) before every optimizer step of the test."""
    handles = []
    yield lambda hook: handles.append(register_optimizer_step_pre_hook(lambda opt, args, kwargs: hook(opt)))
    for h in handles:
        h.remove()


# ---------------------------------------------------------------- EMA of the weights


def test_ema_is_the_evaluated_model_and_the_average_of_the_raw_weights(few, monkeypatch):
    raw: list[dict[str, torch.Tensor]] = []  # the model's weights at the EMA's start and after every step

    class Recording(ModelEmaV3):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            raw.append(_clone(model))

        def update(self, model, step=None):
            raw.append(_clone(model))
            super().update(model, step)

    monkeypatch.setattr(train_mod, "ModelEmaV3", Recording)
    states = []
    cfg = {**ONE_EPOCH, "ema_decay": 0.8}
    result = train_fer(cfg, lambda m, checkpoint: states.append(checkpoint), dataset=few)
    steps_per_epoch = len(few.indices(TRAIN)) // 32
    assert len(raw) == 1 + steps_per_epoch  # one update after every optimizer step
    by_hand = raw[0]
    for w in raw[1:]:
        by_hand = {k: 0.8 * e + 0.2 * w[k] if e.is_floating_point() else w[k] for k, e in by_hand.items()}
    for k, v in by_hand.items():  # the selected (and tested) weights are the EMA, not the raw model
        torch.testing.assert_close(result["model_state"][k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(result["model_state"]["emotion_head.weight"], raw[-1]["emotion_head.weight"])
    torch.testing.assert_close(states[0]["ema"]["emotion_head.weight"], by_hand["emotion_head.weight"])
    # the validation predictions that selected the epoch are the EMA model's
    model = FerNet("test_resnet", few.num_classes, len(AU_VOCAB))
    model.load_state_dict(result["model_state"])
    val = few.indices(VAL)
    probs = train_mod.predict(model, few.images, val, resolve_config(cfg), False, True)["probs"]
    torch.testing.assert_close(torch.from_numpy(probs), torch.from_numpy(result["predictions"]["val"]["probs"]))


def test_ema_resumes_exactly_and_restarts_in_stage2_from_stage1s_selected_weights(few, tmp_path):
    cfg = {**ONE_EPOCH, "ema_decay": 0.8, "stage2": "lws", "stage2_epochs": 2}
    files = []

    def report(metrics, checkpoint):
        files.append(tmp_path / f"state-{metrics['epoch']}.pt")
        torch.save(checkpoint, files[-1])

    full = train_fer(cfg, report, dataset=few)
    stage1 = load_training_state(files[0])["best"]["state"]  # the EMA stage 1 selected
    for k, v in stage1.items():  # the frozen backbone: its EMA stays stage 1's selected weights exactly
        if k.startswith("backbone."):
            assert torch.equal(full["model_state"][k], v), k
    assert not torch.equal(full["model_state"]["emotion_scale"], torch.ones(few.num_classes))  # it averaged LWS
    for i in (0, 1):  # from stage 1 and from within stage 2 (weights-only files), the same run
        resumed = train_fer(cfg, dataset=few, checkpoint=load_training_state(files[i]))
        assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
        for k, v in full["model_state"].items():
            assert torch.equal(resumed["model_state"][k], v), k


# ---------------------------------------------------------------- layer-wise lr decay


def test_layer_decay_scales_the_lr_down_with_depth_heads_at_full_lr(few, nets, monkeypatch):
    made = []
    real = train_mod.make_optimizer

    def spy(*args, **kwargs):
        opt, sched = real(*args, **kwargs)
        made.append(opt)
        return opt, sched

    monkeypatch.setattr(train_mod, "make_optimizer", spy)
    cfg = {**ONE_EPOCH, "layer_decay": 0.5, "lr": 1e-3}
    train_fer(cfg, dataset=few)
    opt, net = made[0], nets[0]
    assert opt.defaults["fused"]  # still the fused AdamW
    name = {id(p): n for n, p in net.named_parameters()}
    lr = {name[id(p)]: g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    decay = {name[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert set(lr) == set(name.values())  # every parameter trains
    # depth order of test_resnet: stem, layer1..4, then the heads at the full lr
    prefixes = [("backbone.conv1.", "backbone.bn1."), *[f"backbone.layer{i}." for i in range(1, 5)],
                ("emotion_head.", "au_head.")]
    for i, prefix in enumerate(prefixes):
        names = [n for n in lr if n.startswith(prefix)]
        assert names and all(lr[n] == pytest.approx(1e-3 * 0.5 ** (5 - i)) for n in names), names
    for n, p in net.named_parameters():  # no weight decay on norms and biases, as without layer decay
        assert decay[n] == (0.0 if p.ndim <= 1 else 0.05), n
    # the schedule scales every group alike: the ratios survive training
    for g in opt.param_groups:
        assert g["lr"] / g["initial_lr"] == pytest.approx(opt.param_groups[0]["lr"] / opt.param_groups[0]["initial_lr"])


def test_layer_decay_on_a_vit_keeps_timms_no_decay_list_and_refuses_a_model_without_groups():
    cfg = resolve_config({**ONE_EPOCH, "layer_decay": 0.75})
    vit = FerNet("test_vit", 14, 18)
    opt, _ = train_mod.make_optimizer(vit.named_parameters(), cfg, torch.device("cpu"), lambda s: 1.0, model=vit)
    group = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert group[id(vit.backbone.pos_embed)]["weight_decay"] == 0.0  # ViT's own no_weight_decay (3-D)
    assert group[id(vit.emotion_head.weight)]["lr_scale"] == 1.0
    assert group[id(vit.backbone.patch_embed.proj.weight)]["lr_scale"] == pytest.approx(0.75 ** 7)
    vit.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))  # no timm group_matcher
    with pytest.raises(ConfigError, match=r"^layer_decay: backbone Sequential has no timm layer grouping"):
        train_mod.make_optimizer(vit.named_parameters(), cfg, torch.device("cpu"), lambda s: 1.0, model=vit)


# ---------------------------------------------------------------- drop path, gradient clipping


def test_drop_path_reaches_timms_blocks_and_changes_training(few, plain, nets):
    with_dp = train_fer({**ONE_EPOCH, "aug_strength": 0.0, "drop_path_rate": 0.3}, dataset=few)
    rates = [m.drop_prob for m in nets[0].modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.3)  # timm's stochastic-depth rule: the last block's rate
    assert with_dp["history"][0]["loss"] != plain["history"][0]["loss"]
    assert not any(isinstance(m, DropPath) for m in FerNet("test_resnet", 14, 18).modules())  # off by default
    with pytest.raises(ConfigError, match=r"^drop_path_rate: backbone 'dla34' has no drop path"):
        FerNet("dla34", 14, 18, drop_path_rate=0.1)


def _grad_norm(opt: torch.optim.Optimizer) -> float:
    grads = [p.grad.norm() for g in opt.param_groups for p in g["params"] if p.grad is not None]
    return float(torch.stack(grads).norm())


def test_grad_clip_bounds_the_global_norm_of_every_step(few, steps, monkeypatch):
    before, after = [], []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: before.append(float(real(*a, **k))))
    steps(lambda opt: after.append(_grad_norm(opt)))
    train_fer({**ONE_EPOCH, "grad_clip": 0.05}, dataset=few)
    assert len(after) == len(before) == len(few.indices(TRAIN)) // 32
    assert max(before) > 0.05  # clipping acted ...
    assert max(after) <= 0.05 * (1 + 1e-4)  # ... and every step saw at most the max norm


# ---------------------------------------------------------------- gradient accumulation


def test_grad_accum_steps_on_the_gradient_of_the_whole_effective_batch(few, nets, steps):
    """grad_accum 2 with batch 16: the first optimizer step's gradient is the one of the 32 images of its two
    micro-batches at once (a model without batch statistics: ConvNeXt's LayerNorm; no augmentation)."""
    cfg = {**ONE_EPOCH, "backbone": "test_convnext", "batch_size": 16, "grad_accum": 2, "aug_strength": 0.0,
           "channels_last": "off"}
    seen = []
    steps(lambda opt: seen.append(({n: None if p.grad is None else p.grad.clone() for n, p in nets[0].named_parameters()},
                                   _clone(nets[0]))))
    states = []
    train_fer(cfg, lambda m, checkpoint: states.append(checkpoint), dataset=few)
    micro = len(few.indices(TRAIN)) // 16
    assert len(seen) == math.ceil(micro / 2) == states[0]["scheduler"]["last_epoch"]  # the schedule counts steps
    grads, weights = seen[0]
    # by hand: the same weights, the first two micro-batches as one batch, one mean loss
    rc = resolve_config(cfg)
    train_idx = few.indices(TRAIN)
    first = SamplerSchedule(rc, few.labels[train_idx]).batches(0, torch.Generator().manual_seed(rc.seed))
    pos = torch.cat(first[:2])
    model = FerNet("test_convnext", few.num_classes, len(AU_VOCAB))
    model.load_state_dict(weights)
    model.train()
    y = few.labels[train_idx[pos]]
    logits = model(few.images[train_idx[pos]].float() / 255)["logits"]
    loss_fn = LOSSES[rc.loss](rc.model_dump(), few.class_counts(TRAIN), rc.epochs)
    loss_fn(logits, F.one_hot(y, few.num_classes).float(), epoch=0).backward()
    for n, p in model.named_parameters():
        if p.grad is not None or grads[n] is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    # and not the first micro-batch's gradient alone (what a step per micro-batch would have taken)
    model.zero_grad()
    idx = train_idx[first[0]]
    logits = model(few.images[idx].float() / 255)["logits"]
    loss_fn(logits, F.one_hot(few.labels[idx], few.num_classes).float(), epoch=0).backward()
    assert not torch.allclose(grads["emotion_head.weight"], model.emotion_head.weight.grad, rtol=1e-2, atol=1e-4)


# ---------------------------------------------------------------- augmentation policies


def _batch(few, n=8) -> torch.Tensor:
    return few.images[few.indices(TRAIN)[:n]]


def test_batched_policy_is_todays_pipeline_and_strength_zero_leaves_images_unchanged(few):
    x = _batch(few)
    assert torch.equal(augment(x, torch.zeros(8), torch.Generator().manual_seed(0)), x.float() / 255)
    s = torch.full((8,), 0.7)
    torch.testing.assert_close(augment(x, s, torch.Generator().manual_seed(3)),
                               augment_batch(x.float() / 255, s, torch.Generator().manual_seed(3)), rtol=0, atol=0)


@pytest.mark.parametrize("policy", sorted(set(AUG_POLICIES) - {"batched"}))
def test_each_policy_changes_images_reproducibly_in_the_uint8_range(few, policy):
    x = _batch(few)
    rng = torch.get_rng_state()
    a = augment(x, torch.zeros(8), torch.Generator().manual_seed(5), policy)
    assert torch.equal(torch.get_rng_state(), rng)  # torch's global RNG is left as it was
    assert a.dtype == torch.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal((a * 255).round(), a * 255)  # uint8 values: strength 0 is the policy alone
    assert not torch.equal(a, x.float() / 255)
    changed = [(a[i] != x[i].float() / 255).any() for i in range(8)]
    assert sum(changed) >= 4  # each image draws its own ops (most change)
    assert torch.equal(a, augment(x, torch.zeros(8), torch.Generator().manual_seed(5), policy))  # same seed
    assert not torch.equal(a, augment(x, torch.zeros(8), torch.Generator().manual_seed(6), policy))
    # then the batched pipeline at the samples' strength, on top of the policy
    b = augment(x, torch.full((8,), 0.8), torch.Generator().manual_seed(5), policy)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("policy", sorted(set(AUG_POLICIES) - {"batched"}))
def test_each_policy_trains_one_epoch_on_what_it_changed(few, plain, policy):
    result = train_fer({**ONE_EPOCH, "aug_policy": policy, "aug_strength": 0.0}, dataset=few)
    assert math.isfinite(result["history"][0]["loss"])
    # the policy is what the model saw: the training loss differs from the same run without augmentation
    assert result["history"][0]["loss"] != plain["history"][0]["loss"]


def test_the_new_keys_are_checked_at_the_edge():
    with pytest.raises(ConfigError, match=r"^aug_policy: unknown augmentation policy 'autoaugment'; valid: batched, randaugment"):
        resolve_config({"aug_policy": "autoaugment"})
    for key, bad in (("ema_decay", 1.0), ("grad_accum", 0), ("grad_clip", -1.0), ("layer_decay", 1.5),
                     ("drop_path_rate", 1.0)):
        with pytest.raises(ConfigError, match=f"^config key '{key}'"):
            resolve_config({key: bad})
    off = resolve_config({})
    assert (off.ema_decay, off.layer_decay, off.drop_path_rate, off.grad_clip, off.grad_accum, off.aug_policy) == (
        0.0, None, 0.0, 0.0, 1, "batched")

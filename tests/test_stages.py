"""Schedule switches and the published LDAM: the cosine head, DRS/DRW for any loss, stage 2 (cRT, LWS).

Each method's maths against a hand computation, its config rules, and the trainable's switch
(cRT leaves the backbone bit-identical, LWS changes only the scales, resume through the switch).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import patch_validation_scores

from fer_core.checkpoint import load_model, load_training_state, model_payload
from fer_core.config import resolve_config
from fer_core.errors import ConfigError
from fer_core.losses import LOSSES, check_double_weighting
from fer_core.models import HEADS, CosineHead
from fer_core.registry import lookup
from fer_core.stages import STAGE2, SamplerSchedule, schedule_settled_epoch, with_deferred_weights
from fer_core.train import train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 2, "warmup_epochs": 0}


def test_registries() -> None:
    assert set(HEADS) == {"linear", "cosine", "au_attention"}
    assert set(STAGE2) == {"none", "crt", "lws"}
    with pytest.raises(ConfigError, match=r"^stage2: unknown stage-2 method 'rt'; valid: crt, lws, none$"):
        lookup(STAGE2, "rt")


# ---------------------------------------------------------------- cosine head and LDAM as published


def test_cosine_head_logits_are_s_cos_and_bounded_by_s() -> None:
    head = CosineHead(2, 2, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # unit directions e1, e2 (norm 2 ignored)
    x = torch.tensor([[3.0, 4.0]])  # |x| = 5: cos with e1 = 0.6, with e2 = 0.8
    torch.testing.assert_close(head(x), torch.tensor([[18.0, 24.0]]))
    head = CosineHead(16, 7, scale=30.0)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 100
    assert head(x).abs().max() <= 30.0 + 1e-4
    torch.testing.assert_close(head(head.weight.detach()[:1] * 5).squeeze()[0], torch.tensor(30.0))  # parallel: s


def test_ldam_cosine_is_s_times_cos_minus_margin() -> None:
    """Cao et al.: CE(s * (cos - m_y)) with m_c = 0.5 * (n_min / n_c)^(1/4), s = 30."""
    counts = [100, 1]
    loss = lookup(LOSSES, "ldam_cosine")({"loss": "ldam_cosine"}, counts, 10)
    m = [0.5 * (1 / 100) ** 0.25, 0.5]
    torch.testing.assert_close(loss.margin, torch.tensor([30 * m[0], 30 * m[1]]))
    cos = torch.tensor([[0.6, 0.8]])
    for y in (0, 1):
        z = [30 * (cos[0, c].item() - (m[c] if c == y else 0.0)) for c in range(2)]
        by_hand = -(z[y] - math.log(math.exp(z[0]) + math.exp(z[1])))
        assert loss(30 * cos, torch.tensor([y])).item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize(("config", "key"), [
    ({"loss": "ldam_cosine"}, "head"),
    ({"loss": "ldam_drw_cosine", "head": "linear"}, "head"),
    ({"loss": "ldam", "head": "cosine"}, "head"),
    ({"head": "mlp"}, "head: unknown classifier head"),
    ({"stage2": "crt"}, "stage2_epochs"),
    ({"stage2": "rt", "stage2_epochs": 1}, "stage2: unknown stage-2 method"),
    ({"stage2": "crt", "stage2_epochs": 1, "stage2_sampler": "nope"}, "stage2_sampler: unknown data sampler"),
    ({"defer_sampler": "balanced"}, "defer_start"),
    ({"defer_start": 0.5}, "nothing is deferred"),
    ({"defer_start": 0.5, "defer_sampler": "nope"}, "defer_sampler: unknown data sampler"),
    ({"defer_start": 0.5, "defer_weighting": "effective", "epochs": 1, "warmup_epochs": 0}, "epochs >= 2"),
])
def test_incoherent_configs_are_refused_in_one_line_naming_the_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        resolve_config(config)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- DRS / DRW for any loss


def test_deferred_sampler_switches_the_class_mix_at_the_deferred_epoch() -> None:
    """90:10 labels; `none` draws every image once per epoch (10 % class 1), `balanced` exactly half."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    cfg = resolve_config({"epochs": 4, "batch_size": 10, "defer_start": 0.5, "defer_sampler": "balanced",
                          "stage2": "crt", "stage2_epochs": 1, "stage2_sampler": "none"})
    plans, gen = SamplerSchedule(cfg, labels), torch.Generator().manual_seed(0)
    share = [labels[torch.cat(plans.batches(e, gen))].float().mean().item() for e in range(5)]
    assert [plans.name_at(e) for e in range(5)] == ["none", "none", "balanced", "balanced", "none"]
    assert share == pytest.approx([0.1, 0.1, 0.5, 0.5, 0.1])  # stage 2 (epoch 4): its own sampler


def test_deferred_weights_switch_on_at_the_deferred_epoch_for_any_loss() -> None:
    """CE, then from epoch int(0.5 * 4) = 2 inverse-frequency weights [0.5, 1.5] (counts 30:10, mean 1)."""
    counts = [30, 10]
    cfg = resolve_config({"epochs": 4, "defer_start": 0.5, "defer_weighting": "inverse"})
    loss = with_deferred_weights(lookup(LOSSES, "ce")(cfg.model_dump(), counts, 4), cfg, counts)
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    l0, l1 = math.log(1 + math.exp(-2)), math.log(2)
    assert loss.weight_at(1) is None
    torch.testing.assert_close(loss.weight_at(2), torch.tensor([0.5, 1.5]))
    assert loss(logits, y, epoch=1).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert loss(logits, y, epoch=2).item() == pytest.approx((0.5 * l0 + 1.5 * l1) / 2, rel=1e-6)


@pytest.mark.parametrize(("config", "settled"), [
    ({}, 0),
    ({"loss": "ldam_drw", "epochs": 10}, 8),
    ({"loss": "ldam_drw", "epochs": 10, "drw_start": 1.0}, 0),  # DRW never starts: no switch
    ({"epochs": 10, "defer_start": 0.5, "defer_sampler": "balanced"}, 5),
    ({"epochs": 10, "defer_start": 0.5, "defer_weighting": "effective", "stage2": "lws", "stage2_epochs": 3,
      "stage2_sampler": "none"}, 10),
])
def test_schedule_settles_at_the_last_switch(config: dict, settled: int) -> None:
    assert schedule_settled_epoch(resolve_config(config)) == settled


@pytest.mark.parametrize(("config", "ok"), [
    ({"loss": "weighted_ce", "stage2": "crt", "stage2_epochs": 1}, False),  # stage2_sampler balanced by default
    ({"loss": "weighted_ce", "stage2": "crt", "stage2_epochs": 1, "stage2_sampler": "none"}, True),
    ({"loss": "ce", "stage2": "crt", "stage2_epochs": 1}, True),  # Kang et al.'s cRT
    ({"loss": "ldam_drw", "stage2": "lws", "stage2_epochs": 1}, False),
    ({"loss": "ce", "defer_start": 0.5, "defer_weighting": "effective", "stage2": "crt", "stage2_epochs": 1}, False),
    ({"loss": "balanced_softmax", "defer_start": 0.5, "defer_sampler": "balanced"}, False),
    ({"loss": "ce", "sampler": "sqrt", "defer_start": 0.5, "defer_weighting": "inverse"}, False),
    ({"loss": "weighted_ce", "defer_start": 0.5, "defer_weighting": "inverse"}, False),
    ({"loss": "ldam", "defer_start": 0.8, "defer_weighting": "effective"}, True),  # DRW generalised
    ({"loss": "ce", "sampler": "balanced", "defer_start": 0.5, "defer_sampler": "none",
      "defer_weighting": "effective"}, True),  # the re-balancing moves from the sampler to the weights
    ({"loss": "weighted_ce", "stage2": "crt", "stage2_epochs": 1, "allow_double_weighting": True}, True),
])
def test_double_weighting_guard_covers_the_deferred_switch_and_stage_2(config: dict, ok: bool) -> None:
    if ok:
        check_double_weighting(config)
        resolve_config(config)
    else:
        with pytest.raises(ConfigError, match=r"counted twice.*allow_double_weighting") as err:
            resolve_config(config)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- stage 2 in the trainable


def _run_with_checkpoints(cfg: dict, small, tmp_path) -> tuple[dict, list]:
    files = []

    def report(metrics, checkpoint=None):
        files.append(tmp_path / f"state-{metrics['epoch']}.pt")
        torch.save(checkpoint, files[-1])

    return train_fer(cfg, report, dataset=small), files


def test_crt_retrains_only_the_head_and_resumes_exactly_through_the_switch(small, tmp_path):
    cfg = {**TINY, "stage2": "crt", "stage2_epochs": 2}
    full, files = _run_with_checkpoints(cfg, small, tmp_path)
    assert [(h["epoch"], h["stage"]) for h in full["history"]] == [(0, 1), (1, 1), (2, 2), (3, 2)]
    assert full["best_epoch"] >= 2 and full["stage1"]["best_epoch"] in (0, 1)  # selected in its own stage
    stage1 = load_training_state(files[1])["best"]["state"]  # stage 1's selected weights
    final = full["model_state"]
    assert final.keys() == stage1.keys()
    for k in final:  # the backbone (weights and BatchNorm statistics) and the AU head: bit-identical
        if not k.startswith("emotion_head."):
            assert torch.equal(final[k], stage1[k]), k
    assert not torch.equal(final["emotion_head.weight"], stage1["emotion_head.weight"])  # re-initialised, trained
    for start in (1, 2):  # resumed at stage 1's last epoch (the switch still ahead), and inside stage 2
        resumed = train_fer(cfg, dataset=small, checkpoint=load_training_state(files[start]))
        assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
        assert resumed["best_epoch"] == full["best_epoch"]
        np.testing.assert_array_equal(resumed["predictions"]["test"]["probs"], full["predictions"]["test"]["probs"])


def test_lws_learns_only_per_class_scales_on_the_cosine_head(small, tmp_path):
    cfg = {**TINY, "epochs": 1, "loss": "ldam_cosine", "head": "cosine", "stage2": "lws", "stage2_epochs": 1}
    result, files = _run_with_checkpoints(cfg, small, tmp_path)
    stage1 = load_training_state(files[0])["best"]["state"]
    final = result["model_state"]
    assert set(final) - set(stage1) == {"emotion_scale"}
    assert all(torch.equal(final[k], stage1[k]) for k in stage1)  # the head itself is untouched
    assert not torch.equal(final["emotion_scale"], torch.ones(14))
    # the trained model file rebuilds the cosine head and the scales (strict state-dict load)
    torch.save(model_payload(result), tmp_path / "model.pt")
    model, _ = load_model(tmp_path / "model.pt")
    assert isinstance(model.emotion_head, CosineHead) and torch.equal(model.emotion_scale, final["emotion_scale"])
    x = small.images[:4].float().div(255)
    logits = model(x)["logits"]
    unscaled = F.linear(F.normalize(model.backbone((x - model.mean) / model.std), dim=1),
                        F.normalize(model.emotion_head.weight, dim=1)) * 30.0
    torch.testing.assert_close(logits, unscaled * final["emotion_scale"])


def test_a_deferred_method_is_selected_only_after_its_switch(small, monkeypatch):
    # validation best at epoch 0, before the switch at epoch 2: DRS must not be reported as plain CE
    patch_validation_scores(monkeypatch, [0.9, 0.8, 0.3, 0.5, 0.2])
    cfg = {**TINY, "epochs": 5, "defer_start": 0.4, "defer_sampler": "balanced", "early_stopping_patience": 1}
    result = train_fer(cfg, dataset=small)
    assert result["best_epoch"] == 3  # the best post-switch epoch; patience counted from the switch on
    assert result["epochs_run"] == 5 and [h["best_epoch"] for h in result["history"]] == [-1, -1, 2, 3, 3]


def test_stage_2_trains_at_its_own_lr(small):
    base = {**TINY, "epochs": 1, "stage2": "lws", "stage2_epochs": 2, "lr": 1e-3}
    plain, own = train_fer(base, dataset=small), train_fer({**base, "stage2_lr": 0.05}, dataset=small)
    # the lr logged after stage 2's first epoch: the cosine halfway down from the stage's peak
    assert plain["history"][1]["stage"] == own["history"][1]["stage"] == 2
    assert own["history"][1]["lr"] == pytest.approx(50 * plain["history"][1]["lr"])
    moved = {n: (r["model_state"]["emotion_scale"] - 1).abs().max().item() for n, r in (("plain", plain), ("own", own))}
    assert moved["own"] > 5 * moved["plain"]  # the scales move with the lr


def test_stage_1_stopping_early_still_runs_stage_2_from_its_selected_epoch(small, monkeypatch):
    patch_validation_scores(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1, 0.05])  # worse every epoch after the first
    cfg = {**TINY, "epochs": 4, "early_stopping_patience": 1, "stage2": "lws", "stage2_epochs": 2,
           "stage2_sampler": "none"}
    result = train_fer(cfg, dataset=small)
    # stage 1: epochs 0, 1 (stopped: worse once); stage 2 numbered after stage 1's 4 planned epochs,
    # itself stopped after its first worse epoch, selecting its own first epoch
    assert [(h["epoch"], h["stage"]) for h in result["history"]] == [(0, 1), (1, 1), (4, 2), (5, 2)]
    assert result["stopped_early"] and result["stage1"]["best_epoch"] == 0 and result["best_epoch"] == 4

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import patch_validation_scores

import fer_core.train as train_mod
from fer_core.checkpoint import load_training_state
from fer_core.losses import HEAD_OF_LOSS, LOSSES
from fer_core.sampling import DATA_SAMPLERS
from fer_core.train import train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 2, "warmup_epochs": 0}
ONE_EPOCH = {**TINY, "epochs": 1}


def _check_result(result: dict, epochs: int) -> None:
    assert result["epochs_run"] == epochs == len(result["history"])
    for split in ("val", "test"):
        m = result[split]
        assert 0.0 <= m["macro_f1"] <= 1.0 and len(m["f1"]) == 14
        assert np.array(m["confusion_matrix"]).shape == (14, 14)
    for row in result["history"]:
        assert math.isfinite(row["loss"]) and "f1_13" in row and "tail_f1" in row


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_with_mixup_soft_targets(small, loss):
    # cutmix+mixup make every loss see soft targets through the real training loop
    cfg = {**ONE_EPOCH, "loss": loss, "mixup_alpha": 0.4, "cutmix_alpha": 1.0,
           "head": HEAD_OF_LOSS.get(loss, "linear")}  # the LDAM entries each fit one head
    _check_result(train_fer(cfg, dataset=small), 1)


@pytest.mark.parametrize("sampler", sorted(DATA_SAMPLERS))
def test_every_data_sampler_trains(small, sampler):
    cfg = {**ONE_EPOCH, "sampler": sampler, "aug_strength": 0.5, "minority_boost": 0.5}
    _check_result(train_fer(cfg, dataset=small), 1)


def test_same_seed_same_metrics_other_seed_differs(small):
    cfg = {**TINY, "au_weight": 0.5, "mixup_alpha": 0.2}
    a = train_fer(cfg, dataset=small)["history"]
    b = train_fer(cfg, dataset=small)["history"]
    c = train_fer({**cfg, "seed": 1}, dataset=small)["history"]
    keys = ("loss", "val_loss", "macro_f1", "au_f1")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert [r["loss"] for r in a] != [r["loss"] for r in c]


def test_bf16_opt_in_on_cpu_is_deterministic_and_really_bf16(small):
    """``amp: bf16`` (the opt-in for CPUs with native bf16) runs autocast on the CPU: same seed, same
    metrics, and not the fp32 numbers (the default on a CPU)."""
    cfg = {**TINY, "au_weight": 0.5}
    a = train_fer({**cfg, "amp": "bf16"}, dataset=small)["history"]
    b = train_fer({**cfg, "amp": "bf16"}, dataset=small)["history"]
    fp32 = train_fer({**cfg, "amp": "off"}, dataset=small)["history"]
    keys = ("loss", "val_loss", "macro_f1", "au_f1")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert all(math.isfinite(r["loss"]) for r in a)
    assert [r["loss"] for r in a] != [r["loss"] for r in fp32]


def test_reports_every_epoch_and_resumes_exactly_from_a_checkpoint(small, tmp_path):
    cfg = {**TINY, "epochs": 3, "aug_strength": 0.6, "mixup_alpha": 0.2, "sampler": "curriculum"}
    seen, files = [], []

    def report(metrics, checkpoint=None):
        seen.append(metrics)
        # what a scheduler persists (Tune's trial.pt): a file at that moment, read back weights-only
        files.append(tmp_path / f"state-{metrics['epoch']}.pt")
        torch.save(checkpoint, files[-1])

    full = train_fer(cfg, report, dataset=small)
    assert [m["epoch"] for m in seen] == [0, 1, 2]
    assert {"macro_f1", "accuracy", "balanced_accuracy", "loss", "f1_00"} <= set(seen[0])
    assert not any(k.startswith("test") for k in seen[0])
    resumed = train_fer(cfg, dataset=small, checkpoint=load_training_state(files[0]))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
    assert resumed["test"]["macro_f1"] == full["test"]["macro_f1"]
    np.testing.assert_array_equal(resumed["predictions"]["val"]["probs"], full["predictions"]["val"]["probs"])


def test_test_split_is_evaluated_once_at_the_selected_epoch(small, monkeypatch):
    calls = []
    real = train_mod.predict

    def spy(model, images, idx, cfg, amp, cl):
        calls.append(set(idx.tolist()))
        return real(model, images, idx, cfg, amp, cl)

    monkeypatch.setattr(train_mod, "predict", spy)
    result = train_fer({**TINY, "epochs": 3}, dataset=small)
    test_idx = set(small.indices(2).tolist())
    val_idx = set(small.indices(1).tolist())
    assert calls[:3] == [val_idx] * 3  # selection sees validation only
    assert calls[3:] == [test_idx]  # test once, after training
    assert result["best_epoch"] == int(np.argmax([r["macro_f1"] for r in result["history"]]))


def test_early_stopping_on_validation_macro_f1(small, monkeypatch):
    patch_validation_scores(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1])  # worse every epoch after the first
    result = train_fer({**TINY, "epochs": 5, "early_stopping_patience": 2}, dataset=small)
    assert result["stopped_early"] and result["epochs_run"] == 3 and result["best_epoch"] == 0


def test_au_head_loss_only_when_weighted(small):
    on = train_fer({**ONE_EPOCH, "au_weight": 1.0}, dataset=small)
    off = train_fer({**ONE_EPOCH, "au_weight": 0.0}, dataset=small)
    assert 0.0 <= on["val"]["au_f1"] <= 1.0
    assert "au_f1" not in off["val"]
    assert on["history"][0]["loss"] > off["history"][0]["loss"]  # the BCE term is added


def test_au_metrics_per_au_with_thresholds_chosen_on_validation(small):
    from fer_core.data.dataset import AU_VOCAB, TEST, VAL
    from fer_core.metrics import au_metrics, choose_au_thresholds

    plain = train_fer({**ONE_EPOCH, "au_weight": 1.0}, dataset=small)
    bal = train_fer({**ONE_EPOCH, "au_weight": 1.0, "au_pos_weight": "balanced"}, dataset=small)
    assert bal["history"][0]["loss"] != plain["history"][0]["loss"]  # the balanced BCE is what trained
    val, test = bal["val"], bal["test"]
    assert len(val["au_f1_per_au"]) == len(test["au_auc_per_au"]) == len(AU_VOCAB)
    # thresholds chosen on validation's predictions, the same ones applied to test
    th = choose_au_thresholds(small.aus[small.indices(VAL)].numpy(), bal["predictions"]["val"]["au_probs"])
    assert val["au_threshold"] == test["au_threshold"] == th.tolist()
    again = au_metrics(small.aus[small.indices(TEST)].numpy(), bal["predictions"]["test"]["au_probs"], th)
    np.testing.assert_equal(test["au_f1_per_au"], again["au_f1_per_au"])  # NaN where test has no positive
    assert 0.0 <= val["au_auc"] <= 1.0 and "au_auc" in bal["history"][0]


def test_pretrained_file_regime_trains_and_says_what_it_loaded(small, tmp_path):
    import timm

    path = tmp_path / "face.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in timm.create_model("test_resnet").state_dict().items()}}, path)
    result = train_fer({**ONE_EPOCH, "pretrained": "file", "pretrained_path": str(path)}, dataset=small)
    assert "face.pth: " in result["weights"] and "unexpected: 2 (fc.weight, fc.bias)" in result["weights"]
    scratch = train_fer({**ONE_EPOCH, "pretrained_path": str(path)}, dataset=small)  # read only by 'file'
    assert scratch["weights"] == "random init"


def test_pretrained_weights_from_a_local_file(small, tmp_path):
    import timm

    path = tmp_path / "weights.pth"
    src = timm.create_model("test_resnet", num_classes=0)
    torch.save(src.state_dict(), path)
    model = train_mod.FerNet("test_resnet", 14, 18, pretrained=True, pretrained_path=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)


@pytest.mark.parametrize("backbone", ["test_resnet", "mobilenetv3_small_100", "efficientnet_b0", "test_vit"])
def test_heads_fit_every_kind_of_timm_backbone(backbone):
    model = train_mod.FerNet(backbone, 14, 18).eval()
    out = model(torch.rand(2, 3, 64, 64))
    assert out["logits"].shape == (2, 14) and out["au_logits"].shape == (2, 18)


def test_the_epoch_is_selected_by_the_studys_objective_on_validation(small, monkeypatch):
    # validation macro-F1 falls while balanced accuracy rises: each selection metric picks its own epoch
    real = train_mod.evaluate
    seen = {"n": 0}

    def fake_eval(pred, ds, idx, groups, with_aus):
        m = real(pred, ds, idx, groups, with_aus)
        if idx.numel() and int(ds.split[idx[0]]) == 1:
            e = seen["n"]
            seen["n"] += 1
            m["macro_f1"], m["balanced_accuracy"] = 0.5 - 0.1 * e, 0.2 + 0.1 * e
        return m

    monkeypatch.setattr(train_mod, "evaluate", fake_eval)
    assert train_fer({**TINY, "epochs": 3}, dataset=small)["best_epoch"] == 0
    seen["n"] = 0
    result = train_fer({**TINY, "epochs": 3, "select_metric": "balanced_accuracy"}, dataset=small)
    assert result["best_epoch"] == 2 and result["history"][-1]["best_score"] == pytest.approx(0.4)


def test_held_out_logits_are_float32_and_give_the_stored_probabilities(small):
    result = train_fer(ONE_EPOCH, dataset=small)
    for split in ("val", "test"):
        p = result["predictions"][split]
        assert p["logits"].dtype == np.float32 and p["logits"].shape == p["probs"].shape
        assert torch.from_numpy(p["logits"]).softmax(1).numpy() == pytest.approx(p["probs"], abs=1e-6)

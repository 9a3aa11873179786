"""The au_attention head (fer_core/models.py): a softmax attention map over the backbone's feature map
pools the features that the emotion head and the AU head both read."""

from __future__ import annotations

import pytest
import torch

from fer_core.errors import ConfigError
from fer_core.losses import LOSSES
from fer_core.models import FerNet
from fer_core.train import train_fer, train_step

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0,
        "head": "au_attention"}


@pytest.mark.parametrize("amp", [False, True])
def test_the_attention_map_is_a_distribution_over_positions_per_image(amp):
    torch.manual_seed(0)
    model = FerNet("resnet10t", 5, 18, head="au_attention").eval()
    x = torch.rand(4, 3, 96, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(x)
        fmap = model.backbone.forward_features((x - model.mean) / model.std)
    a = out["attention"]
    assert a.shape == (4, *fmap.shape[-2:]) == (4, 3, 3) and (a >= 0).all()
    torch.testing.assert_close(a.float().sum(dim=(1, 2)), torch.ones(4))
    assert not torch.allclose(a[0], torch.full_like(a[0], 1 / 9))  # a learnt score, not a plain average
    # the pooled features are the attention-weighted mean of the map (checked through the AU head)
    pooled = (a.float()[:, None] * fmap.float()).sum(dim=(2, 3))
    torch.testing.assert_close(out["au_logits"].float(), model.au_head(pooled), atol=0.1 if amp else 1e-4,
                               rtol=0.05 if amp else 1e-4)


def test_stage_two_methods_fit_the_attention_head():
    model = FerNet("test_resnet", 5, 18, head="au_attention")
    assert model.add_class_scales().shape == (5,)  # LWS: one scale per class
    before = model.emotion_head.score.weight.clone()
    model.emotion_head.reset_parameters()  # cRT: a fresh head, attention included
    assert not torch.equal(before, model.emotion_head.score.weight)


def _step(model, au_weight):
    torch.manual_seed(1)
    x, y = torch.rand(6, 3, 48, 48), torch.randint(0, 5, (6,))
    loss_fn = LOSSES["ce"]({}, [10] * 5, 1)
    au = (torch.rand(6, 18) > 0.7).float()
    model.zero_grad(set_to_none=True)
    train_step(model, x, torch.nn.functional.one_hot(y, 5).float(), au, loss_fn, au_weight, 0, False)["loss"].backward()


def test_without_au_supervision_the_au_head_gets_no_gradient_and_with_it_the_au_loss_shapes_attention():
    model = FerNet("test_resnet", 5, 18, head="au_attention")
    _step(model, 0.0)
    assert all(p.grad is None for p in model.au_head.parameters())
    assert model.emotion_head.score.weight.grad.abs().sum() > 0
    emotion_only = model.emotion_head.score.weight.grad.clone()
    _step(model, 1.0)  # the same batch: what changes is the AU loss's share
    assert all(p.grad.abs().sum() > 0 for p in model.au_head.parameters())
    assert not torch.allclose(model.emotion_head.score.weight.grad, emotion_only)  # the AU loss reaches the attention


def test_a_trial_without_au_supervision_leaves_the_au_head_as_initialised(small):
    result = train_fer({**TINY, "au_weight": 0.0}, dataset=small)
    torch.manual_seed(0)  # train_fer seeds with cfg.seed before it builds the model
    fresh = FerNet("test_resnet", small.num_classes, 18, head="au_attention")
    state = result["model_state"]
    for k in ("au_head.weight", "au_head.bias"):
        torch.testing.assert_close(state[k], fresh.state_dict()[k], rtol=0, atol=0)
    assert not torch.equal(state["emotion_head.fc.weight"], fresh.state_dict()["emotion_head.fc.weight"])
    # tau-norm reads a plain linear head's class weights: not applicable to the attention head
    assert set(result["posthoc"]) == {"logit_adjust"}
    assert result["cams"] is None  # class activation maps are off unless cam_samples asks for them


@pytest.mark.parametrize("backbone", ["test_vit", "mobilenetv3_small_050"])
def test_the_attention_head_needs_a_feature_map(backbone):
    if backbone == "test_vit":  # tokens (B,N,C): refused with one line
        with pytest.raises(ConfigError) as exc:
            FerNet(backbone, 5, 18, head="au_attention")
        assert str(exc.value).startswith("head: 'au_attention' needs a backbone whose forward_features is a (B,C,H,W)")
        assert "\n" not in str(exc.value)
    else:  # a hidden head layer after pooling (head_hidden_size): the map's own channels are pooled
        out = FerNet(backbone, 5, 18, head="au_attention").eval()(torch.rand(2, 3, 64, 64))
        assert out["logits"].shape == (2, 5) and out["attention"].shape == (2, 2, 2)


def test_the_au_location_prior_against_a_hand_computation():
    from fer_core.data.dataset import AU_INDEX
    from fer_core.losses import attention_prior_loss

    attention = torch.tensor([[[0.3, 0.3], [0.2, 0.2]], [[0.25, 0.25], [0.25, 0.25]]])
    aus = torch.zeros(2, 18)
    aus[0, AU_INDEX[1]] = aus[0, AU_INDEX[12]] = 1  # one upper-face AU, one lower: target share 0.5
    # image 0: upper mass 0.6 vs 0.5; image 1 has no active AU and does not count
    assert attention_prior_loss(attention, aus).item() == pytest.approx(0.1 ** 2)
    odd = torch.tensor([[[0.2], [0.2], [0.6]]])  # the middle row counts half: upper mass 0.3
    only_upper = torch.zeros(1, 18)
    only_upper[0, AU_INDEX[4]] = 1
    assert attention_prior_loss(odd, only_upper).item() == pytest.approx(0.7 ** 2)
    assert attention_prior_loss(odd, torch.zeros(1, 18)).item() == 0.0


def test_the_prior_trains_only_the_attention_head(small):
    with pytest.raises(ConfigError, match="au_attention_prior is a prior on the attention map of head: au_attention"):
        train_fer({**TINY, "head": "linear", "au_attention_prior": 1.0}, dataset=small)
    plain = train_fer({**TINY, "au_weight": 1.0}, dataset=small)
    prior = train_fer({**TINY, "au_weight": 1.0, "au_attention_prior": 1.0}, dataset=small)
    assert prior["history"][0]["loss"] > plain["history"][0]["loss"]  # the prior's term is added

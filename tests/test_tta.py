"""Test-time augmentation changes predictions only through its declared views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fer_core.config import resolve_config
from fer_core.errors import ConfigError
from fer_core.models import FerNet
from fer_core.train import predict, train_fer
from fer_core.tta import TTA, multi_crop

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0}


class FlipInvariant(nn.Module):
    """A FerNet whose outputs are symmetrised over a left-right flip: flip TTA must not change it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = FerNet("test_resnet", 14, 18)

    def forward(self, x):
        a, b = self.net(x), self.net(x.flip(-1))
        return {k: (a[k] + b[k]) / 2 for k in a}


def _images(n: int = 12, size: int = 48) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_none_is_the_plain_prediction_and_flip_leaves_a_flip_invariant_model_alone():
    torch.manual_seed(0)
    cfg = resolve_config({**TINY, "eval_batch_size": 5})
    images, idx = _images(), torch.arange(12)
    model = FlipInvariant().eval()
    plain = predict(model, images, idx, cfg, False, False)
    assert np.array_equal(predict(model, images, idx, cfg, False, False, tta="none")["probs"], plain["probs"])
    flipped = predict(model, images, idx, cfg, False, False, tta="flip")
    np.testing.assert_allclose(flipped["probs"], plain["probs"], atol=1e-6)
    np.testing.assert_allclose(flipped["au_probs"], plain["au_probs"], atol=1e-6)


@pytest.mark.parametrize("name", ["flip", "multi_crop"])
def test_tta_is_the_mean_softmax_over_exactly_its_declared_views(name):
    torch.manual_seed(0)
    cfg = resolve_config({**TINY, "eval_batch_size": 5})
    images, idx = _images(), torch.arange(12)
    model = FerNet("test_resnet", 14, 18).eval()
    got = predict(model, images, idx, cfg, False, False, tta=name)["probs"]
    x = images.float() / 255
    with torch.no_grad():
        want = torch.stack([model(v)["logits"].softmax(1) for v in TTA[name](x)]).mean(0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, predict(model, images, idx, cfg, False, False)["probs"], atol=1e-4)


def test_multi_crop_views():
    x = torch.rand(2, 3, 48, 40)
    views = multi_crop(x)
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)  # the full image is one view


def test_tta_key_is_validated():
    with pytest.raises(ConfigError, match="tta: unknown test-time augmentation 'rotate'; valid: flip, multi_crop, none"):
        resolve_config({"tta": "rotate"})


def test_train_reports_tta_beside_unchanged_plain_metrics(small):
    plain = train_fer(TINY, dataset=small)
    with_tta = train_fer({**TINY, "tta": "flip"}, dataset=small)
    assert plain["tta"] is None
    # training and selection are untouched by TTA: the plain numbers are the same run's
    assert with_tta["val"]["macro_f1"] == plain["val"]["macro_f1"]
    assert with_tta["test"]["f1"] == plain["test"]["f1"]
    tta = with_tta["tta"]
    assert tta["name"] == "flip" and len(tta["val"]["f1"]) == 14 and 0.0 <= tta["test"]["macro_f1"] <= 1.0
    assert tta["predictions"]["val"].shape == plain["predictions"]["val"]["probs"].shape

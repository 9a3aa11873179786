"""Class activation maps (fer_core/cam.py): Grad-CAM from the grad-cam library, the seeded sample of
images per class, and the upper/lower-face share of a map against the class's AU statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fer_core.cam import cam_sample, class_regions, grad_cams, half_mass
from fer_core.data.dataset import AU_INDEX, AU_VOCAB


class LeftHalf(nn.Module):
    """A toy whose logits depend only on the left half of the image: the right half is masked off
    before the one convolution (no bias), whose map Grad-CAM reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():  # positive evidence for class 0, so its map is not clipped away by the ReLU
            self.conv.weight.abs_()
            self.fc.weight[0].abs_()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-1] // 2] = 1
        return {"logits": self.fc(torch.relu(self.conv(x * mask)).mean(dim=(2, 3)))}


def test_grad_cam_of_a_model_that_reads_the_left_half_puts_its_mass_there():
    model = LeftHalf()
    x = torch.rand(5, 3, 32, 32)
    maps = grad_cams(model, x, [0] * 5, model.conv)
    assert maps.shape == (5, 32, 32) and maps.min() >= 0 and np.isclose(maps.max(), 1.0)
    for m in maps:
        assert m[:, :16].sum() / m.sum() > 0.9
    assert all(p.grad is None for p in model.parameters())  # the library's backward leaves nothing behind


def test_half_mass_against_a_hand_computation():
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert half_mass(m, "upper") == pytest.approx(3 / 10) and half_mass(m, "lower") == pytest.approx(7 / 10)
    odd = np.array([[1.0], [2.0], [3.0]])  # the middle row counts half to each half
    assert half_mass(odd, "upper") == pytest.approx((1 + 1) / 6) and half_mass(odd, "lower") == pytest.approx(4 / 6)
    assert half_mass(np.array([[-5.0], [1.0]]), "lower") == 1.0  # negative values carry no mass
    assert np.isnan(half_mass(np.zeros((4, 4)), "upper"))


def test_class_regions_from_the_classes_excess_au_prevalence():
    aus = np.zeros((5, len(AU_VOCAB)))
    labels = np.array([0, 0, 1, 1, 2])
    aus[[0, 1], AU_INDEX[1]] = 1  # class 0: inner brow raiser (upper face)
    aus[[2, 3], AU_INDEX[12]] = 1  # class 1: lip corner puller (lower face)
    aus[[0, 2], AU_INDEX[4]] = 1  # class 0 and 1 alike: AU4 at 0.5 in each, 0.4 overall: +0.1 each
    # class 0: upper 0.6 + 0.1, lower 0; class 1: upper 0.1, lower 0.6; class 2: below average everywhere;
    # class 3: no image
    assert class_regions(aus, labels, 4) == ["upper", "lower", None, None]
    assert class_regions(np.zeros((5, len(AU_VOCAB))), labels, 3) == [None, None, None]  # no AU labels


def test_the_sample_is_seeded_and_takes_every_image_of_a_small_class():
    labels = np.array([0] * 10 + [1] * 2 + [0] * 5)
    a, b, c = (cam_sample(labels, 4, seed, 3) for seed in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a[0], c[0])
    assert len(a[0]) == 4 and (labels[a[0]] == 0).all()
    assert a[1].tolist() == [10, 11] and len(a[2]) == 0

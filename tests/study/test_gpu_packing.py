"""GPU packing (`resources: {gpu: auto}`): the fraction arithmetic, the spec, and the per-trial resource
callable on a real local Ray without GPUs (where it must ask for none). The probe itself
(``measure_peak``) needs CUDA: it runs where a GPU is lent, not in this CPU suite."""

from __future__ import annotations

import pytest

from fer_core.errors import ConfigError
from fer_core.study.gpu import CONTEXT_BYTES, HEADROOM, AutoGpuResources, packing_fraction, probe_key
from fer_core.study.spec import load_study

GiB = 2**30


@pytest.mark.parametrize(
    ("peak_gib", "total_gib", "expected"),
    [
        (2.0, 80.0, 1 / 8),  # a small backbone: capped at 8 trials per card
        (14.0, 80.0, 1 / 4),  # (14 + 0.6) * 1.3 = 19 GiB -> 4 fit in 80
        (30.0, 80.0, 1 / 2),
        (70.0, 80.0, 1.0),  # one trial fills the card
        (200.0, 80.0, 1.0),  # never less than one whole GPU per trial
    ],
)
def test_packing_fraction_fits_whole_trials_with_headroom(peak_gib, total_gib, expected):
    frac = packing_fraction(int(peak_gib * GiB), int(total_gib * GiB))
    assert frac == pytest.approx(expected)
    n = round(1 / frac)
    if n > 1:  # n trials with their headroom really fit
        assert n * (peak_gib * GiB + CONTEXT_BYTES) * HEADROOM <= total_gib * GiB


def test_gpu_profiles_ask_for_measured_packing_and_bad_values_are_refused(tmp_path):
    spec = load_study("imbalance-ablation", "gpu")
    assert spec.resources == {"cpu": 4.0, "gpu": "auto"}
    assert load_study("imbalance-ablation", "cpu").resources["gpu"] == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nquestion: q?\nextends: smoke.yaml\nresources: {cpu: 1, gpu: half}\n")
    with pytest.raises(ConfigError, match=r"resources: gpu: .*'auto'.*'half'"):
        load_study(str(bad), "smoke")


def test_auto_resources_on_a_cluster_without_gpus_ask_for_none(ray_local):
    res = AutoGpuResources(cpu=2, n_images=4549)
    train = {"backbone": "resnet18", "img_size": 112, "batch_size": 64}
    pgf = res({"train": train, "meta": {}})
    assert pgf.required_resources.get("CPU") == 2 and pgf.required_resources.get("GPU", 0) == 0
    assert res.fractions == {probe_key(train): 0.0}  # decided once per trial shape

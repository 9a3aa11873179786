"""``amp: auto`` (fer_core/precision.py): the faster precision by measurement, cached per device and
shape, forced values untouched, and a trial deterministic given its verdict."""

from __future__ import annotations

import json

import pytest
import torch

import fer_core.precision as precision
from fer_core.config import resolve_config
from fer_core.errors import ConfigError
from fer_core.train import train_fer, train_step

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def measuring(monkeypatch):
    """These tests measure: the suite's fixed verdict (tests/conftest.py) is lifted here."""
    monkeypatch.delenv(precision.ENV_VERDICT, raising=False)


@pytest.fixture
def both(monkeypatch):
    """A device with native bf16, whatever this machine's CPU has."""
    monkeypatch.setattr(precision, "native_precisions", lambda device: ["off", "bf16"])


def _never():
    raise AssertionError("measured although a verdict was cached or forced")


def _fake(off: float, bf16: float):
    calls = []

    def timer(amp: bool) -> float:
        calls.append(amp)
        return bf16 if amp else off

    return timer, calls


@pytest.mark.parametrize(("bf16", "expected"), [(0.5, "bf16"), (0.97, "off"), (1.5, "off")])
def test_measurement_keeps_the_faster_and_bf16_only_by_the_margin(both, tmp_path, bf16, expected):
    cfg = resolve_config({**TINY, "cache_dir": str(tmp_path)})
    timer, calls = _fake(1.0, bf16)
    assert precision.choose_amp(cfg, CPU, True, lambda: timer) == expected
    assert calls.count(True) == calls.count(False) == 1 + precision.ROUNDS  # a warm-up call each, then rounds
    saved = json.loads((tmp_path / precision.CACHE_FILE).read_text())
    assert saved[precision.verdict_key(cfg, CPU, True)] == {"amp": expected, "s_per_step": {"off": 1.0, "bf16": bf16}}
    # the next trial of that shape reads the verdict; another shape (batch size, memory format) measures
    assert precision.choose_amp(cfg, CPU, True, _never) == expected
    other, calls = _fake(1.0, 0.1)
    assert precision.choose_amp(resolve_config({**TINY, "cache_dir": str(tmp_path), "batch_size": 16}), CPU, True,
                                lambda: other) == "bf16" and calls
    assert precision.choose_amp(cfg, CPU, False, lambda: _fake(0.1, 1.0)[0]) == "off"
    assert len(json.loads((tmp_path / precision.CACHE_FILE).read_text())) == 3


def test_a_cached_verdict_is_used_without_measuring_and_forced_values_ignore_it(both, tmp_path):
    cfg = resolve_config({**TINY, "cache_dir": str(tmp_path)})
    (tmp_path / precision.CACHE_FILE).write_text(json.dumps({precision.verdict_key(cfg, CPU, True): {"amp": "bf16"}}))
    assert precision.choose_amp(cfg, CPU, True, _never) == "bf16"
    assert precision.choose_amp(resolve_config({**TINY, "amp": "off", "cache_dir": str(tmp_path)}), CPU, True,
                                _never) == "off"


def test_a_device_without_native_bf16_is_fp32_without_measuring(tmp_path):
    cfg = resolve_config({**TINY, "cache_dir": str(tmp_path)})
    meta = torch.device("meta")  # neither CPU nor CUDA: fp32 only
    assert precision.native_precisions(meta) == ["off"]
    assert precision.choose_amp(cfg, meta, True, _never) == "off"
    with pytest.warns(RuntimeWarning, match=r"amp: bf16 is forced on meta.*no native bf16 kernels"):
        assert precision.choose_amp(cfg.model_copy(update={"amp": "bf16"}), meta, True, _never) == "bf16"  # still forced
    assert not (tmp_path / precision.CACHE_FILE).exists()


def test_an_unreadable_cache_is_measured_again(both, tmp_path):
    cfg = resolve_config({**TINY, "cache_dir": str(tmp_path)})
    (tmp_path / precision.CACHE_FILE).write_text("{not json")
    assert precision.choose_amp(cfg, CPU, True, lambda: _fake(1.0, 0.5)[0]) == "bf16"


def test_the_real_timer_runs_the_trainables_step_in_both_precisions():
    cfg = resolve_config({**TINY, "img_size": 32, "batch_size": 4})
    timer = precision.step_timer(cfg, CPU, True, train_step)
    assert timer(False) > 0 and timer(True) > 0


def test_a_trial_records_its_precision_and_is_the_same_measured_or_cached(small, both, tmp_path):
    """The first run measures (on a forked RNG), the second reads the cached verdict: same numbers,
    so the measurement consumed nothing of the trial's random streams."""
    cfg = {**TINY, "cache_dir": str(tmp_path), "mixup_alpha": 0.2, "aug_strength": 0.5, "drop_rate": 0.1}
    a = train_fer(cfg, dataset=small)
    saved = json.loads((tmp_path / precision.CACHE_FILE).read_text())
    assert [v["amp"] for v in saved.values()] == [a["amp"]] and a["amp"] in ("bf16", "off")
    b = train_fer(cfg, dataset=small)
    keys = ("loss", "val_loss", "macro_f1")
    assert b["amp"] == a["amp"]
    assert [[r[k] for k in keys] for r in a["history"]] == [[r[k] for k in keys] for r in b["history"]]
    # the verdict is what the trial trains in: the forced precision gives the same numbers
    forced = train_fer({**cfg, "amp": a["amp"]}, dataset=small)
    assert forced["amp"] == a["amp"]
    assert [[r[k] for k in keys] for r in forced["history"]] == [[r[k] for k in keys] for r in a["history"]]


def test_a_fixed_verdict_from_the_environment_is_taken_without_measuring(both, tmp_path, monkeypatch):
    cfg = resolve_config({"amp": "auto", "cache_dir": str(tmp_path)})

    def never() -> precision.StepTimer:
        raise AssertionError("measured although the verdict was fixed")

    for verdict in ("off", "bf16"):
        monkeypatch.setenv(precision.ENV_VERDICT, verdict)
        assert precision.choose_amp(cfg, torch.device("cpu"), True, never) == verdict
    assert not (tmp_path / precision.CACHE_FILE).exists()  # nothing measured, nothing cached
    monkeypatch.setattr(precision, "native_precisions", lambda device: ["off"])
    assert precision.choose_amp(cfg, torch.device("cpu"), True, never) == "off"  # bf16 asked, none native
    monkeypatch.setenv(precision.ENV_VERDICT, "fp16")
    with pytest.raises(ConfigError, match="FER_STUDY_AMP_AUTO: 'fp16' is not a precision; allowed: off, bf16"):
        precision.choose_amp(cfg, torch.device("cpu"), True, never)

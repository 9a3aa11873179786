"""Pretrained regimes at launch: a study whose weights are not on this machine (timm's not in the
hub cache offline, a ``file`` regime without its file) stops before any trial with one line that
says how to supply them; ``validate`` only notes it (the weights belong to the machine that trains)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
REGIME = str(ROOT / "studies" / "pretrained-regime.yaml")


def test_timm_weights_missing_offline_stop_the_launch_before_any_trial(study_env, monkeypatch, capsys):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(study_env / "empty-hub"))  # an empty cache: nothing to load offline
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["launch", str(ROOT / "studies" / "imbalance-ablation.yaml"), "--profile", "gpu",
                               "--storage", f"sqlite:///{study_env / 'db.sqlite'}"]))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "timm's weights for 'resnet50' are not in the hub cache" in err and "HF_HUB_OFFLINE=1" in err
    assert "pretrained_path" in err
    assert not (study_env / "db.sqlite").exists()  # stopped before the storage was touched: no study, no trial


def test_the_file_regime_needs_its_file_at_launch_and_validate_notes_it(study_env, capsys):
    args = ["launch", REGIME, "--profile", "cpu", "--storage", f"sqlite:///{study_env / 'db.sqlite'}"]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "pretrained: file needs pretrained_path (e.g. --set pretrained_path=" in err
    assert not (study_env / "db.sqlite").exists()
    with pytest.raises(SystemExit) as exc:  # a file that is not there: the same, naming it
        raise SystemExit(main([*args, "--set", "pretrained_path=/no/face.pth"]))
    assert exc.value.code == 2 and "pretrained_path: file not found: /no/face.pth" in capsys.readouterr().err
    assert main(["validate", REGIME, "--profile", "cpu"]) == 0  # valid as a file; the note says what a launch needs
    assert "note: a launch here would stop" in capsys.readouterr().out

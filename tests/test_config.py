from __future__ import annotations

import pytest
from pydantic import ValidationError

from fer_core.config import KEYS, TrainConfig, build_config, parse_override, resolve_config
from fer_core.errors import ConfigError


def test_defaults_are_valid_and_frozen():
    cfg = resolve_config({})
    assert cfg.loss == "ce" and cfg.sampler == "none" and cfg.pretrained is False
    with pytest.raises(ValidationError):
        cfg.lr = 1.0  # frozen: a resolved spec cannot drift


def test_design_contract_keys_exist():
    # DESIGN.md "Contracts": trial config keys map 1:1 onto Optuna params
    for key in ("loss", "focal_gamma", "cb_beta", "label_smoothing", "sampler", "aug_strength", "minority_boost",
                "mixup_alpha", "cutmix_alpha", "backbone", "pretrained", "img_size", "au_weight", "lr",
                "weight_decay", "batch_size", "epochs", "warmup_epochs", "seed"):
        assert key in KEYS


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"lossy": "ce"}, "unknown config key 'lossy' (did you mean 'loss'?)"),
        ({"loss": "hinge"}, "loss: unknown loss 'hinge'; valid:"),
        ({"sampler": "oversample"}, "sampler: unknown data sampler 'oversample'; valid:"),
        ({"backbone": "resnet5000"}, "backbone: unknown timm model 'resnet5000'"),
        ({"dataset": "imagenet"}, "dataset: unknown dataset 'imagenet'"),
        ({"lr": -1}, "config key 'lr'"),
        ({"aug_strength": 1.5}, "config key 'aug_strength'"),
        ({"batch_size": 1}, "config key 'batch_size'"),
        ({"focal_gamma": -0.5}, "config key 'focal_gamma'"),
        ({"cb_beta": 0.5}, "config key 'cb_beta'"),
        ({"warmup_epochs": 5, "epochs": 3}, "warmup_epochs (5) must be smaller than epochs (3)"),
        ({"mixup_alpha": 0.2, "batch_size": 33}, "batch_size must be even"),
        ({"dataset": "rafce"}, "data_path is required"),
        ({"pretrained": "file", "pretrained_path": "/nonexistent/w.pth"}, "pretrained_path: file not found"),
        ({"pretrained": "file"}, "pretrained: file needs pretrained_path"),
        ({"pretrained": "yes please"}, "config key 'pretrained': must be false (scratch), true"),
        ({"norm_std": [0.2, 0.2, 2.0]}, "norm_std must be 3 numbers (R, G, B) in (0, 1]"),
        ({"au_pos_weight": "inverse"}, "config key 'au_pos_weight'"),
        ({"loss": "weighted_ce", "sampler": "weighted"}, "allow_double_weighting"),
    ],
)
def test_bad_values_give_one_line_errors(config, needle):
    with pytest.raises(ConfigError) as exc:
        resolve_config(config)
    msg = str(exc.value)
    assert needle in msg
    assert "\n" not in msg


def test_double_weighting_can_be_allowed_explicitly():
    cfg = resolve_config({"loss": "weighted_ce", "sampler": "weighted", "allow_double_weighting": True})
    assert cfg.allow_double_weighting


def test_overrides_parse_as_yaml_and_file_errors_name_the_file(tmp_path):
    assert parse_override("lr=1e-3") == ("lr", 1e-3)
    assert parse_override("pretrained=true") == ("pretrained", True)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("lr")
    f = tmp_path / "c.yaml"
    f.write_text("loss: focal\nfocal_gamma: 1.0\n")
    cfg = build_config(f, ["seed=3"])
    assert (cfg.loss, cfg.focal_gamma, cfg.seed) == ("focal", 1.0, 3)
    f.write_text("loss: [unclosed\n")
    with pytest.raises(ConfigError, match=str(f)):
        build_config(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config(f)
    f.write_text("epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"{f}: config key 'epochs'"):
        build_config(f)


def test_trainconfig_round_trips():
    cfg = resolve_config({"loss": "focal", "focal_gamma": 1.5})
    assert TrainConfig(**cfg.model_dump()) == cfg

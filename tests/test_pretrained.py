"""Starting weights (fer_core/pretrained.py): face-pretrained files as FER repositories ship them,
timm's weights from an offline hub cache, and the refusals (missing tensors, code in a pickle,
weights that are not here)."""

from __future__ import annotations

import pytest
import timm
import torch

from fer_core.config import resolve_config
from fer_core.errors import ConfigError, ModelFileError
from fer_core.models import FerNet
from fer_core.pretrained import check_weights, hub_weights_cached


def torchvision_resnet18_file(tmp_path, drop: tuple[str, ...] = ()):
    """A torchvision-named ResNet-18 (random weights) saved as an MS-Celeb checkpoint is: wrapped in
    ``state_dict``, every name prefixed ``module.`` (DDP), the 1000-way classifier included."""
    import torchvision

    tv = torchvision.models.resnet18(weights=None).eval()
    sd = {f"module.{k}": v for k, v in tv.state_dict().items() if k not in drop}
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"state_dict": sd, "epoch": 40}, path)
    return tv, path


def test_a_torchvision_resnet18_checkpoint_loads_into_timm_with_identical_features(tmp_path):
    torch.manual_seed(0)
    tv, path = torchvision_resnet18_file(tmp_path)
    model = FerNet("resnet18", 7, 18, pretrained_path=str(path)).eval()
    tv.fc = torch.nn.Identity()  # the pooled 512-d features on both sides
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), tv(x), rtol=1e-5, atol=1e-5)
    s = model.weights_summary
    assert "\n" not in s and "under 'state_dict'" in s and "missing: none" in s
    assert "unexpected: 2 (fc.weight, fc.bias)" in s  # the classifier is left behind, and said so


def test_a_file_missing_conv_weights_is_refused_with_one_line(tmp_path):
    _, path = torchvision_resnet18_file(tmp_path, drop=("layer3.0.conv1.weight", "conv1.weight"))
    with pytest.raises(ModelFileError) as exc:
        FerNet("resnet18", 7, 18, pretrained_path=str(path))
    msg = str(exc.value)
    assert "\n" not in msg and "2 of the" in msg and "conv1.weight" in msg and "only a classifier" in msg


def test_a_file_of_another_architecture_is_refused(tmp_path):
    _, path = torchvision_resnet18_file(tmp_path)
    with pytest.raises(ModelFileError, match="missing from the file"):
        FerNet("test_resnet", 7, 18, pretrained_path=str(path))


class Payload:  # any class: unpickling it would run import code; weights-only refuses it
    pass


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ModelFileError, match="refused: the file needs arbitrary unpickling"):
        FerNet("test_resnet", 7, 18, pretrained_path=str(path))


def test_a_fer_study_model_file_is_a_pretrained_file(tmp_path):
    """A model trained on other data (``train --save``): its backbone under 'model', prefixed 'backbone.'."""
    src = FerNet("test_resnet", 5, 18)
    path = tmp_path / "other.pt"
    torch.save({"model": src.state_dict(), "config": {"backbone": "test_resnet"}}, path)
    model = FerNet("test_resnet", 7, 18, pretrained=True, pretrained_path=str(path))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)
    assert "prefix 'backbone.' stripped" in model.weights_summary
    assert "unexpected: 4 (emotion_head.weight" in model.weights_summary  # its heads are not the backbone's


def test_safetensors_files_load_too(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    model = FerNet("test_resnet", 7, 18, pretrained_path=str(path))
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in src.state_dict().items())


def test_normalisation_is_settable_and_validated():
    model = FerNet("test_resnet", 7, 18, norm_mean=(0.5, 0.4, 0.3), norm_std=(0.2, 0.2, 0.2))
    assert model.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert FerNet("test_resnet", 7, 18).mean.flatten().tolist() == [0.5, 0.5, 0.5]  # test_resnet's pretrained_cfg
    cfg = resolve_config({"norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5]})
    assert cfg.norm_mean == (0.5, 0.5, 0.5)
    for bad, needle in (({"norm_std": [0.5, 0.0, 0.5]}, "norm_std must be 3 numbers"),
                        ({"norm_mean": [0.5, 0.5]}, "norm_mean"), ({"norm_mean": [0, 0, 128]}, "in [0, 1]")):
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[")) as exc:
            resolve_config(bad)
        assert "\n" not in str(exc.value)


def test_pretrained_file_regime_needs_an_existing_pretrained_path(tmp_path):
    with pytest.raises(ConfigError, match="pretrained: file needs pretrained_path"):
        resolve_config({"pretrained": "file"})
    with pytest.raises(ConfigError, match="pretrained_path: file not found"):
        resolve_config({"pretrained": "file", "pretrained_path": str(tmp_path / "none.pth")})
    # read only by 'file' (as a loss's keys are read only by that loss): a study sets it for every regime
    assert resolve_config({"pretrained": False, "pretrained_path": str(tmp_path / "none.pth")}).pretrained is False
    with pytest.raises(ConfigError, match="config key 'pretrained'"):
        resolve_config({"pretrained": "imagenet"})


def fake_hub_cache(root, name: str = "test_resnet") -> None:
    """A hub cache as ``timm.create_model(name, pretrained=True)`` leaves it on a machine with network."""
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(name).hf_hub_id  # timm/test_resnet.r160_in1k
    d = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(commit)
    (d / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(1)
    save_file(timm.create_model(name, num_classes=0).state_dict(), str(d / "snapshots" / commit / "model.safetensors"))


def test_timm_weights_offline_need_a_populated_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    cfg = resolve_config({"backbone": "test_resnet", "pretrained": True}, check_weights=False)
    with pytest.raises(ConfigError) as exc:
        check_weights(cfg)
    msg = str(exc.value)
    assert "\n" not in msg and "not in the hub cache" in msg and "HF_HUB_OFFLINE=1" in msg and "pretrained_path" in msg
    fake_hub_cache(tmp_path)
    assert hub_weights_cached("test_resnet").endswith("model.safetensors")
    check_weights(cfg)  # now found, offline
    model = FerNet("test_resnet", 7, 18, pretrained=True)  # and timm loads them from there
    assert model.weights_summary == "timm pretrained weights for test_resnet"
    with pytest.raises(ConfigError, match="timm has no pretrained weights"):
        check_weights(resolve_config({"backbone": "resnet10t", "pretrained": True}, check_weights=False)
                      .model_copy(update={"backbone": "not_a_model"}))

"""Where a backbone's starting weights come from: scratch, timm's own (hub cache), or a local file.

The config key ``pretrained`` names the regime: ``false`` (random init), ``true`` (timm's pretrained
weights for the backbone, through the Hugging Face hub cache; ImageNet for most backbones) or
``file`` (the file at ``pretrained_path``, e.g. a face-pretrained network as FER repositories ship
it). ``pretrained_path`` is read only by ``file``, like a loss's own keys are read only by that loss:
a study can then make the regime one factor and set the face file for the whole study with
``--set pretrained_path=...``.

A local file is read as FER repositories ship them: a state dict, or one wrapped in ``state_dict``
/ ``model`` (timm's own unwrapping order, EMA first), with DDP ``module.`` or ``torch.compile``
prefixes (timm's ``clean_state_dict``) and with any one leading prefix such as ``backbone.`` (a
fer-study model file). torchvision ResNets need no renaming: timm's ResNet uses torchvision's
parameter names (conv1, bn1, layer1..4, fc). The file is read weights-only like every file in
fer-study (``fer_core.safeload.load_weights_only``): a pickle that would run code is refused.
Only a classifier may be missing from the file; anything else is refused with one line.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from fer_core.errors import ConfigError, ModelFileError
from fer_core.safeload import load_weights_only

# timm's ``load_state_dict`` looks in this order (use_ema=True); the last two are common in FER
# repositories' training scripts
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict", "net")
# what to do when the weights are not here: the one line a refused launch or model ends with
HOW_TO = ("populate the Hugging Face hub cache on a machine with network (python -c \"import timm; "
          "timm.create_model('{name}', pretrained=True)\"), copy ~/.cache/huggingface/hub here and set "
          "HF_HUB_OFFLINE=1; or train from a local file: pretrained: file, pretrained_path: /path/to/weights.pth")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a weights file (weights-only) and how they were found (``state_dict`` > ...)."""
    if str(path).endswith(".safetensors"):  # safetensors holds tensors only: nothing to unpickle
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise ModelFileError(f"{path}: not a safetensors weights file ({type(err).__name__})") from None
    else:
        obj = load_weights_only(path, "weights file")
    chain: list[str] = []
    while not _is_state_dict(obj):
        key = next((k for k in WRAPPERS if isinstance(obj, Mapping) and _has_tensors(obj.get(k))), None)
        if key is None:
            top = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else type(obj).__name__
            raise ModelFileError(f"{path}: no state dict found (top level: {top}); expected tensors by name, "
                                 f"or them under one of {', '.join(WRAPPERS)}")
        chain.append(key)
        obj = obj[key]
        if isinstance(obj, Mapping) and not _is_state_dict(obj) and _has_tensors(obj):
            obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}  # e.g. a stray int counter
    # imported here: resolving any config checks its weights (check_weights), and importing timm takes seconds
    from timm.models import clean_state_dict

    return clean_state_dict(dict(obj)), "/".join(chain)


def _has_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefix(sd: dict[str, torch.Tensor], wanted: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict under the one leading prefix ('' or e.g. 'backbone.') that matches most of ``wanted``."""
    prefixes = {""} | {k.split(".", 1)[0] + "." for k in sd if "." in k}

    def hits(p: str) -> int:
        return sum(1 for k in sd if k.startswith(p) and k[len(p):] in wanted)

    best = max(sorted(prefixes), key=hits)  # sorted: a tie keeps '' (it sorts first)
    if not best:
        return sd, ""
    return {(k[len(best):] if k.startswith(best) else k): v for k, v in sd.items()}, best


def _names(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_backbone_file(backbone: nn.Module, name: str, path: str | os.PathLike) -> str:
    """Load a weights file into a timm backbone built without a classifier; returns the one-line
    summary of what was loaded, missing and left over. A file that leaves more than a classifier
    missing, or whose tensors do not fit, is refused (ModelFileError, one line)."""
    sd, found = read_state_dict(path)
    own = backbone.state_dict()
    sd, prefix = _strip_prefix(sd, set(own))
    # BatchNorm's num_batches_tracked counters are not weights (files from torch < 0.4 lack them)
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing:
        raise ModelFileError(f"pretrained_path {path}: {len(missing)} of the {len(own)} tensors of backbone {name!r} "
                             f"are missing from the file ({_names(missing, 3)}); only a classifier may be missing: "
                             "is it the same architecture?")
    if wrong:
        raise ModelFileError(f"pretrained_path {path}: tensors do not fit backbone {name!r} (file vs model: "
                             f"{_names(wrong, 2)})")
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    how = ", ".join(filter(None, [f"under {found!r}" if found else "", f"prefix {prefix!r} stripped" if prefix else ""]))
    return (f"pretrained_path {Path(path).name}: {len(own)} tensors of {name} loaded"
            + (f" ({how})" if how else "") + "; missing: none; unexpected: "
            + (f"{len(unexpected)} ({_names(unexpected)})" if unexpected else "none"))


# -- timm's own weights: are they here? -----------------------------------------------------------
def _offline() -> bool:
    import huggingface_hub.constants as hc

    # the environment now, not only as huggingface_hub read it at import
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return flag or hc.is_offline_mode()


def hub_weights_cached(name: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The cached file timm would load ``name``'s pretrained weights from, or None. Looks in the
    hub cache (and torch's checkpoint directory for URL-only weights) without any network access."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg
    from timm.models._hub import check_cached_file, hf_split

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, revision = hf_split(cfg.hf_hub_id)
        # timm's load_state_dict_from_hf: the safetensors alternative first, then the pickle
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for f in files:
            hit = try_to_load_from_cache(repo, f, cache_dir=cache_dir, revision=revision)
            if isinstance(hit, str):
                return hit
    if cfg.url and check_cached_file(cfg.url, check_hash=False):
        return cfg.url
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub's host (no download): is a missing cache fillable from here?"""
    from huggingface_hub.constants import ENDPOINT

    host = urlparse(ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_weights(cfg: Any) -> None:
    """Refuse (one line) a config whose starting weights are not to be had here: ``file`` without an
    existing ``pretrained_path``, or ``true`` for a backbone timm has no weights for, or whose weights
    are neither cached nor downloadable (offline). Reads a ``file``'s tensors (weights only), so a planted or
    foreign file stops before any data or model loads; downloads nothing."""
    if cfg.pretrained == "file":
        if not cfg.pretrained_path:
            raise ConfigError("pretrained: file needs pretrained_path (e.g. --set pretrained_path=/path/to/face.pth)")
        if not Path(cfg.pretrained_path).is_file():
            raise ConfigError(f"pretrained_path: file not found: {cfg.pretrained_path}")
        read_state_dict(cfg.pretrained_path)  # a planted pickle or a non-weights file: one line before data loads
        return
    if cfg.pretrained is not True:
        return
    from timm.models import get_pretrained_cfg

    name = cfg.backbone
    pcfg = get_pretrained_cfg(name)
    if pcfg is None or not (pcfg.hf_hub_id or pcfg.url):
        raise ConfigError(f"pretrained: timm has no pretrained weights for backbone {name!r}; use pretrained: "
                          "false, or pretrained: file with pretrained_path")
    if hub_weights_cached(name) is None and (_offline() or not _hub_reachable()):
        raise ConfigError(f"pretrained: timm's weights for {name!r} are not in the hub cache and the hub cannot be "
                          f"reached; {HOW_TO.format(name=name)}")

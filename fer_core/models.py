"""timm backbone + emotion head + AU head (18-way multi-label)."""

from __future__ import annotations

import difflib
from functools import lru_cache

import timm
import torch
from torch import nn

from fer_core.errors import ConfigError, first_line


@lru_cache(maxsize=1)
def _all_models() -> frozenset[str]:
    return frozenset(timm.list_models())


def check_backbone(name: str) -> None:
    """Reject unknown timm names before any trial starts (with the closest matches)."""
    base = name.split(".", 1)[0]  # allow pretrained tags such as resnet50.a1_in1k
    if base in _all_models():
        return
    close = difflib.get_close_matches(base, sorted(_all_models()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ConfigError(f"backbone: unknown timm model {name!r}{hint}")


class FerNet(nn.Module):
    """Shared features -> emotion logits and AU logits."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        num_aus: int,
        *,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_backbone(backbone)
        kwargs: dict = {"pretrained": pretrained, "num_classes": 0, "drop_rate": drop_rate}
        if pretrained_path:
            # a local weights file instead of the hub (machines without network)
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_path)}
        try:
            self.backbone = timm.create_model(backbone, **kwargs)
        except (RuntimeError, OSError) as err:
            where = pretrained_path or "the hub cache"
            first = first_line(err)
            raise ConfigError(f"backbone {backbone!r}: cannot load pretrained weights from {where}: {first}") from None
        # pooled features out of forward(); models with a hidden head layer (MobileNetV3,
        # some EfficientNets) return head_hidden_size features, not num_features
        feat = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.emotion_head = nn.Linear(feat, num_classes)
        self.au_head = nn.Linear(feat, num_aus)
        cfg = self.backbone.pretrained_cfg or {}
        # normalisation the backbone expects (ImageNet stats for most timm models)
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: float images in [0, 1], (B,3,H,W)."""
        feats = self.backbone((x - self.mean) / self.std)
        return {"logits": self.emotion_head(feats), "au_logits": self.au_head(feats)}

"""timm backbone + emotion head + AU head (18-way multi-label).

The emotion head is chosen by the config key ``head`` from ``HEADS``: ``linear`` (a plain
``nn.Linear``, the default), ``cosine`` (normalised features and class weights, logits
``s * cos``, the classifier LDAM was published with) or ``au_attention`` (a spatial attention
map over the backbone's last feature map pools the features that both the emotion head and the
AU head read, so AU supervision shapes where the model looks).
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import group_parameters
from torch import nn

from fer_core.config_rules import SPATIAL_HEADS, check_backbone  # config time, no torch (re-exported)
from fer_core.errors import ConfigError, first_line
from fer_core.pretrained import HOW_TO, load_backbone_file
from fer_core.registry import Registry, lookup

HEADS = Registry("classifier head", "head")


class CosineHead(nn.Module):
    """Cosine classifier: logits_c = s * cos(f, w_c), so every logit lies in [-s, s].

    The normalised classifier of Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss" (NeurIPS 2019; their ``NormedLinear``): both the
    feature and each class's weight vector are L2-normalised, no bias, and the loss works on
    ``s * cos`` (they scale inside the loss, s = 30; we scale in the head, so the logits the
    metrics and post-hoc methods see are the ones the loss trained). Unlike theirs the weight
    is (classes, features) and initialised like ``nn.Linear`` (kaiming-uniform; the norm of
    an initial weight is irrelevant once it is normalised).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class AttentionHead(nn.Module):
    """Spatial attention pooling + a linear classifier (``head: au_attention``).

    A 1x1 convolution scores every position of the backbone's last feature map (B,C,H,W); a
    softmax over the H*W positions makes the map a distribution per image, and the features are
    pooled with it instead of averaged. FerNet feeds the same attended features to the AU head, so
    with AU supervision (``au_weight > 0`` and AU labels) the AU loss shapes the map too: a globally
    pooled backbone cannot weigh brows, eyes and mouth differently per image, this one can.
    """

    spatial = True  # FerNet routes the backbone's feature map (forward_features) through pool()

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)  # first: LWS sizes its scales by the head's first parameter
        self.score = nn.Conv2d(in_features, 1, kernel_size=1)

    def reset_parameters(self) -> None:  # cRT (fer_core/stages.py): a fresh head, attention included
        self.score.reset_parameters()
        self.fc.reset_parameters()

    def pool(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,C,H,W) -> attended features (B,C) and the attention map (B,H,W), summing to one per image."""
        b, _, h, w = fmap.shape
        attention = self.score(fmap).flatten(1).float().softmax(dim=1)  # float: a bf16 softmax sums to 1 +- 1e-2
        feats = torch.einsum("bn,bcn->bc", attention.to(fmap.dtype), fmap.flatten(2))
        return feats, attention.view(b, h, w)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)


@HEADS.register("linear")
def linear_head(in_features: int, num_classes: int, scale: float) -> nn.Module:
    return nn.Linear(in_features, num_classes)  # scale: unused (a linear head's logits have a free scale)


@HEADS.register("cosine")
def cosine_head(in_features: int, num_classes: int, scale: float) -> nn.Module:
    return CosineHead(in_features, num_classes, scale)


@HEADS.register("au_attention")
def au_attention_head(in_features: int, num_classes: int, scale: float) -> nn.Module:
    return AttentionHead(in_features, num_classes)  # scale: unused (a linear classifier on attended features)


def check_feature_map(backbone: nn.Module, name: str, head: str) -> None:
    """A spatial head needs forward_features to give a (B, num_features, H, W) map; token models
    (ViT: (B,N,C)) and channels-last ones (Swin: (B,H,W,C)) are refused with one line."""
    cfg = backbone.pretrained_cfg or {}
    size = (cfg.get("fixed_input_size") and cfg.get("input_size")) or (3, 64, 64)
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():  # on the backbone's device: "meta" at validate (shapes only, nothing computed)
            x = torch.zeros(1, *size, device=next(backbone.parameters()).device)
            shape = tuple(backbone.forward_features(x).shape)
    finally:
        backbone.train(was)
    if len(shape) != 4 or shape[1] != backbone.num_features:
        raise ConfigError(f"head: {head!r} needs a backbone whose forward_features is a (B,C,H,W) feature map; "
                          f"backbone {name!r} gives {shape}; use head: linear or a convolutional backbone")


def check_spatial_head(backbone: str, head: str) -> None:
    """``check_feature_map`` before any trial (``fer-study validate`` and launch): the backbone built on
    the meta device, so only shapes are computed (about 0.1 s a model, no weights allocated). ConfigError
    is not among the exceptions passed over: a refusal is raised."""
    try:
        with torch.device("meta"):
            model = timm.create_model(backbone, pretrained=False, num_classes=0)
        check_feature_map(model, backbone, head)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return  # a model whose forward needs real values (data-dependent ops): FerNet checks it when built


class FerNet(nn.Module):
    """Shared features -> emotion logits and AU logits."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        num_aus: int,
        *,
        pretrained: bool | str = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head: str = "linear",
        cosine_scale: float = 30.0,
        class_scales: bool = False,
        norm_mean: tuple[float, float, float] | None = None,
        norm_std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        make_head = lookup(HEADS, head)
        check_backbone(backbone)
        # a local file (pretrained_path) is read by fer_core/pretrained.py, weights-only and with FER
        # repositories' wrappers and prefixes; timm's own weights come through the hub cache
        hub = bool(pretrained) and not pretrained_path
        # drop path (stochastic depth) only when asked: not every timm model takes the argument
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
        try:
            self.backbone = timm.create_model(backbone, pretrained=hub, num_classes=0, drop_rate=drop_rate, **extra)
        except (RuntimeError, OSError) as err:
            raise ConfigError(f"backbone {backbone!r}: cannot load timm's pretrained weights from the hub cache "
                              f"({first_line(err)}); {HOW_TO.format(name=backbone)}") from None
        except TypeError as err:
            if "drop_path_rate" not in str(err):
                raise
            raise ConfigError(f"drop_path_rate: backbone {backbone!r} has no drop path (stochastic depth); "
                              f"use drop_path_rate 0 or another backbone") from None
        if extra and not any(isinstance(m, DropPath) for m in self.backbone.modules()):  # took it, ignored it
            raise ConfigError(f"drop_path_rate: backbone {backbone!r} has no drop path (stochastic depth) layers; "
                              f"use drop_path_rate 0 or another backbone")
        # what the starting weights were, in one line (train_fer stores it with the result)
        self.weights_summary = f"timm pretrained weights for {backbone}" if hub else "random init"
        if pretrained_path:
            self.weights_summary = load_backbone_file(self.backbone, backbone, pretrained_path)
        # pooled features out of forward(); models with a hidden head layer (MobileNetV3,
        # some EfficientNets) return head_hidden_size features, not num_features
        feat = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        # a spatial head (au_attention) pools the feature map itself: its features are the map's channels
        self.spatial = head in SPATIAL_HEADS
        if self.spatial:
            check_feature_map(self.backbone, backbone, head)
            feat = self.backbone.num_features
        self.emotion_head = make_head(feat, num_classes, cosine_scale)
        # per-class scales of the emotion logits (LWS, fer_core/stages.py); absent (None) otherwise, so
        # a model without them has exactly the state dict it always had
        self.register_parameter("emotion_scale", None)
        if class_scales:
            self.add_class_scales()
        self.au_head = nn.Linear(feat, num_aus)
        cfg = self.backbone.pretrained_cfg or {}
        # normalisation the backbone expects (ImageNet stats for most timm models), unless set (a face
        # network trained with its own statistics)
        mean = norm_mean or cfg.get("mean", (0.485, 0.456, 0.406))
        std = norm_std or cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def add_class_scales(self) -> nn.Parameter:
        """Learnable per-class scales of the emotion logits, starting at 1 (the logits unchanged)."""
        w = next(self.emotion_head.parameters())
        self.emotion_scale = nn.Parameter(torch.ones(w.shape[0], device=w.device, dtype=w.dtype))
        return self.emotion_scale

    def group_matcher(self, coarse: bool = False):
        """timm's layer grouping (layer-wise lr decay, ``timm.optim``): the backbone's own groups, then
        the heads (emotion, AU, LWS scales) as the top layer, which gets the full lr."""
        if not hasattr(self.backbone, "group_matcher"):
            raise ConfigError(f"layer_decay: backbone {type(self.backbone).__name__} has no timm layer grouping "
                              "(group_matcher); use layer_decay 0")
        inner = group_parameters(self.backbone, self.backbone.group_matcher(coarse), reverse=True)
        top = max(inner.values()) + 1
        return lambda name: inner.get(name.removeprefix("backbone."), top) if name.startswith("backbone.") else top

    def no_weight_decay(self) -> set[str]:
        """The backbone's own no-decay parameters (ViT's position embedding, ...), read by timm's optimizer factory."""
        return {f"backbone.{n}" for n in getattr(self.backbone, "no_weight_decay", set)()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: float images in [0, 1], (B,3,H,W)."""
        x = (x - self.mean) / self.std
        out = {}
        if self.spatial:  # attention-pooled feature map (+ the backbone's dropout, which forward_head would apply)
            feats, out["attention"] = self.emotion_head.pool(self.backbone.forward_features(x))
            feats = F.dropout(feats, getattr(self.backbone, "drop_rate", 0.0), self.training)
        else:
            feats = self.backbone(x)
        logits = self.emotion_head(feats)
        if self.emotion_scale is not None:
            logits = logits * self.emotion_scale
        return {"logits": logits, "au_logits": self.au_head(feats), **out}

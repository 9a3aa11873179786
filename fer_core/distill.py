"""Knowledge distillation: a student trains on a teacher's softened outputs beside the labels.

Config keys: ``teacher`` (one or more model files: ``fer-study export``, ``fer-study train
--save`` or a study's kept checkpoints; several teachers are averaged), ``distill_alpha``
(weight of the teacher term, 0 = off) and ``distill_temperature`` (T). The student's
emotion loss is whatever ``loss`` says (the imbalance toolkit stays in place):

    loss = (1 - alpha) * emotion_loss(student, labels) + alpha * T^2 * KL(p_teacher^T || p_student^T)
           + au_weight * BCE(AU)

(Hinton et al. 2015: T^2 keeps the soft term's gradients on the scale of the hard term's.)
The teacher sees exactly the student's augmented, mixed batch, resized to its own input size.

A study names its teacher as ``teacher: PATH`` or ``teacher: {study: NAME, top: k}`` (``parse_teacher``);
the second is resolved at launch into the kept checkpoints of study NAME's best k trials in
the same storage (``fer_core.study.teachers.resolve_teacher``: storage is the study layer's),
before any trial starts. A teacher file is loaded weights-only (``fer_core.checkpoint``): a
file that would need arbitrary unpickling is refused, its contents never run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fer_core.checkpoint import load_model
from fer_core.config_rules import parse_teacher  # noqa: F401  (config time, no torch)
from fer_core.errors import ConfigError


class Teacher(nn.Module):
    """Frozen teacher model(s); ``soft(x)`` is their mean softmax at temperature T."""

    def __init__(self, models: list[nn.Module], img_sizes: list[int], temperature: float) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.img_sizes = img_sizes
        self.temperature = temperature
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def load(cls, paths: tuple[str, ...], class_names: tuple[str, ...], temperature: float) -> Teacher:
        models, sizes = [], []
        for path in paths:
            model, payload = load_model(path)
            if tuple(payload["class_names"]) != tuple(class_names):
                raise ConfigError(f"teacher {path}: its classes {payload['class_names']} are not the data set's "
                                  f"{list(class_names)}")
            models.append(model)
            sizes.append(int(payload["config"].get("img_size", 0)))
        return cls(models, sizes, temperature)

    def train(self, mode: bool = True) -> Teacher:  # always in eval mode (BatchNorm statistics stay frozen)
        return super().train(False)

    @torch.no_grad()
    def soft(self, x: torch.Tensor) -> torch.Tensor:
        probs = 0.0
        for model, size in zip(self.models, self.img_sizes):
            v = x if not size or x.shape[-1] == size else F.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False)
            probs = probs + (model(v)["logits"].float() / self.temperature).softmax(1)
        return probs / len(self.models)

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return distillation_loss(student_logits, self.soft(x), self.temperature)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, mean over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


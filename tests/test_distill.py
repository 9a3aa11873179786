"""Knowledge distillation: the soft-target loss, teacher loading and resolution, and a student that follows
its teacher. (Whether distillation beats training alone on the stand-in is a budget question: see
benchmarks/distillation.py and its figures in benchmarks/RESULTS.md.)"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from fer_core.checkpoint import load_model, model_payload
from fer_core.config import resolve_config
from fer_core.data.dataset import VAL
from fer_core.distill import distillation_loss
from fer_core.errors import ConfigError
from fer_core.study.outputs import checkpoint_path
from fer_core.study.spec import load_study
from fer_core.study.teachers import resolve_teacher
from fer_core.train import train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 2, "warmup_epochs": 0}


def test_distillation_loss_is_t_squared_kl_and_zero_on_the_teachers_own_outputs():
    torch.manual_seed(0)
    s, t = torch.randn(6, 14), torch.randn(6, 14)
    T = 3.0
    pt = (t / T).softmax(1)
    want = (pt * (pt.log() - (s / T).log_softmax(1))).sum(1).mean() * T * T
    assert distillation_loss(s, pt, T).item() == pytest.approx(want.item(), rel=1e-5)
    assert distillation_loss(t, pt, T).item() == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher_file(small, tmp_path_factory):
    result = train_fer({**TINY, "seed": 7, "epochs": 3}, dataset=small)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(model_payload(result), path)
    return str(path), result


def _kl_to_teacher(result: dict, teacher: torch.nn.Module, small) -> float:
    """Mean KL(teacher || student) over the validation images."""
    idx = small.indices(VAL)
    with torch.no_grad():
        t = teacher(small.images[idx].float() / 255)["logits"].softmax(1).numpy()
    s = result["predictions"]["val"]["probs"]
    return float((t * (np.log(t + 1e-9) - np.log(s + 1e-9))).sum(1).mean())


def test_a_distilled_student_follows_its_teacher(small, teacher_file):
    path, _ = teacher_file
    teacher, _payload = load_model(path)
    plain = train_fer({**TINY, "teacher": path, "distill_alpha": 0.0}, dataset=small)  # alpha 0: training alone
    distilled = train_fer({**TINY, "teacher": path, "distill_alpha": 1.0, "distill_temperature": 2.0}, dataset=small)
    assert all(math.isfinite(r["loss"]) for r in distilled["history"])
    # pure soft targets: the student's output distribution moves towards the teacher's (measured: 0.014 vs
    # 0.021 for the same student alone, same seed and budget)
    a, d = _kl_to_teacher(plain, teacher, small), _kl_to_teacher(distilled, teacher, small)
    assert d < 0.8 * a, (a, d)


def test_teacher_keys_are_validated(tmp_path, teacher_file):
    with pytest.raises(ConfigError, match=r"teacher: model file not found: /nope\.pt"):
        resolve_config({"teacher": "/nope.pt"})
    with pytest.raises(ConfigError, match="config key 'distill_alpha'"):
        resolve_config({"distill_alpha": 1.5})
    assert resolve_config({"teacher": teacher_file[0]}).teacher == (teacher_file[0],)
    payload = torch.load(teacher_file[0], weights_only=True)  # a model file is weights and plain data only
    payload["class_names"] = payload["class_names"][::-1]  # same shape, other class order
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="its classes"):
        from fer_core.distill import Teacher

        Teacher.load((str(tmp_path / "other.pt"),), tuple(teacher_file[1]["class_names"]), 2.0)


def test_teacher_from_a_study_resolves_to_its_best_kept_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'fer-study.db'}"
    store = tmp_path / "fer-study-artifacts"
    teacher_study = optuna.create_study(study_name="teachers", storage=url, direction="maximize")
    for v in (0.2, 0.5, 0.4):
        teacher_study.add_trial(optuna.trial.create_trial(value=v))
    for n in (1, 2):  # the top two trials' models are kept
        checkpoint_path(store, "teachers", n).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(store, "teachers", n).write_bytes(b"model")
    (tmp_path / "student.yaml").write_text(
        "# student\nname: student\nquestion: Does a teacher help?\ndata: {dataset: synthetic}\n"
        "base: {backbone: test_resnet, img_size: 48}\nteacher: {study: teachers, top: 2}\n"
        "design: {kind: grid, factors: {distill_alpha: [0.0, 0.5], distill_temperature: [2.0, 4.0]}}\n")
    spec = load_study(str(tmp_path / "student.yaml"), "smoke")
    assert spec.teacher_from == {"study": "teachers", "top": 2} and "teacher" not in spec.base
    resolved = resolve_teacher(spec, url, None)
    assert resolved.base["teacher"] == [str(checkpoint_path(store, "teachers", n)) for n in (1, 2)]
    assert len(resolved.cells()) == 4  # temperature and alpha are study parameters
    spec3 = load_study(str(tmp_path / "student.yaml"), "smoke")
    object.__setattr__(spec3, "teacher_from", {"study": "teachers", "top": 3})
    with pytest.raises(ConfigError, match=r"no kept checkpoint for trials \[0\]"):
        resolve_teacher(spec3, url, None)
    object.__setattr__(spec3, "teacher_from", {"study": "nobody", "top": 1})
    with pytest.raises(ConfigError, match="no study 'nobody'"):
        resolve_teacher(spec3, url, None)
    assert np.isfinite(teacher_study.best_value)

"""Post-hoc corrections for the label prior: the maths by hand, tau chosen on validation, the trainer's output."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from fer_core.config import resolve_config
from fer_core.errors import ConfigError
from fer_core.posthoc import POSTHOC, TAUS, Head, applicable, choose_tau, logit_adjust, tau_norm
from fer_core.train import train_fer


def test_logit_adjustment_on_a_three_class_toy_is_the_formula():
    z = np.array([[2.0, 1.0, 0.5], [0.1, 0.2, 0.3]], dtype=np.float32)
    counts = [80, 15, 5]
    head = Head(counts)
    by_hand = z - 1.0 * np.log(np.array([0.80, 0.15, 0.05]))
    np.testing.assert_allclose(logit_adjust(z, head, 1.0), by_hand, rtol=1e-6)
    np.testing.assert_allclose(logit_adjust(z, head, 0.0), z)  # tau 0: the trained model
    # the first image flips from the head class to the rarest: 2 - log .8 < 0.5 - log .05
    assert logit_adjust(z, head, 1.0)[0].argmax() == 2
    # a class with no training image is floored at half an image, never -inf
    assert np.isfinite(logit_adjust(z, Head([10, 0, 5]), 1.0)).all()


def test_tau_norm_equals_the_normalised_head_on_the_features():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4))
    w = rng.normal(size=(3, 4)) * np.array([[3.0], [1.0], [0.3]])  # the head class has the largest norm
    b = np.array([0.2, -0.1, 0.05])
    norms = np.linalg.norm(w, axis=1)
    z = (feats @ w.T + b).astype(np.float32)
    for tau in (0.0, 0.5, 1.0, 2.0):
        by_hand = feats @ (w / norms[:, None] ** tau).T + b
        np.testing.assert_allclose(tau_norm(z, Head([50, 10, 2], norms, b), tau), by_hand, rtol=1e-5, atol=1e-5)
    assert applicable(Head([1, 2])) == ["logit_adjust"]  # no linear head: no tau-norm
    assert set(applicable(Head([1, 2], norms[:2], b[:2]))) == set(POSTHOC)


def test_tau_is_chosen_on_validation_and_ties_keep_the_trained_model():
    # a model biased to class 0: every class-1 and class-2 image has logits slightly favouring class 0
    y = np.array([0] * 10 + [1] * 5 + [2] * 5)
    z = np.zeros((20, 3), dtype=np.float32)
    z[np.arange(20), y] = 1.0
    z[10:, 0] = 1.5
    head = Head([90, 8, 2])

    def macro(logits: np.ndarray) -> float:
        return f1_score(y, logits.argmax(1), average="macro")

    tau = choose_tau("logit_adjust", z, head, macro)
    assert tau in TAUS and tau > 0 and macro(logit_adjust(z, head, tau)) == 1.0
    assert tau == min(t for t in TAUS if macro(logit_adjust(z, head, t)) == 1.0)  # the smallest of the best
    flat = np.tile([1.0, 0.0, 0.0], (20, 1)).astype(np.float32) * 50  # no tau in the grid changes a prediction
    assert choose_tau("logit_adjust", flat, head, macro) == 0.0


def test_the_trainer_reports_every_correction_and_a_study_can_make_one_its_output(small):
    cfg = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0}
    plain = train_fer(cfg, dataset=small)
    assert set(plain["posthoc"]) == {"logit_adjust", "tau_norm"}
    for r in plain["posthoc"].values():
        assert r["tau"] in TAUS
        assert r["test"]["macro_f1"] == pytest.approx(f1_score(plain["predictions"]["test"]["labels"], r["test_pred"],
                                                               average="macro", labels=range(14), zero_division=0))
    adjusted = train_fer({**cfg, "posthoc": "logit_adjust"}, dataset=small)
    la = plain["posthoc"]["logit_adjust"]
    # the same seed trains the same model: the corrected output is the plain run's correction
    assert adjusted["test"]["macro_f1"] == pytest.approx(la["test"]["macro_f1"])
    assert adjusted["val"]["macro_f1"] == pytest.approx(la["val"]["macro_f1"])
    assert adjusted["predictions"]["test"]["logits"].argmax(1).tolist() == la["test_pred"].tolist()


def test_an_unknown_posthoc_name_is_one_line_listing_the_valid_ones():
    with pytest.raises(ConfigError) as exc:
        resolve_config({"posthoc": "platt"})
    assert str(exc.value) == "posthoc: unknown post-hoc method 'platt'; valid: none, logit_adjust, tau_norm"


@pytest.mark.parametrize("extra", [{"head": "cosine", "loss": "ldam_cosine"}, {"stage2": "lws", "stage2_epochs": 1},
                                   {"head": "au_attention"}])
def test_tau_norm_as_the_output_needs_a_plain_linear_head(extra):
    with pytest.raises(ConfigError) as exc:
        resolve_config({"posthoc": "tau_norm", **extra})
    assert "posthoc: tau_norm needs a plain linear head" in str(exc.value) and "\n" not in str(exc.value)

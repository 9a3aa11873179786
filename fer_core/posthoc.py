"""Post-hoc corrections for the training label prior: no retraining, tau chosen on validation.

Every trial computes them at its selected epoch from its float32 logits (``train.py`` step 10);
the report shows each as a derived row of the variant (``VARIANT +posthoc:NAME``), paired
with the variant itself by seed and image. A study can also make one a trial's own output
(config key ``posthoc``): the trial's validation and held-out predictions are then the
corrected ones.

- ``logit_adjust``: Menon et al., "Long-tail learning via logit adjustment", ICLR 2021,
  Sec. 4 (post-hoc logit adjustment): predict ``argmax_y f_y(x) - tau * log pi_y`` with ``pi``
  the training label frequencies (published: CIFAR-10-LT balanced accuracy 0.714 -> 0.773).
  Where ours differs: the paper's tables use tau = 1; here tau is picked from ``TAUS`` on the
  validation split by the study's selection metric and applied unchanged to the held-out split.
- ``tau_norm``: Kang et al., "Decoupling Representation and Classifier for Long-Tailed
  Recognition", ICLR 2020, Sec. 4 ("tau-normalized classifier"): class weights
  ``w_c / ||w_c||^tau``, tau in [0, 2] chosen on validation as in the paper. It needs only
  the logits and the head: ``f . w_c / ||w_c||^tau + b_c = (z_c - b_c) / ||w_c||^tau + b_c``.
  Where ours differs: the paper's classifier has no bias; ours keeps its trained bias
  unscaled, so tau = 0 is exactly the trained model. Defined for a linear head only.

Ties in the validation score go to the smaller tau (tau = 0 is the uncorrected model), so a
correction that does not help on validation is not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fer_core.registry import Registry

TAUS: tuple[float, ...] = tuple(np.round(np.arange(0.0, 2.01, 0.25), 2).tolist())  # 0, 0.25, ..., 2


@dataclass(frozen=True)
class Head:
    """What a correction may use besides the logits: the training class counts and the linear head."""

    class_counts: Sequence[int]
    weight_norms: np.ndarray | None = None  # ||w_c|| per class (None: not a linear head)
    bias: np.ndarray | None = None


Correction = Callable[[np.ndarray, Head, float], np.ndarray]  # (logits (N, K), head, tau) -> logits
POSTHOC = Registry("post-hoc method", "posthoc")


@POSTHOC.register("logit_adjust")
def logit_adjust(logits: np.ndarray, head: Head, tau: float) -> np.ndarray:
    counts = np.asarray(head.class_counts, dtype=np.float64)
    # a class with no training image has prior 0: -inf would forbid it for good; floor it at half an image
    prior = np.maximum(counts, 0.5) / max(counts.sum(), 1.0)
    return (np.asarray(logits, dtype=np.float64) - tau * np.log(prior)).astype(np.float32)


@POSTHOC.register("tau_norm")
def tau_norm(logits: np.ndarray, head: Head, tau: float) -> np.ndarray:
    if head.weight_norms is None:
        raise ValueError("tau_norm needs a linear classifier head")
    b = np.zeros(len(head.weight_norms)) if head.bias is None else np.asarray(head.bias, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return ((z - b) / np.asarray(head.weight_norms, dtype=np.float64) ** tau + b).astype(np.float32)


def applicable(head: Head) -> list[str]:
    """The registered corrections this model supports (tau_norm: a linear head only)."""
    return [n for n in POSTHOC if n != "tau_norm" or head.weight_norms is not None]


def choose_tau(name: str, val_logits: np.ndarray, head: Head, score: Callable[[np.ndarray], float],
               taus: Sequence[float] = TAUS) -> float:
    """The tau in ``taus`` whose corrected validation logits score best (ties: the smaller tau)."""
    fn = POSTHOC[name]
    best_tau, best = 0.0, -np.inf
    for tau in sorted(taus):
        s = score(fn(val_logits, head, tau))
        s = -np.inf if s != s else s
        if s > best:
            best_tau, best = float(tau), s
    return best_tau

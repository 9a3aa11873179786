"""The trial-result contract: what one finished trial stores, under the names it is stored by.

One shape from the worker to the report, never renamed on the way: the worker (``trainable._summary``)
builds a ``WorkerResult``, whose ``TrialResult`` part the driver (``bridge``) writes key by key as the
trial's Optuna user attrs (``store_result``), and the report reads them back by the same names
(``stored_result``). These names are what users' storages already hold, so they never change:
a study stored by an older version must still report (tests/report/test_fixture_report.py).
The metric names inside a split's dict are ``fer_core.metric_names.SCALAR_METRICS`` plus the
per-class lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from fer_core.metric_names import SCALAR_METRICS

if TYPE_CHECKING:
    import optuna

# the result key of a trial that hit an input error (DataError/ConfigError): "<Type>: <first line>"
INPUT_ERROR = "fer_input_error"


class SplitMetrics(TypedDict, total=False):
    """One split's metrics at the selected epoch: the scalars of ``SCALAR_METRICS`` it has (``au_f1``
    only with AU labels) and the per-class lists (validation keeps precision and recall too)."""

    macro_f1: float
    accuracy: float
    balanced_accuracy: float
    head_f1: float
    medium_f1: float
    tail_f1: float
    au_f1: float
    au_auc: float  # macro ROC AUC over the AUs the split can score (both labels present)
    au_f1_tuned: float  # macro-F1 at the per-AU thresholds chosen on validation
    loss: float
    au_f1_per_au: list[float]  # fer_core.metric_names.AU_LISTS: per AU, NaN where the split cannot score it
    au_auc_per_au: list[float]
    au_threshold: list[float]  # chosen on validation, applied to test
    f1: list[float]
    precision: list[float]
    recall: list[float]
    support: list[int]
    confusion_matrix: list[list[int]]


class TtaMetrics(TypedDict):
    """The same trial evaluated with test-time augmentation (config key ``tta``)."""

    name: str
    val: SplitMetrics
    test: SplitMetrics


class TrialResult(TypedDict):
    """A finished trial's user attrs, exactly as stored (JSON values)."""

    best_epoch: int  # the epoch validation selected (0-based)
    epochs_run: int
    stopped_early: bool
    val_metrics: SplitMetrics  # at the selected epoch
    test_metrics: SplitMetrics  # the held-out split, at the same epoch
    val_f1_per_class: list[float]  # copies of val_metrics.f1 / test_metrics.f1 and of single
    test_f1_per_class: list[float]  # numbers in them: columns optuna-dashboard shows without digging
    test_macro_f1: float
    val_tail_f1: float | None
    test_tail_f1: float | None
    device: str  # what trained it: "cpu", "cuda:0", ...
    train_seconds: float  # wall time of the training (machine-dependent: never in a report's numbers)
    node_id: str | None  # the Ray node it ran on
    tta_metrics: TtaMetrics | None  # None without test-time augmentation
    # the held-out predictions, packed (``outputs.pack_classes``): {split: {labels, pred[, index]}}
    predictions_packed: dict[str, dict[str, str]] | None
    # post-hoc corrections (fer_core/posthoc.py): {name: {tau, val, test, test_pred (packed)}}; None in
    # trials stored before they existed
    posthoc_metrics: dict[str, dict[str, Any]] | None
    # where the starting weights came from, one line (fer_core/pretrained.py); None in older trials
    weights: str | None
    # the training loss of every epoch run, in order (the report's learning curves); None in older trials
    train_loss: list[float] | None
    # the precision it trained in, "bf16" or "off" (``amp: auto`` chose it by measurement, fer_core/precision.py);
    # None in older trials
    amp: str | None


class WorkerResult(TrialResult):
    """What the worker sends the driver: the stored attrs plus what the driver uploads as artifacts
    (the unpacked predictions) and the data set's fingerprint; these two are never user attrs."""

    predictions: dict[str, dict[str, list[int]]]
    fingerprint: str


# the user attrs a finished trial stores, in the order they are written
RESULT_ATTRS: tuple[str, ...] = tuple(TrialResult.__annotations__)
METRICS = SCALAR_METRICS  # the scalar names inside val_metrics / test_metrics


def split_metrics(m: dict[str, Any], *lists: str) -> SplitMetrics:
    """The scalars of ``SCALAR_METRICS`` a split's metrics have, plus the per-class ``lists`` named."""
    return {k: m[k] for k in METRICS if k in m} | {k: m[k] for k in lists}  # type: ignore[return-value]


def store_result(trial: optuna.Trial, result: TrialResult) -> None:
    """The driver's write: every stored attr under its own name (missing ones as null, as always)."""
    for k in RESULT_ATTRS:
        trial.set_user_attr(k, result.get(k))


def stored_result(trial: optuna.trial.FrozenTrial) -> TrialResult:
    """The report's read: the stored attrs by the same names; None where a trial has none (pruned,
    failed or running trials, older trials without ``predictions_packed`` or ``tta_metrics``)."""
    ua = trial.user_attrs
    return {k: ua.get(k) for k in RESULT_ATTRS}  # type: ignore[return-value]

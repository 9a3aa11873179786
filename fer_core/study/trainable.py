"""The Ray Tune function trainable: ``train_fer`` with checkpoints, nothing else.

It never touches the database (workers on other machines need no credentials): it
only reports metrics and checkpoints to Tune; the driver's bridge writes storage.

The driver imports this module only to hand ``trial_function`` to Tune, so ``train_fer`` (timm, which
pulls torchvision.ops and torch._dynamo: ~5 s of imports on a slow 2-core CPU) is imported inside the
function a worker runs, not by the driver before Ray starts.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from typing import Any

import torch

from fer_core.checkpoint import load_training_state
from fer_core.data.dataset import FerDataset
from fer_core.data.sources import data_key
from fer_core.errors import ConfigError, DataError, first_line
from fer_core.metric_names import AU_LISTS, SELECT_METRICS
from fer_core.study.outputs import pack_classes, write_trial_outputs
from fer_core.study.result import INPUT_ERROR, WorkerResult, split_metrics

CKPT_FILE = "trial.pt"


def fer_trainable(config: dict[str, Any], datasets: dict[tuple, FerDataset] | None = None) -> None:
    from ray import tune

    from fer_core.train import train_fer

    train_cfg = dict(config["train"])
    checkpoint_every = int(config.get("checkpoint_every", 1))
    checkpoint_min_s = float(config.get("checkpoint_min_s", 0.0))
    fail_at = os.environ.get("FER_STUDY_FAIL_AT")  # fault injection for tests: "<cell_id>@<epoch>"
    oom_at = os.environ.get("FER_STUDY_OOM_AT")  # fault injection for tests: "<cell_id>@<epoch>"
    # fault injection for tests: "<cell_id>@<epoch>", an input error raised on every attempt
    data_error_at = os.environ.get("FER_STUDY_DATAERROR_AT")
    ds = (datasets or {}).get(data_key(train_cfg))  # shared from the object store; else loaded (disk cache)

    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # a retry or a resumed pause: the last checkpoint, read weights-only
        with ckpt.as_directory() as d:
            state = load_retry_state(d)
    last_ckpt = [state["epoch"] if state else -1]
    last_save = [time.monotonic()]

    def report(metrics: dict, checkpoint: dict | None = None) -> None:
        epoch = metrics["epoch"]
        if fail_at and fail_at == f"{config['meta'].get('cell_id')}@{epoch}" and state is None:
            os._exit(17)  # a hard crash of the worker process (only on the first attempt)
        if oom_at and oom_at == f"{config['meta'].get('cell_id')}@{epoch}" and state is None:
            _allocate_past_memory_limit()  # a real allocation failure (only on the first attempt)
        if data_error_at and data_error_at == f"{config['meta'].get('cell_id')}@{epoch}":
            raise DataError(f"injected input error at epoch {epoch} (FER_STUDY_DATAERROR_AT)")
        if (checkpoint is not None and (epoch + 1) % checkpoint_every == 0
                and time.monotonic() - last_save[0] >= checkpoint_min_s):
            last_ckpt[0] = epoch
            with tempfile.TemporaryDirectory() as d:
                save_retry_state(d, checkpoint)
                tune.report({**metrics, "checkpoint_epoch": epoch, "final": 0},
                            checkpoint=tune.Checkpoint.from_directory(d))
            last_save[0] = time.monotonic()
        else:
            tune.report({**metrics, "checkpoint_epoch": last_ckpt[0], "final": 0})

    try:
        result = train_fer(train_cfg, report, dataset=ds, checkpoint=state)
    except (DataError, ConfigError) as err:
        # an input error fails the same way on every attempt: reported as the trial's last result,
        # not raised, so Tune does not retry it like a crashed worker; the driver's bridge fails the
        # trial once and stops the launch (the metric is there only because Tune checks every result)
        tune.report({config.get("metric") or "macro_f1": float("nan"), "final": 1, "checkpoint_epoch": last_ckpt[0],
                     INPUT_ERROR: f"{type(err).__name__}: {first_line(err)}"})
        return
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as err:
        # the stored FAIL reason must say "out of memory" whichever allocator ran out
        # (CPU allocations fail with a RuntimeError, CUDA ones with OutOfMemoryError)
        first = first_line(err)
        if isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError) \
                and "can't allocate memory" not in first:
            raise
        raise MemoryError(f"trial ran out of memory: {first}") from err
    if config.get("out_dir"):  # probabilities and the model go through the shared runs dir, not the result
        write_trial_outputs(config["out_dir"], result)
    last = result["history"][-1]
    summary = {
        **last,
        "final": 1,
        "checkpoint_epoch": last_ckpt[0],
        # the selected epoch's validation metrics replace the last epoch's (the objective is one of them)
        **{k: result["val"][k] for k in SELECT_METRICS},
        "fer_result": json.dumps({**_summary(result), "node_id": _node_id()}),  # one string: Ray would flatten a dict
    }
    tune.report(summary)


def save_retry_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """``train_fer``'s per-epoch state as the Tune checkpoint's ``trial.pt``."""
    torch.save(state, os.path.join(directory, CKPT_FILE))


def load_retry_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The state in a Tune checkpoint directory. Loaded weights-only: the directory lives on storage
    every Ray node (and whoever else can write there) shares, so a planted ``trial.pt`` is refused
    with one line (a ModelFileError, the trial's FAIL reason), never run."""
    return load_training_state(os.path.join(directory, CKPT_FILE))


def trial_function(threads: int):
    """The function Tune runs per trial. Defined here, not in the runner: a worker unpickling it
    imports this module (which it needs) and not the driver's (Optuna, SQLAlchemy, reports)."""

    def fer_trial(config: dict, datasets: dict | None = None) -> None:
        train = dict(config["train"])
        if not train.get("num_threads"):
            train["num_threads"] = threads  # one intra-op thread per reserved CPU: trials do not oversubscribe
        fer_trainable({**config, "train": train}, datasets=datasets)

    return fer_trial


def _summary(result: dict) -> WorkerResult:
    """What the driver stores as trial user attrs (JSON-safe), under the names they are stored by
    (the contract in ``fer_core/study/result.py``), plus the predictions it uploads as an artifact."""
    au = [k for k in AU_LISTS if k in result["val"]]  # per-AU metrics: only with AU labels
    val = split_metrics(result["val"], "f1", "precision", "recall", "support", "confusion_matrix", *au)
    test = split_metrics(result["test"], "f1", "support", "confusion_matrix", *au)
    tta = result.get("tta")
    return {
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "stopped_early": result["stopped_early"],
        "val_metrics": val,
        "test_metrics": test,
        "val_f1_per_class": val["f1"],
        "test_f1_per_class": test["f1"],
        "test_macro_f1": test["macro_f1"],
        "val_tail_f1": val.get("tail_f1"),
        "test_tail_f1": test.get("tail_f1"),
        "device": result["device"],
        "train_seconds": result["seconds"],
        "node_id": None,  # the worker's node: set by fer_trainable, which runs on it
        "tta_metrics": {"name": tta["name"], "val": split_metrics(tta["val"], "f1"),
                        "test": split_metrics(tta["test"], "f1")} if tta else None,
        # the held-out predictions packed small enough for a user attr: the report's intervals over
        # held-out images then need nothing but the storage (fer_core/report/evidence.py)
        # (with the held-out images' positions: a k-fold CV study pools its folds' predictions by them)
        "predictions_packed": {split: {"labels": pack_classes(p["labels"]), "pred": pack_classes(p["probs"].argmax(1)),
                                       **({"index": pack_classes(p["index"])} if "index" in p else {})}
                               for split, p in result["predictions"].items()},
        # post-hoc corrections (fer_core/posthoc.py): tau, metrics and the predicted held-out classes
        "posthoc_metrics": {name: {"tau": r["tau"], "val": split_metrics(r["val"], "f1"),
                                   "test": split_metrics(r["test"], "f1"), "test_pred": pack_classes(r["test_pred"])}
                            for name, r in (result.get("posthoc") or {}).items()} or None,
        "train_loss": [float(h["loss"]) for h in result["history"]],
        # predicted classes (probabilities go through write_trial_outputs: results stay small) so the
        # report can bootstrap over validation images; uploaded by the driver as an artifact
        "predictions": {split: {"labels": [int(v) for v in p["labels"]],
                                "pred": [int(v) for v in p["probs"].argmax(1)]}
                        for split, p in result["predictions"].items()},
        "weights": result.get("weights"),
        "amp": result.get("amp"),
        "fingerprint": result["fingerprint"],
    }


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _allocate_past_memory_limit(extra: int = 256 << 20, ask: int = 8 << 30) -> None:
    """Fault injection: cap this process's address space a little above its current size (as a
    container or ``ulimit -v`` would) and ask for more, so the allocator really fails; the cap is
    lifted again at once because Ray reuses the worker process for later trials."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        torch.empty(ask, dtype=torch.uint8).fill_(1)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

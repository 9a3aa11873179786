"""What the driver uploads after a trial, in Optuna's artifact store: confusion matrix PNG,
per-class JSON, predictions, class probabilities, class activation maps (when the trial made
them: ``cams.npz`` and a PNG grid per class); and how readers find and read them.

The store is a directory (Optuna's ``FileSystemArtifactStore``): beside the SQLite file
by default (``fer-study.db`` -> ``fer-study-artifacts/``), ``./fer-study-artifacts`` for
a server database, or ``--artifacts DIR`` / ``$FER_STUDY_ARTIFACTS``. Only the driver
uploads (it is the only process that writes the storage); a failed upload is a warning
on the trial, never a failed trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

from fer_core.errors import FerError, first_line
from fer_core.study.outputs import CAM_PNG, CAMS_NPZ, PROBABILITIES_NPZ
from fer_core.study.result import WorkerResult

log = logging.getLogger("fer_study")
ENV = "FER_STUDY_ARTIFACTS"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_JSON = "per_class_report.json"
PREDICTIONS_JSON = "predictions.json"


def artifact_dir(storage_url: str, arg: str | None = None) -> Path:
    """``--artifacts`` > ``$FER_STUDY_ARTIFACTS`` > beside the SQLite file > ./fer-study-artifacts."""
    if arg or os.environ.get(ENV):
        return Path(arg or os.environ[ENV]).expanduser().resolve()
    url = make_url(storage_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db = Path(url.database).expanduser().resolve()
        return db.parent / f"{db.stem}-artifacts"
    return (Path.cwd() / "fer-study-artifacts").resolve()


STORE_ATTR = "artifact_store"  # study user attr: the store directory the latest launch wrote to


def recorded_dir(study: optuna.Study) -> Path | None:
    """The artifact store the study's launch recorded, if it is still there."""
    rec = study.user_attrs.get(STORE_ATTR)
    return Path(rec) if isinstance(rec, str) and Path(rec).is_dir() else None


def study_artifact_dir(study: optuna.Study, storage_url: str, arg: str | None = None) -> Path:
    """The store of ``study``: ``--artifacts`` or ``$FER_STUDY_ARTIFACTS`` (said now) > the one recorded
    at launch (while it exists) > beside the SQLite file > ./fer-study-artifacts. So ``report``,
    ``ensemble``, ``export`` and a relaunch find what a launch with ``--artifacts DIR`` wrote without
    being told DIR again."""
    if arg or os.environ.get(ENV):
        return artifact_dir(storage_url, arg)
    return recorded_dir(study) or artifact_dir(storage_url)


class ArtifactPathError(FerError, ValueError):
    """An artifact id (read from the storage, which others may write) points outside the store."""


class ArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system store that knows its directory, so a write can be checked first, and
    that refuses artifact ids escaping the directory, also through symlinks (Optuna's own check is
    lexical: ``store/link-to-etc/passwd`` passes it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def _get_filepath(self, artifact_id: str) -> Path:
        try:
            lexical = super()._get_filepath(artifact_id)
        except ValueError:
            lexical = None
        root = os.path.realpath(self.path)
        if lexical is None or os.path.commonpath([root, os.path.realpath(lexical)]) != root:
            raise ArtifactPathError(f"artifact id {artifact_id!r} points outside the artifact store {self.path}; "
                                    "refused")
        return lexical

    def write(self, artifact_id: str, content_body: Any) -> None:  # type: ignore[override]
        """Optuna's write, through a temp file renamed into place: a full disk fails the write without
        leaving a zero-byte file under the id (Optuna registers the artifact only after the write)."""
        path = self._get_filepath(artifact_id)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def writable(self) -> str | None:
        """None if a file can be written now, else why not (full disk, read-only, gone)."""
        probe = self.path / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            return err.strerror or str(err)
        return None


class FallbackStore(ArtifactStore):
    """A store that also reads from other stores (the dashboard serves studies launched with different
    ``--artifacts``); writes go to the first."""

    def __init__(self, path: Path, others: list[ArtifactStore]) -> None:
        super().__init__(path)
        self.others = others

    def open_reader(self, artifact_id: str):  # type: ignore[override]
        for store in (self, *self.others):
            try:
                return ArtifactStore.open_reader(store, artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of the stores {[str(self.path)]}")


def open_store(path: Path, create: bool = True) -> ArtifactStore | None:
    """The store, or None (with a warning) when its directory cannot be made."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            return None
    except OSError as err:
        log.warning("artifact store %s is not usable (%s): trials run without artifacts", path, err.strerror)
        return None
    return ArtifactStore(path)


def confusion_png(cm: list[list[int]], class_names: list[str], title: str, path: str,
                  counts: list[int] | None = None) -> None:
    """Row-normalised confusion matrix with class names on both axes (and, given ``counts``, each true
    class's training images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(cm, dtype=float)
    norm = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)  # rows: recall per true class
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.55 * k + 3, 0.5 * k + 2.5), dpi=90)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), list(class_names), fontsize=8, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), [f"{n} ({counts[c]})" if counts and c < len(counts) else n
                             for c, n in enumerate(class_names)], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class" + (" (training images)" if counts else ""))
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, label="row-normalised")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def upload_trial_artifacts(
    store: ArtifactStore | None, trial: optuna.Trial, summary: WorkerResult, class_names: list[str],
    out_dir: str | None = None,
) -> list[str]:
    """Upload the trial's confusion matrix, per-class report, predictions and (from the worker's
    ``out_dir``) its class probabilities; return warnings."""
    if store is None:
        return ["no artifact store"]
    # checked first: Optuna records an artifact in the storage before it writes the file, so a
    # failed write would leave an entry that points nowhere
    why = store.writable()
    if why:
        log.warning("trial %d: artifact store %s is not writable (%s): no artifacts stored", trial.number,
                    store.path, why)
        return [f"artifact store {store.path} not writable: {why}"]
    val, test = summary["val_metrics"], summary["test_metrics"]
    per_class = {
        "selected_epoch": summary["best_epoch"],
        "classes": [
            {"class": c, "name": name, "val_precision": val["precision"][c], "val_recall": val["recall"][c],
             "val_f1": val["f1"][c], "val_support": val["support"][c], "test_f1": test["f1"][c],
             "test_support": test["support"][c]}
            for c, name in enumerate(class_names)
        ],
        "val": {k: v for k, v in val.items() if not isinstance(v, list)},
        "test": {k: v for k, v in test.items() if not isinstance(v, list)},
    }
    warnings = []
    with tempfile.TemporaryDirectory() as d:
        files = {PER_CLASS_JSON: lambda p: Path(p).write_text(json.dumps(per_class, indent=1))}
        if summary.get("predictions"):
            files[PREDICTIONS_JSON] = lambda p: Path(p).write_text(json.dumps(summary["predictions"]))
        probs = Path(out_dir) / PROBABILITIES_NPZ if out_dir else None
        if probs is not None:
            files[PROBABILITIES_NPZ] = lambda p: shutil.copyfile(probs, p)
        # class activation maps (cam_samples): made by the worker beside the probabilities, uploaded as they are
        cam_files = sorted(f for f in Path(out_dir).iterdir() if f.name == CAMS_NPZ or CAM_PNG.fullmatch(f.name)) \
            if out_dir and Path(out_dir).is_dir() else []
        for f in cam_files:
            files[f.name] = lambda p, src=f: shutil.copyfile(src, p)
        files[CONFUSION_PNG] = lambda p: confusion_png(
            val["confusion_matrix"], class_names,
            f"trial {trial.number}: validation, epoch {summary['best_epoch']} (macro-F1 {val['macro_f1']:.3f})", p)
        for name, write in files.items():
            path = os.path.join(d, name)
            try:
                write(path)
                optuna.artifacts.upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial)
            except OSError as err:  # a full or read-only disk: warn, the trial's result stands
                warnings.append(f"{name}: {err.strerror or err}")
                log.warning("trial %d: artifact %s not stored: %s", trial.number, name, err.strerror or err)
            except Exception as err:  # a plotting/serialising bug must not cost a finished trial either
                warnings.append(f"{name}: {type(err).__name__}: {first_line(err, '')}")
                log.warning("trial %d: artifact %s not stored: %r", trial.number, name, err)
    return warnings


def read_json_artifact(
    store: FileSystemArtifactStore | None, storage, trial: optuna.trial.FrozenTrial, filename: str
) -> Any | None:
    """A JSON artifact of a trial; None if it was never stored or the store is not here;
    a FerError naming the trial and file if it is stored but corrupt."""
    if store is None:
        return None
    metas = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == filename]
    if not metas:
        return None
    meta = metas[-1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, filename)
        try:
            download_artifact(artifact_store=store, file_path=path, artifact_id=meta.artifact_id)
        except (ArtifactNotFound, OSError):
            return None  # the file is not in this store (another machine's artifacts)
        try:
            return json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise FerError(f"trial {trial.number}: artifact {filename} ({meta.artifact_id}) is corrupt: "
                           f"{first_line(err)}") from None

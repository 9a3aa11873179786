"""Old import path of the artifact store: it lives in ``fer_core.study.artifacts`` now.

Only a re-export, kept while ``report/table.py``, ``report/plots.py`` and ``fer_core/distill.py``
still import from here; new code imports ``fer_core.study.artifacts``.
"""

from __future__ import annotations

from fer_core.study.artifacts import (  # noqa: F401
    CONFUSION_PNG,
    ENV,
    PER_CLASS_JSON,
    PREDICTIONS_JSON,
    ArtifactPathError,
    ArtifactStore,
    artifact_dir,
    confusion_png,
    open_store,
    read_json_artifact,
    upload_trial_artifacts,
)

"""``teacher: {study: NAME, top: k}`` resolved at launch into that study's kept checkpoint files.

This reads another study in storage and the artifact store, so it lives in the study layer;
the core (``fer_core.distill``) only parses the key and loads the resulting model files.
"""

from __future__ import annotations

from dataclasses import replace

from fer_core.errors import ConfigError, FerError
from fer_core.study.artifacts import study_artifact_dir  # where the store is (the runner imports it too)
from fer_core.study.outputs import checkpoint_path, top_trials
from fer_core.study.spec import StudySpec
from fer_core.study.storage import load_stored_study


def resolve_teacher(spec: StudySpec, url: str, artifacts: str | None, storage=None) -> StudySpec:
    """A spec whose ``teacher: {study, top}`` became the kept checkpoint files of that study's best trials."""
    if not spec.teacher_from:
        return spec
    name, k = spec.teacher_from["study"], spec.teacher_from["top"]
    try:
        teacher_study = load_stored_study(name, url, storage)
    except FerError as err:
        raise ConfigError(f"{spec.source}: teacher: {err}") from None
    store = study_artifact_dir(teacher_study, url, artifacts)  # where the teacher's launch kept them
    best = top_trials(teacher_study, k)
    paths = [checkpoint_path(store, name, t.number) for t in best]
    missing = [t.number for t, p in zip(best, paths) if not p.is_file()]
    if len(best) < k or missing:
        raise ConfigError(f"{spec.source}: teacher: study {name!r} has {len(best)} complete trials and no kept "
                          f"checkpoint for trials {missing} of its top {k} in {store} (raise its keep_checkpoints)")
    return replace(spec, base={**spec.base, "teacher": [str(p) for p in paths]})

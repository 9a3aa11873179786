"""Security of what the driver reads back: artifact ids and sampler state come from a database other
people can write, so neither may reach outside the artifact store or run code when loaded."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path

import optuna
import pytest

import fer_core
from fer_core.errors import ConfigError, FerError
from fer_core.study.artifacts import PER_CLASS_JSON, ArtifactPathError, open_store, read_json_artifact
from fer_core.study.components import make_optuna_sampler, restricted_loads


def test_the_artifact_store_refuses_paths_that_escape_it(tmp_path):
    store = open_store(tmp_path / "store")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.json").write_text('{"secret": 1}')
    (tmp_path / "store" / "link").symlink_to(tmp_path / "outside")  # lexically inside, really outside
    for bad in ("../outside/secret.json", str(tmp_path / "outside" / "secret.json"), "link/secret.json",
                "a/../../outside/secret.json"):
        with pytest.raises(ArtifactPathError, match="outside the artifact store"):
            store.open_reader(bad)
        with pytest.raises(ArtifactPathError):
            store.write(bad, io.BytesIO(b"x"))
        with pytest.raises(ArtifactPathError):
            store.remove(bad)
    assert (tmp_path / "outside" / "secret.json").read_text() == '{"secret": 1}'
    store.write("ok-id", io.BytesIO(b"{}"))  # an ordinary id still works
    assert store.open_reader("ok-id").read() == b"{}"


def test_a_planted_artifact_id_in_storage_is_refused_by_the_report_reader(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    (tmp_path / "secret.json").write_text('{"secret": 1}')
    # what get_all_artifact_meta reads: a system attr another writer of the database controls
    meta = {"artifact_id": "../secret.json", "filename": PER_CLASS_JSON, "mimetype": "application/json",
            "encoding": None}
    study._storage.set_trial_system_attr(trial._trial_id, "artifacts:evil", json.dumps(meta))
    study.tell(trial, 0.5)
    store = open_store(tmp_path / "store")
    with pytest.raises(FerError, match="outside the artifact store"):
        read_json_artifact(store, study._storage, study.trials[0], PER_CLASS_JSON)


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_sampler_state_from_storage_is_never_unpickled_blindly(tmp_path):
    planted = pickle.dumps(_Payload(tmp_path / "pwned"))
    with pytest.raises(ConfigError, match="refusing to load"):
        restricted_loads(planted)
    assert not (tmp_path / "pwned").exists()
    try:
        import cmaes  # noqa: F401
    except ImportError:  # without the optional package, cmaes fails at validation, not mid-study
        with pytest.raises(ConfigError, match="needs the 'cmaes' package"):
            make_optuna_sampler({"name": "cmaes", "options": {}}, seed=0)


def test_nothing_in_the_package_unpickles_or_reads_yaml_unsafely():
    """The behaviour tests above cover the two places that read back; this keeps new ones out."""
    unsafe = re.compile(r"pickle\.loads?\(|yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b"
                        r"|marshal\.loads|dill|cloudpickle\.loads")
    hits = []
    for path in Path(fer_core.__file__).parent.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if unsafe.search(line):
                hits.append(f"{path.name}:{n}: {line.strip()}")
    assert hits == []

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


def test_a_full_disk_leaves_no_zero_byte_unregistered_file_in_the_artifact_store(tmp_path):
    """A real write failure (the file-size limit, EFBIG, as a full disk gives ENOSPC) mid-upload: Optuna
    writes the file before it registers the artifact, so the store must not keep a partial file."""
    import subprocess
    import sys

    code = f"""
import io, resource, signal, optuna
from fer_core.study.artifacts import open_store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: write() fails with EFBIG instead of a kill
store = open_store(__import__('pathlib').Path({str(tmp_path / 'store')!r}))
study = optuna.create_study()
trial = study.ask()
open({str(tmp_path / 'big.bin')!r}, 'wb').write(b'x' * 200_000)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    optuna.artifacts.upload_artifact(artifact_store=store, file_path={str(tmp_path / 'big.bin')!r},
                                     study_or_trial=trial)
    print('uploaded')
except OSError as err:
    print('refused', err.errno, len(optuna.artifacts.get_all_artifact_meta(trial)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(fer_core.__file__).parent.parent)
    assert proc.stdout.split() == ["refused", "27", "0"], proc.stdout + proc.stderr  # EFBIG, nothing registered
    assert [p.name for p in (tmp_path / "store").iterdir()] == []  # no zero-byte or partial file left


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


class _Call:
    """Pickles as ``fn(*args)``: a planted sampler state naming a real numpy callable."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _cma_payloads(tmp_path: Path, marker: Path) -> dict[str, bytes]:
    """The two numpy routes to code execution issue 37 found through a module-wide ``numpy.*`` rule."""
    import numpy as np
    from numpy.testing._private.utils import runstring

    npy = tmp_path / "payload.npy"
    np.save(npy, np.array([_Payload(marker)], dtype=object), allow_pickle=True)  # saving runs nothing
    return {"runstring": pickle.dumps(_Call(runstring, f"__import__('os').system('touch {marker}')", {})),
            "numpy.load": pickle.dumps(_Call(np.load, str(npy), None, True))}


@pytest.mark.parametrize("payload", ["runstring", "numpy.load"])
def test_a_planted_cma_state_naming_a_numpy_callable_is_refused_and_never_runs(payload, tmp_path):
    from fer_core.study.components import SafeCmaEsSampler

    marker = tmp_path / "M"
    data = _cma_payloads(tmp_path, marker)[payload]
    with pytest.raises(ConfigError) as err:
        restricted_loads(data)
    assert "refusing to load" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # as the sampler reads it on a relaunch: the state stored in a finished trial's system attrs
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, "cma:optimizer:0", data.hex())
    study.tell(trial, 1.0)
    with pytest.raises(ConfigError, match="refusing to load"):
        SafeCmaEsSampler(seed=0)._restore_optimizer(study.get_trials(deepcopy=False))
    assert not marker.exists()


def test_the_cma_state_reader_still_loads_numpy_arrays_and_scalars():
    """What a genuine state holds besides the optimizer class: arrays and numpy scalars (the class itself
    comes from the optional cmaes package, enumerated in components._CMA_GLOBALS)."""
    import numpy as np

    state = {"mean": np.arange(3.0), "C": np.eye(2), "sigma": np.float64(0.5), "n": np.int64(3)}
    back = restricted_loads(pickle.dumps(state))
    assert np.array_equal(back["mean"], state["mean"]) and np.array_equal(back["C"], state["C"])
    assert back["sigma"] == 0.5 and back["n"] == 3
    with pytest.raises(ConfigError, match="not readable"):
        restricted_loads(pickle.dumps(state)[:-5])


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


# -- model, checkpoint, teacher and retry-state files: weights only --------------------------------
class _Planted:
    """A harmless stand-in for a malicious pickle: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(path: Path, marker: Path, **genuine) -> Path:
    """A file saved like a model file (torch.save), genuine keys beside one planted object."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**genuine, "extra": _Planted(marker)}, path)
    assert not marker.exists()  # saving never runs it; only an unsafe load would
    return path


def _refused(text: str, path: Path) -> None:
    line = text.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert f"{path}: refused: the file needs arbitrary unpickling" in line and "asks for io.open" in line, line


@pytest.mark.parametrize("kind", ["teacher", "kept_checkpoint", "exported_model", "retry_checkpoint"])
def test_a_planted_pickle_payload_is_refused_with_one_line_and_never_runs(kind, tmp_path, small, monkeypatch):
    """Model files come from shared disks and other people: each way one is read refuses a file that needs
    more than weights, names the file in one line, and the payload never runs."""
    from fer_core.errors import ModelFileError

    marker = tmp_path / "pwned"
    if kind == "teacher":  # training with a teacher file (train_fer -> Teacher.load -> load_model)
        from fer_core.train import train_fer

        path = _plant(tmp_path / "teacher.pt", marker, config={"backbone": "test_resnet"},
                      class_names=list(small.class_names))
        with pytest.raises(ModelFileError) as err:
            train_fer({"backbone": "test_resnet", "img_size": 48, "epochs": 1, "warmup_epochs": 0,
                       "teacher": str(path), "distill_alpha": 0.5}, dataset=small)
        _refused(str(err.value), path)
    elif kind == "kept_checkpoint":  # `fer-study export` of a kept checkpoint in the artifact store
        from helpers import fer_cli

        from fer_core.study.artifacts import artifact_dir
        from fer_core.study.outputs import checkpoint_path

        monkeypatch.chdir(tmp_path)
        url = f"sqlite:///{tmp_path / 'fer-study.db'}"
        study = optuna.create_study(study_name="victim", storage=url, direction="maximize")
        study.add_trial(optuna.trial.create_trial(value=0.5, params={"lr": 1e-3},
                                                  distributions={"lr": optuna.distributions.FloatDistribution(
                                                      1e-4, 1e-2, log=True)}))
        path = _plant(checkpoint_path(artifact_dir(url), "victim", 0), marker,
                      config={"backbone": "test_resnet"}, class_names=list(small.class_names))
        proc = fer_cli("export", "victim", "--trial", "0", "--storage", url, "--out", str(tmp_path / "out.pt"),
                       cwd=tmp_path, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.startswith("error: "), proc.stderr
        _refused(proc.stderr, path)
        assert not (tmp_path / "out.pt").exists()
    elif kind == "exported_model":  # an exported (or `train --save`) model file given to load_model
        from fer_core.checkpoint import load_model

        path = _plant(tmp_path / "best.pt", marker, config={"backbone": "test_resnet"},
                      class_names=list(small.class_names))
        with pytest.raises(ModelFileError) as err:
            load_model(path)
        _refused(str(err.value), path)
    else:  # the Tune checkpoint a retried or resumed trial reads (trainable.load_retry_state)
        from fer_core.study.trainable import CKPT_FILE, load_retry_state

        path = _plant(tmp_path / "checkpoint_000001" / CKPT_FILE, marker, epoch=0, bad_epochs=0)
        with pytest.raises(ModelFileError) as err:
            load_retry_state(path.parent)
        _refused(str(err.value), path)
    assert not marker.exists()


def test_nothing_in_the_package_loads_a_torch_file_with_arbitrary_unpickling():
    """The test above covers the four readers; this keeps a new ``weights_only=False`` out."""
    hits = []
    for path in Path(fer_core.__file__).parent.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "weights_only=False" in line or ("torch.load(" in line and "weights_only=True" not in line):
                hits.append(f"{path.name}:{n}: {line.strip()}")
    assert hits == []


def test_a_pickled_storage_holds_no_password_and_reattaches_only_where_the_url_is_known(pg_url):
    """Ray Tune pickles the searcher, scheduler and callbacks into the runs directory (``tuner.pkl``),
    and with them the study's storage: the pickle names the database, never its password."""
    import subprocess
    import sys

    from ray import cloudpickle

    from fer_core.study.storage import StorageError, open_storage

    password = "pickle-Pa55word"
    url = pg_url.replace("postgres@", f"postgres:{password}@")
    storage = open_storage(url)
    study = optuna.create_study(study_name="pickled", storage=storage)
    blob = cloudpickle.dumps({"study": study, "storage": storage})
    assert password.encode() not in blob and b"postgres:***@" in blob
    back = pickle.loads(blob)  # in the driver that opened it: the same live storage, usable
    assert back["storage"] is storage and back["study"]._storage._backend is storage
    assert back["study"].study_name == "pickled" and back["study"].trials == []
    # another process: refused with one line, unless the environment names the same database
    code = ("import pickle, sys; from fer_core.study.storage import StorageError\n"
            "try:\n  s = pickle.load(sys.stdin.buffer)['study']; print('ok', s.study_name)\n"
            "except StorageError as e:\n  print('refused', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "FER_STUDY_STORAGE"}
    refused = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, env=env, timeout=120)
    assert refused.stdout.decode().startswith("refused storage postgresql+psycopg://postgres:***@"), refused
    assert "FER_STUDY_STORAGE" in refused.stdout.decode() and password.encode() not in refused.stdout
    env["FER_STUDY_STORAGE"] = url
    reopened = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, env=env, timeout=120)
    assert reopened.stdout.decode().strip() == "ok pickled", reopened
    assert issubclass(StorageError, FerError)


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u:SECRET@h:5432/db", "postgresql+psycopg://u@h/db?password=SECRET",
    "postgresql+psycopg://u@h/db?sslmode=require&sslpassword=SECRET", "postgresql://u@h/db?passfile=SECRET",
    "postgresql://u@h/db?PassWord=SECRET&application_name=x", "postgresql://u@h/db?x_token=SECRET",
    "postgresql://u:p@SECRET@h/db", "postgresql://u@h:notaport/db?client_secret=SECRET",
])
def test_one_redaction_masks_user_info_and_credential_query_parameters(url):
    from fer_core.study.storage import redact, redact_text

    assert "SECRET" not in redact(url) and "***" in redact(url)
    assert "SECRET" not in redact_text(f"cannot connect to {url}: refused") and "refused" in redact_text(url + " refused")
    assert redact("postgresql://u@h/db?sslmode=require") == "postgresql://u@h/db?sslmode=require"  # no secret: kept


def test_a_password_in_the_query_string_is_never_written_or_shown(pg_url, study_env):
    """``?password=`` is a form libpq and SQLAlchemy accept: a launch given it through $FER_STUDY_STORAGE,
    then ``status`` and ``report`` given it as --storage, must not put it in any byte they write (runs dir with
    Tune's pickles and searcher state, artifact store, report, Ray's session directory) or print."""
    import shutil
    import tempfile

    from helpers import fer_cli

    secret = "Q-s3cret-Pa55"
    url = f"{pg_url}?password={secret}&sslmode=disable"
    ray_tmp = Path(tempfile.mkdtemp(prefix="fr", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        env = {"FER_STUDY_STORAGE": url, "RAY_TMPDIR": str(ray_tmp)}
        proc = fer_cli("launch", "smoke", "--profile", "smoke", "--set", "epochs=1", env=env, cwd=study_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "password=***" in proc.stdout  # the summary names the storage, masked
        status = fer_cli("status", "smoke", "--storage", url, cwd=study_env)
        rep = fer_cli("report", "smoke", "--storage", url, "--out", str(study_env / "report"), cwd=study_env)
        assert status.returncode == 0 and rep.returncode == 0, status.stderr + rep.stderr
        assert "password=***" in status.stdout
        printed = [proc.stdout, proc.stderr, status.stdout, status.stderr, rep.stdout, rep.stderr]
        assert [t for t in printed if secret in t] == []
        written = [p for root in (study_env, ray_tmp) for p in root.rglob("*") if p.is_file() and not p.is_socket()]
        names = {p.name for p in written}
        assert "tuner.pkl" in names and any(n.startswith("search_gen_state") for n in names), sorted(names)
        assert any(p.is_relative_to(ray_tmp) for p in written)  # Ray's session directory was scanned
        assert [str(p) for p in written if secret.encode() in p.read_bytes()] == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

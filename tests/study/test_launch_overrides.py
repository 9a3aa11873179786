"""``fer-study launch/validate --data PATH --set KEY=VALUE``: the user's own data and overrides at
launch, stored with the spec; a relaunch with the same ones continues, with other ones is refused."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from helpers import fer_cli
from PIL import Image

from fer_core.cli import main
from fer_core.errors import ConfigError
from fer_core.report.table import build_table, load_study_data, markdown
from fer_core.study.spec import load_study


def _faces(root, per_class: int = 14) -> None:
    """Three colour classes a tiny net tells apart, as class folders (the layout `data inspect` calls folder)."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 40, 40), (40, 200, 40), (40, 40, 220)]):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")


def test_data_and_sets_enter_the_spec_its_fingerprint_and_its_stored_copy(tmp_path):
    _faces(tmp_path / "faces")
    plain = load_study("smoke", "smoke")
    spec = load_study("smoke", "smoke", str(tmp_path / "faces"), {"epochs": 1, "lr": 0.002})
    assert (spec.base["dataset"], spec.base["data_path"]) == ("folder", str((tmp_path / "faces").resolve()))
    assert (spec.base["epochs"], spec.base["lr"]) == (1, 0.002)
    assert all(spec.trial_config(c.params)["epochs"] == 1 for c in spec.cells())
    assert spec.resolved["overrides"] == {"data": {"path": str((tmp_path / "faces").resolve()), "kind": "folder"},
                                          "set": {"epochs": 1, "lr": 0.002}}
    assert spec.fingerprint != plain.fingerprint
    assert spec.fingerprint == load_study("smoke", "smoke", str(tmp_path / "faces"), {"epochs": 1, "lr": 0.002}).fingerprint
    assert spec.fingerprint != load_study("smoke", "smoke", str(tmp_path / "faces"), {"epochs": 2}).fingerprint
    with pytest.raises(ConfigError, match="--set loss: the study's design varies this key"):
        load_study("smoke", "smoke", sets={"loss": "focal"})


@pytest.mark.parametrize(("args", "needle"), [
    (["--set", "lrr=1"], "error: --set lrr: not a trial-config key; did you mean lr?"),
    (["--set", "epochs"], "argument --set: expected KEY=VALUE with a trial-config key, got 'epochs'"),
    (["--set", "lr=oops"], "config key 'lr': Input should be a valid number"),
    (["--set", "seed=3"], "error: --set seed: the study's design varies this key"),
    (["--data", "/no/such/faces"], "argument --data: /no/such/faces: no such file or directory"),
])
def test_bad_overrides_are_one_line_and_exit_2(capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["validate", "smoke", "--profile", "smoke", *args]))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_launch_on_own_data_relaunch_continues_other_overrides_are_refused(study_env):
    _faces(study_env / "faces")
    url = f"sqlite:///{study_env / 'own.db'}"
    given = ["--data", str(study_env / "faces"), "--set", "epochs=1", "--set", "img_size=32"]
    out = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, *given, cwd=study_env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()  # not a terminal: plain lines, first what it does, then one per trial
    assert lines[0].startswith("launching smoke: checking the study")
    finished = [ln for ln in lines if ln.startswith("trial ")]
    assert sorted(ln.split()[2] for ln in finished) == ["balanced_softmax", "plain-ce", "sampler_sqrt"], lines
    assert all(" seed 0: macro_f1 0." in ln for ln in finished), finished
    # the closing line says whether the study can answer: 1 epoch cannot show a plateau
    assert lines[-1].startswith("Adequacy: this study cannot answer its question at this budget for 2 of 2 compared "
                                "rows: validation macro_f1 still rising at the end in 3 of 3 trials: train longer "
                                "(--set epochs=2) or use the gpu profile"), lines[-1]
    study = optuna.load_study(study_name="smoke", storage=url)
    assert study.user_attrs["class_names"] == ["class0", "class1", "class2"]  # the user's classes, not the stand-in's
    assert all(t.user_attrs["config"]["epochs"] == 1 and t.user_attrs["config"]["img_size"] == 32
               for t in study.trials)
    data = load_study_data(study)
    assert f"Given at launch: data {(study_env / 'faces').resolve()} (folder), epochs=1, img_size=32." in markdown(
        data, build_table(data))

    again = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, *given, cwd=study_env)
    assert again.returncode == 0 and "0 run now" in again.stdout, again.stderr[-2000:]
    other = fer_cli("launch", "smoke", "--profile", "smoke", "--storage", url, "--data", str(study_env / "faces"),
                    "--set", "epochs=2", cwd=study_env)
    assert other.returncode == 2 and "launched from a different spec" in other.stderr and "--restart" in other.stderr
    assert other.stderr.count("\n") == 1
    assert len(optuna.load_study(study_name="smoke", storage=url).trials) == 3  # nothing stored by the refusal

"""Model files and training states (fer_core/checkpoint.py): what train_fer and the exporters write loads
back weights-only, exactly; a file that is not one is refused with one line. (Planted payloads in every
reader: tests/study/test_security.py.)"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import fer_core
from fer_core.checkpoint import load_model, load_training_state, model_payload, restore_rng, rng_state
from fer_core.data.dataset import VAL
from fer_core.errors import ModelFileError
from fer_core.train import predict_model, train_fer

TINY = {"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 1, "warmup_epochs": 0}


def _draws(sampler: torch.Generator, aug: torch.Generator) -> list:
    return [torch.rand(3, generator=sampler).tolist(), torch.rand(3, generator=aug).tolist(),
            torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(),
            [random.random() for _ in range(3)], random.gauss(0, 1)]


def test_every_rng_continues_exactly_after_a_weights_only_round_trip(tmp_path):
    sampler, aug = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    np.random.seed(3)
    random.seed(4)
    np.random.randn(1)  # numpy and python both cache a second gaussian: that must survive too
    random.gauss(0, 1)
    torch.save({"rng": rng_state(sampler, aug)}, tmp_path / "state.pt")
    want = _draws(sampler, aug)
    # everything moves on, then the state read back (weights-only) puts it where it was
    _draws(sampler, aug)
    restore_rng(load_training_state(tmp_path / "state.pt")["rng"], sampler, aug)
    assert _draws(sampler, aug) == want


def test_a_saved_model_loads_weights_only_and_predicts_as_trained(small, tmp_path):
    result = train_fer(TINY, dataset=small)
    path = tmp_path / "model.pt"
    # provenance as fer-study export adds it (plain floats, ints, strings, dicts)
    torch.save({**model_payload(result), "study": "s", "trial": 3, "value": 0.25, "params": {"lr": 1e-3}}, path)
    assert torch.load(path, weights_only=True)["class_names"] == list(small.class_names)
    model, payload = load_model(path)
    idx = small.indices(VAL)
    with torch.no_grad():
        got = model(small.images[idx].float() / 255)["logits"].softmax(1).numpy()
    np.testing.assert_allclose(got, result["predictions"]["val"]["probs"], atol=1e-5)
    assert payload["best_epoch"] == result["best_epoch"] and payload["params"] == {"lr": 1e-3}


def test_a_bf16_trials_model_file_predicts_its_stored_probabilities(small, tmp_path):
    """A trial that tested in bf16 (amp: auto's choice on a CPU or GPU with native bf16) stored bf16
    probabilities: predict_model gives them back; a plain fp32 forward of the same weights does not."""
    result = train_fer({**TINY, "amp": "bf16"}, dataset=small)
    torch.save(model_payload(result), tmp_path / "model.pt")
    model, payload = load_model(tmp_path / "model.pt")
    assert payload["amp"] == "bf16"
    idx = small.indices(VAL)
    got = predict_model(model, payload, small.images[idx])
    np.testing.assert_allclose(got["probs"], result["predictions"]["val"]["probs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["logits"], result["predictions"]["val"]["logits"], rtol=0, atol=1e-5)
    with torch.no_grad():
        fp32 = model(small.images[idx].float() / 255)["logits"].softmax(1).numpy()
    assert np.abs(fp32 - result["predictions"]["val"]["probs"]).max() > 1e-4  # what the precision changes


def test_a_file_that_is_not_a_model_is_one_line_naming_it(tmp_path):
    torch.save({"weights": torch.zeros(1000)}, tmp_path / "other.pt")
    truncated = tmp_path / "truncated.pt"  # half a copy
    truncated.write_bytes((tmp_path / "other.pt").read_bytes()[:2000])
    for path in (truncated, tmp_path / "other.pt", tmp_path / "missing.pt"):
        with pytest.raises(ModelFileError, match=rf"^{path}: not a fer-study model file \(\w+\)$"):
            load_model(path)
    with pytest.raises(ModelFileError, match=rf"^{tmp_path / 'other.pt'}: not a fer-study training state$"):
        load_training_state(tmp_path / "other.pt")


def test_core_modules_never_import_the_study_report_or_cli_layers():
    """DESIGN.md "Layers": the core (data, losses, models, checkpoint, train, distill...) sits below study/,
    report/ and the CLI, so a worker or a benchmark imports no storage code; late imports count too."""
    root = Path(fer_core.__file__).parent
    upper = ("fer_core.study", "fer_core.report", "fer_core.cli")
    hits = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] in ("study", "report", "cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hits += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith(upper)]
    assert hits == []

from __future__ import annotations

import pytest

import fer_core.data.cache as cache
from fer_core.data.inspect import detect_source, format_summary, summarize
from fer_core.data.sources import DATASETS, load_dataset
from fer_core.errors import ConfigError


@pytest.fixture
def decode_calls(monkeypatch):
    calls = []
    real = cache.decode_image

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def test_second_load_does_not_decode(tmp_path, rafce_factory, decode_calls):
    root = rafce_factory(tmp_path / "r")
    first = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    assert len(decode_calls) == 16 and first.info["from_cache"] is False
    second = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    assert len(decode_calls) == 16 and second.info["from_cache"] is True
    assert second.fingerprint == first.fingerprint
    assert (second.images == first.images).all() and second.images.dtype == first.images.dtype
    assert second.aus.shape == (16, 18) and second.split.dtype == first.split.dtype

    other_size = load_dataset("rafce", str(root), img_size=20, cache_dir=tmp_path / "c")
    assert other_size.fingerprint != first.fingerprint and other_size.images.shape[-1] == 20


def test_changed_image_bytes_change_fingerprint(tmp_path, rafce_factory, image_writer, decode_calls):
    root = rafce_factory(tmp_path / "r")
    first = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    image_writer(root / "aligned" / "0003_aligned.jpg", seed=99)
    changed = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    assert changed.fingerprint != first.fingerprint and changed.info["from_cache"] is False
    assert len(decode_calls) == 32


def test_changed_labels_change_fingerprint(tmp_path, rafce_factory):
    root = rafce_factory(tmp_path / "r")
    first = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    au = root / "RAFCE_AUlabel.txt"
    au.write_text(au.read_text().replace("0002.jpg 1+4+25", "0002.jpg 1+4+25+26"))
    changed = load_dataset("rafce", str(root), img_size=24, cache_dir=tmp_path / "c")
    assert changed.fingerprint != first.fingerprint and changed.aus.sum() == first.aus.sum() + 1


def test_cache_dir_from_env(tmp_path, rafce_factory, monkeypatch):
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "env-cache"))
    load_dataset("rafce", str(rafce_factory(tmp_path / "r")), img_size=16)
    assert list((tmp_path / "env-cache" / "decoded").glob("rafce-*.pt"))


def test_standin_reloads_from_cache(standin, cache_dir, decode_calls):
    again = load_dataset("synthetic", img_size=48, cache_dir=cache_dir)
    assert again.info["from_cache"] is True and not decode_calls
    assert again.fingerprint == standin.fingerprint


def test_registry_and_config_errors(tmp_path):
    assert set(DATASETS) == {"synthetic", "rafce", "manifest", "folder", "digits", "rafdb", "rafdb_compound", "fer2013",
                             "ferplus", "affectnet", "expw", "ckplus"}
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="data_path is required"):
        load_dataset("rafce", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="img_size"):
        load_dataset("synthetic", img_size=8, cache_dir=tmp_path)


def test_detect_source(tmp_path, rafce_factory):
    assert detect_source(rafce_factory(tmp_path / "r")) == "rafce"
    (tmp_path / "m.csv").write_text("path,label,split\n")
    assert detect_source(tmp_path / "m.csv") == "manifest"
    (tmp_path / "f" / "happy").mkdir(parents=True)
    assert detect_source(tmp_path / "f") == "folder"


def test_summary(standin):
    s = summarize(standin)
    assert s["split_sizes"] == {"train": 2709, "val": 909, "test": 931}
    assert s["class_counts"]["train"]["Angrily disgusted"] == 582
    assert 0.5 < s["train_au_frequency"]["AU25"] < 0.7
    assert s["au_token_kinds"]["malformed"] >= 3
    text = format_summary(s)
    assert "Happily fearful" in text and "side-prefixed" in text and "out-of-vocab" in text

from __future__ import annotations

import os

import pytest

from fer_core.data.dataset import TEST, TRAIN, VAL, FerDataset

# Tests never reach for the network (there may be none, and a hanging download would stall the
# suite): pretrained weights come from a file or a hub cache a test populates itself.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Tests never touch the user's cache; one session-wide cache holds the rendered stand-in.
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("fer-cache"))
    os.environ["FER_STUDY_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def standin(cache_dir) -> FerDataset:
    """The real synthetic RAF-CE stand-in at 48 px, rendered and decoded once per session."""
    from fer_core.data.sources import load_dataset

    return load_dataset(dataset="synthetic", img_size=48, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def small(standin) -> FerDataset:
    """A few hundred images with the stand-in's imbalance clipped: fast enough for every registry entry."""
    return standin.subset_per_class({TRAIN: 24, VAL: 8, TEST: 8})

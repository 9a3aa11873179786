"""The torch-free names and rules ``validate`` checks configs with (fer_core/config_rules.py) are the
component registries' own: a loss, sampler, head, ... registered in its module and not listed there
fails here instead of being refused by validate."""

from __future__ import annotations

import timm

from fer_core import config_rules as rules
from fer_core.augment import AUG_POLICIES
from fer_core.data.sources import DATASETS
from fer_core.losses import LOSSES
from fer_core.models import HEADS
from fer_core.sampling import DATA_SAMPLERS
from fer_core.stages import STAGE2
from fer_core.tta import TTA


def test_the_name_lists_are_the_registries():
    pairs = [(rules.LOSS_NAMES, LOSSES), (rules.HEAD_NAMES, HEADS), (rules.STAGE2_NAMES, STAGE2),
             (rules.DATA_SAMPLER_NAMES, DATA_SAMPLERS), (rules.TTA_NAMES, TTA), (rules.DATASET_NAMES, DATASETS),
             (rules.AUG_POLICY_NAMES, AUG_POLICIES)]
    for names, registry in pairs:
        assert sorted(names) == sorted(registry), registry.kind
        assert (names.kind, names.key) == (registry.kind, registry.key)  # the same one-line error


def test_the_cached_timm_names_are_timms(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path))
    rules.timm_model_names.cache_clear()
    try:
        first = rules.timm_model_names()  # writes the per-version file
        assert list(tmp_path.glob("timm-models-*.txt"))
        rules.timm_model_names.cache_clear()
        assert rules.timm_model_names() == first == frozenset(timm.list_models())  # read back from the file
    finally:
        rules.timm_model_names.cache_clear()

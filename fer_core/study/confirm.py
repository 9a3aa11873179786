"""``fer-study confirm STUDY --top K --seeds N``: re-train a search's best configs on fresh seeds.

A search's best value is the maximum over many noisy trials on the validation split: the
winner is partly the lucky draw of a seed (winner's curse). Confirmation separates choosing
from estimating: the top K configs *by validation* (nothing else is looked at) are written as
variants of a one-at-a-time study, next to the study's base config as the baseline, with N seeds
that the search never used. That study is an ordinary file (``confirm/STUDY-confirm.yaml``, so
it can be read, versioned and relaunched) and is launched like any other; its report then gives
each config's held-out Δ vs the baseline with intervals over the fresh seeds and the test images.
For a designed study (one at a time, grid) the top K are its best variants by validation mean,
confirmed against its own baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

from fer_core.errors import ConfigError, FerError
from fer_core.study.outputs import real_trials

KEEP = ("data", "base", "objective", "resources", "max_failures", "keep_checkpoints", "checkpoint_every", "teacher",
        "checkpoint_min_s", "report")
NOT_PARAMS = ("seed", "cv_fold", "cv_repeat")
# written into a trial's config by the study's other sections (objective, teacher, cv), not by its design:
# the confirmation keeps objective and teacher itself and runs without cross-validation
FROM_SECTIONS = ("select_metric", "teacher", "cv_folds", "cv_group_by")


def _val_rank(study: optuna.Study, spec: dict[str, Any]) -> list[tuple[float, str, dict[str, Any], list[int]]]:
    """(mean validation value, label, config diff, trial numbers) per distinct config, best first;
    ``spec`` is the study's stored spec (its data and base: what a diff is taken against)."""
    groups: dict[str, dict[str, Any]] = {}
    data = spec.get("data")
    base = {**(data if isinstance(data, dict) else {}), **(spec.get("base") or {})}  # a trial config's start
    for t in real_trials(study):
        if t.value is None:
            continue
        diff = {k: v for k, v in t.params.items() if k not in NOT_PARAMS}
        # a search space's fixed values (allow_double_weighting: true) are no Optuna params: the
        # trial's stored config has them, and without them the config would not resolve again
        config = t.user_attrs.get("config") or {}
        diff.update({k: v for k, v in config.items()
                     if k not in NOT_PARAMS + FROM_SECTIONS and k not in diff and (k not in base or base[k] != v)})
        diff = dict(sorted(diff.items()))
        variant = t.user_attrs.get("variant")
        key = variant if variant else repr(sorted(diff.items()))
        g = groups.setdefault(key, {"values": [], "diff": diff, "variant": variant, "trials": []})
        g["values"].append(float(t.value))
        g["trials"].append(t.number)
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(groups.values(), key=lambda g: (sign * sum(g["values"]) / len(g["values"]), min(g["trials"])))
    return [(sum(g["values"]) / len(g["values"]), g["variant"] or "", g["diff"], g["trials"]) for g in ranked]


def confirm_spec(study: optuna.Study, top: int, seeds: int) -> dict[str, Any]:
    """The confirmation study as data (what ``confirm/STUDY-confirm.yaml`` holds)."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 50:
        raise ConfigError(f"--top must be an integer in 1..50, got {top!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 2 <= seeds <= 100:
        raise ConfigError(f"--seeds must be an integer in 2..100 (an interval needs 2), got {seeds!r}")
    spec = study.user_attrs.get("spec") or {}
    if not spec:
        raise FerError(f"study {study.study_name!r} has no stored spec (not launched by fer-study?)")
    design = spec.get("design") or {}
    baseline = str(design.get("baseline", "baseline")) if design.get("kind") == "one_at_a_time" else "base-config"
    ranked = [r for r in _val_rank(study, spec) if r[1] != baseline]
    if not ranked:
        raise FerError(f"study {study.study_name!r} has no complete trial of a config other than its baseline "
                       "to confirm")
    used = {int(t.params["seed"]) for t in real_trials(study) if "seed" in t.params}
    used |= {int(s) for s in spec.get("seeds") or []}
    fresh, s = [], 0
    while len(fresh) < seeds:  # seeds the search never trained with
        if s not in used:
            fresh.append(s)
        s += 1
    variants = {}
    for i, (_value, variant, diff, trials) in enumerate(ranked[:top], 1):
        if design.get("kind") == "one_at_a_time" and variant:
            diff = dict((design.get("variants") or {}).get(variant) or diff)
        variants[f"top{i}" + (f"-{variant}" if variant else f"-trial{min(trials)}")] = diff
    out = {k: spec[k] for k in KEEP if k in spec}
    out.update({
        "name": f"{study.study_name}-confirm",
        "question": f"Do the top {len(variants)} configs of {study.study_name} (chosen on validation) beat "
                    f"{'its baseline' if baseline != 'base-config' else 'its base config'} on held-out data with "
                    f"{seeds} fresh seeds?",
        "seeds": fresh,
        "design": {"kind": "one_at_a_time", "baseline": baseline, "variants": variants},
        "budget": {"max_concurrent": int((spec.get("budget") or {}).get("max_concurrent", 2))},
    })
    return out


def write_confirm_study(study: optuna.Study, top: int, seeds: int, out_dir: str | Path | None = None) -> Path:
    """Write ``confirm/STUDY-confirm.yaml`` (header: what it answers and how to launch it)."""
    data = confirm_spec(study, top, seeds)
    folder = Path(out_dir or "confirm")
    path = folder / f"{data['name']}.yaml"
    header = (f"# {data['name']}: the top {top} configs of {study.study_name} by validation, re-trained on "
              f"{seeds} fresh seeds\n# and judged on the held-out split against the baseline "
              f"(written by fer-study confirm).\n#\n#   fer-study launch {path}\n#   fer-study report {data['name']}\n")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    except OSError as err:
        raise FerError(f"--out {folder}: cannot write ({err.strerror or err})") from None
    return path

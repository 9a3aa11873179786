"""Finding a study file and reading it into one merged mapping: name lookup, YAML, ``extends``
and the selected profile's patch. What the mapping must contain is ``spec.py``'s job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fer_core.errors import ConfigError
from fer_core.yamlsafe import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "cpu", "gpu")
# a child file changes these key by key; the design, seeds, objective and components it names
# replace the parent's wholesale
EXTEND_MERGE = {"base", "data", "budget", "resources", "profiles"}


def search_dirs(kind: str) -> list[Path]:
    """Where names resolve: $FER_STUDY_DIR (studies) / the working directory / the source tree."""
    dirs = []
    env = os.environ.get("FER_STUDY_DIR" if kind == "studies" else "FER_SPACE_DIR")
    if env:
        dirs.append(Path(env))
    dirs += [Path.cwd() / kind, REPO_ROOT / kind]
    return list(dict.fromkeys(dirs))


def find_file(name: str, kind: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in search_dirs(kind):
        for cand in (d / name, d / f"{name}.yaml", d / f"{name}.yml"):
            if cand.is_file():
                return cand
    known = sorted({f.stem for d in search_dirs(kind) if d.is_dir() for f in d.glob("*.yaml")})
    label = "study" if kind == "studies" else "search space"
    raise ConfigError(f"unknown {label} {name!r}; known: {', '.join(known) or '(none)'}")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the study file as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}:{f' line {mark.line + 1}' if mark else ''} invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: Mapping, patch: Mapping) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_raw(path: Path, depth: int = 0) -> dict[str, Any]:
    """The file with its ``extends`` chain merged in (profiles still unapplied)."""
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if depth > 5 or not isinstance(parent, str):
            raise ConfigError(f"{path}: extends must name one study file (and not loop)")
        near = path.parent / parent
        if near.is_file() and near.suffix not in (".yaml", ".yml"):
            # never parsed: an error about the file's "keys" would echo its content (extends: /etc/shadow)
            raise ConfigError(f"{path}: extends: {parent!r} is not a study file (a .yaml file or a study name)")
        base = load_raw(near if near.is_file() else find_file(parent, "studies"), depth + 1)
        base.pop("name", None)
        # a design without a kind patches the parent's (design: {sequential: ...} on the same rows); one with a
        # kind replaces it
        if isinstance(data.get("design"), Mapping) and "kind" not in data["design"] and isinstance(
                base.get("design"), Mapping):
            data["design"] = deep_merge(base["design"], data["design"])
        elif "design" in data:  # a profile's drop_variants names the parent's variants: a new design leaves it behind
            base["profiles"] = {p: {k: v for k, v in patch.items() if k != "drop_variants"}
                                if isinstance(patch, Mapping) else patch
                                for p, patch in (base.get("profiles") or {}).items()}
        data = {**base, **{k: deep_merge(base.get(k) or {}, v) if k in EXTEND_MERGE and isinstance(v, Mapping)
                           else v for k, v in data.items()}}
    return _drop_variants(data, path)


def _drop_variants(data: dict[str, Any], path: Path | str, where: str = "drop_variants") -> dict[str, Any]:
    """``drop_variants: [NAME, ...]``: the parent's one-at-a-time design without these variants (data
    that cannot run them, e.g. no AU labels), so the child stays a small diff instead of a copied list.
    In a profile (``profiles.cpu.drop_variants``), the design that profile runs: a smaller default with
    the whole design a profile away; an empty list there keeps every variant (a child undoing it)."""
    drop = data.pop("drop_variants", None)
    if drop is None or (where != "drop_variants" and drop == []):
        return data
    design = data.get("design") if isinstance(data.get("design"), Mapping) else {}
    variants = design.get("variants") if isinstance(design.get("variants"), Mapping) else {}
    if not isinstance(drop, list) or not drop:
        raise ConfigError(f"{path}: {where} must be a non-empty list of variant names")
    unknown = [str(v) for v in drop if v not in variants]
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown variant {unknown[0]!r}; valid: "
                          f"{', '.join(map(str, variants)) or 'none (no one_at_a_time variants to drop)'}")
    data["design"] = {**design, "variants": {k: v for k, v in variants.items() if k not in drop}}
    return data


def profile_patches(raw: Mapping[str, Any], src: str) -> dict[str, dict[str, Any]]:
    """The file's ``profiles:``, checked: each a known profile with a mapping (or nothing) to merge."""
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{src}: profiles must be a mapping")
    for p, patch in profiles.items():
        if p not in PROFILES:
            raise ConfigError(f"{src}: profiles: unknown profile {p!r}; valid: {', '.join(PROFILES)}")
        if patch is not None and not isinstance(patch, Mapping):
            raise ConfigError(f"{src}: profiles.{p} must be a mapping of study keys, got {type(patch).__name__}")
    return {str(p): dict(patch or {}) for p, patch in profiles.items()}


def merged_study(raw: Mapping[str, Any], profiles: Mapping[str, Mapping[str, Any]], profile: str,
                 src: str = "study") -> dict[str, Any]:
    """The study as the selected profile sees it: the profile's patch deep-merged over the rest, then the
    profile's ``drop_variants``."""
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profiles.get(profile) or {})
    return _drop_variants(merged, src, f"profiles.{profile}.drop_variants")

"""The packages the GPU check needs that the lent GPU machine's image lacks, in one archive that fits a
device call (benchmarks/gpu_check.py; the device tool: a 64 MiB working tree per call, no network there).

The image holds torch, torchvision, timm, numpy, pandas, scikit-learn, matplotlib, pyarrow and the like
(Python 3.12), but not Ray, Optuna, SQLAlchemy or pydantic. Ray's wheel alone is 79 MB: too much to
carry. So the wheels are unpacked together (file modes kept), what a local Tune run never loads is
dropped from Ray (its Java jar, the dashboard's web client, RLlib), Ray's ELF files are stripped of
their symbols, and the lot goes into one xz archive (26.6 MiB for CPython 3.12 on 2026-11-30).

    python scripts/device_bundle.py                    # -> .devsite/site.tar.xz (git-ignored), CPython 3.12
    python scripts/device_bundle.py --python 3.11      # the same for this machine's Python (to try it here)

The versions are this environment's (so the device runs what the suite tested). On the device, in one
call that carries ``.devsite``:

    mkdir -p /tmp/site && tar -xJf .devsite/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
    python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# what fer_core and `ray[tune]` import that the image does not have (its package list: the device
# tool's KINDS.md); the image's own numpy, pandas, torch, timm, ... are used as they are
PACKAGES = ("ray", "tensorboardx", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
            "optuna", "optuna-dashboard", "bottle", "alembic", "mako", "colorlog", "sqlalchemy",
            "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")
# never loaded by a local Ray Tune run (fer-study starts Ray without its dashboard)
PRUNE = ("ray/jars", "ray/dashboard/client/build", "ray/rllib")
LIMIT = 56 * 2**20  # leaves room for the repository itself (~2 MB) under the device's 64 MiB


def download(names: tuple[str, ...], python: str, dest: Path) -> list[Path]:
    """This environment's versions of ``names`` as wheels for CPython ``python`` on manylinux x86-64."""
    pins = [f"{n}=={md.version(n)}" for n in names]
    plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
             for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", *plats, "-d", str(dest), *pins],
                   check=True)
    return sorted(dest.glob("*.whl"))


def unpack(wheel: Path, site: Path) -> None:
    """A wheel into ``site`` as pip would lay it out, with each file's mode (Ray's binaries must run)."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = Path(z.extract(info, site))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def slim(site: Path) -> None:
    """Drop what a local Tune run never loads and strip the symbols of Ray's ELF files."""
    for rel in PRUNE:
        shutil.rmtree(site / rel, ignore_errors=True)
    strip = shutil.which("strip")
    if strip is None:
        print("device_bundle: no `strip` here (binutils): Ray's binaries go as they are", file=sys.stderr)
        return
    for path in (site / "ray").rglob("*"):
        if path.is_file() and not path.is_symlink() and is_elf(path):
            subprocess.run([strip, "--strip-unneeded", str(path)], check=True)


def bundle(wheels: list[Path], out: Path) -> int:
    """Every wheel unpacked into one tree, slimmed, as ``out`` (tar.xz); its size in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for w in wheels:
            unpack(w, site)
        slim(site)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:xz", preset=9) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
    return out.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="3.12", help="the device's CPython version (default 3.12)")
    ap.add_argument("--out", default=".devsite/site.tar.xz")
    ap.add_argument("--wheels", help="a folder of wheels already downloaded (default: download them)")
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = sorted(Path(args.wheels).glob("*.whl")) if args.wheels else download(PACKAGES, args.python, Path(tmp))
        size = bundle(wheels, out)
    print(f"{out}: {len(wheels)} wheels, {size / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB with the repository)")
    if size > LIMIT:
        print(f"device_bundle: {out} is {size / 2**20:.1f} MiB: too large for one device call", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())

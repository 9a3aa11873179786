"""argparse ``type=`` functions for the ``fer-study`` options.

A bad option value fails while the command line is parsed: one line (``error: fer-study CMD:
argument --opt: ...``), exit 2, before torch, Ray or the storage are touched and before
anything is written. Output paths are probed by creating (and removing) a file, because
permission bits say nothing for root, read-only mounts, ``chattr +i`` or ``/proc``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in ``lo..hi``; the message names the range."""

    def parse(text: str) -> int:
        shown = text if len(text) <= 24 else text[:20] + "..."  # a 10**6-digit value stays one short line
        try:
            value = int(text.strip(), 10)
        except ValueError:  # not a number, or past Python's 4300-digit limit for int()
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {shown!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {shown}")
        return value

    parse.__name__ = f"integer {lo}..{hi}"  # argparse names the type in some messages
    return parse


def port(text: str) -> int:
    """A TCP port to listen on: 1..65535 (0, "any free port", would hide where the dashboard is)."""
    return int_range(1, 65535)(text)


def host(text: str) -> str:
    """A bind address; empty would silently mean every interface."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give an address (127.0.0.1 for this machine only, 0.0.0.0 for all)")
    return text


def _probe_dir(d: Path) -> None:
    """Raise ArgumentTypeError unless a file can be created in the existing directory ``d``."""
    try:
        st = d.stat()
        with tempfile.NamedTemporaryFile(dir=d, prefix=".fer-study-probe-"):
            pass  # created and removed: nothing is left behind
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write in {d} ({err.strerror or err})") from None
    try:  # and the directory's mtime is put back, so a refused command changed nothing at all
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        pass  # not ours to change (another user's directory we may write in): harmless


def _nearest_existing(p: Path) -> Path:
    """``p`` or its nearest existing ancestor (the directory that missing parents would be made in)."""
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_path_text(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL character")
    try:
        os.fsencode(text)  # a lone surrogate (not from undecodable argv bytes) has no file name
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not a valid file name: {text!r}") from None
    return Path(text).expanduser()


def _cannot_write(check: Callable[[str], str], text: str, where: str = "") -> str:
    """``check(text)``, an OSError on the way (e.g. EACCES on stat of a directory we may not search)
    as argparse's one line."""
    try:
        return check(text)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write {where}{text} ({err.strerror or err})") from None


def out_file(text: str) -> str:
    """A file to write: not a directory, in a directory that exists (or can be made) and is writable."""
    return _cannot_write(_out_file, text)


def _out_file(text: str) -> str:
    p = _check_path_text(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {base} is not a directory")
    if p.exists():
        try:  # append, no truncation: the existing file is not touched; non-blocking: a FIFO cannot hang us
            os.close(os.open(p, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
        except OSError as err:
            raise argparse.ArgumentTypeError(f"cannot write {text} ({err.strerror or err})") from None
    else:
        _probe_dir(base)
    return text


def out_dir(text: str) -> str:
    """A directory to write into: an existing writable directory, or one that can be made."""
    return _cannot_write(_out_dir, text, "in ")


def _out_dir(text: str) -> str:
    p = _check_path_text(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {base} is not a directory")
    _probe_dir(base)
    return text


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for ``--set``: the value read as ``fer-study train --set`` reads it
    (``config.parse_override``); whether KEY is a trial-config key the design leaves alone is checked
    with the study (``spec.launch_overrides``)."""
    key = text.partition("=")[0].strip()
    if "=" not in text or not key or not key.replace("_", "").isalnum():
        shown = text if len(text) <= 40 else text[:36] + "..."
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a trial-config key, got {shown!r}")
    from fer_core.config import parse_override
    from fer_core.errors import ConfigError

    try:
        return parse_override(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def existing_path(text: str) -> str:
    """A data path that exists (file or directory)."""
    p = _check_path_text(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text

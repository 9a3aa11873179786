"""The one YAML reader of fer-study: study files, search spaces, ``train --config`` and ``--set`` values.

``yaml.safe_load`` builds no arbitrary objects, but it bounds nothing else: a file nested 100,000 deep
overflows the composer's recursion (a RecursionError and a 3,000-line traceback), and an alias bomb
(ten levels of nine aliases each) composes into a small graph that expands to billions of nodes the
moment anything walks it (pydantic, a deep merge, the fingerprint), growing to gigabytes. This loader
refuses, while composing and with one line naming the source, a text over ``MAX_BYTES``, nesting past
``MAX_DEPTH`` and a document whose aliases expand past ``MAX_NODES``; YAML syntax errors stay
``yaml.YAMLError`` for the caller to name its own way.
"""

from __future__ import annotations

from typing import Any

import yaml

from fer_core.errors import ConfigError

MAX_BYTES = 1 << 20  # a study file or config is a few KB; the largest search space in the repo ~3 KB
MAX_DEPTH = 50  # nesting levels (a study file uses 5)
MAX_NODES = 100_000  # scalars + collections after expanding every alias


class _Bounded(yaml.SafeLoader):
    def __init__(self, stream: str, src: str) -> None:
        super().__init__(stream)
        self._src, self._depth, self._nodes = src, 0, 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def _grow(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise ConfigError(f"{self._src}: the YAML expands to more than {MAX_NODES:,} values (aliases/anchors "
                              "repeating others, an 'alias bomb'?); refused")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            if node is not None:  # an unknown anchor: PyYAML's own ComposerError below
                self._grow(self._sizes.get(id(node), 1))
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError(f"{self._src}: YAML nested deeper than {MAX_DEPTH} levels; refused")
        before = self._nodes
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._grow(1)
        self._sizes[id(node)] = self._nodes - before
        return node


def load_yaml(text: str, src: str) -> Any:
    """``yaml.safe_load(text)`` within the bounds above; ``src`` names the file or flag in the error."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{src}: {len(text):,} characters of YAML, more than the {MAX_BYTES:,} allowed; refused")
    loader = _Bounded(text, src)
    try:
        return loader.get_single_data()
    except RecursionError:  # belt and braces: the depth bound should stop it first
        raise ConfigError(f"{src}: YAML nested too deeply; refused") from None
    finally:
        loader.dispose()

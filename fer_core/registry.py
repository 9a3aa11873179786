"""One registry dict per component kind, looked up through one helper.

``LOSSES``, ``DATA_SAMPLERS``, ``DATASETS``, ... are plain ``Registry`` dicts mapping a
config name to a factory; ``lookup`` is the only way configs resolve names, so every
unknown name fails the same way with the list of valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fer_core.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(dict[str, Any]):
    """A name -> factory dict that knows what kind of component it holds."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__()
        self.kind = kind  # human name, e.g. "loss"
        self.key = key  # config key that selects from it, e.g. "loss"

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco


def lookup(registry: Registry, name: Any, key: str | None = None) -> Any:
    """Return ``registry[name]`` or raise a ConfigError listing the valid names. ``key`` names the
    config key when it is not the registry's own (``stage2_sampler`` picks from the data samplers)."""
    if isinstance(name, str) and name in registry:
        return registry[name]
    valid = ", ".join(sorted(registry))
    raise ConfigError(f"{key or registry.key}: unknown {registry.kind} {name!r}; valid: {valid}")

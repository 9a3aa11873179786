"""What stored measurements say about a schedule before it runs: is it known to stop short of the baseline's plateau?

``fer_core/resources/plateaus.yaml`` holds measured baseline trainings (plain CE), each with its recipe and
whether the report's convergence rule (fer_core/report/adequacy.py) judged its validation curve converged
at that many epochs. ``fer-study validate`` warns when the study's baseline recipe matches a measurement
whose schedule was as long or longer and still rising, and no converged measurement was as short: its
rows would come out "not answerable at this budget". Keys not in a measurement's recipe are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from fer_core.yamlsafe import load_yaml

RECIPE_KEYS = ("dataset", "backbone", "img_size", "lr", "batch_size", "pretrained")


@cache
def measurements() -> tuple[dict[str, Any], ...]:
    text = resources.files("fer_core.resources").joinpath("plateaus.yaml").read_text()
    return tuple(load_yaml(text, "fer_core/resources/plateaus.yaml") or ())


def short_of_plateau(base: Mapping[str, Any]) -> str | None:
    """A one-line warning when ``base`` (the baseline's resolved config) is known to stop short of its
    plateau, else None."""
    same = [m for m in measurements() if all(base.get(k) == v for k, v in m["recipe"].items() if k in RECIPE_KEYS)]
    epochs = int(base.get("epochs") or 0)
    rising = [m for m in same if not m["converged"] and m["epochs"] >= epochs]
    if not rising or any(m["converged"] and m["epochs"] <= epochs for m in same):
        return None
    m = max(rising, key=lambda m: m["epochs"])
    recipe = ", ".join(f"{k} {v}" for k, v in m["recipe"].items())
    return (f"warning: {epochs} epochs is short of the baseline's plateau on this recipe ({recipe}): a measured "
            f"{m['epochs']}-epoch training was still rising ({m['source']}); expect rows 'not answerable at this "
            "budget' (train longer with --set epochs=N, or the gpu profile)")

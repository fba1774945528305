"""The server-side procedures of ``augmented_select``: a fixed registry, never a name looked up in modules.

Each procedure takes the row's times and values (views of its samples), the
collection's grid and the call's ``arg``, and returns a list of results that
``augmented_select`` pairs with the caller's ``target`` names.  The
kernelized cross-correlation distance is SPEC §9's
(:mod:`pyzdb.timeseries.distance`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyzdb.timeseries.distance import distance


def stats(times: np.ndarray, values: np.ndarray, _grid: Any, _arg: Any) -> list[float]:
    """``[mean, std]`` (population) of the values."""
    if not len(values):
        return [float("nan"), float("nan")]
    return [float(np.mean(values)), float(np.std(values))]


def corr(times: np.ndarray, values: np.ndarray, grid: Any, arg: tuple[np.ndarray, np.ndarray]) -> list[float]:
    """``[distance to arg]``: the kernelized cross-correlation distance (SPEC §9)."""
    return [distance((times, values), arg, grid)]


PROCEDURES: dict[str, tuple[int, Callable[..., list]]] = {"stats": (2, stats), "corr": (1, corr)}
"""name -> (number of results, procedure)."""

"""The server-side procedures of ``augmented_select``: a fixed registry, never a name looked up in modules.

Each procedure takes the row's times and values (views of its samples), the
collection's grid and the call's ``arg``, and returns a list of results that
``augmented_select`` pairs with the caller's ``target`` names.  The
kernelized cross-correlation distance is SPEC §9's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

KERNEL_M = 5.0
"""``m`` in the kernel ``exp(m * ccor)``."""


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


def prepared(times: np.ndarray, values: np.ndarray, grid: Any) -> np.ndarray:
    """The values compared: resampled onto the grid when there is one (ends clamped), standardized."""
    if grid is not None:
        start, stop, n = grid
        values = np.interp(np.linspace(start, stop, n), times, values)
    std = float(np.std(values)) if len(values) else 0.0
    if not std > 0:
        raise ValueError("a constant series has no distance")
    return (values - np.mean(values)) / std


def _kernel_sum(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    ccor = np.fft.irfft(np.fft.rfft(x) * np.conj(np.fft.rfft(y)), n) / n
    return float(np.sum(np.exp(KERNEL_M * ccor)))


def distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], grid: Any) -> float:
    """``sqrt(max(0, 2 (1 - K(x, y))))`` of two series, each ``(times, values)``."""
    x, y = prepared(*a, grid), prepared(*b, grid)
    if len(x) != len(y):
        raise ValueError(f"series of {len(x)} and {len(y)} samples cannot be compared without a grid")
    k = _kernel_sum(x, y) / np.sqrt(_kernel_sum(x, x) * _kernel_sum(y, y))
    return float(np.sqrt(max(0.0, 2.0 * (1.0 - k))))

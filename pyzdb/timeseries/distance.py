"""SPEC §9's distance, in one implementation that works on batches of series (no I/O).

A series is *prepared* (resampled onto the grid, when there is one, and
standardized), then *transformed*: its real FFT and its self-kernel sum
``Σ exp(m·ccor(x, x))``.  The distance from one transformed query to many
transformed rows is then one batch of array operations
(:func:`distances`); :func:`distance` of two series is the same code on a
batch of one, so ``coll.distance``, ``augmented_select('corr')`` and
``similar`` give the same numbers to the last bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KERNEL_M = 5.0
"""``m`` in the kernel ``exp(m * ccor)``."""


def prepared(times: np.ndarray, values: np.ndarray, grid: Any) -> np.ndarray:
    """The values compared: resampled onto the grid when there is one (ends clamped), standardized.

    ``ValueError`` for a series that has no distance: empty, constant, or holding nan or an infinity.
    """
    if grid is not None:
        start, stop, n = grid
        values = np.interp(np.linspace(start, stop, n), times, values) if len(times) else values
    if not len(values):
        raise ValueError("an empty series has no distance")
    if not np.isfinite(values).all():
        raise ValueError("a series holding nan or an infinity has no distance")
    std = float(np.std(values))
    if not std > 0:
        raise ValueError("a constant series has no distance")
    return (values - np.mean(values)) / std


def transform(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rfft, self-kernel sum)`` of prepared series, one per row of a 2-d array."""
    ffts = np.fft.rfft(rows, axis=1)
    return ffts, kernel_sums(ffts, ffts, rows.shape[1])


def kernel_sums(ffts: np.ndarray, query_fft: np.ndarray, n: int) -> np.ndarray:
    """``Σ_s exp(m·ccor(x, q)[s])`` for each row ``x`` (``query_fft``: one row, or one per row)."""
    # the product in real arithmetic: numpy's complex multiply takes SIMD or scalar paths by
    # position, which made a row's result depend (in the last bit) on the batch it was in
    a, b, c, d = ffts.real, ffts.imag, query_fft.real, query_fft.imag
    product = np.empty(np.broadcast_shapes(ffts.shape, query_fft.shape), dtype=np.complex128)
    product.real = a * c + b * d
    product.imag = b * c - a * d
    ccor = np.fft.irfft(product, n, axis=-1)
    ccor *= KERNEL_M / n
    return np.exp(ccor, out=ccor).sum(axis=-1)


def distances(
    ffts: np.ndarray, selfs: np.ndarray, query_fft: np.ndarray, query_self: float, n: int
) -> np.ndarray:
    """``sqrt(max(0, 2(1 - K)))`` from one transformed query to each transformed row."""
    k = kernel_sums(ffts, query_fft, n) / np.sqrt(selfs * query_self)
    return np.sqrt(np.maximum(0.0, 2.0 * (1.0 - k)))


def distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], grid: Any) -> float:
    """The distance of two series, each ``(times, values)``."""
    x, y = prepared(*a, grid), prepared(*b, grid)
    if len(x) != len(y):
        raise ValueError(f"series of {len(x)} and {len(y)} samples cannot be compared without a grid")
    fx, sx = transform(x[None, :])
    fy, sy = transform(y[None, :])
    return float(distances(fx, sx, fy[0], float(sy[0]), len(x))[0])

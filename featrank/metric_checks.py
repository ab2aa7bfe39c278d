"""What every metric checks of its input, at the bottom of the metric modules: feature arrays
(n, d) that are 2-D, finite and of matching width, and the one error they raise."""
from __future__ import annotations

import numpy as np


class MetricInputError(ValueError):
    """Features unusable for a metric (NaN, too few rows, mismatched dims …)."""


def positive(v) -> bool:
    """A finite number above 0 (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def check_features(x, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """float64 (n, d) copy-free view of `x`, or MetricInputError saying what is wrong."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise MetricInputError(f"{name}: expected a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise MetricInputError(f"{name}: {x.shape[0]} row(s); at least {min_rows} are needed")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise MetricInputError(f"{name}: {bad} row(s) contain NaN or inf")
    return x


def check_pair(ref, ev):
    ref, ev = check_features(ref, "reference"), check_features(ev, "evaluation")
    if ref.shape[1] != ev.shape[1]:
        raise MetricInputError(f"dimension mismatch: reference has {ref.shape[1]} features, "
                               f"evaluation has {ev.shape[1]}")
    return ref, ev


def check_dim(ev, dim: int) -> np.ndarray:
    ev = check_features(ev, "evaluation")
    if ev.shape[1] != dim:
        raise MetricInputError(f"dimension mismatch: reference has {dim} features, "
                               f"evaluation has {ev.shape[1]}")
    return ev

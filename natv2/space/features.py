"""Predictor features of encodings: the integer vector itself, or a one-hot expansion."""

from __future__ import annotations

import numpy as np

from natv2.space.arch import SpaceError

FEATURE_KINDS = ("integer", "onehot")


def onehot(X: np.ndarray, xl: np.ndarray, xu: np.ndarray) -> np.ndarray:
    """One-hot per variable over ``xl..xu`` (constant columns kept): ``sum(xu - xl + 1)`` columns."""
    widths = xu - xl + 1
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    out = np.zeros((X.shape[0], int(widths.sum())), dtype=float)
    out[np.arange(X.shape[0])[:, None], offsets + (X - xl)] = 1.0
    return out


def features(X: np.ndarray, xl: np.ndarray, xu: np.ndarray, kind: str) -> np.ndarray:
    """Float features of valid int vectors ``X`` (shape ``(n, n_var)``)."""
    if kind == "integer":
        return X.astype(float)
    if kind == "onehot":
        return onehot(X, xl, xu)
    raise SpaceError(f"feature kind {kind!r} not in {', '.join(FEATURE_KINDS)}")

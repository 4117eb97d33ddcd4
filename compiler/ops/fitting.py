"""Numerical building blocks of the weight-preserving initialisations: SVD splits, (masked) least squares, patches.

All solves are in float64 with a tiny ridge term relative to the Gram matrix's scale, so rank-deficient
calibration features (dead ReLUs, constant pixels) give the minimum-norm-like solution instead of blowing up.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-6
MAX_ROWS = 20000


def svd_split(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """matrix [m, n] ~ A @ B with A [m, r], B [r, n]: the best rank-r approximation, sqrt(S) on both sides."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def sample_rows(total: int, limit: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """At most `limit` sorted random row indices: per-pixel regressions need far fewer rows than they get."""
    if total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    gram = x.T @ x
    ridge = RIDGE * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-12)
    return np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), x.T @ y)


def lstsq(x: np.ndarray, y: np.ndarray, bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fit y ~ x @ W + b; returns (W [d, k], b [k]) (b is zeros when `bias` is False)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    solution = _solve(_with_bias(x) if bias else x, y)
    if bias:
        return solution[:-1], solution[-1]
    return solution, np.zeros(y.shape[1])


def masked_lstsq(x: np.ndarray, y: np.ndarray, mask: np.ndarray, bias: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fit each output column j only on the inputs mask[:, j] keeps; the result is zero where the mask is."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    weights = np.zeros(mask.shape)
    biases = np.zeros(mask.shape[1])
    for j in range(mask.shape[1]):
        keep = np.flatnonzero(mask[:, j])
        features = x[:, keep]
        solution = _solve(_with_bias(features) if bias else features, y[:, j:j + 1])[:, 0]
        weights[keep, j] = solution[:len(keep)]
        if bias:
            biases[j] = solution[-1]
    return weights, biases


def patches(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], padding: str,
            dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """im2col: [N, H, W, C] -> [N * oh * ow, kh * kw * C], ordered like a Keras kernel reshaped to 2-D."""
    import tensorflow as tf

    out = tf.image.extract_patches(np.asarray(x, np.float32), sizes=[1, *kernel, 1], strides=[1, *strides, 1],
                                   rates=[1, *dilation, 1], padding=padding.upper())
    out = np.asarray(out)
    return out.reshape(-1, out.shape[-1])


def top_k_mask(scores: np.ndarray, keep: int) -> np.ndarray:
    """Per column, True on the `keep` largest |scores| (ties broken by position): a fixed-size sparsity pattern."""
    order = np.argsort(-np.abs(scores), axis=0, kind="stable")[:keep]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=0)
    return mask


def first_k_mask(shape: tuple[int, int], keep: int) -> np.ndarray:
    """A placeholder pattern with `keep` entries per column: fixes the stored size before weights are fitted."""
    mask = np.zeros(shape, dtype=bool)
    mask[:keep] = True
    return mask

"""EM for 2-D Gaussian mixtures with full covariances, and k-means initialisation, vectorized over trials.

Used by the ``gmm`` theory model (``gmm.dim: 2``, ``gmm.init: kmeans``).
Layout: trials k, samples N, components C; parameters are (C, k) arrays
(weights, the three covariance entries a = Σ₁₁, b = Σ₁₂, c = Σ₂₂) and (C, k, 2)
means, the 2×2 inverses and determinants written out so every step is an
elementwise numpy pass.

Initialisations (``init``):

- ``quantiles``: equal weights, the overall covariance for every component,
  means at the coordinate-wise (i + ½)/C quantiles of the data (the 1-D
  model's rule applied per coordinate).
- ``kmeans``: as scikit-learn's ``GaussianMixture(init_params="kmeans")``:
  k-means++ seeding (one draw per centre, probability ∝ squared distance to the
  nearest centre so far) and Lloyd iterations until no centre moves by more
  than 1e-4 (at most 300), then one M-step from the hard labels
  (``reg_covar`` 1e-6 added to the variances). scikit-learn also tries
  2 + ⌊ln C⌋ candidates per seeding step and keeps the best; here one.
"""

from __future__ import annotations

import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))
REG_COVAR = 1e-6


def kmeans_labels(x: np.ndarray, c: int, rng: np.random.Generator, iters: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Hard k-means labels (k, N) of every trial's points x (k, N, d)."""
    k, n, d = x.shape
    rows = np.arange(k)
    centres = np.empty((k, c, d))
    centres[:, 0] = x[rows, rng.integers(0, n, size=k)]
    best = ((x - centres[:, :1]) ** 2).sum(axis=2)  # (k, N) squared distance to the nearest centre
    for j in range(1, c):
        cum = np.cumsum(best, axis=1)
        u = rng.random(k) * cum[:, -1]
        pick = np.minimum((cum < u[:, None]).sum(axis=1), n - 1)
        centres[:, j] = x[rows, pick]
        best = np.minimum(best, ((x - centres[:, j:j + 1]) ** 2).sum(axis=2))
    labels = np.zeros((k, n), dtype=np.int64)
    for _ in range(iters):
        dist = ((x[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(axis=3)  # (k, N, C)
        labels = dist.argmin(axis=2)
        onehot = labels[..., None] == np.arange(c)  # (k, N, C)
        counts = onehot.sum(axis=1)  # (k, C)
        sums = np.einsum("knc,knd->kcd", onehot, x)
        new = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], centres)  # empty: stays
        shift = ((new - centres) ** 2).sum(axis=2).max()
        centres = new
        if shift <= tol * tol:
            break
    return labels


def init_from_labels(x: np.ndarray, labels: np.ndarray, c: int):
    """One M-step from hard labels → weights (C, k), means (C, k, d), covariances.

    1-D (d = 1): variances (C, k); 2-D: the entries (a, b, c) each (C, k)."""
    k, n, d = x.shape
    onehot = (labels[..., None] == np.arange(c)).astype(np.float64)  # (k, N, C)
    nk = onehot.sum(axis=1).T  # (C, k)
    safe = np.maximum(nk, 1e-12)
    mu = np.einsum("knc,knd->ckd", onehot, x) / safe[..., None]  # (C, k, d)
    dev = x[None] - mu[:, :, None, :]  # (C, k, N, d)
    r = onehot.transpose(2, 0, 1)[..., None]  # (C, k, N, 1)
    second = np.einsum("cknd,ckne->ckde", r * dev, dev) / safe[..., None, None]  # (C, k, d, d)
    w = np.maximum(nk / n, 1e-300)
    if d == 1:
        return w, mu[..., 0], second[..., 0, 0] + REG_COVAR
    return w, mu, (second[..., 0, 0] + REG_COVAR, second[..., 0, 1], second[..., 1, 1] + REG_COVAR)


def quantile_init(x: np.ndarray, c: int):
    """Equal weights, the overall covariance, means at the coordinate-wise (i + ½)/C quantiles (2-D)."""
    k, n, _ = x.shape
    q = np.minimum(((np.arange(c) + 0.5) / c * n).astype(np.int64), n - 1)
    mu = np.sort(x, axis=1)[:, q, :].transpose(1, 0, 2).copy()  # (C, k, 2)
    dev = x - x.mean(axis=1, keepdims=True)
    cov = np.einsum("knd,kne->kde", dev, dev) / n
    a, b, cc = (np.repeat(v[None], c, axis=0) for v in (cov[:, 0, 0] + REG_COVAR, cov[:, 0, 1], cov[:, 1, 1] + REG_COVAR))
    return np.full((c, k), 1.0 / c), mu, (a, b, cc)


def em2_fit(x: np.ndarray, c: int, iters: int, tol: float, init: str, rng: np.random.Generator):
    """EM on every trial's 2-D points x (k, N, 2) → weights (k, C), means
    (k, C, 2), covariances (k, C, 2, 2), most iterations used."""
    k, n, _ = x.shape
    if init == "kmeans":
        w, mu, (a, b, cc) = init_from_labels(x, kmeans_labels(x, c, rng), c)
    else:
        w, mu, (a, b, cc) = quantile_init(x, c)
    prev = np.full(k, -np.inf)
    idx = np.arange(k)  # trials still iterating; the others keep their parameters
    it = 0
    for it in range(1, iters + 1):
        xs = x[idx]
        x0, x1 = xs[..., 0][None], xs[..., 1][None]  # (1, ka, N)
        wa, ma, aa, ba, ca = w[:, idx], mu[:, idx], a[:, idx], b[:, idx], cc[:, idx]
        det = aa * ca - ba * ba
        dx = x0 - ma[..., 0][..., None]
        dy = x1 - ma[..., 1][..., None]
        maha = (ca[..., None] * dx * dx - 2.0 * ba[..., None] * dx * dy + aa[..., None] * dy * dy) / det[..., None]
        logp = (np.log(wa) - _LOG_2PI - 0.5 * np.log(det))[..., None] - 0.5 * maha  # (C, ka, N)
        top = logp.max(axis=0)
        resp = np.exp(logp - top)
        tot = resp.sum(axis=0)
        resp /= tot
        ll = (top + np.log(tot)).mean(axis=1)
        nk = resp.sum(axis=2)  # (C, ka)
        alive = nk > 1e-8  # a component that lost every point keeps its parameters
        safe = np.where(alive, nk, 1.0)
        m0 = (resp * x0).sum(axis=2) / safe
        m1 = (resp * x1).sum(axis=2) / safe
        dx = x0 - m0[..., None]
        dy = x1 - m1[..., None]
        mu[:, idx] = np.where(alive[..., None], np.stack([m0, m1], axis=-1), ma)
        a[:, idx] = np.where(alive, (resp * dx * dx).sum(axis=2) / safe + REG_COVAR, aa)
        b[:, idx] = np.where(alive, (resp * dx * dy).sum(axis=2) / safe, ba)
        cc[:, idx] = np.where(alive, (resp * dy * dy).sum(axis=2) / safe + REG_COVAR, ca)
        w[:, idx] = np.maximum(nk / n, 1e-300)
        # ll belongs to the parameters before this step; a trial whose step
        # gained less than tol keeps the new parameters and stops.
        keep = ~(ll - prev[idx] < tol)
        prev[idx] = ll
        idx = idx[keep]
        if idx.size == 0:
            break
    cov = np.stack([np.stack([a, b], -1), np.stack([b, cc], -1)], -2)  # (C, k, 2, 2)
    return w.T.copy(), mu.transpose(1, 0, 2).copy(), cov.transpose(1, 0, 2, 3).copy(), it


def gaussian_overlap(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
    """∫ N(x; a, A) N(x; b, B) dx = N(a − b; 0, A + B) for 2-D Gaussians, broadcast over leading axes."""
    s = cov_a + cov_b
    det = s[..., 0, 0] * s[..., 1, 1] - s[..., 0, 1] * s[..., 1, 0]
    d = mu_a - mu_b
    maha = (s[..., 1, 1] * d[..., 0] ** 2 - 2.0 * s[..., 0, 1] * d[..., 0] * d[..., 1] + s[..., 0, 0] * d[..., 1] ** 2) / det
    return np.exp(-0.5 * maha) / (2.0 * np.pi * np.sqrt(det))


def mixture_inner(w_a, mu_a, cov_a, w_b, mu_b, cov_b) -> np.ndarray:
    """∫ f_a f_b for K pairs of 2-D mixtures: weights (K, Ca), means (K, Ca, 2), covariances (K, Ca, 2, 2) → (K,)."""
    g = gaussian_overlap(mu_a[:, :, None], cov_a[:, :, None], mu_b[:, None], cov_b[:, None])  # (K, Ca, Cb)
    return np.einsum("ka,kab,kb->k", w_a, g, w_b)

"""NMF kernels: HALS factorisation, NNDSVD init, projection with fixed topics, perturbations, alignment.

Orientation: documents are rows. A non-negative matrix ``X`` of shape (n_documents, n_terms) is factorised
as ``X ≈ W @ H`` with ``W`` of shape (n_documents, k) (per-document topic weights; the paper's ``H``
transposed) and ``H`` of shape (k, n_terms) (topics over terms; the paper's ``W`` transposed), as in
scikit-learn.

The solver is HALS (hierarchical alternating least squares, Cichocki & Phan 2009): each iteration updates one
column of ``W`` / one row of ``H`` at a time in closed form. It converges in far fewer iterations than
multiplicative updates, and each iteration costs two sparse-dense products, so it is the fast choice on CPU.
The same code runs on torch tensors on a CUDA device (see :func:`resolve_device`); torch is imported lazily.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.utils.extmath import randomized_svd

from heal_rag.errors import InvalidValueError

# float32 halves memory traffic of the sparse products, which dominate the run time
DTYPE = np.float32
_EPS = 1e-10


# ----------------------------------------------------------------------------------------------- devices
def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (imports torch only when a GPU driver is present)."""
    if importlib.util.find_spec("torch") is None:
        return False
    # importing torch costs seconds; skip it on machines without an NVIDIA driver
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """Map ``"auto" | "cpu" | "cuda"`` to the device actually used (``"cpu"`` or ``"cuda"``).

    Raises:
        ValueError: ``device="cuda"`` without torch or without a CUDA device.

    """
    if device == "cpu":
        return "cpu"
    available = cuda_available()
    if device == "cuda" and not available:
        raise InvalidValueError(
            "device='cuda' was requested but no CUDA device is usable (torch with CUDA support is needed). "
            "Use device='cpu' or device='auto'."
        )
    return "cuda" if available else "cpu"


class _Ops:
    """The handful of array operations the kernels need, for numpy (CPU) or torch (CUDA)."""

    def __init__(self, device: str, *, torch_device: str = "cuda") -> None:
        self.device = device
        self.torch: Any = None
        self.torch_device = torch_device  # "cpu" only in tests of the torch code path without a GPU
        if device == "cuda":
            import torch

            self.torch = torch

    def matrix(self, X: sp.csr_matrix) -> tuple[Any, Any]:
        """Return ``X`` and ``X.T`` in the fastest layout for products with dense factors."""
        if self.torch is None:
            return X, X.T.tocsr()
        return self._sparse(X), self._sparse(X.T.tocsr())

    def _sparse(self, X: sp.csr_matrix) -> Any:
        t = self.torch
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we need, and it works
            warnings.simplefilter("ignore", UserWarning)
            return self._csr(t, X)

    def _csr(self, t: Any, X: sp.csr_matrix) -> Any:
        return t.sparse_csr_tensor(
            t.from_numpy(X.indptr.astype(np.int64)),
            t.from_numpy(X.indices.astype(np.int64)),
            t.from_numpy(X.data.astype(DTYPE)),
            size=X.shape,
            device=self.torch_device,
            check_invariants=False,
        )

    def dense(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a, dtype=DTYPE)
        return a.copy() if self.torch is None else self.torch.from_numpy(a).to(self.torch_device)

    def numpy(self, a: Any) -> np.ndarray:
        return a if self.torch is None else a.detach().cpu().numpy()

    def clip0(self, a: Any) -> Any:
        return np.maximum(a, 0.0, out=a) if self.torch is None else a.clamp_(min=0.0)

    def scalar(self, a: Any) -> float:
        return float(a) if self.torch is None else float(a.item())


# ----------------------------------------------------------------------------------------------- init
def nndsvd_components(X: sp.csr_matrix, k_max: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Compute NNDSVD factors for rank ``k_max``; their first ``k`` components initialise any ``k <= k_max``.

    NNDSVD (Boutsidis & Gallopoulos 2008) builds component ``j`` from the ``j``-th singular triplet alone, so
    one truncated SVD serves every candidate ``k`` (the work NMFk shares across its k range).

    Returns:
        ``W0`` of shape (n_documents, k_max) and ``H0`` of shape (k_max, n_terms), non-negative.

    """
    n, m = X.shape
    rank = min(k_max, n, m)
    U, S, Vt = randomized_svd(X, n_components=rank, n_iter=4, random_state=seed)
    W = np.zeros((n, k_max), dtype=DTYPE)
    H = np.zeros((k_max, m), dtype=DTYPE)
    for j in range(rank):
        x, y = U[:, j], Vt[j]
        if j == 0:  # the leading singular vectors of a non-negative matrix can be taken non-negative
            W[:, 0] = np.sqrt(S[0]) * np.abs(x)
            H[0] = np.sqrt(S[0]) * np.abs(y)
            continue
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        xpn, ypn, xnn, ynn = (np.linalg.norm(v) for v in (xp, yp, xn, yn))
        if xpn * ypn >= xnn * ynn:
            u, v, sigma = xp / max(xpn, _EPS), yp / max(ypn, _EPS), xpn * ypn
        else:
            u, v, sigma = xn / max(xnn, _EPS), yn / max(ynn, _EPS), xnn * ynn
        W[:, j] = np.sqrt(S[j] * sigma) * u
        H[j] = np.sqrt(S[j] * sigma) * v
    # NNDSVDa-style fill: exact zeros would make HALS start a column from nothing
    fill = X.sum() / max(n * m, 1) * 0.01
    W[W == 0] = fill
    H[H == 0] = fill
    return W, H


# ----------------------------------------------------------------------------------------------- solver
@dataclass
class FitResult:
    """Factors of one NMF fit (numpy) and its relative reconstruction error ``||X - WH||_F / ||X||_F``."""

    W: np.ndarray
    H: np.ndarray
    rel_error: float
    n_iter: int


def hals(
    X: sp.csr_matrix,
    W0: np.ndarray,
    H0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    ops: _Ops,
    prepared: tuple[Any, Any] | None = None,
) -> FitResult:
    """Fit ``X ≈ W H`` by HALS from ``(W0, H0)``.

    Args:
        X: non-negative sparse matrix of shape (n_documents, n_terms).
        W0: initial document weights, shape (n_documents, k).
        H0: initial topics, shape (k, n_terms).
        max_iter: maximum number of HALS sweeps.
        tol: stop when the relative error improves by less than ``tol`` (relative) between two checks.
        ops: numpy or torch operations.
        prepared: ``ops.matrix(X)`` when the caller already has it (saves a transpose per call).

    Returns:
        The fitted factors, the relative error and the number of sweeps run.

    """
    Xd, Xt = prepared if prepared is not None else ops.matrix(X)
    W, H = ops.dense(W0), ops.dense(H0)
    k = W.shape[1]
    norm_x2 = float(X.multiply(X).sum()) if sp.issparse(X) else float((X * X).sum())
    norm_x2 = max(norm_x2, _EPS)
    previous = np.inf
    err2 = norm_x2
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
        XHt = Xd @ H.T  # (n, k)
        HHt = H @ H.T
        for j in range(k):
            W[:, j] += (XHt[:, j] - W @ HHt[:, j]) / max(ops.scalar(HHt[j, j]), _EPS)
            ops.clip0(W[:, j])
        XtW = Xt @ W  # (m, k)
        WtW = W.T @ W
        for j in range(k):
            H[j] += (XtW[:, j] - WtW[j] @ H) / max(ops.scalar(WtW[j, j]), _EPS)
            ops.clip0(H[j])
        # ||X - WH||^2 = ||X||^2 - 2 <X, WH> + <W^T W, H H^T>; XtW does not depend on H, so it is still valid
        cross = ops.scalar((XtW.T * H).sum())
        HHt = H @ H.T
        err2 = max(norm_x2 - 2.0 * cross + ops.scalar((WtW * HHt).sum()), 0.0)
        if n_iter % 5 == 0:
            if previous - err2 < tol * previous:
                break
            previous = err2
    return FitResult(ops.numpy(W), ops.numpy(H), float(np.sqrt(err2 / norm_x2)), n_iter)


def project(X: sp.csr_matrix | np.ndarray, H: np.ndarray, *, n_iter: int = 50) -> np.ndarray:
    """Non-negative weights ``W`` minimising ``||X - W H||`` with the topics ``H`` fixed.

    Each row is solved independently (least-squares start clipped at zero, then HALS sweeps on ``W`` only), so
    a document gets the same weights whether it is projected alone or in a batch: predicting the training
    texts
    reproduces their training assignment.

    Args:
        X: non-negative matrix of shape (n_documents, n_terms).
        H: topics, shape (k, n_terms).
        n_iter: HALS sweeps.

    Returns:
        Array of shape (n_documents, k).

    """
    H = np.asarray(H, dtype=DTYPE)
    XHt = np.asarray(X @ H.T, dtype=DTYPE)
    HHt = H @ H.T
    W = np.maximum(XHt @ np.linalg.pinv(HHt), 0.0).astype(DTYPE)
    diag = np.maximum(np.diag(HHt), _EPS)
    for _ in range(n_iter):
        for j in range(H.shape[0]):
            W[:, j] += (XHt[:, j] - W @ HHt[:, j]) / diag[j]
            np.maximum(W[:, j], 0.0, out=W[:, j])
    return W


# ----------------------------------------------------------------------------------------------- KL
# Generalised Kullback-Leibler NMF (Lee & Seung 2001 multiplicative updates), numpy only. On TF-IDF text it
# clusters documents markedly better than the Frobenius fit (it is PLSA up to scaling: each document's
# weights over L1-normalised topics are its share of term mass per topic); see evals/bench_hierarchy.py.
def _model_at_nonzeros(X: sp.csr_matrix, counts: np.ndarray, W: np.ndarray, Hg: np.ndarray) -> np.ndarray:
    """``(W @ H)[i, j]`` for every stored entry ``(i, j)`` of ``X``, without forming ``W @ H``.

    ``Hg = H[:, X.indices]`` (k, nnz) and ``counts`` the stored entries per row; one pass per topic over
    contiguous 1-D arrays is several times faster than gathering rows of ``W`` and ``H`` for every entry.
    """
    out = np.zeros(X.nnz, dtype=DTYPE)
    for j in range(W.shape[1]):
        out += np.repeat(W[:, j], counts) * Hg[j]
    return out


def _ratio(X: sp.csr_matrix, counts: np.ndarray, W: np.ndarray, Hg: np.ndarray) -> sp.csr_matrix:
    """Sparse ``X / (W H)`` on the pattern of ``X``."""
    model = _model_at_nonzeros(X, counts, W, Hg)
    return sp.csr_matrix((X.data / np.maximum(model, _EPS), X.indices, X.indptr), shape=X.shape)


def kl_divergence(X: sp.csr_matrix, W: np.ndarray, H: np.ndarray) -> float:
    """Generalised KL divergence ``D(X || W H)`` (``sum X log(X / WH) - X + WH``)."""
    counts = np.diff(X.indptr)
    model = np.maximum(_model_at_nonzeros(X, counts, W, H[:, X.indices]), _EPS).astype(np.float64)
    data = X.data.astype(np.float64)
    total_model = float(W.sum(axis=0, dtype=np.float64) @ H.sum(axis=1, dtype=np.float64))
    return float(np.sum(data * np.log(np.maximum(data, _EPS) / model)) - data.sum() + total_model)


def kl_nmf(X: sp.csr_matrix, W0: np.ndarray, H0: np.ndarray, *, max_iter: int, tol: float) -> FitResult:
    """Fit ``X ≈ W H`` minimising the generalised KL divergence, by multiplicative updates from ``(W0, H0)``.

    Args:
        X: non-negative CSR matrix of shape (n_documents, n_terms).
        W0: initial document weights, shape (n_documents, k), positive.
        H0: initial topics, shape (k, n_terms), positive.
        max_iter: maximum number of updates of both factors.
        tol: stop when the divergence improves by less than ``tol`` (relative) over 10 updates.

    Returns:
        The fitted factors; ``rel_error`` is the divergence divided by ``sum(X)``.

    """
    X = sp.csr_matrix(X, dtype=DTYPE)
    counts = np.diff(X.indptr)
    # multiplicative updates never revive an exact zero: start strictly positive
    W = np.maximum(np.asarray(W0, dtype=DTYPE), 1e-6).copy()
    H = np.maximum(np.asarray(H0, dtype=DTYPE), 1e-6).copy()
    total = max(float(X.data.sum()), _EPS)
    previous = np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
        R = _ratio(X, counts, W, H[:, X.indices])
        W *= np.asarray(R @ H.T, dtype=DTYPE) / np.maximum(H.sum(axis=1), _EPS)[None, :]
        R = _ratio(X, counts, W, H[:, X.indices])
        H *= np.asarray((R.T @ W).T, dtype=DTYPE) / np.maximum(W.sum(axis=0), _EPS)[:, None]
        if n_iter % 10 == 0:
            current = kl_divergence(X, W, H)
            if previous - current < tol * previous:
                break
            previous = current
    return FitResult(W, H, kl_divergence(X, W, H) / total, n_iter)


BETA_LOSSES = ("frobenius", "kullback-leibler")


def project_weights(
    X: sp.csr_matrix | np.ndarray, H: np.ndarray, beta_loss: str, *, n_iter: int | None = None
) -> np.ndarray:
    """Document weights over fixed topics under ``beta_loss`` (:func:`project` or :func:`project_kl`)."""
    if beta_loss == "kullback-leibler":
        return project_kl(X, H) if n_iter is None else project_kl(X, H, n_iter=n_iter)
    return project(X, H) if n_iter is None else project(X, H, n_iter=n_iter)


def project_kl(X: sp.csr_matrix | np.ndarray, H: np.ndarray, *, n_iter: int = 50) -> np.ndarray:
    """Non-negative weights minimising ``D(X || W H)`` with the topics fixed, over L1-normalised topics.

    With each topic scaled to sum to 1, a document's weights are its term mass explained by each topic (their
    sum equals the row sum of ``X`` at the optimum), so they compare across topics whatever the topics'
    norms. Rows are solved independently (same result alone or in a batch). All-zero rows get zero weights.

    Args:
        X: non-negative matrix of shape (n_documents, n_terms).
        H: topics, shape (k, n_terms) (any positive scale per row).
        n_iter: multiplicative updates.

    Returns:
        Array of shape (n_documents, k).

    """
    X = sp.csr_matrix(X, dtype=DTYPE)
    H = np.asarray(H, dtype=DTYPE)
    H = H / np.maximum(H.sum(axis=1, keepdims=True), _EPS)
    k = H.shape[0]
    counts = np.diff(X.indptr)
    Hg = np.ascontiguousarray(H[:, X.indices])  # fixed topics: gathered once
    mass = np.asarray(X.sum(axis=1), dtype=DTYPE).ravel()
    W = np.repeat((mass / max(k, 1))[:, None], k, axis=1).astype(DTYPE)
    for _ in range(n_iter):
        R = _ratio(X, counts, W, Hg)
        W *= np.asarray(R @ H.T, dtype=DTYPE)  # denominators are H.sum(axis=1) == 1
    return W


def kl_topics(H: np.ndarray) -> np.ndarray:
    """Topics scaled to sum to 1 per row, in float32: what :func:`project_kl` projects on."""
    H = np.asarray(H, dtype=DTYPE)
    return H / np.maximum(H.sum(axis=1, keepdims=True), _EPS)


def _row_chunks(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows into runs whose padded size (rows x longest row) stays within ``budget`` entries."""
    chunks, start, longest = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        wider = max(longest, c)
        if i > start and (i + 1 - start) * max(wider, 1) > budget:
            chunks.append((start, i))
            start, wider = i, c
        longest = wider
    if start < len(counts) or not chunks:
        chunks.append((start, len(counts)))
    return chunks


def project_kl_groups(
    X: sp.csr_matrix | np.ndarray,
    Hn: np.ndarray,
    sizes: Sequence[int],
    *,
    n_iter: int = 50,
    budget: int = 1 << 16,
) -> np.ndarray:
    """:func:`project_kl` of ``X`` on several groups of topics at once, with the same float32 arithmetic.

    ``Hn`` stacks the groups' topics (``kl_topics`` of each group, one after the other; ``sizes`` gives the
    number of topics per group). Column block ``g`` of the result equals ``project_kl(X, group g)`` bit for
    bit: every sum is accumulated in the same order as there (over a group's topics in order, over a row's
    stored entries in order, as scipy's CSR product does), only the Python and scipy overhead of one call
    per group and sweep is gone. That overhead is what placing one query costs (issue 10).

    Args:
        X: non-negative matrix of shape (n_documents, n_terms).
        Hn: stacked L1-normalised topics, shape (sum(sizes), n_terms), float32.
        sizes: topics per group (each >= 1).
        n_iter: multiplicative updates.
        budget: padded entries (rows x longest row) per block of rows; bounds the memory of long rows.

    Returns:
        Array of shape (n_documents, sum(sizes)).

    """
    X = sp.csr_matrix(X, dtype=DTYPE)
    Hn = np.asarray(Hn, dtype=DTYPE)
    sizes = [int(k) for k in sizes]
    if not sizes or min(sizes) < 1:
        raise InvalidValueError(f"sizes must be one or more positive group sizes; got {sizes}.")
    n_topics, n_groups = int(sum(sizes)), len(sizes)
    starts = np.cumsum([0, *sizes])[:-1]
    group_of = np.repeat(np.arange(n_groups), sizes)
    width = max(sizes)
    # pad[g, t] = the t-th topic of group g, or n_topics (a zero row) past the group's end
    pad = np.full((n_groups, width), n_topics, dtype=np.int64)
    for g, (s0, k) in enumerate(zip(starts, sizes, strict=True)):
        pad[g, :k] = np.arange(s0, s0 + k)
    counts = np.diff(X.indptr)
    mass = np.asarray(X.sum(axis=1), dtype=DTYPE).ravel()
    W = np.empty((X.shape[0], n_topics), dtype=DTYPE)
    for s0, k in zip(starts, sizes, strict=True):
        W[:, s0 : s0 + k] = (mass / max(k, 1))[:, None]
    for r0, r1 in _row_chunks(counts, budget):
        lo, hi = int(X.indptr[r0]), int(X.indptr[r1])
        if hi == lo:  # only all-zero rows: their weights stay mass / k == 0
            continue
        data = X.data[lo:hi]
        rows = np.repeat(np.arange(r1 - r0), counts[r0:r1])
        Hg = np.zeros((n_topics + 1, hi - lo), dtype=DTYPE)
        Hg[:n_topics] = Hn[:, X.indices[lo:hi]]
        # slot[i, p] = position of row i's p-th stored entry, or hi - lo (a zero column) past the row's end
        longest = int(counts[r0:r1].max())
        slot = np.full((r1 - r0, longest), hi - lo, dtype=np.int64)
        offsets = np.arange(hi - lo) - (X.indptr[r0:r1] - lo).repeat(counts[r0:r1])
        slot[rows, offsets] = np.arange(hi - lo)
        Wc = np.zeros((r1 - r0, n_topics + 1), dtype=DTYPE)  # column n_topics stays 0 (padding)
        Wc[:, :n_topics] = W[r0:r1]
        single = r1 - r0 == 1
        for _ in range(n_iter):
            prod = (Wc[0][:, None] if single else Wc.T[:, rows]) * Hg  # (W @ H) terms at the stored entries
            # per group, sum over its topics in order (cumsum accumulates in order, from the first term)
            model = np.cumsum(prod[pad], axis=1)[:, -1]
            ratio = data / np.maximum(model, _EPS)
            contrib = ratio[group_of] * Hg[:n_topics]
            # per row, sum over its stored entries in order, as scipy's CSR product does
            if single:
                Wc[0, :n_topics] *= np.cumsum(contrib, axis=1)[:, -1]
            else:
                padded = np.concatenate([contrib, np.zeros((n_topics, 1), dtype=DTYPE)], axis=1)[:, slot]
                Wc[:, :n_topics] *= np.cumsum(padded, axis=2)[:, :, -1].T
        W[r0:r1] = Wc[:, :n_topics]
    return W


# ----------------------------------------------------------------------------------------------- perturbation
def perturb(X: sp.csr_matrix, noise: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Return a perturbed copy of ``X``: each stored entry multiplied by ``1 + U(-noise, noise)``.

    Multiplicative noise on the stored entries keeps ``X`` non-negative and keeps its sparsity pattern.
    """
    Y = X.copy()
    if noise > 0 and Y.nnz:
        Y.data = (Y.data * (1.0 + rng.uniform(-noise, noise, size=Y.nnz))).astype(DTYPE)
    return Y


def bootstrap_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a bootstrap resample (with replacement) of ``n`` documents."""
    return rng.integers(0, n, size=n)


# ----------------------------------------------------------------------------------------------- alignment
def unit_rows(H: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(H, axis=-1, keepdims=True)
    return H / np.maximum(norms, _EPS)


def align_topics(topics: np.ndarray, n_rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Align topic rows across perturbations by Hungarian matching of cosine similarity.

    Args:
        topics: array of shape (n_perturbations, k, n_terms), unit rows.
        n_rounds: re-alignments to the running consensus (the first round aligns to perturbation 0).

    Returns:
        ``aligned`` (same shape, rows permuted so that row ``j`` is the same topic in every perturbation) and
        ``consensus`` (k, n_terms), the unit-normalised mean of the aligned topics.

    """
    reference = topics[0]
    aligned = topics.copy()
    for _ in range(n_rounds):
        for p in range(topics.shape[0]):
            similarity = topics[p] @ reference.T  # (k, k) cosine: rows are unit vectors
            rows, cols = linear_sum_assignment(-similarity)
            order = np.empty_like(cols)
            order[cols] = rows  # topic of perturbation p matched to reference topic c
            aligned[p] = topics[p][order]
        reference = unit_rows(aligned.mean(axis=0))
    return aligned, reference


def stability(aligned: np.ndarray) -> tuple[np.ndarray, float]:
    """Silhouette of aligned topic columns (cosine distance), per topic and overall.

    Each topic index is a cluster whose members are that topic's versions across the perturbations. A topic
    that comes back the same in every perturbation (and differs from the others) has a silhouette near 1.

    Args:
        aligned: array of shape (n_perturbations, k, n_terms), unit rows.

    Returns:
        ``per_topic`` (k,) mean silhouette of each topic's members, and the mean over all members.

    """
    p, k, _ = aligned.shape
    points = aligned.transpose(1, 0, 2).reshape(k * p, -1)  # grouped by topic
    distance = np.clip(1.0 - points @ points.T, 0.0, 2.0)
    labels = np.repeat(np.arange(k), p)
    # mean distance from each point to each cluster, excluding the point itself from its own cluster
    sums = distance.reshape(k * p, k, p).sum(axis=2)
    own = sums[np.arange(k * p), labels] / max(p - 1, 1)
    other = sums / p
    other[np.arange(k * p), labels] = np.inf
    nearest = other.min(axis=1)
    s = (nearest - own) / np.maximum(np.maximum(nearest, own), _EPS)
    per_topic = s.reshape(k, p).mean(axis=1)
    return per_topic, float(s.mean())

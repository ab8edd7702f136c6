import numpy as np
import pytest
import scipy.sparse as sp

from heal_rag.hierarchy import NMFk, _nmf
from heal_rag.hierarchy.nmfk import KCandidate, select_k


def planted(n_blocks=3, docs=20, terms=10, seed=0):
    rng = np.random.default_rng(seed)
    X = np.kron(np.eye(n_blocks), np.ones((docs, terms))) * rng.uniform(
        0.5, 1.5, (n_blocks * docs, n_blocks * terms)
    )
    return X + 0.01 * rng.random(X.shape)


def test_hals_recovers_exact_low_rank():
    rng = np.random.default_rng(1)
    W = rng.random((40, 3))
    H = rng.random((3, 25))
    X = sp.csr_matrix(W @ H)
    W0, H0 = _nmf.nndsvd_components(X, 3, seed=0)
    fit = _nmf.hals(X, W0, H0, max_iter=500, tol=0.0, ops=_nmf._Ops("cpu"))
    assert fit.rel_error < 1e-2
    assert fit.W.min() >= 0 and fit.H.min() >= 0
    # the error HALS reports is the true one
    true = np.linalg.norm(X.toarray() - fit.W @ fit.H) / np.linalg.norm(X.toarray())
    assert fit.rel_error == pytest.approx(true, abs=1e-3)


def test_nndsvd_prefix_is_the_init_for_smaller_k():
    X = sp.csr_matrix(planted())
    W5, H5 = _nmf.nndsvd_components(X, 5, seed=0)
    W3, H3 = _nmf.nndsvd_components(X, 3, seed=0)
    np.testing.assert_allclose(W5[:, :3], W3, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(H5[:3], H3, rtol=1e-3, atol=1e-4)


def test_project_matches_nnls_and_is_row_independent():
    from scipy.optimize import nnls

    rng = np.random.default_rng(2)
    H = rng.random((4, 30))
    X = rng.random((12, 30))
    W = _nmf.project(sp.csr_matrix(X), H, n_iter=300)
    for i in range(len(X)):
        ref, _ = nnls(H.T, X[i])
        np.testing.assert_allclose(W[i], ref, atol=1e-3)
    single = _nmf.project(sp.csr_matrix(X[5:6]), H, n_iter=300)
    np.testing.assert_allclose(single[0], W[5], atol=1e-6)


def test_kl_nmf_decreases_divergence_and_fits_exact_low_rank():
    rng = np.random.default_rng(4)
    W = rng.random((40, 3))
    H = rng.random((3, 25))
    X = sp.csr_matrix(W @ H)
    W0, H0 = _nmf.nndsvd_components(X, 3, seed=0)
    start = _nmf.kl_divergence(X, np.maximum(W0, 1e-6), np.maximum(H0, 1e-6))
    fit = _nmf.kl_nmf(X, W0, H0, max_iter=2000, tol=0.0)
    assert fit.W.min() >= 0 and fit.H.min() >= 0
    # the divergence it reports is the true generalised KL of the dense product
    model = fit.W @ fit.H
    dense = X.toarray()
    true = np.sum(dense * np.log(dense / model) - dense + model)
    assert fit.rel_error * dense.sum() == pytest.approx(true, rel=1e-3, abs=1e-5)
    assert fit.rel_error < 1e-3  # divergence per unit of mass: the exact low-rank X is fitted
    assert fit.rel_error * dense.sum() < 0.05 * start


def test_project_kl_minimises_divergence_and_is_row_independent():
    rng = np.random.default_rng(5)
    H = rng.random((3, 20)) + 0.05
    Hn = H / H.sum(axis=1, keepdims=True)
    W_true = rng.random((10, 3)) * 5
    X = sp.csr_matrix(W_true @ Hn)
    W = _nmf.project_kl(X, 7.0 * H, n_iter=3000)  # the scale of the topics does not matter
    np.testing.assert_allclose(W, W_true, rtol=2e-2, atol=2e-2)
    # weights sum to each document's mass (topics scaled to sum to 1)
    np.testing.assert_allclose(W.sum(axis=1), X.toarray().sum(axis=1), rtol=1e-3)
    single = _nmf.project_kl(X[4:5], H, n_iter=3000)
    np.testing.assert_allclose(single[0], W[4], rtol=1e-5, atol=1e-6)
    empty = _nmf.project_kl(sp.csr_matrix((2, 20)), H)
    assert np.all(empty == 0)


def test_align_topics_undoes_permutations():
    rng = np.random.default_rng(3)
    base = _nmf.unit_rows(rng.random((4, 50)))
    copies = np.stack([base[rng.permutation(4)] for _ in range(5)])
    aligned, consensus = _nmf.align_topics(copies)
    for p in range(5):
        np.testing.assert_allclose(aligned[p], aligned[0])
    per_topic, mean = _nmf.stability(aligned)
    assert per_topic.min() > 0.99 and mean > 0.99


def test_stability_low_for_random_topics():
    rng = np.random.default_rng(4)
    copies = np.stack([_nmf.unit_rows(rng.random((4, 50)) ** 8) for _ in range(5)])
    aligned, _ = _nmf.align_topics(copies)
    per_topic, _ = _nmf.stability(aligned)
    assert per_topic.min() < 0.3


def test_select_k_plateau_rule():
    def cands(values):
        return [
            KCandidate(k, s, s, 1.0 / k, 0.0) for k, s in zip(range(2, 2 + len(values)), values, strict=True)
        ]

    # planted-like: unstable k=2, stable 3, collapse after
    assert select_k(cands([0.4, 0.99, 0.2, 0.1]), threshold=0.6, tolerance=0.15)[0] == 3
    # plateau 2..4, then an isolated lucky k=7 after the collapse: not chosen (T-ELF would)
    assert select_k(cands([0.98, 0.95, 0.9, 0.3, 0.2, 0.95]), threshold=0.6, tolerance=0.15)[0] == 4
    # nothing stable -> no split
    assert select_k(cands([0.3, 0.2]), threshold=0.6, tolerance=0.15)[0] == 1


def test_nmfk_finds_planted_k():
    model = NMFk(k_range=(2, 6), random_state=0, device="cpu").fit(planted())
    assert model.k_ == 3
    assert [c["k"] for c in model.k_selection_] == [2, 3, 4, 5, 6]
    assert model.components_.shape == (3, 30)
    # each topic lives on one block of terms
    blocks = {int(np.argmax(model.components_[j].reshape(3, 10).sum(1))) for j in range(3)}
    assert blocks == {0, 1, 2}
    W = model.transform(planted())
    assert W.shape == (60, 3)
    labels = W.argmax(1)
    assert len(set(labels[:20])) == len(set(labels[20:40])) == len(set(labels[40:])) == 1


def test_nmfk_deterministic_and_validates():
    X = planted(seed=5)
    a = NMFk(k_range=(2, 4), random_state=7).fit(X)
    b = NMFk(k_range=(2, 4), random_state=7).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    with pytest.raises(ValueError, match="The 'k_range' parameter of NMFk must be"):
        NMFk(k_range=(5, 2)).fit(X)
    with pytest.raises(ValueError, match="non-negative"):
        NMFk().fit(-X)
    with pytest.raises(ValueError, match="NaN"):
        NMFk().fit(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="The 'n_perturbations' parameter of NMFk"):
        NMFk(n_perturbations=1).fit(X)
    with pytest.raises(ValueError, match="The 'device' parameter of NMFk"):
        NMFk(device="tpu").fit(X)


def test_device_resolution():
    assert _nmf.resolve_device("cpu") == "cpu"
    if not _nmf.cuda_available():
        assert _nmf.resolve_device("auto") == "cpu"
        with pytest.raises(ValueError, match="no CUDA device"):
            _nmf.resolve_device("cuda")


def test_torch_kernel_matches_numpy_on_cpu():
    # the CUDA code path, run with torch on the CPU (torch is a core dependency, so it is importable here)
    pytest.importorskip("torch")
    X = sp.csr_matrix(planted())
    W0, H0 = _nmf.nndsvd_components(X, 3, seed=0)
    ref = _nmf.hals(X, W0, H0, max_iter=50, tol=0.0, ops=_nmf._Ops("cpu"))
    got = _nmf.hals(X, W0, H0, max_iter=50, tol=0.0, ops=_nmf._Ops("cuda", torch_device="cpu"))
    # torch runs in float32: near-zero entries drift by ~1e-4 of the largest one over 50 iterations
    np.testing.assert_allclose(got.H, ref.H, rtol=1e-3, atol=1e-3 * float(np.abs(ref.H).max()))
    assert got.rel_error == pytest.approx(ref.rel_error, abs=1e-4)


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu():
    if not _nmf.cuda_available():
        pytest.skip("needs a CUDA device")
    X = sp.csr_matrix(planted())
    W0, H0 = _nmf.nndsvd_components(X, 3, seed=0)
    cpu = _nmf.hals(X, W0, H0, max_iter=50, tol=0.0, ops=_nmf._Ops("cpu"))
    gpu = _nmf.hals(X, W0, H0, max_iter=50, tol=0.0, ops=_nmf._Ops("cuda"))
    np.testing.assert_allclose(cpu.H, gpu.H, rtol=1e-2, atol=1e-3)
    assert NMFk(k_range=(2, 5), random_state=0, device="cuda").fit(planted()).k_ == 3

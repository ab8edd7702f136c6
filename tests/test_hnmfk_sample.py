"""HNMFk(fit_sample=...): build the tree on a seeded sample, place every document with the stored factors."""

import numpy as np
import pytest
import scipy.sparse as sp
from _planted import FAST, planted_corpus
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from heal_rag.hierarchy import Hierarchy, HNMFk
from heal_rag.hierarchy import hnmfk as hnmfk_module

SETTINGS = dict(depth=2, k_range=(2, 6), min_topic_size=5, **FAST)


@pytest.fixture(scope="module")
def corpus():
    texts, l0, l1 = planted_corpus()  # 150 documents
    return texts, l0, l1


@pytest.fixture(scope="module")
def sampled(corpus):
    texts, _, _ = corpus
    ids = [f"doc-{i}" for i in range(len(texts))]
    return HNMFk(fit_sample=100, **SETTINGS).fit(texts, doc_ids=ids), texts, ids


def test_sample_fit_places_every_document_in_input_order(sampled, corpus):
    model, texts, ids = sampled
    _, l0, l1 = corpus
    h = model.hierarchy_
    n = len(texts)
    assert h.n_documents == n and h.doc_ids == ids and h.paths.shape == (n, 2)
    for level in range(h.n_levels):
        m = h.memberships(level)
        assert m.shape == (n, len(h.topics_at(level)))
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    # the placement is the routine predict uses: fitted paths = predictions of the same texts
    np.testing.assert_array_equal(model.predict(texts), h.paths)
    for level, m in enumerate(model.predict_memberships(texts)):
        np.testing.assert_allclose(m, h.memberships(level), atol=1e-6)
    # the sample: 100 distinct positions in input order; the splits saw only them, the sizes count all
    sample = model.fit_sample_indices_
    assert len(sample) == 100 and np.all(np.diff(sample) > 0) and 0 <= sample[0] and sample[-1] < n
    assert model.k_selection_[-1]["n_documents"] == 100
    assert sum(t.size for t in h.topics_at(0)) == n
    assert h.params["fit_sample"] == 100 and h.params["n_fit_documents"] == 100
    # the planted themes are still recovered for the documents outside the sample
    outside = np.setdiff1d(np.arange(n), sample)
    assert adjusted_rand_score(l0[outside], h.labels(0)[outside]) == 1.0
    assert adjusted_rand_score(l1, h.labels(1)) == 1.0


def test_fit_sample_none_fits_on_all(corpus):
    texts, _, _ = corpus
    full = HNMFk(**SETTINGS).fit(texts)
    np.testing.assert_array_equal(full.fit_sample_indices_, np.arange(len(texts)))
    assert full.hierarchy_.params["fit_sample"] is None
    assert full.hierarchy_.params["n_fit_documents"] == len(texts)
    # a sample as large as the corpus is the full fit, whether given as a count or as a share
    for value in (len(texts), 1.0):
        same = HNMFk(fit_sample=value, **SETTINGS).fit(texts)
        assert same.hierarchy_.fingerprint == full.hierarchy_.fingerprint
    # and the full fit's paths are those of routing the whole matrix at once (the placement before chunks)
    h = full.hierarchy_
    paths, memberships = h.route(h.vectorize(texts))
    np.testing.assert_array_equal(paths, h.paths)
    for level in range(h.n_levels):
        np.testing.assert_array_equal(memberships[level], h.memberships(level))


def test_same_seed_same_tree_other_seed_other_sample(sampled, corpus):
    model, texts, ids = sampled
    again = HNMFk(fit_sample=100, **SETTINGS).fit(texts, doc_ids=ids)
    assert again.hierarchy_.fingerprint == model.hierarchy_.fingerprint
    np.testing.assert_array_equal(again.fit_sample_indices_, model.fit_sample_indices_)
    other = HNMFk(fit_sample=100, **{**SETTINGS, "random_state": 1}).fit(texts, doc_ids=ids)
    assert not np.array_equal(other.fit_sample_indices_, model.fit_sample_indices_)
    # a Generator in the same state gives the same sample and tree
    a = HNMFk(fit_sample=100, **{**SETTINGS, "random_state": np.random.default_rng(5)}).fit(texts)
    b = HNMFk(fit_sample=100, **{**SETTINGS, "random_state": np.random.default_rng(5)}).fit(texts)
    assert a.hierarchy_.fingerprint == b.hierarchy_.fingerprint


def test_share_is_rounded_up(corpus):
    texts, _, _ = corpus
    model = HNMFk(fit_sample=0.3, **SETTINGS).fit(texts)
    assert len(model.fit_sample_indices_) == int(np.ceil(0.3 * len(texts)))  # 45
    assert model.hierarchy_.params["fit_sample"] == 0.3
    assert model.hierarchy_.n_documents == len(texts)


@pytest.mark.parametrize("fit_sample", [None, 100])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_placement_equals_one_chunk(corpus, monkeypatch, fit_sample, chunk):
    texts, _, _ = corpus
    monkeypatch.setattr(hnmfk_module, "PLACEMENT_CHUNK_SIZE", 10**9)
    whole = HNMFk(fit_sample=fit_sample, **SETTINGS).fit(texts).hierarchy_
    monkeypatch.setattr(hnmfk_module, "PLACEMENT_CHUNK_SIZE", chunk)
    chunked = HNMFk(fit_sample=fit_sample, **SETTINGS).fit(texts).hierarchy_
    assert chunked.fingerprint == whole.fingerprint
    np.testing.assert_array_equal(chunked.paths, whole.paths)
    for level in range(whole.n_levels):
        np.testing.assert_allclose(chunked.memberships(level), whole.memberships(level), rtol=0, atol=1e-12)


def test_matrix_input(corpus, monkeypatch):
    texts, l0, _ = corpus
    X = HNMFk(**SETTINGS).fit(texts).hierarchy_.vectorize(texts)
    monkeypatch.setattr(hnmfk_module, "PLACEMENT_CHUNK_SIZE", 50)
    model = HNMFk(fit_sample=120, **SETTINGS).fit(sp.csr_matrix(X))
    h = model.hierarchy_
    assert h.n_documents == X.shape[0] and len(model.fit_sample_indices_) == 120
    np.testing.assert_array_equal(model.predict(X), h.paths)
    assert adjusted_rand_score(l0, h.labels(0)) == 1.0
    dense = HNMFk(fit_sample=120, **SETTINGS).fit(X.toarray())
    assert dense.hierarchy_.fingerprint == h.fingerprint


def test_empty_texts_left_out_before_sampling(corpus):
    texts, _, _ = corpus
    with_empty = ["", *texts[:60], "   "]
    with pytest.warns(UserWarning, match="2 of 62 documents have no text"):
        model = HNMFk(fit_sample=30, **SETTINGS).fit(with_empty)
    assert model.hierarchy_.n_documents == 60 and model.hierarchy_.doc_ids == [str(i) for i in range(1, 61)]
    assert model.fit_sample_indices_.max() < 60
    message = r"asks for 61 documents, but the corpus has only 60 \(2 documents without text"
    with pytest.warns(UserWarning, match="no text"), pytest.raises(ValueError, match=message):
        HNMFk(fit_sample=61, **SETTINGS).fit(with_empty)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0, "The 'fit_sample' parameter of HNMFk must be None, an int >= 1"),
        (-5, "Got -5 instead"),
        (0.0, "a float in \\(0, 1\\]"),
        (1.5, "Got 1.5 instead"),
        (float("nan"), "Got nan instead"),
        (True, "Got True instead"),
        ("100", "Got '100' instead"),
        ([10], "Got \\[10\\] instead"),
        (151, "asks for 151 documents, but the corpus has only 150. Pass at most 150"),
    ],
)
def test_bad_fit_sample(corpus, value, match):
    texts, _, _ = corpus
    with pytest.raises(ValueError, match=match):
        HNMFk(fit_sample=value, **SETTINGS).fit(texts)


def test_numpy_int_accepted_and_clone_keeps_it(corpus):
    texts, _, _ = corpus
    model = HNMFk(fit_sample=np.int64(80), **SETTINGS)
    assert clone(model).get_params()["fit_sample"] == 80
    assert len(model.fit(texts).fit_sample_indices_) == 80
    assert model.hierarchy_.params["fit_sample"] == 80


def test_save_load_round_trip(sampled, tmp_path):
    model, texts, ids = sampled
    h = model.hierarchy_
    loaded = Hierarchy.load(h.save(tmp_path / "tree"))
    assert loaded.fingerprint == h.fingerprint
    assert loaded.doc_ids == ids and loaded.params == h.params
    np.testing.assert_array_equal(loaded.paths, h.paths)
    for level in range(h.n_levels):
        np.testing.assert_array_equal(loaded.memberships(level), h.memberships(level))
    np.testing.assert_array_equal(loaded.predict(texts[:20]), h.paths[:20])

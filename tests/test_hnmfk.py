import json

import numpy as np
import pytest
import scipy.sparse as sp
from _planted import FAST, SHARED, planted_corpus
from sklearn.metrics import adjusted_rand_score

from heal_rag.hierarchy import Hierarchy, HNMFk


@pytest.fixture(scope="module")
def fitted():
    texts, l0, l1 = planted_corpus()
    model = HNMFk(depth=2, k_range=(2, 6), min_topic_size=5, **FAST).fit(texts)
    return model, texts, l0, l1


def test_planted_hierarchy_recovered(fitted):
    model, texts, l0, l1 = fitted
    h = model.hierarchy_
    assert isinstance(h, Hierarchy)
    assert h.n_levels == 2 and h.n_documents == len(texts)
    assert model.k_selection_[-1]["chosen_k"] == 3
    assert len(h.topics_at(0)) == 3
    assert adjusted_rand_score(l0, h.labels(0)) == 1.0
    assert adjusted_rand_score(l1, h.labels(1)) == 1.0
    # children of different parents have different ids; ids are unique across the tree
    assert len(set(h.labels(1))) == 6
    for topic in h.topics_at(1):
        assert topic.parent in {t.id for t in h.topics_at(0)}
    # top terms of a level-0 topic come from one theme
    astro = next(t for t in h.topics_at(0) if "space" in t.top_terms[:5] or "cosmic" in t.top_terms[:5])
    assert not set(astro.top_terms[:5]) & set(SHARED["cook"].split() + SHARED["law"].split())


def test_predict_reproduces_training_paths_and_memberships(fitted):
    model, texts, l0, l1 = fitted
    h = model.hierarchy_
    np.testing.assert_array_equal(model.predict(texts), h.paths)
    memberships = model.predict_memberships(texts)
    for level in range(h.n_levels):
        np.testing.assert_allclose(memberships[level], h.memberships(level), atol=1e-6)
        np.testing.assert_allclose(memberships[level].sum(1), 1.0, atol=1e-6)
        # the hard label is a topic of the level in the memberships' column order
        columns = [t.id for t in h.topics_at(level)]
        assert set(h.labels(level)) <= set(columns)
    assert model.transform(texts[:3]).shape == (3, len(h.topics_at(1)))
    query = model.predict(["supernova redshift telescope"])
    astro_leaf = h.paths[0]
    np.testing.assert_array_equal(query[0], astro_leaf)


def test_deterministic(fitted):
    model, texts, _, _ = fitted
    again = HNMFk(depth=2, k_range=(2, 6), min_topic_size=5, **FAST).fit(texts)
    assert again.hierarchy_.fingerprint == model.hierarchy_.fingerprint
    np.testing.assert_array_equal(again.hierarchy_.paths, model.hierarchy_.paths)


def test_min_topic_size_respected_and_ragged_tree():
    texts, l0, l1 = planted_corpus()
    # 25 documents per planted leaf: children of 30 cannot exist, so no level-0 topic splits
    model = HNMFk(depth=3, k_range=(2, 6), min_topic_size=30, **FAST).fit(texts)
    h = model.hierarchy_
    for topic in h.topics.values():
        assert topic.size >= 30
    assert h.n_levels == 1
    # a ragged tree: per-depth k ranges that make one branch stop
    model = HNMFk(depth=2, k_range=[(2, 6), (2, 3)], min_topic_size=5, **FAST).fit(texts + ["supernova"] * 0)
    h = model.hierarchy_
    assert h.n_levels == 2
    sizes = [t.size for t in h.topics.values()]
    assert min(sizes) >= 5


def test_ragged_paths_repeat_leaf():
    texts, _, _ = planted_corpus()
    # the third theme has 25 documents of one kind: too few for two topics of min_topic_size=15
    keep = list(range(125))
    model = HNMFk(depth=2, k_range=(2, 6), min_topic_size=15, **FAST).fit([texts[i] for i in keep])
    h = model.hierarchy_
    assert h.n_levels == 2
    leaves0 = [t for t in h.topics_at(0) if t.is_leaf]
    assert leaves0, "a level-0 topic should stay a leaf"
    leaf = leaves0[0]
    rows = h.labels(0) == leaf.id
    assert np.all(h.labels(1)[rows] == leaf.id)
    assert leaf in h.topics_at(1)
    m = h.memberships(1)
    assert m.shape == (len(keep), len(h.topics_at(1)))
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)


def test_beta_loss_recorded_and_used_for_placement(fitted, tmp_path):
    model, texts, l0, l1 = fitted
    h = model.hierarchy_
    assert h.beta_loss == "kullback-leibler"  # the default
    loaded = Hierarchy.load(h.save(tmp_path / "h"))
    assert loaded.beta_loss == "kullback-leibler"
    np.testing.assert_array_equal(loaded.predict(texts), h.paths)
    # the Frobenius variant is still available and recovers the planted tree too
    frob = HNMFk(depth=2, k_range=(2, 6), min_topic_size=5, beta_loss="frobenius", **FAST).fit(texts)
    assert frob.hierarchy_.beta_loss == "frobenius"
    assert adjusted_rand_score(l1, frob.hierarchy_.labels(1)) == 1.0
    np.testing.assert_array_equal(frob.predict(texts), frob.hierarchy_.paths)
    # hierarchies saved without the setting (before it existed) keep their Frobenius placement
    legacy = Hierarchy(
        h.topics, h.doc_ids, h.paths, [h.memberships(0), h.memberships(1)], n_features=h.n_features
    )
    assert legacy.beta_loss == "frobenius"
    assert legacy.fingerprint != h.fingerprint  # the placement rule is part of the identity
    with pytest.raises(ValueError, match="beta_loss='l1'; expected one of"):
        Hierarchy(h.topics, h.doc_ids, h.paths, [], n_features=h.n_features, params={"beta_loss": "l1"})
    # ... and a saved file edited that way is refused at load
    meta_path = tmp_path / "h" / "hierarchy.json"
    meta = json.loads(meta_path.read_text())
    meta["params"]["beta_loss"] = "l1"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupted or inconsistent.*beta_loss='l1'"):
        Hierarchy.load(tmp_path / "h")


def test_matrix_input_and_predict_with_matrix():
    rng = np.random.default_rng(0)
    X = np.kron(np.eye(3), np.ones((20, 10))) * rng.uniform(0.5, 1.5, (60, 30))
    model = HNMFk(
        depth=1, k_range=(2, 5), min_topic_size=5, n_perturbations=3, random_state=0, show_progress=False
    )
    model.fit(
        sp.csr_matrix(X), doc_ids=[f"d{i}" for i in range(60)], feature_names=[f"t{j}" for j in range(30)]
    )
    h = model.hierarchy_
    assert h.doc_ids[0] == "d0"
    assert adjusted_rand_score(np.repeat([0, 1, 2], 20), h.labels(0)) == 1.0
    assert h.topics[0].top_terms[0].startswith("t")
    np.testing.assert_array_equal(model.predict(X), h.paths)
    with pytest.raises(ValueError, match="built from a matrix"):
        model.predict(["some text"])
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :5])


# ----------------------------------------------------------------------------------------------- bad input
def test_empty_corpus():
    with pytest.raises(ValueError, match="empty corpus"):
        HNMFk(**FAST).fit([])
    with pytest.raises(ValueError, match="empty corpus"):
        HNMFk(**FAST).fit(np.zeros((0, 5)))


def test_single_document_gives_single_topic():
    with pytest.warns(UserWarning, match="single topic"):
        model = HNMFk(**FAST).fit(["only one document about galaxies and stars"])
    h = model.hierarchy_
    assert h.paths.shape == (1, 1) and h.paths[0, 0] == 0
    assert h.topics[0].size == 1
    np.testing.assert_array_equal(model.predict(["stars"]), [[0]])


def test_fewer_documents_than_smallest_k():
    texts, _, _ = planted_corpus(per_leaf=1)
    with pytest.warns(UserWarning, match="single topic"):
        model = HNMFk(k_range=(8, 10), min_topic_size=1, **FAST).fit(texts)
    assert model.k_selection_[-1]["chosen_k"] == 1
    assert "smallest k=8" in model.k_selection_[-1]["reason"]
    assert model.hierarchy_.paths.shape == (6, 1)


def test_duplicate_texts_are_kept_and_empty_ones_left_out():
    texts, l0, _ = planted_corpus()
    texts = texts + [texts[0]] * 5 + ["", "the and of", "   "]
    with pytest.warns(UserWarning, match="2 of 158 documents have no text"):
        model = HNMFk(depth=2, k_range=(2, 6), min_topic_size=5, **FAST).fit(texts)
    h = model.hierarchy_
    assert h.paths.shape[0] == len(texts) - 2  # only the two empty texts are left out (issue 13)
    assert "155" not in h.doc_ids and "157" not in h.doc_ids and h.doc_ids[-1] == "156"
    # duplicates land with their original
    assert np.all(h.paths[150:155] == h.paths[0])
    # a text of stop words only is kept: it follows the most populous topic at each split (prior memberships)
    sizes0 = {t.id: t.size for t in h.topics_at(0)}
    largest = max(sizes0, key=lambda i: (sizes0[i], -i))
    assert h.labels(0)[-1] == largest
    np.testing.assert_allclose(h.memberships(0)[-1].sum(), 1.0)
    np.testing.assert_array_equal(model.predict([""]), h.paths[-1:])


def test_only_stop_words():
    with pytest.raises(ValueError, match="no vocabulary"):
        HNMFk(**FAST).fit(["the and of", "is it a", "", "to be or not to be"])


def test_bad_matrices():
    with pytest.raises(ValueError, match="non-negative"):
        HNMFk(**FAST).fit(np.array([[1.0, -1.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="NaN"):
        HNMFk(**FAST).fit(sp.csr_matrix(np.array([[1.0, np.nan], [0.5, 0.5]])))
    with pytest.raises(ValueError, match="2-D"):
        HNMFk(**FAST).fit(np.ones(5))


def test_bad_texts():
    with pytest.raises(ValueError, match="single string"):
        HNMFk(**FAST).fit("one long string")
    with pytest.raises(ValueError, match="item 1 is NoneType"):
        HNMFk(**FAST).fit(["ok text", None])
    with pytest.raises(ValueError, match="doc_ids has 1 ids"):
        HNMFk(**FAST).fit(["a b", "c d"], doc_ids=["x"])
    with pytest.raises(ValueError, match="unique"):
        HNMFk(**FAST).fit(["a b", "c d"], doc_ids=["x", "x"])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"depth": 0}, "The 'depth' parameter of HNMFk must be an int >= 1. Got 0 instead."),
        ({"depth": 1.5}, "The 'depth' parameter"),
        ({"k_range": (1, 5)}, "The 'k_range' parameter of HNMFk"),
        ({"k_range": (6, 3)}, "The 'k_range' parameter of HNMFk"),
        ({"k_range": [(2, 4), (2, 4), (2, 4)], "depth": 2}, "at most one pair per depth"),
        ({"k_range": "auto"}, "The 'k_range' parameter"),
        ({"min_topic_size": 0}, "The 'min_topic_size' parameter"),
        ({"noise": 1.0}, "The 'noise' parameter"),
        ({"stability_threshold": 2.0}, "The 'stability_threshold' parameter"),
        ({"max_features": 0}, "The 'max_features' parameter"),
        ({"beta_loss": "itakura-saito"}, "The 'beta_loss' parameter of HNMFk must be one of"),
    ],
)
def test_bad_parameters(params, match):
    kwargs = {**FAST, **params}
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        HNMFk(**kwargs).fit(["alpha beta", "gamma delta"])


def test_not_fitted():
    with pytest.raises(ValueError, match="not fitted"):
        HNMFk().predict(["x"])


def test_no_torch_import():
    import subprocess
    import sys

    code = (
        "import sys; from heal_rag.hierarchy import HNMFk; HNMFk(device='cpu'); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

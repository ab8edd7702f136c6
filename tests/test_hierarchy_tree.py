import json

import numpy as np
import pytest

# the planted corpus shared with tests/test_hnmfk.py
from _planted import FAST, planted_corpus

from heal_rag.hierarchy import Hierarchy, HNMFk, Topic
from heal_rag.hierarchy.tree import FORMAT_VERSION


@pytest.fixture(scope="module")
def model():
    texts, _, _ = planted_corpus()
    texts = texts + ["", "galaxy galaxy galaxy"]
    ids = [f"doc-{i}" for i in range(len(texts))]
    return HNMFk(depth=2, k_range=(2, 6), min_topic_size=5, **FAST).fit(texts, doc_ids=ids), texts


def test_topic_structure(model):
    est, _ = model
    h = est.hierarchy_
    assert all(isinstance(t, Topic) for t in h.topics.values())
    assert list(h.topics) == sorted(h.topics)
    for t in h.topics.values():
        assert t.vector.shape == (len(h.vocabulary),)
        assert np.linalg.norm(t.vector) == pytest.approx(1.0, abs=1e-4)
        assert t.depth == (0 if t.parent is None else h.topics[t.parent].depth + 1)
        if t.children:
            assert sum(h.topics[c].size for c in t.children) == t.size
            assert all(h.topics[c].parent == t.id for c in t.children)
    assert sum(t.size for t in h.topics_at(0)) == h.n_documents
    assert h.paths.dtype == np.int64
    assert h.labels(-1).tolist() == h.labels(h.n_levels - 1).tolist()
    with pytest.raises(ValueError, match="level must be in"):
        h.labels(5)


def test_save_load_round_trip(model, tmp_path):
    est, texts = model
    h = est.hierarchy_
    h.save(tmp_path / "h")
    loaded = Hierarchy.load(tmp_path / "h")
    assert loaded.fingerprint == h.fingerprint
    np.testing.assert_array_equal(loaded.paths, h.paths)
    assert loaded.doc_ids == h.doc_ids
    assert loaded.vocabulary == h.vocabulary
    np.testing.assert_array_equal(loaded.idf, h.idf)
    for level in range(h.n_levels):
        np.testing.assert_array_equal(loaded.memberships(level), h.memberships(level))
    for tid, topic in h.topics.items():
        other = loaded.topics[tid]
        assert (other.parent, other.depth, other.size, other.top_terms, other.children) == (
            topic.parent,
            topic.depth,
            topic.size,
            topic.top_terms,
            topic.children,
        )
        np.testing.assert_array_equal(other.vector, topic.vector)
    queries = ["supernova telescope", "steak charcoal smoke", "", "jury verdict"]
    np.testing.assert_array_equal(loaded.predict(queries), est.predict(queries))
    np.testing.assert_array_equal(loaded.predict([t for t in texts if t.strip()]), h.paths)
    for a, b in zip(loaded.predict_memberships(queries), est.predict_memberships(queries), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.split_info.keys() == h.split_info.keys()
    assert str(loaded) == str(h)


def test_load_errors(model, tmp_path):
    est, _ = model
    with pytest.raises(FileNotFoundError, match="No saved hierarchy"):
        Hierarchy.load(tmp_path / "missing")
    folder = est.hierarchy_.save(tmp_path / "h")
    meta_path = folder / "hierarchy.json"
    meta = json.loads(meta_path.read_text())

    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version"):
        Hierarchy.load(folder)

    meta["format_version"] = FORMAT_VERSION
    meta["topics"][0]["size"] += 1  # tampered content
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fingerprint"):
        Hierarchy.load(folder)

    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupted"):
        Hierarchy.load(folder)

    est.hierarchy_.save(folder)
    (folder / "hierarchy_arrays.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupted"):
        Hierarchy.load(folder)

    est.hierarchy_.save(folder)
    meta = json.loads(meta_path.read_text())
    meta["topics"] = meta["topics"][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupted or inconsistent"):
        Hierarchy.load(folder)

    meta_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a heal-rag hierarchy"):
        Hierarchy.load(folder)


def test_nothing_written_without_save(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    texts, _, _ = planted_corpus(per_leaf=8)
    HNMFk(depth=1, k_range=(2, 4), min_topic_size=3, **FAST).fit(texts)
    assert list(tmp_path.iterdir()) == []


def test_views(model):
    est, _ = model
    h = est.hierarchy_
    text = h.format_tree(n_terms=3)
    assert text.splitlines()[0].startswith(f"Hierarchy: {len(h.topics)} topics")
    assert len(text.splitlines()) == 1 + len(h.topics)
    first = h.topics_at(0)[0]
    assert f"[{first.id}] ({first.size} docs) {', '.join(first.top_terms[:3])}" in text
    d = h.to_dict()
    assert json.loads(json.dumps(d))["paths"] == h.paths.tolist()
    frame = h.to_pandas()
    assert list(frame.index) == list(h.topics)
    assert frame.loc[first.id, "size"] == first.size
    docs = h.to_pandas("documents")
    assert docs.shape == (h.n_documents, 1 + h.n_levels)
    assert "Hierarchy(n_topics=" in repr(h)


def test_plot(model):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    est, _ = model
    ax = est.hierarchy_.plot()
    assert len(ax.texts) == len(est.hierarchy_.topics)


# -- issue 13: only the declared arrays, checked before decompressing; deep JSON ---------------------------
def test_npz_with_undeclared_or_misshaped_arrays_is_refused_before_decompressing(model, tmp_path):
    import time

    from heal_rag._io import load_npz

    est, _ = model
    folder = est.hierarchy_.save(tmp_path / "h")
    npz = folder / "hierarchy_arrays.npz"
    arrays = load_npz(npz)
    # a 779 KB-style bomb: a huge zero array next to the real ones
    np.savez_compressed(npz, **arrays, extra=np.zeros(20_000_000, dtype=np.float32))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not declare: extra"):
        Hierarchy.load(folder)
    assert time.perf_counter() - start < 1.0  # refused from the listing, never inflated
    # a declared name with a huge shape: refused from its header
    np.savez_compressed(npz, **{**arrays, "paths": np.zeros((20_000_000, 2), dtype=np.int64)})
    start = time.perf_counter()
    with pytest.raises(ValueError, match="'paths'.*expects integer of shape"):
        Hierarchy.load(folder)
    assert time.perf_counter() - start < 1.0
    # a declared name with another dtype
    np.savez_compressed(npz, **{**arrays, "paths": arrays["paths"].astype(np.float64)})
    with pytest.raises(ValueError, match="'paths' is float64"):
        Hierarchy.load(folder)
    np.savez_compressed(npz, **{k: v for k, v in arrays.items() if k != "vectors"})
    with pytest.raises(ValueError, match="vectors are missing"):
        Hierarchy.load(folder)
    np.savez_compressed(npz, **arrays)
    assert Hierarchy.load(folder).fingerprint == est.hierarchy_.fingerprint


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    folder = tmp_path / "h"
    folder.mkdir()
    (folder / "hierarchy.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="corrupted.*nested too deeply"):
        Hierarchy.load(folder)


def test_empty_texts_are_left_out_of_the_hierarchy_with_one_warning(model):
    est, texts = model
    h = est.hierarchy_
    assert len(texts) - 1 == h.n_documents  # the fixture's one empty text
    empty_id = f"doc-{texts.index('')}"
    assert empty_id not in h.doc_ids and "galaxy galaxy galaxy" in texts
    with pytest.warns(UserWarning, match=r"2 of 5 documents have no text .*'b', 'd'") as caught:
        small = HNMFk(depth=1, k_range=(2, 2), min_topic_size=1, **FAST).fit(
            ["stars galaxy", "", "bread oven", "  \n", "galaxy stars"], doc_ids=list("abcde")
        )
    assert sum("no text" in str(w.message) for w in caught) == 1
    assert small.hierarchy_.doc_ids == ["a", "c", "e"]
    with pytest.raises(ValueError, match="None of the 2 texts"):
        HNMFk(**FAST).fit(["", " "])

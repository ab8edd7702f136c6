"""save_heal_index / load_heal_index round trips and mismatch errors, with real LlamaIndex stores."""

from __future__ import annotations

import copy
import random
import shutil

import numpy as np
import pytest
import torch
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from heal_rag import HEALEmbedding, HierarchicalRetriever
from heal_rag.hierarchy import HNMFk
from heal_rag.integrations import build_faiss_index, load_heal_index, save_heal_index

WORDS = {
    "h": "blood pressure hypertension arteries cholesterol statins",
    "a": "stars supernova galaxy planet orbit moon",
    "c": "bread dough oven yeast tomato sauce",
}
_rng = random.Random(0)
TEXTS = {f"{k}{i}": " ".join(_rng.sample(w.split(), 4)) + "." for k, w in WORDS.items() for i in range(8)}
QUERY = "baking bread in an oven"


def fit_hierarchy(seed: int):
    return (
        HNMFk(
            depth=1,
            k_range=(2, 3),
            min_topic_size=2,
            n_perturbations=2,
            min_df=1,
            max_df=1.0,
            random_state=seed,
            show_progress=False,
        )
        .fit(list(TEXTS.values()), doc_ids=list(TEXTS))
        .hierarchy_
    )


@pytest.fixture(scope="module")
def embed():
    return HEALEmbedding(device="cpu")


@pytest.fixture(scope="module")
def hierarchy():
    return fit_hierarchy(0)


def nodes(texts=TEXTS):
    return [TextNode(id_=i, text=t) for i, t in texts.items()]


def ids(hits):
    return [h.node.node_id for h in hits]


@pytest.mark.parametrize("store", ["faiss", "faiss_hnsw", "simple"])
def test_round_trip_gives_identical_retrieval(tmp_path, embed, hierarchy, store):
    if store == "faiss":
        index = build_faiss_index(nodes(), embed, hierarchy=hierarchy)
    elif store == "faiss_hnsw":  # the large-corpus default, forced on a small corpus
        index = build_faiss_index(nodes(), embed, hierarchy=hierarchy, index_type="hnsw")
    else:
        index = VectorStoreIndex(nodes(), embed_model=embed)
    before = HierarchicalRetriever(index, hierarchy=hierarchy, mode="rescore", similarity_top_k=4).retrieve(
        QUERY
    )
    save_heal_index(index, tmp_path / "idx", embed, hierarchy=hierarchy)
    assert (tmp_path / "idx" / "heal_index.json").is_file()
    # one call loads everything; passing embed_model skips re-loading the weights (fingerprint still checked)
    index2, embed2, hierarchy2 = load_heal_index(tmp_path / "idx", embed_model=embed)
    assert hierarchy2.fingerprint == hierarchy.fingerprint
    after = HierarchicalRetriever(index2, hierarchy=hierarchy2, mode="rescore", similarity_top_k=4).retrieve(
        QUERY
    )
    assert ids(after) == ids(before)
    np.testing.assert_allclose([h.score for h in after], [h.score for h in before], atol=1e-5)
    assert type(index2.vector_store).__name__ == type(index.vector_store).__name__
    if store == "faiss_hnsw":  # the index type and its search setting survive the save
        assert type(index2.vector_store.client).__name__ == "IndexHNSWFlat"
        assert index2.vector_store.client.hnsw.efSearch == index.vector_store.client.hnsw.efSearch


def test_load_resolves_the_recorded_model(tmp_path, embed, hierarchy):
    index = build_faiss_index(nodes(), embed, hierarchy=hierarchy)
    save_heal_index(index, tmp_path / "idx", embed, hierarchy=hierarchy)
    index2, embed2, _ = load_heal_index(tmp_path / "idx", device="cpu")
    assert embed2.weights_fingerprint == embed.weights_fingerprint
    hits = HierarchicalRetriever(index2, mode="flat", similarity_top_k=1).retrieve(QUERY)
    assert hits[0].node.node_id.startswith("c")


def test_another_model_is_an_error(tmp_path, embed, hierarchy):
    index = build_faiss_index(nodes(), embed, hierarchy=hierarchy)
    save_heal_index(index, tmp_path / "idx", embed, hierarchy=hierarchy)
    model = copy.deepcopy(embed.model)
    with torch.no_grad():
        weight = next(model.parameters())
        weight.add_(0.01 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    retrained = HEALEmbedding(model_name=embed.model_name, model=model)
    with pytest.raises(ValueError, match="retrained or replaced"):
        load_heal_index(tmp_path / "idx", embed_model=retrained)


def test_another_hierarchy_is_an_error(tmp_path, embed, hierarchy):
    index = build_faiss_index(nodes(), embed, hierarchy=hierarchy)
    save_heal_index(index, tmp_path / "idx", embed, hierarchy=hierarchy)
    other_texts = dict(TEXTS, extra="pasta olive basil garlic.")
    other = (
        HNMFk(
            depth=1,
            k_range=(2, 3),
            min_topic_size=2,
            n_perturbations=2,
            min_df=1,
            max_df=1.0,
            show_progress=False,
        )
        .fit(list(other_texts.values()), doc_ids=list(other_texts))
        .hierarchy_
    )
    assert other.fingerprint != hierarchy.fingerprint
    with pytest.raises(ValueError, match="hierarchy .* is not the one"):
        load_heal_index(tmp_path / "idx", embed_model=embed, hierarchy=other)
    shutil.rmtree(tmp_path / "idx" / "heal_hierarchy")
    other.save(tmp_path / "idx" / "heal_hierarchy")
    with pytest.raises(ValueError, match="hierarchy .* is not the one"):
        load_heal_index(tmp_path / "idx", embed_model=embed)


def test_another_corpus_is_an_error(tmp_path, embed, hierarchy):
    save_heal_index(
        build_faiss_index(nodes(), embed, hierarchy=hierarchy), tmp_path / "a", embed, hierarchy=hierarchy
    )
    fewer = {k: v for k, v in TEXTS.items() if k != "a3"}
    save_heal_index(build_faiss_index(nodes(fewer), embed), tmp_path / "b", embed, hierarchy=hierarchy)
    shutil.rmtree(tmp_path / "a" / "storage")
    shutil.copytree(tmp_path / "b" / "storage", tmp_path / "a" / "storage")
    with pytest.raises(ValueError, match="stored corpus .* does not match"):
        load_heal_index(tmp_path / "a", embed_model=embed)


def test_saving_refuses_to_clobber_and_flat_indexes_save_without_hierarchy(tmp_path, embed):
    index = build_faiss_index(nodes(), embed)
    save_heal_index(index, tmp_path / "idx", embed)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_heal_index(index, tmp_path / "idx", embed)
    save_heal_index(index, tmp_path / "idx", embed, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a saved HEAL index"):
        save_heal_index(index, tmp_path / "other", embed)
    _, _, loaded_hierarchy = load_heal_index(tmp_path / "idx", embed_model=embed)
    assert loaded_hierarchy is None
    with pytest.raises(FileNotFoundError, match="not a saved HEAL index"):
        load_heal_index(tmp_path / "other")


# -- issue 13 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("store", ["faiss", "simple"])
def test_a_vector_store_from_another_save_is_an_error(tmp_path, embed, store):
    def build(texts):
        if store == "faiss":
            return build_faiss_index(nodes(texts), embed)
        return VectorStoreIndex(nodes(texts), embed_model=embed)

    save_heal_index(build(TEXTS), tmp_path / "a", embed)
    shuffled = dict(reversed(list(TEXTS.items())))  # the same nodes in another order
    save_heal_index(build(shuffled), tmp_path / "b", embed)
    name = "default__vector_store.json"
    shutil.copy(tmp_path / "b" / "storage" / name, tmp_path / "a" / "storage" / name)
    if store == "simple":  # the same order but another model's vectors
        import json

        data = json.loads((tmp_path / "a" / "storage" / name).read_text())
        first = sorted(data["embedding_dict"])[0]
        data["embedding_dict"][first] = [-v for v in data["embedding_dict"][first]]
        (tmp_path / "a" / "storage" / name).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="stored vectors .* not the ones saved with this index"):
        load_heal_index(tmp_path / "a", embed_model=embed)
    load_heal_index(tmp_path / "b", embed_model=embed)  # its own store loads


def test_an_old_save_without_a_vector_fingerprint_loads_with_a_warning(tmp_path, embed, caplog):
    import json

    save_heal_index(build_faiss_index(nodes(), embed), tmp_path / "idx", embed)
    manifest = json.loads((tmp_path / "idx" / "heal_index.json").read_text())
    del manifest["vectors"]
    (tmp_path / "idx" / "heal_index.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="heal_rag"):
        load_heal_index(tmp_path / "idx", embed_model=embed)
    assert "without a fingerprint of its vectors" in caplog.text


def test_model_reference_is_relative_when_the_model_moves_with_the_index(tmp_path, embed):
    import json

    project = tmp_path / "project"
    embed.model.save(str(project / "model"))
    local = HEALEmbedding(str(project / "model"), device="cpu")
    save_heal_index(build_faiss_index(nodes(), local), project / "idx", local)
    assert json.loads((project / "idx" / "heal_index.json").read_text())["model"]["reference"] == "../model"
    moved = tmp_path / "elsewhere"
    shutil.move(str(project), str(moved))
    _, loaded, _ = load_heal_index(moved / "idx", device="cpu")
    assert loaded.weights_fingerprint == local.weights_fingerprint
    shutil.rmtree(moved / "model")
    with pytest.raises(FileNotFoundError, match=r"model expected at .*elsewhere/idx/\.\./model"):
        load_heal_index(moved / "idx", device="cpu")
    # the bundled model is recorded by name, not by this machine's site-packages path
    save_heal_index(build_faiss_index(nodes(), embed), tmp_path / "idx2", embed)
    assert json.loads((tmp_path / "idx2" / "heal_index.json").read_text())["model"]["reference"] == "default"


@pytest.mark.parametrize(
    "name, damage",
    [
        ("heal_index.json", lambda p: p.write_text("{")),
        ("heal_index.json", lambda p: p.write_text('{"format": "heal-rag-index", "format_version": 1}')),
        ("storage/docstore.json", lambda p: p.write_text('{"docstore/data": ')),
        ("storage/index_store.json", lambda p: p.write_bytes(b"\xff\xfe\x00garbage")),
        ("storage/index_store.json", lambda p: p.write_text("{}")),
        ("storage/default__vector_store.json", lambda p: p.write_bytes(p.read_bytes()[:40])),
    ],
)
def test_damaged_saved_index_files_are_one_clear_error(tmp_path, embed, name, damage):
    save_heal_index(build_faiss_index(nodes(), embed), tmp_path / "idx", embed)
    damage(tmp_path / "idx" / name)
    with pytest.raises(ValueError, match="damaged|lacks part|re-save") as caught:
        load_heal_index(tmp_path / "idx", embed_model=embed)
    assert "\n" not in str(caught.value)
    assert "idx" in str(caught.value)


def test_saved_index_files_respect_the_umask(tmp_path, embed):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        save_heal_index(build_faiss_index(nodes(), embed), tmp_path / "idx", embed)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "idx" / "heal_index.json").stat().st_mode) == 0o644

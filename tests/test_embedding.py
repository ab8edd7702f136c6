"""HEALEmbedding with real sentence-transformers and LlamaIndex objects (bundled MiniLM, tiny texts)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from llama_index.core import VectorStoreIndex
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.schema import TextNode

from heal_rag import HEALEmbedding
from heal_rag._models import default_model_path

TEXTS = [
    "The heart pumps blood through arteries and veins.",
    "Astronomers observed a distant galaxy with a telescope.",
    "Knead the dough and bake the bread in a hot oven.",
]


@pytest.fixture(scope="module")
def embed() -> HEALEmbedding:
    return HEALEmbedding(device="cpu", embed_batch_size=2)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, embed) -> Path:
    """The base model saved to a folder (as a fine-tuned model would be)."""
    path = tmp_path_factory.mktemp("model") / "m"
    embed.model.save(str(path))
    return path


def perturbed_copy(model, delta: float = 0.01):
    """A deep copy of a SentenceTransformer with one weight matrix shifted (a 'retrained' model)."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random noise: a constant shift would be undone by LayerNorm
        weight = next(other.parameters())
        weight.add_(delta * torch.randn(weight.shape, generator=generator))
    return other


def test_embeddings_match_sentence_transformers_and_are_normalised(embed):
    ours = np.asarray(embed.get_text_embedding_batch(TEXTS))  # 2 batches of size <= 2
    direct = embed.model.encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    query = np.asarray(embed.get_query_embedding(TEXTS[0]))
    np.testing.assert_allclose(query, direct[0], atol=1e-5)
    assert embed.dimension == 384
    assert embed.class_name() == "HEALEmbedding"


def test_async_methods_match_sync(embed):
    async def run():
        return (
            await embed.aget_text_embedding_batch(TEXTS),
            await embed.aget_query_embedding("a query"),
            await embed.aget_text_embedding(TEXTS[1]),
        )

    batch, query, single = asyncio.run(run())
    np.testing.assert_allclose(batch, embed.get_text_embedding_batch(TEXTS), atol=1e-5)
    np.testing.assert_allclose(query, embed.get_query_embedding("a query"), atol=1e-5)
    np.testing.assert_allclose(single, embed.get_text_embedding(TEXTS[1]), atol=1e-5)


def test_fingerprint_stable_across_save_and_load_and_changes_with_weights(embed, saved_dir):
    reloaded = HEALEmbedding.from_pretrained(saved_dir, device="cpu")
    assert len(embed.weights_fingerprint) == 64
    assert reloaded.weights_fingerprint == embed.weights_fingerprint
    retrained = HEALEmbedding(model_name=str(saved_dir), model=perturbed_copy(embed.model))
    assert retrained.weights_fingerprint != embed.weights_fingerprint
    assert reloaded.hierarchy is None  # a plain model directory has no hierarchy


def test_ingestion_cache_never_serves_stale_embeddings_after_retrain(embed, saved_dir):
    nodes = [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(TEXTS)]
    before = HEALEmbedding(model_name=str(saved_dir), model=embed.model)
    after = HEALEmbedding(model_name=str(saved_dir), model=perturbed_copy(embed.model, 0.05))
    same = HEALEmbedding(model_name=str(saved_dir), model=copy.deepcopy(embed.model))
    assert get_transformation_hash(nodes, before) == get_transformation_hash(nodes, same)
    assert get_transformation_hash(nodes, before) != get_transformation_hash(nodes, after)

    cache = IngestionCache()
    first = IngestionPipeline(transformations=[before], cache=cache).run(
        nodes=[n.model_copy() for n in nodes]
    )
    cached = IngestionPipeline(transformations=[same], cache=cache).run(nodes=[n.model_copy() for n in nodes])
    fresh = IngestionPipeline(transformations=[after], cache=cache).run(nodes=[n.model_copy() for n in nodes])
    np.testing.assert_allclose(cached[0].embedding, first[0].embedding)
    expected = after.get_text_embedding_batch(TEXTS)
    np.testing.assert_allclose([n.embedding for n in fresh], expected, atol=1e-5)
    assert not np.allclose(fresh[0].embedding, first[0].embedding, atol=1e-4)


def test_vector_store_index_build_and_retrieve(embed):
    nodes = [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex(nodes, embed_model=embed)
    hits = index.as_retriever(similarity_top_k=1).retrieve("Which instrument do astronomers use?")
    assert hits[0].node.node_id == "n1"
    assert 0.0 < hits[0].score <= 1.0


def test_prompts_are_taken_from_the_model(embed):
    model = copy.deepcopy(embed.model)
    model.prompts = {"query": "query: ", "document": "passage: "}
    prompted = HEALEmbedding(model=model)
    assert prompted.query_prompt == "query: " and prompted.text_prompt == "passage: "
    np.testing.assert_allclose(
        prompted.get_query_embedding("heart"),
        model.encode("query: heart", normalize_embeddings=True),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        prompted.get_text_embedding("heart"),
        model.encode("passage: heart", normalize_embeddings=True),
        atol=1e-5,
    )
    explicit = HEALEmbedding(model=model, query_prompt="q> ")
    assert explicit.query_prompt == "q> "


def test_max_length_truncates(embed):
    short = HEALEmbedding(model=copy.deepcopy(embed.model), max_length=4)
    assert short.model.max_seq_length == 4
    long_text = TEXTS[0] + " " + TEXTS[1]
    np.testing.assert_allclose(
        short.get_text_embedding(long_text), short.get_text_embedding(TEXTS[0]), atol=1e-5
    )  # the first 4 tokens (with CLS/SEP) are shared


def test_hierarchy_property_reads_heal_hierarchy_folder(tmp_path, embed, saved_dir, small_texts):
    from heal_rag.hierarchy import HNMFk
    from heal_rag.model_dir import save_model_dir

    hierarchy = (
        HNMFk(
            depth=1,
            k_range=(2, 3),
            min_topic_size=2,
            n_perturbations=2,
            min_df=1,
            max_df=1.0,
            show_progress=False,
        )
        .fit(small_texts)
        .hierarchy_
    )
    model_dir = tmp_path / "heal_model"
    save_model_dir(embed.model, model_dir, hierarchy=hierarchy, config={})
    loaded = HEALEmbedding.from_pretrained(model_dir, device="cpu")
    assert loaded.hierarchy is not None
    assert loaded.hierarchy.fingerprint == hierarchy.fingerprint
    # a heal_hierarchy/ that no heal_config.json vouches for is refused (issue 13), not served
    plain = tmp_path / "plain_model"
    embed.model.save(str(plain))
    hierarchy.save(plain / "heal_hierarchy")
    with pytest.raises(ValueError, match="no heal_config.json"):
        HEALEmbedding.from_pretrained(plain, device="cpu")


def test_damaged_model_files_are_one_clear_error(tmp_path, saved_dir):
    import shutil

    for name, damage in (
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        ("config.json", lambda p: p.write_text("{broken")),
        ("tokenizer.json", lambda p: p.write_text(p.read_text()[:100])),
        ("modules.json", lambda p: p.write_text("[{")),
    ):
        folder = tmp_path / name
        shutil.copytree(saved_dir, folder)
        damage(folder / name)
        with pytest.raises(ValueError, match=f"cannot be loaded: {folder / name}.*(JSON|truncated)"):
            HEALEmbedding(str(folder), device="cpu")
    with pytest.raises(ValueError, match="is a file; give the model's folder"):
        HEALEmbedding(str(saved_dir / "modules.json"), device="cpu")
    with pytest.raises(ValueError, match="not a local folder, and the model hub is offline"):
        HEALEmbedding("some-org/not-a-cached-model", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_gpu_requested_but_absent_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        HEALEmbedding(default_model_path(), device="cuda")


def test_bad_device_and_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="'device' parameter"):
        HEALEmbedding(device="tpu")
    with pytest.raises(TypeError, match="model_name"):
        HEALEmbedding(model_name=123)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        HEALEmbedding(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ValueError):
        HEALEmbedding(device="cpu", embed_batch_size=0)

"""Save and load a HEAL index in one call: storage (FAISS included), hierarchy and model reference.

Layout of a saved folder::

    heal_index.json     manifest: format version, model reference + weights fingerprint, hierarchy and
                        corpus fingerprints, vector store class, versions
    storage/            LlamaIndex StorageContext.persist() output (docstore, index store, vector store)
    heal_hierarchy/     Hierarchy.save() output (absent for an index without a hierarchy)

Loading checks that the parts belong together: the model's weights, the hierarchy, the stored corpus and the
stored vectors (with their order) must have the fingerprints recorded when the index was saved, otherwise a
clear error says which one differs. A model that lives inside or beside the index folder is recorded by a
path relative to it (the bundled model as ``"default"``), so the folders can be moved or copied together.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heal_rag._artifacts import HIERARCHY_DIR
from heal_rag._io import atomic_write_json, loads_json, make_temp_dir
from heal_rag._version import __version__
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError, OutputExistsError
from heal_rag.integrations._faiss import faiss_gpu_count, import_faiss, is_gpu_index, to_cpu_index
from heal_rag.integrations._stores import index_embed_model, is_faiss_store, is_local_store, is_simple_store
from heal_rag.integrations.embedding import HEALEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core import VectorStoreIndex

    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

FORMAT = "heal-rag-index"
FORMAT_VERSION = 1
MANIFEST = "heal_index.json"
STORAGE_DIR = "storage"


def corpus_fingerprint(index: VectorStoreIndex) -> str:
    """SHA-256 over the indexed nodes (ids and content hashes) and the number of stored vectors."""
    digest = hashlib.sha256()
    nodes_dict = index.index_struct.nodes_dict
    docs = index.docstore.docs
    for node_id in sorted(docs):
        digest.update(f"{node_id}\x00{docs[node_id].hash}\x00".encode())
    digest.update(f"vectors={len(nodes_dict)}".encode())
    return digest.hexdigest()


def vectors_fingerprint(index: VectorStoreIndex, chunk: int = 65_536) -> str | None:
    """SHA-256 over the stored vectors in their store order, each with the node id the index maps it to.

    A vector store copied from another save (other nodes, the same nodes in another order, another model)
    changes it even when the docstore, the vector count and the dimension match. ``None`` for stores whose
    vectors cannot be read back (remote stores, FAISS indexes without reconstruction).
    """
    store = index.vector_store
    nodes_dict = index.index_struct.nodes_dict
    digest = hashlib.sha256()
    if is_faiss_store(store):
        client = store.client
        n = int(client.ntotal)
        try:
            for start in range(0, n, chunk):
                block = np.ascontiguousarray(client.reconstruct_n(start, min(chunk, n - start)), dtype="<f4")
                for offset, row in enumerate(block):
                    digest.update(f"{nodes_dict.get(str(start + offset))}\x00".encode())
                    digest.update(row.tobytes())
        except RuntimeError:  # an index type without reconstruction (e.g. IVF without a direct map)
            return None
    elif is_simple_store(store):
        embeddings = store.data.embedding_dict
        for node_id in sorted(embeddings):
            digest.update(f"{node_id}\x00".encode())
            digest.update(np.asarray(embeddings[node_id], dtype="<f4").tobytes())
    else:
        return None
    return digest.hexdigest()


def _model_reference(embed: HEALEmbedding, directory: Path) -> str:
    """Return the model as the manifest records it: ``"default"``, relative to the index, or as given."""
    from heal_rag._models import default_model_path, resolve_model_name

    path = Path(resolve_model_name(embed.model_name))
    if not path.exists():
        return embed.model_name  # a hub name
    path = path.resolve()
    if path == Path(default_model_path()).resolve():
        return "default"  # the bundled model: wherever this machine installed it
    index_dir = directory.resolve()
    if path.is_relative_to(index_dir.parent):  # inside or beside the index folder: moves with it
        return Path(os.path.relpath(path, index_dir)).as_posix()
    return str(path)


def _resolve_reference(reference: str, directory: Path) -> tuple[str, str]:
    """Return (what to load, where it was expected) for a recorded model reference."""
    if reference == "default" or Path(reference).is_absolute():
        return reference, reference
    candidate = directory / reference
    if reference.startswith(".") or candidate.exists():  # recorded relative to the index folder
        return str(candidate), f"{candidate} ({reference!r} relative to the index folder)"
    return reference, reference  # a hub name


_STORAGE_FILES = ("docstore.json", "index_store.json", "default__vector_store.json", "graph_store.json")


def _damaged_storage_file(storage: Path, store_name: str | None) -> str | None:
    """Name the first unreadable file of a saved storage folder, or None."""
    for name in _STORAGE_FILES:
        file = storage / name
        if name == "default__vector_store.json" and store_name == "FaissVectorStore":
            continue  # a binary FAISS file, checked by faiss itself
        if not file.is_file():
            if name in {"docstore.json", "index_store.json"}:
                return f"{file} is missing"
            continue
        try:
            loads_json(file.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            return f"{file} is not valid JSON ({str(error).splitlines()[0][:80]})"
    return None


def _storage_error(storage: Path, store_name: str | None, error: BaseException) -> ValueError:
    damaged = _damaged_storage_file(storage, store_name)
    if damaged is None:
        reason = str(error).splitlines()[0][:200] if str(error) else ""
        damaged = f"its files do not load ({type(error).__name__}: {reason})"
    return InvalidValueError(
        f"The saved index in {storage.parent} is damaged: {damaged}. Re-save the index (save_heal_index) or "
        "copy the whole folder again."
    )


def save_heal_index(
    index: VectorStoreIndex,
    directory: str | os.PathLike[str],
    embed_model: HEALEmbedding | None = None,
    *,
    hierarchy: Hierarchy | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an index, its hierarchy and its model reference together (atomically: a folder swap).

    Args:
        index: the ``VectorStoreIndex`` (FAISS or the simple in-memory store; other stores keep their vectors
            in their own service, and only the docstore and the references are saved).
        directory: target folder.
        embed_model: the ``HEALEmbedding`` the index was built with (default: the index's own).
        hierarchy: the topic hierarchy (default: ``embed_model.hierarchy``; None saves a flat index).
        overwrite: replace an existing saved index in ``directory``.

    Returns:
        The folder written.

    Example:
        >>> save_heal_index(index, "my_index", embed)  # doctest: +SKIP
        >>> index, embed, hierarchy = load_heal_index("my_index")  # doctest: +SKIP

    """
    embed = embed_model if embed_model is not None else index_embed_model(index)
    if not isinstance(embed, HEALEmbedding):
        raise InvalidTypeError(
            "save_heal_index needs the HEALEmbedding the index was built with (to record the model and its "
            f"weights fingerprint). Got {type(embed).__name__}; pass embed_model=HEALEmbedding(...)."
        )
    index_embed = index_embed_model(index)
    if (
        isinstance(index_embed, HEALEmbedding)
        and index_embed.weights_fingerprint != embed.weights_fingerprint
    ):
        raise InvalidValueError(
            "embed_model is not the model this index was built with (weights fingerprints differ). Pass the "
            "index's own embedding model, or re-index with this one."
        )
    if hierarchy is None:
        hierarchy = embed.hierarchy
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MANIFEST).exists():
            raise OutputExistsError(
                f"{directory} exists and is not a saved HEAL index; choose an empty or new folder."
            )
        if not overwrite:
            raise OutputExistsError(
                f"{directory} already holds a saved HEAL index; pass overwrite=True to replace it."
            )
    store = index.vector_store
    store_name = type(store).__name__
    tmp = make_temp_dir(directory)  # .NAME.tmp-XXXXXXXX; stale ones of a killed save are removed first
    try:
        gpu_index = None
        if is_faiss_store(store) and is_gpu_index(store.client):
            # faiss writes CPU indexes only: persist a CPU copy, keep the GPU index in use
            gpu_index = store._faiss_index
            store._faiss_index = to_cpu_index(gpu_index)
        try:
            index.storage_context.persist(persist_dir=str(tmp / STORAGE_DIR))
        finally:
            if gpu_index is not None:
                store._faiss_index = gpu_index
        if not is_local_store(store):
            logger.warning(
                "%s keeps its vectors outside this folder; pass the same vector store to load_heal_index().",
                store_name,
            )
        if hierarchy is not None:
            hierarchy.save(tmp / HIERARCHY_DIR)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "heal_rag_version": __version__,
            "model": {
                "reference": _model_reference(embed, directory),
                "model_name": embed.model_name,
                "weights_fingerprint": embed.weights_fingerprint,
                "dimension": embed.dimension,
                "normalize": embed.normalize,
                "query_prompt": embed.query_prompt,
                "text_prompt": embed.text_prompt,
                "max_length": embed.max_length,
                "embed_batch_size": embed.embed_batch_size,
            },
            "hierarchy": None if hierarchy is None else {"fingerprint": hierarchy.fingerprint},
            "corpus": {"fingerprint": corpus_fingerprint(index), "n_nodes": len(index.docstore.docs)},
            "vectors": {"fingerprint": vectors_fingerprint(index)},
            "vector_store": store_name,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise InputNotFoundError(
            f"{directory} is not a saved HEAL index (no {MANIFEST}); save one with save_heal_index()."
        )
    try:
        manifest = loads_json(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidValueError(
            f"{path} is damaged (not valid JSON: {str(error).splitlines()[0][:80]}); re-save the index."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidValueError(f"{path} is not a HEAL index manifest; re-save the index.")
    model, corpus = manifest.get("model"), manifest.get("corpus")
    if not (
        isinstance(model, dict)
        and isinstance(model.get("weights_fingerprint"), str)
        and isinstance(model.get("reference"), str)
        and isinstance(model.get("dimension"), int)
        and isinstance(corpus, dict)
        and isinstance(corpus.get("fingerprint"), str)
    ):
        raise InvalidValueError(
            f"{path} lacks part of its model or corpus record (reference, weights fingerprint, dimension, "
            "corpus fingerprint); re-save the index."
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InvalidValueError(
            f"{directory} was saved in HEAL index format {version!r}; this heal-rag reads up to "
            f"{FORMAT_VERSION}. "
            "Upgrade heal-rag."
        )
    return manifest


def load_heal_index(
    directory: str | os.PathLike[str],
    *,
    embed_model: HEALEmbedding | None = None,
    hierarchy: Hierarchy | None = None,
    vector_store: Any = None,
    device: str | None = None,
    use_gpu: bool | None = None,
) -> tuple[VectorStoreIndex, HEALEmbedding, Hierarchy | None]:
    """Load an index saved by :func:`save_heal_index` and check that its parts belong together.

    Args:
        directory: the saved folder.
        embed_model: use this embedding instead of loading the recorded model (must have the same weights).
        hierarchy: use this hierarchy instead of the saved one (must be the same tree).
        vector_store: the vector store, for stores that keep vectors outside the folder (e.g. Qdrant).
        device: device for the embedding model (see :class:`HEALEmbedding`).
        use_gpu: put a FAISS index on GPU (``None``: when faiss-gpu and a GPU are present).

    Returns:
        ``(index, embed_model, hierarchy)``; ``hierarchy`` is None for an index saved without one.

    Raises:
        ValueError: the model, hierarchy or stored corpus differs from the one recorded at save time.

    """
    from llama_index.core import StorageContext, load_index_from_storage

    directory = Path(directory)
    manifest = _read_manifest(directory)
    model = manifest["model"]
    if embed_model is None:
        reference, expected = _resolve_reference(str(model.get("reference")), directory)
        try:
            embed_model = HEALEmbedding(
                reference,
                device=device,
                embed_batch_size=model.get("embed_batch_size", 32),
                normalize=model.get("normalize", True),
                query_prompt=model.get("query_prompt"),
                text_prompt=model.get("text_prompt"),
                max_length=model.get("max_length"),
            )
        except (OSError, ValueError) as error:
            raise InputNotFoundError(
                f"The index in {directory} was built with the model expected at {expected}, which cannot be "
                f"loaded ({str(error).splitlines()[0]}). Put the model there, or pass "
                "embed_model=HEALEmbedding(<the same model>)."
            ) from error
    if embed_model.weights_fingerprint != model["weights_fingerprint"]:
        raise InvalidValueError(
            f"The embedding model {embed_model.model_name!r} is not the model the index in {directory} "
            "was built "
            f"with (weights fingerprint {embed_model.weights_fingerprint[:12]}, recorded "
            f"{model['weights_fingerprint'][:12]}): it was retrained or replaced since. Re-index the corpus "
            "with the new model, or load the original model."
        )

    recorded_h = (manifest.get("hierarchy") or {}).get("fingerprint")
    if hierarchy is None and (directory / HIERARCHY_DIR).is_dir():
        from heal_rag.hierarchy import Hierarchy

        hierarchy = Hierarchy.load(directory / HIERARCHY_DIR)
    if recorded_h is not None and hierarchy is None:
        raise InputNotFoundError(
            f"{directory}/{HIERARCHY_DIR} is missing but the manifest records a hierarchy."
        )
    if hierarchy is not None and recorded_h is not None and hierarchy.fingerprint != recorded_h:
        raise InvalidValueError(
            f"The hierarchy (fingerprint {hierarchy.fingerprint[:12]}) is not the one the index in "
            f"{directory} was "
            f"saved with (fingerprint {recorded_h[:12]}). Use the saved hierarchy, or rebuild and "
            "re-save the index."
        )

    storage = directory / STORAGE_DIR
    store_name = manifest.get("vector_store")
    faiss_loaded_here = vector_store is None and store_name == "FaissVectorStore"
    try:
        if vector_store is None:
            if store_name == "FaissVectorStore":
                from llama_index.vector_stores.faiss import FaissVectorStore

                vector_store = FaissVectorStore.from_persist_dir(str(storage))
            elif store_name != "SimpleVectorStore":
                raise InvalidValueError(
                    f"The index in {directory} used a {store_name}, which keeps its vectors outside the "
                    "folder; pass vector_store=<the same store> to load_heal_index()."
                )
            if not storage.is_dir():
                raise InputNotFoundError(f"{storage} is missing")
        context = (
            StorageContext.from_defaults(persist_dir=str(storage))
            if vector_store is None
            else StorageContext.from_defaults(persist_dir=str(storage), vector_store=vector_store)
        )
        index = load_index_from_storage(context, embed_model=embed_model)
    except ValueError as error:
        if "keeps its vectors outside" in str(error):
            raise
        raise _storage_error(storage, store_name, error) from error
    except (KeyError, TypeError, RuntimeError, OSError) as error:  # what llama-index/faiss raise on bad files
        raise _storage_error(storage, store_name, error) from error
    recorded_c = manifest["corpus"]["fingerprint"]
    if corpus_fingerprint(index) != recorded_c:
        raise InvalidValueError(
            f"The stored corpus in {storage} does not match the manifest (fingerprint "
            f"{corpus_fingerprint(index)[:12]}"
            f" vs {recorded_c[:12]}): the storage folder was replaced or edited. Re-save the index."
        )
    if store_name == "FaissVectorStore":
        ntotal = int(index.vector_store.client.ntotal)
        if ntotal != len(index.index_struct.nodes_dict):
            raise InvalidValueError(
                f"The FAISS index in {storage} holds {ntotal} vectors but the index store maps "
                f"{len(index.index_struct.nodes_dict)}: the vector file belongs to another corpus. "
                "Re-save the index."
            )
        if int(index.vector_store.client.d) != int(model["dimension"]):
            raise InvalidValueError(
                f"The FAISS index holds {index.vector_store.client.d}-dimensional vectors but the "
                "model produces "
                f"{model['dimension']}-dimensional ones."
            )
    recorded_v = (manifest.get("vectors") or {}).get("fingerprint")
    if "vectors" not in manifest:
        logger.warning(
            "%s was saved by an older heal-rag without a fingerprint of its vectors, so a vector store "
            "copied from another save cannot be detected; re-save it (save_heal_index) to add one.",
            directory,
        )
    elif recorded_v is not None:
        found_v = vectors_fingerprint(index)
        if found_v is not None and found_v != recorded_v:
            raise InvalidValueError(
                f"The stored vectors in {storage} are not the ones saved with this index (fingerprint "
                f"{found_v[:12]} vs {recorded_v[:12]}): the vector store was replaced by one from another "
                "save (other documents, another order or another model). Re-save the index."
            )
    if faiss_loaded_here and use_gpu is not False:
        faiss = import_faiss()
        # checked on the CPU copy; serve from the GPU (an HNSW index stays on CPU: faiss has no GPU HNSW)
        if faiss_gpu_count() > 0 and not isinstance(index.vector_store.client, faiss.IndexHNSW):
            index.vector_store._faiss_index = faiss.index_cpu_to_gpu(
                faiss.StandardGpuResources(), 0, index.vector_store.client
            )
    return index, embed_model, hierarchy

"""HEALEmbedding: a LlamaIndex embedding over a sentence-transformers model (HEAL fine-tuned or any other)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from heal_rag._artifacts import HIERARCHY_DIR
from heal_rag._models import load_sentence_transformer, resolve_model_name
from heal_rag.backends import (
    check_backend,
    check_onnx_device,
    load_onnx_sentence_transformer,
)
from heal_rag.errors import InvalidTypeError, InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

HIERARCHY_SUBDIR = HIERARCHY_DIR  # the old name of heal_rag._artifacts.HIERARCHY_DIR
_DEVICES = ("cpu", "cuda", "mps")


def resolve_device(device: str | None) -> str:
    """Return the torch device to use, or raise a clear error when the requested one is absent.

    Args:
        device: ``"cpu"``, ``"cuda"`` (optionally ``"cuda:N"``), ``"mps"``, or ``None`` to pick the best
            available one (CUDA, then MPS, then CPU).

    Raises:
        ValueError: for an unknown device name, or a GPU device that torch cannot see.

    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    kind, _, index = str(device).partition(":")
    if kind not in _DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise InvalidValueError(
            f"The 'device' parameter of HEALEmbedding must be one of 'cpu', 'cuda', 'cuda:N', 'mps' or None "
            f"(automatic). Got {device!r} instead."
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InvalidValueError(
                f"device={device!r} was requested but torch sees no CUDA GPU (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}). Use device='cpu', or device=None to pick "
                "the best available device, or install a CUDA build of torch on a machine with a GPU."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise InvalidValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidValueError(
                "device='mps' was requested but the Apple MPS backend is not available on this machine. "
                "Use device='cpu' or device=None (automatic)."
            )
    return str(device)


def weights_fingerprint(model: SentenceTransformer) -> str:
    """SHA-256 over the parameter names, dtypes, shapes and bytes of a model's state dict.

    It depends only on the weights (not on the file format or the folder they were loaded from), so a model
    that is saved and loaded again keeps its fingerprint, and any retrain changes it.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class HEALEmbedding(BaseEmbedding):
    """LlamaIndex embedding backed by a (HEAL fine-tuned) sentence-transformers model.

    Loads a saved HEAL model directory (a sentence-transformers folder plus ``heal_hierarchy/``), or any
    sentence-transformers model name or path. Embeddings are batched, L2-normalised by default, and use the
    model's own query/document prompts when it defines them. ``weights_fingerprint`` is a public field, so
    LlamaIndex's ``IngestionCache`` (which hashes the transformation's fields) never serves embeddings of
    older
    weights after a retrain saved under the same name.

    Args:
        model_name: a model folder or hub name; ``None`` means the bundled offline all-MiniLM-L6-v2.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``None`` (best available).
        embed_batch_size: texts per forward pass.
        normalize: L2-normalise outputs (needed for inner-product vector stores such as FAISS IndexFlatIP).
        query_prompt: text prepended to queries; default the model's ``"query"`` prompt, if any.
        text_prompt: text prepended to documents; default the model's ``"document"``/``"passage"`` prompt.
        max_length: maximum tokens per text (the model's own limit when ``None``).
        backend: ``"torch"``, or ``"onnx"`` to encode with the folder's ONNX export in ONNX Runtime on the
            CPU (``heal-rag export DIR --backend onnx --quantize int8``; the int8 file when present, about
            2.5-3x faster on CPU). Its ``weights_fingerprint`` is the ONNX file's, never the torch one.
        onnx_file: with ``backend="onnx"``: the file under ``onnx/`` to use (e.g. ``"model.onnx"`` for fp32).
        model: an already loaded ``SentenceTransformer`` to wrap instead of loading ``model_name``.

    Example:
        >>> from llama_index.core import Document, VectorStoreIndex
        >>> embed = HEALEmbedding.from_pretrained("runs/heal-model")  # doctest: +SKIP
        >>> docs = [Document(text="...")]
        >>> index = VectorStoreIndex.from_documents(docs, embed_model=embed)  # doctest: +SKIP
        >>> embed.hierarchy  # the topic tree saved with the model, or None  # doctest: +SKIP
        >>> fast = HEALEmbedding.from_pretrained("runs/heal-model", backend="onnx")  # doctest: +SKIP

    """

    model_name: str = Field(default="default", description="Model folder or hub name.")
    device: str | None = Field(default=None, description="Torch device: cpu, cuda, cuda:N, mps, None=auto.")
    normalize: bool = Field(default=True, description="L2-normalise the embeddings.")
    query_prompt: str | None = Field(default=None, description="Prompt prepended to queries.")
    text_prompt: str | None = Field(default=None, description="Prompt prepended to documents.")
    max_length: int | None = Field(default=None, gt=0, description="Maximum tokens per text.")
    backend: str = Field(default="torch", description="Encoder: torch, or onnx (ONNX Runtime on the CPU).")
    onnx_file: str | None = Field(default=None, description="File under onnx/ (default: int8 when present).")
    weights_fingerprint: str = Field(
        default="", description="SHA-256 of the model weights (computed at load; part of the cache key)."
    )

    _model: Any = PrivateAttr(default=None)
    _hierarchy: Any = PrivateAttr(default=None)
    _hierarchy_loaded: bool = PrivateAttr(default=False)

    def __init__(
        self,
        model_name: str | None = None,
        device: str | None = None,
        embed_batch_size: int = 32,
        normalize: bool = True,
        query_prompt: str | None = None,
        text_prompt: str | None = None,
        max_length: int | None = None,
        *,
        backend: str = "torch",
        onnx_file: str | None = None,
        model: SentenceTransformer | None = None,
        **kwargs: Any,
    ) -> None:
        if model_name is not None and not isinstance(model_name, (str, Path)):
            raise InvalidTypeError(
                "The 'model_name' parameter of HEALEmbedding must be a model folder or hub name (str "
                "or Path). "
                f"Got {type(model_name).__name__} instead; pass a loaded model as model=..."
            )
        backend = check_backend(backend)
        if backend == "onnx":
            if model is not None:
                raise InvalidValueError(
                    "backend='onnx' loads the ONNX export of a model folder; it cannot wrap an already "
                    "loaded model. Pass model_name=DIR instead of model=..."
                )
            check_onnx_device(device)
            device = "cpu"
        resolved_device = resolve_device(device) if model is None else str(model.device)
        hierarchy: Hierarchy | None = None
        hierarchy_checked = False
        if model is None:
            path = resolve_model_name(None if model_name is None else str(model_name))
            # the cheap checks of a saved HEAL directory first (one loader: load_model_dir's), before the
            # seconds spent loading weights
            hierarchy = load_directory_hierarchy(path)
            hierarchy_checked = True
            if backend == "onnx":
                model = load_onnx_sentence_transformer(path, file_name=onnx_file)
            else:
                model = load_sentence_transformer(path, device=resolved_device)
        if max_length is not None:
            model.max_seq_length = int(max_length)
        prompts = dict(getattr(model, "prompts", None) or {})
        if query_prompt is None:
            query_prompt = prompts.get("query") or None
        if text_prompt is None:
            text_prompt = prompts.get("document") or prompts.get("passage") or None
        name = str(model_name) if model_name is not None else "default"
        super().__init__(
            model_name=name,
            device=resolved_device,
            embed_batch_size=embed_batch_size,
            normalize=normalize,
            query_prompt=query_prompt,
            text_prompt=text_prompt,
            max_length=max_length,
            backend=backend,
            onnx_file=onnx_file,
            weights_fingerprint=getattr(model, "heal_onnx_fingerprint", None) or weights_fingerprint(model),
            **kwargs,
        )
        self._model = model
        if hierarchy_checked:
            self._hierarchy, self._hierarchy_loaded = hierarchy, True

    @classmethod
    def from_pretrained(cls, model_dir_or_name: str | Path, **kwargs: Any) -> HEALEmbedding:
        """Load a saved HEAL model directory (or any sentence-transformers model name or path).

        Args:
            model_dir_or_name: folder written by the fine-tune engine, or a sentence-transformers model.
            **kwargs: the other constructor arguments (device, embed_batch_size, ...).

        """
        return cls(model_name=str(model_dir_or_name), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "HEALEmbedding"

    @property
    def model(self) -> SentenceTransformer:
        """The wrapped ``SentenceTransformer``."""
        return self._model

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return int(self._model.get_embedding_dimension())

    @property
    def hierarchy(self) -> Hierarchy | None:
        """The topic hierarchy saved with the model directory, or ``None`` when it has none."""
        if not self._hierarchy_loaded:
            self._hierarchy = load_directory_hierarchy(self.model_name)
            self._hierarchy_loaded = True
        return self._hierarchy

    # --- embedding ---------------------------------------------------------------------------------------
    def _encode(self, texts: list[str], prompt: str | None) -> list[Embedding]:
        if not texts:
            return []
        vectors = self._model.encode(
            list(texts),
            prompt=prompt,
            batch_size=self.embed_batch_size,
            show_progress_bar=False,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
        )
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([query], self.query_prompt)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text], self.text_prompt)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts, self.text_prompt)

    def get_query_embeddings(self, queries: list[str]) -> list[Embedding]:
        """Embed many queries in batches (with the query prompt)."""
        return self._encode(queries, self.query_prompt)

    # Async: run the forward pass in a worker thread so that an event loop (e.g. a FastAPI server) is not
    # blocked while the model computes.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def load_directory_hierarchy(model_dir: str | Path) -> Hierarchy | None:
    """Return the hierarchy saved in a HEAL model directory, or ``None`` (hub name, plain or flat model).

    One loader: a folder with ``heal_config.json`` is read by :func:`heal_rag.load_model_dir`, with all its
    checks (valid config, hierarchy present when recorded, fingerprint equal to the recorded one). A
    ``heal_hierarchy/`` that no ``heal_config.json`` vouches for cannot be checked against the model, so it
    is refused rather than served.

    Raises:
        ValueError: damaged ``heal_config.json``, a hierarchy that is not the recorded one, or a
            ``heal_hierarchy/`` without ``heal_config.json``.
        FileNotFoundError: the config records a hierarchy but ``heal_hierarchy/`` is missing.

    """
    from heal_rag.model_dir import CONFIG_FILE, load_model_dir

    path = Path(resolve_model_name(str(model_dir)))
    if not path.is_dir():
        return None  # a hub name: nothing is saved beside it
    if (path / CONFIG_FILE).exists():
        return load_model_dir(path).hierarchy
    if (path / HIERARCHY_DIR).is_dir():
        raise InvalidValueError(
            f"{path} holds {HIERARCHY_DIR}/ but no {CONFIG_FILE}, so nothing records which hierarchy this "
            "model was trained with. Copy the whole model directory (heal_config.json included), or load the "
            "hierarchy yourself (Hierarchy.load) and pass it to HierarchicalRetriever(hierarchy=...)."
        )
    return None

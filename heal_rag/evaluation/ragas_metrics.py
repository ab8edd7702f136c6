"""RAGAS metric objects: retrieval relevance without an LLM, and an opt-in LLM judge for hallucination.

RAGAS is an optional dependency (``pip install "heal-rag[eval]"``) imported lazily. Two rules hold here:

- **No silent remote fallback.** ``ragas.evaluate()`` quietly builds an OpenAI client for any LLM metric
  that has no ``llm``. heal-rag never calls it: every metric object is built with an explicit LLM and
  embeddings and scored directly, and :class:`RagasJudge` refuses to start without both.
- **No usage tracking by default.** ``RAGAS_DO_NOT_TRACK=true`` is set before ragas is imported, unless the
  user has set the variable to something else.

Example:
    >>> from llama_index.core.llms import MockLLM  # doctest: +SKIP
    >>> judge = RagasJudge(llm=my_llamaindex_llm, embeddings=my_llamaindex_embedding)  # doctest: +SKIP
    >>> scores, errors = judge.score(sample)  # doctest: +SKIP

"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import os
import warnings
from collections.abc import Coroutine, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from heal_rag._optional import require
from heal_rag.errors import InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import LLM
    from ragas import SingleTurnSample

logger = logging.getLogger(__name__)

__all__ = [
    "import_ragas",
    "ragas_available",
    "RETRIEVAL_METRICS",
    "JUDGE_METRICS",
    "RetrievalMetrics",
    "RagasJudge",
    "run_sync",
]

# ragas' own metric names, kept as-is so results can be traced to the RAGAS documentation
RETRIEVAL_METRICS = (
    "id_based_context_precision",
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "non_llm_context_recall",
)
JUDGE_METRICS = ("faithfulness", "answer_correctness", "answer_relevancy")

_T = TypeVar("_T")


def import_ragas() -> ModuleType:
    """Import ragas with usage tracking off (unless the user set ``RAGAS_DO_NOT_TRACK`` themselves)."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    return require("ragas", extra="eval", purpose="RAGAS metrics")


def ragas_available() -> bool:
    """Whether ragas can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ragas") is not None


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from synchronous code, also inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # a loop is already running in this thread: run ours in a worker thread with its own loop
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _as_float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _threaded_llm_wrapper(llm: LLM, run_config: Any, executor: concurrent.futures.Executor) -> Any:
    """Ragas' LlamaIndex wrapper, with the LLM's blocking ``complete`` run in a worker thread.

    Many LlamaIndex LLMs (every ``CustomLLM``, local runtimes) implement ``acomplete`` by calling the blocking
    ``complete`` on the event loop, which makes RAGAS' ``asyncio.wait_for`` timeouts unable to fire.
    Running the
    call in a thread keeps the loop free, so a hung judge call is abandoned after ``timeout`` seconds.
    """
    from langchain_core.outputs import Generation, LLMResult
    from ragas.llms.base import LlamaIndexLLMWrapper

    class _ThreadedLlamaIndexLLMWrapper(LlamaIndexLLMWrapper):
        async def agenerate_text(  # type: ignore[override]
            self,
            prompt: Any,
            n: int = 1,
            temperature: float | None = 0.01,
            stop: list[str] | None = None,
            callbacks: Any = None,
        ) -> LLMResult:
            if temperature is None:
                temperature = self.get_temperature(n)
            kwargs = self.check_args(n, temperature, stop, callbacks)
            if self.bypass_temperature:
                kwargs.pop("temperature", None)
            call = functools.partial(self.llm.complete, prompt.to_string(), **kwargs)
            response = await asyncio.get_running_loop().run_in_executor(executor, call)
            return LLMResult(generations=[[Generation(text=response.text)]])

    return _ThreadedLlamaIndexLLMWrapper(llm, run_config=run_config)


class RetrievalMetrics:
    """RAGAS retrieval-relevance metrics that need no LLM.

    - ``id_based_context_precision`` / ``id_based_context_recall``: share of retrieved document ids that are
      relevant / of relevant ids that were retrieved (``retrieved_context_ids`` vs ``reference_context_ids``).
    - ``non_llm_context_precision_with_reference`` / ``non_llm_context_recall``: the same judged by string
      similarity (rapidfuzz Levenshtein, threshold 0.5) between ``retrieved_contexts`` and the relevant
      documents' texts (``reference_contexts``).

    Example:
        >>> scores = RetrievalMetrics().score(sample)  # doctest: +SKIP

    """

    def __init__(self, names: Sequence[str] = RETRIEVAL_METRICS) -> None:
        unknown = [n for n in names if n not in RETRIEVAL_METRICS]
        if unknown:
            raise InvalidValueError(
                f"Unknown retrieval metric(s) {unknown}; choose from {list(RETRIEVAL_METRICS)}."
            )
        import_ragas()
        from ragas.metrics._context_precision import (
            IDBasedContextPrecision,
            NonLLMContextPrecisionWithReference,
        )
        from ragas.metrics._context_recall import IDBasedContextRecall, NonLLMContextRecall

        factories = {
            "id_based_context_precision": IDBasedContextPrecision,
            "id_based_context_recall": IDBasedContextRecall,
            "non_llm_context_precision_with_reference": NonLLMContextPrecisionWithReference,
            "non_llm_context_recall": NonLLMContextRecall,
        }
        self.metrics = {name: factories[name]() for name in names}

    @property
    def names(self) -> list[str]:
        """Metric names in order."""
        return list(self.metrics)

    def score(self, sample: SingleTurnSample) -> dict[str, float]:
        """Score one sample; a metric whose inputs are missing (no relevant documents) gives NaN."""

        async def _all() -> dict[str, float]:
            out: dict[str, float] = {}
            for name, metric in self.metrics.items():
                needs_ids = name.startswith("id_based")
                inputs = sample.reference_context_ids if needs_ids else sample.reference_contexts
                retrieved = sample.retrieved_context_ids if needs_ids else sample.retrieved_contexts
                if not inputs or not retrieved:
                    out[name] = math.nan
                    continue
                out[name] = _as_float(await metric.single_turn_ascore(sample))
            return out

        return run_sync(_all())


class RagasJudge:
    """An LLM judge scoring hallucination and answer quality with RAGAS metric objects.

    Metrics: ``faithfulness`` (are the answer's statements supported by the retrieved contexts?),
    ``answer_correctness`` (agreement with the reference answer; skipped for questions without one) and
    ``answer_relevancy`` (RAGAS ResponseRelevancy: does the answer address the question? needs embeddings).

    Args:
        llm: any LlamaIndex LLM (local or remote); wrapped with ragas' ``LlamaIndexLLMWrapper``.
        embeddings: any LlamaIndex embedding, wrapped with ragas' ``LlamaIndexEmbeddingsWrapper``. Required:
            ragas would otherwise pick a remote default.
        metrics: which judge metrics to run.
        timeout: seconds allowed for one metric on one sample (RAGAS ``RunConfig.timeout``).
        max_retries: retries of a failed LLM call (RAGAS ``RunConfig.max_retries``).
        max_wait: longest wait between retries, in seconds.
        strictness: questions generated per answer by ``answer_relevancy``.
        seed: RAGAS ``RunConfig.seed``.
        name: a label for reports (defaults to the LLM's model name).

    Example:
        >>> judge = RagasJudge(llm=llm, embeddings=embed_model, timeout=60)  # doctest: +SKIP
        >>> scores, errors = judge.score(sample)  # doctest: +SKIP

    """

    def __init__(
        self,
        llm: LLM,
        embeddings: BaseEmbedding,
        *,
        metrics: Sequence[str] = JUDGE_METRICS,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_wait: float = 10.0,
        strictness: int = 1,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        from llama_index.core.base.embeddings.base import BaseEmbedding as _BaseEmbedding
        from llama_index.core.llms import LLM as _LLM

        if not isinstance(llm, _LLM):
            raise InvalidValueError(
                f"The judge must be a LlamaIndex LLM (llama_index.core.llms.LLM); got {type(llm).__name__}. "
                "For an OpenAI-compatible server pass judge='http://host:port/v1' to evaluate_rag or the CLI."
            )
        if not isinstance(embeddings, _BaseEmbedding):
            raise InvalidValueError(
                "The judge needs a LlamaIndex embedding model (BaseEmbedding) for answer_relevancy and "
                f"answer_correctness; got {type(embeddings).__name__}. heal-rag never falls back to "
                "a remote default."
            )
        unknown = [m for m in metrics if m not in JUDGE_METRICS]
        if unknown or not metrics:
            raise InvalidValueError(
                f"Judge metrics must be a non-empty subset of {list(JUDGE_METRICS)}; got {list(metrics)}."
            )
        if timeout <= 0 or max_retries < 0 or strictness < 1:
            raise InvalidValueError(
                f"Need timeout > 0, max_retries >= 0 and strictness >= 1; got {timeout}, "
                f"{max_retries}, {strictness}."
            )
        import_ragas()
        from ragas import RunConfig
        from ragas.embeddings.base import LlamaIndexEmbeddingsWrapper
        from ragas.metrics._answer_correctness import AnswerCorrectness
        from ragas.metrics._answer_relevance import ResponseRelevancy
        from ragas.metrics._faithfulness import Faithfulness

        self.llm = llm
        self.embeddings = embeddings
        self.timeout = float(timeout)
        self.run_config = RunConfig(
            timeout=int(math.ceil(timeout)), max_retries=max_retries, max_wait=int(max_wait), seed=seed
        )
        with warnings.catch_warnings():
            # the wrappers are flagged deprecated in favour of OpenAI-client factories, which we avoid on
            # purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            # a dedicated pool (not the loop's default one, which asyncio.run waits for) so an abandoned call
            # cannot hold up the next sample
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="heal-rag-judge"
            )
            self._ragas_llm = _threaded_llm_wrapper(llm, self.run_config, self._executor)
            self._ragas_embeddings = LlamaIndexEmbeddingsWrapper(embeddings, run_config=self.run_config)
        factories = {
            "faithfulness": lambda: Faithfulness(llm=self._ragas_llm),
            "answer_correctness": lambda: AnswerCorrectness(
                llm=self._ragas_llm, embeddings=self._ragas_embeddings
            ),
            "answer_relevancy": lambda: ResponseRelevancy(
                llm=self._ragas_llm, embeddings=self._ragas_embeddings, strictness=strictness
            ),
        }
        self.metrics = {name: factories[name]() for name in metrics}
        for metric in self.metrics.values():
            metric.init(self.run_config)  # raises if an LLM or embeddings is missing: never a remote default
        model = getattr(getattr(llm, "metadata", None), "model_name", None)
        self.name = name or (str(model) if model and model != "unknown" else type(llm).__name__)

    @property
    def names(self) -> list[str]:
        """Metric names in order."""
        return list(self.metrics)

    def describe(self) -> dict[str, Any]:
        """Describe the judge's configuration, recorded in reports and in the checkpoint hash."""
        return {
            "name": self.name,
            "llm": type(self.llm).__name__,
            "embeddings": type(self.embeddings).__name__,
            "metrics": self.names,
            "timeout": self.timeout,
            "max_retries": self.run_config.max_retries,
        }

    def score(self, sample: SingleTurnSample) -> tuple[dict[str, float], dict[str, str]]:
        """Score one sample with every judge metric.

        Returns:
            ``(scores, errors)``: a score per metric (NaN for a failure or a skip) and, for each metric that
            did not produce a finite score, the reason (``"skipped: ..."`` for missing inputs).

        """
        scores: dict[str, float] = {}
        errors: dict[str, str] = {}

        async def _one(name: str, metric: Any) -> None:
            if name == "answer_correctness" and not sample.reference:
                scores[name], errors[name] = math.nan, "skipped: the question has no reference answer"
                return
            if name == "faithfulness" and not sample.retrieved_contexts:
                scores[name], errors[name] = math.nan, "skipped: no retrieved contexts"
                return
            try:
                value = _as_float(await metric.single_turn_ascore(sample, timeout=self.timeout))
            except (asyncio.TimeoutError, TimeoutError):
                scores[name], errors[name] = math.nan, f"timeout after {self.timeout:g} s"
                return
            except Exception as error:  # noqa: BLE001 - a judge failure must not stop the run; it is counted
                scores[name], errors[name] = math.nan, f"{type(error).__name__}: {error}"[:300]
                return
            scores[name] = value
            if not math.isfinite(value):
                errors[name] = "nan: the judge's output could not be turned into a score"

        async def _all() -> None:
            for name, metric in self.metrics.items():
                await _one(name, metric)

        run_sync(_all())
        return scores, errors

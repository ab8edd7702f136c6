"""RAG evaluation with the generator behind an OpenAI-compatible server, as in production.

Point ``--url`` at your vLLM, llama.cpp, Ollama or hosted server (``http://host:port/v1``); without it the
script starts llama.cpp's own HTTP server on 127.0.0.1 with the bundled SmolLM2-135M model, so the whole
path (HTTP, OpenAI wire format, LlamaIndex's ``OpenAILike``) runs offline. BM25 and the base model retrieve
for the same questions of the bundled corpus; each answer is generated through the server; the harness
reports retrieval metrics and evidence exposure (answers given from contexts that lack every relevant
passage) per system.

Run:
    python examples/rag_over_openai_server.py --max-questions 5
    python examples/rag_over_openai_server.py --url http://localhost:8000/v1 --model qwen2.5-7b-instruct
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from heal_rag.datasets import load_demo_dataset
from heal_rag.evaluation.rag import evaluate_rag
from heal_rag.evaluation.report import summary_table
from heal_rag.integrations import HEALEmbedding
from heal_rag.llms import LocalLLMServer, make_endpoint_llm
from heal_rag.systems import bm25_system, dense_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="OpenAI-compatible base URL (default: start a local one)")
    parser.add_argument("--model", default="default", help="model name sent to the server")
    parser.add_argument("--max-questions", type=int, default=5, help="questions to answer (default 5)")
    parser.add_argument("--max-docs", type=int, default=200, help="documents to index (default 200)")
    args = parser.parse_args(argv)

    questions = load_demo_dataset("test").sample_queries(args.max_questions, seed=0)
    questions = questions.reduce_corpus(args.max_docs, seed=0)  # every judged abstract stays
    nodes = questions.to_nodes()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(LocalLLMServer()).url
        llm = make_endpoint_llm(url, model=args.model, max_tokens=64)
        systems = [
            bm25_system(nodes, top_k=5, llm=llm),
            dense_system(
                "base", HEALEmbedding.from_pretrained("default"), nodes, top_k=5, llm=llm
            ).configuration,
        ]
        result = evaluate_rag(systems, questions, n_resamples=1000)
    print(summary_table(result))
    first = result.question_ids[0]
    print(f"\nQ: {questions.queries[first]}\nA (base): {result.records['base'][first]['response']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

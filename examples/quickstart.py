"""Quickstart: fine-tune with HEAL, index with FAISS, and answer a question with sources. Runs offline.

Steps (each is a few lines of heal-rag / LlamaIndex):

1. Load (a slice of) the bundled SciFact demo corpus and turn it into LlamaIndex nodes.
2. Fine-tune the bundled all-MiniLM-L6-v2 with the HEAL loss (``HEALFinetuneEngine``): it builds the topic
   hierarchy (HNMFk), makes offline pseudo-queries and saves a HEAL model directory.
3. Index the nodes with the fine-tuned ``HEALEmbedding`` on FAISS and save the index, its hierarchy and the
   model reference together (``save_heal_index``).
4. Ask a question through a LlamaIndex ``RetrieverQueryEngine`` that uses the ``HierarchicalRetriever``
   (``rescore`` mode) and the small local GGUF LLM, and print the answer with its sources: document id, score,
   topic path and the topics' top terms.

Run it from the repository root::

    python examples/quickstart.py                      # ~200 documents, 30 training steps
    python examples/quickstart.py --max-docs 60 --max-steps 3 --max-seq-length 64   # a smoke run
    python examples/quickstart.py --no-llm             # retrieval only, no answer generation

The small local LLM (SmolLM2-135M) exercises the generation path; it is not a good judge of facts. Pass any
LlamaIndex LLM to ``build_query_engine`` for real answers.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "heal-quickstart"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quickstart.py", description="HEAL quickstart: fine-tune, index, ask (offline, bundled corpus)."
    )
    parser.add_argument(
        "--max-docs", type=int, default=200, help="documents of the demo corpus to use (default 200)"
    )
    parser.add_argument("--max-steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    parser.add_argument("--max-seq-length", type=int, default=128, help="token limit while training/indexing")
    parser.add_argument("--depth", type=int, default=2, help="levels of the topic hierarchy (default 2)")
    parser.add_argument(
        "--max-k", type=int, default=6, help="most topics per split of the hierarchy (default 6)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument(
        "--model-dir", default=None, help="reuse a HEAL model directory instead of fine-tuning (skips step 2)"
    )
    parser.add_argument(
        "--question", default=None, help="question to ask (default: a SciFact claim on the slice)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="sources retrieved per question (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="answer length limit of the local LLM")
    parser.add_argument(
        "--no-llm", action="store_true", help="retrieve and print sources only (no generation)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (hierarchy, queries, training)")
    parser.add_argument("--verbose", action="store_true", help="log progress (INFO)")
    args = parser.parse_args(argv)
    for name in ("max_docs", "max_steps", "batch_size", "top_k", "max_new_tokens", "depth"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    if args.max_docs < 10:
        parser.error(f"--max-docs must be >= 10 to build a topic hierarchy (got {args.max_docs}).")
    if args.max_k < 2:
        parser.error(f"--max-k must be >= 2 (got {args.max_k}).")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (contrastive training needs in-batch negatives).")
    if args.max_seq_length < 8:
        parser.error(f"--max-seq-length must be >= 8 (got {args.max_seq_length}).")
    if args.question is not None and not args.question.strip():
        parser.error("--question is empty; pass a question or leave it out.")
    return args


def select_corpus(max_docs: int) -> tuple[list[Any], dict[str, str], dict[str, dict[str, int]]]:
    """The first ``max_docs`` demo documents, and the test claims whose evidence is among them."""
    from heal_rag.datasets import load_demo_dataset

    dataset = load_demo_dataset(split="test")
    documents = dataset.documents[:max_docs]
    kept = {doc.id for doc in documents}
    queries = {qid: text for qid, text in dataset.queries.items() if set(dataset.relevant(qid)) & kept}
    qrels = {qid: {d: g for d, g in dataset.qrels[qid].items() if d in kept} for qid in queries}
    return documents, queries, qrels


def finetune(nodes: list[Any], args: argparse.Namespace, eval_queries: dict[str, str]) -> Path:
    """Fine-tune the bundled MiniLM on the nodes with HEAL; returns the saved model directory."""
    from heal_rag.training import HEALFinetuneEngine

    engine = HEALFinetuneEngine.from_nodes(
        nodes,
        output_dir=Path(args.out) / "model",
        overwrite=True,
        # offline training pairs from the documents themselves; the test claims are kept out of training
        queries="pseudo",
        eval_queries=eval_queries,
        hierarchy={"depth": args.depth, "k_range": (2, args.max_k), "min_topic_size": 5},
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        show_progress=args.verbose,
    )
    engine.finetune()
    return Path(engine.model_dir_)


def build_index(nodes: list[Any], model_dir: str | Path, max_seq_length: int) -> tuple[Any, Any]:
    """Embed the nodes with the HEAL model into a FAISS-backed ``VectorStoreIndex``."""
    from heal_rag.integrations import HEALEmbedding, build_faiss_index

    embed = HEALEmbedding.from_pretrained(model_dir, max_length=max_seq_length, device="cpu")
    # hierarchy=... writes each node's topic path into its metadata (what `route` mode filters on)
    index = build_faiss_index(nodes, embed, hierarchy=embed.hierarchy)
    return index, embed


def local_llm(max_new_tokens: int) -> Any:
    """The offline default LLM (SmolLM2-135M GGUF through xllamacpp), a LlamaIndex ``CustomLLM``."""
    from heal_rag.llms import default_llm

    return default_llm(max_new_tokens=max_new_tokens)


def build_query_engine(index: Any, model_dir: str | Path, llm: Any, top_k: int) -> Any:
    """A LlamaIndex ``RetrieverQueryEngine`` over the HEAL hierarchy-aware retriever."""
    from llama_index.core.query_engine import RetrieverQueryEngine

    from heal_rag.integrations import HierarchicalRetriever

    retriever = HierarchicalRetriever(index, hierarchy=model_dir, mode="rescore", similarity_top_k=top_k)
    return RetrieverQueryEngine.from_args(retriever, llm=llm)


def format_source(rank: int, hit: Any, relevant: set[str] | None = None) -> str:
    """One line per source: rank, document id, score, topic path, top terms and a text snippet."""
    node = hit.node
    meta = node.metadata
    doc_id = node.ref_doc_id or node.node_id
    mark = " [judged relevant]" if relevant and doc_id in relevant else ""
    title = meta.get("title", "")
    snippet = " ".join(node.get_content().split())[:100]
    return (
        f"  {rank}. doc {doc_id}{mark}  score={hit.score:.4f}  path={meta.get('heal_path', '-')}\n"
        f"     topics: {meta.get('heal_top_terms', '-')}\n"
        f"     {title + ' — ' if title else ''}{snippet}..."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    from heal_rag.datasets import documents_to_nodes

    started = time.perf_counter()
    documents, queries, qrels = select_corpus(args.max_docs)
    nodes = documents_to_nodes(documents)
    print(f"Corpus: {len(nodes)} documents of the bundled SciFact demo corpus.")

    if args.model_dir is None:
        print(f"Fine-tuning all-MiniLM-L6-v2 with HEAL ({args.max_steps} steps)...")
        model_dir = finetune(nodes, args, eval_queries=queries)
    else:
        model_dir = Path(args.model_dir)
        if not model_dir.is_dir():
            print(f"error: --model-dir {model_dir} does not exist.", file=sys.stderr)
            return 2
    print(f"Model directory: {model_dir}")

    index, embed = build_index(nodes, model_dir, args.max_seq_length)
    hierarchy = embed.hierarchy
    if hierarchy is not None:
        n_topics = [len(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)]
        print(f"Topic hierarchy: {hierarchy.n_levels} levels, topics per level {n_topics}.")

    from heal_rag.integrations import save_heal_index

    index_dir = save_heal_index(index, Path(args.out) / "index", embed, overwrite=True)
    print(f"Index saved to {index_dir} (reload it with heal_rag.integrations.load_heal_index).")

    if args.question is not None:
        question, relevant = args.question.strip(), None
    elif queries:
        qid = next(iter(queries))
        question, relevant = queries[qid], {d for d, g in qrels[qid].items() if g > 0}
    else:  # a slice without judged claims: ask about its first document's title
        question, relevant = f"What is known about {documents[0].title or documents[0].text[:60]}?", None
    print(f"\nQuestion: {question}")

    if args.no_llm:
        from heal_rag.integrations import HierarchicalRetriever

        retriever = HierarchicalRetriever(
            index, hierarchy=model_dir, mode="rescore", similarity_top_k=args.top_k
        )
        sources = retriever.retrieve(question)
    else:
        engine = build_query_engine(index, model_dir, local_llm(args.max_new_tokens), args.top_k)
        response = engine.query(question)
        print(f"Answer: {str(response).strip() or '(empty answer)'}")
        sources = response.source_nodes
    print("Sources:")
    for rank, hit in enumerate(sources, start=1):
        print(format_source(rank, hit, relevant))
    print(f"\nDone in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

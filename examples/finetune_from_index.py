"""Fine-tune from an existing LlamaIndex index, swap the HEAL embedding in, and compare retrievals. Offline.

The situation: you already have a ``VectorStoreIndex`` built with a plain embedding model (here the bundled
all-MiniLM-L6-v2; any LlamaIndex embedding works the same way) and persisted with
``storage_context.persist()``. This example

1. builds (or, on a second run, loads) that existing index,
2. fine-tunes with HEAL straight from it (``HEALFinetuneEngine.from_index`` reads its docstore's nodes),
3. re-embeds the same nodes with the fine-tuned ``HEALEmbedding`` into a new FAISS index,
4. compares retrievals before (the old index, LlamaIndex's ``VectorIndexRetriever``) and after (the new
   index, ``HierarchicalRetriever``) on SciFact test claims whose evidence is in the corpus slice.

Run it from the repository root::

    python examples/finetune_from_index.py                         # 200 documents, 30 steps
    python examples/finetune_from_index.py --max-docs 60 --max-steps 3 --max-seq-length 64

With a few dozen steps the differences are small and noisy; the point is the workflow. See ``evals/`` for
measured effects of HEAL fine-tuning.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "heal-from-index"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="finetune_from_index.py",
        description="Fine-tune with HEAL from an existing LlamaIndex index and swap the embedding in.",
    )
    parser.add_argument(
        "--max-docs", type=int, default=200, help="documents of the demo corpus (default 200)"
    )
    parser.add_argument("--max-steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    parser.add_argument("--max-seq-length", type=int, default=128, help="token limit while training/indexing")
    parser.add_argument("--depth", type=int, default=2, help="levels of the topic hierarchy (default 2)")
    parser.add_argument(
        "--max-k", type=int, default=6, help="most topics per split of the hierarchy (default 6)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="results per query (default 5)")
    parser.add_argument("--show", type=int, default=3, help="queries whose results are printed (default 3)")
    parser.add_argument(
        "--mode", default="rescore", choices=("flat", "rescore", "route"), help="retriever mode"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--verbose", action="store_true", help="log progress (INFO)")
    args = parser.parse_args(argv)
    for name in ("max_steps", "top_k", "depth"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)}).")
    if args.max_docs < 10:
        parser.error(f"--max-docs must be >= 10 to build a topic hierarchy (got {args.max_docs}).")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (contrastive training needs in-batch negatives).")
    if args.max_k < 2:
        parser.error(f"--max-k must be >= 2 (got {args.max_k}).")
    if args.max_seq_length < 8:
        parser.error(f"--max-seq-length must be >= 8 (got {args.max_seq_length}).")
    if args.show < 0:
        parser.error("--show must be >= 0.")
    return args


def existing_index(persist_dir: Path, max_docs: int, max_seq_length: int) -> Any:
    """The user's index: a plain embedding over the demo corpus, persisted (loaded again on later runs)."""
    from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage

    from heal_rag.datasets import documents_to_nodes, load_demo_dataset
    from heal_rag.integrations import HEALEmbedding

    # The plain (not fine-tuned) base model; HEALEmbedding wraps any sentence-transformers model.
    plain = HEALEmbedding(max_length=max_seq_length, device="cpu")
    if (persist_dir / "docstore.json").exists():
        index = load_index_from_storage(
            StorageContext.from_defaults(persist_dir=str(persist_dir)), embed_model=plain
        )
        if len(index.docstore.docs) == max_docs:
            return index
    documents = load_demo_dataset(split=None).documents[:max_docs]
    index = VectorStoreIndex(documents_to_nodes(documents), embed_model=plain)
    index.storage_context.persist(persist_dir=str(persist_dir))
    return index


def finetune_from(index: Any, args: argparse.Namespace, eval_queries: dict[str, str]) -> Any:
    """HEAL fine-tuning on the nodes of an existing index; returns the fine-tuned ``HEALEmbedding``."""
    from heal_rag.training import HEALFinetuneEngine

    engine = HEALFinetuneEngine.from_index(
        index,
        output_dir=Path(args.out) / "model",
        overwrite=True,
        queries="pseudo",  # offline pairs made from the documents; the evaluation claims are kept out
        eval_queries=eval_queries,
        hierarchy={"depth": args.depth, "k_range": (2, args.max_k), "min_topic_size": 5},
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        show_progress=args.verbose,
    )
    engine.finetune()
    return engine.get_finetuned_model(max_length=args.max_seq_length, device="cpu")


def swap_embedding(index: Any, embed: Any) -> Any:
    """Re-embed the index's nodes with the new model into a new FAISS index (with topic paths in metadata)."""
    from heal_rag.integrations import build_faiss_index

    nodes = list(index.docstore.docs.values())
    for node in nodes:
        # Nodes that still carry a vector would be indexed with it: drop the old model's embeddings.
        node.embedding = None
    return build_faiss_index(nodes, embed, hierarchy=embed.hierarchy)


def evaluate(
    retriever: Any, queries: dict[str, str], qrels: dict[str, dict[str, int]], k: int
) -> dict[str, Any]:
    """Recall@k and MRR@k over the queries, and each query's top-k document ids."""
    rankings: dict[str, list[str]] = {}
    recall, mrr = [], []
    for qid, text in queries.items():
        ids = [hit.node.ref_doc_id or hit.node.node_id for hit in retriever.retrieve(text)][:k]
        rankings[qid] = ids
        relevant = {d for d, g in qrels[qid].items() if g > 0}
        recall.append(len(relevant & set(ids)) / len(relevant))
        mrr.append(next((1.0 / rank for rank, d in enumerate(ids, start=1) if d in relevant), 0.0))
    n = max(len(queries), 1)
    return {"recall": sum(recall) / n, "mrr": sum(mrr) / n, "rankings": rankings}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    from llama_index.core.retrievers import VectorIndexRetriever

    from heal_rag.datasets import load_demo_dataset
    from heal_rag.integrations import HierarchicalRetriever

    started = time.perf_counter()
    out = Path(args.out)
    old_index = existing_index(out / "base_index", args.max_docs, args.max_seq_length)
    kept = set(old_index.docstore.docs)
    print(
        f"Existing index: {len(kept)} nodes embedded with the plain all-MiniLM-L6-v2 ({out / 'base_index'})."
    )

    test = load_demo_dataset(split="test")
    queries = {q: t for q, t in test.queries.items() if set(test.relevant(q)) & kept}
    qrels = {q: {d: g for d, g in test.qrels[q].items() if d in kept} for q in queries}
    if not queries:
        print(
            "error: no judged test claim has its evidence in this slice; raise --max-docs.", file=sys.stderr
        )
        return 2

    print(f"Fine-tuning from the index with HEAL ({args.max_steps} steps)...")
    heal_embed = finetune_from(old_index, args, eval_queries=test.queries)
    new_index = swap_embedding(old_index, heal_embed)
    print(
        f"New index: {len(new_index.index_struct.nodes_dict)} nodes re-embedded with {heal_embed.model_name}."
    )

    before = VectorIndexRetriever(old_index, similarity_top_k=args.top_k)
    mode = args.mode if heal_embed.hierarchy is not None else "flat"
    after = HierarchicalRetriever(new_index, mode=mode, similarity_top_k=args.top_k)
    results_before = evaluate(before, queries, qrels, args.top_k)
    results_after = evaluate(after, queries, qrels, args.top_k)

    for qid in list(queries)[: args.show]:
        relevant = {d for d, g in qrels[qid].items() if g > 0}

        def fmt(ids: list[str], relevant: set[str] = relevant) -> str:
            return ", ".join(f"{d}*" if d in relevant else d for d in ids)

        print(f"\nQuery {qid}: {queries[qid]}")
        print(f"  relevant: {', '.join(sorted(relevant))}")
        labels = ("before (plain, VectorIndexRetriever):", f"after  (HEAL, {mode}):")
        width = max(map(len, labels))
        print(f"  {labels[0]:<{width}} {fmt(results_before['rankings'][qid])}")
        print(f"  {labels[1]:<{width}} {fmt(results_after['rankings'][qid])}")
    print(f"\n{len(queries)} test claims with evidence in the slice (* = judged relevant):")
    print(f"  {'':<8}{'Recall@' + str(args.top_k):>10}{'MRR@' + str(args.top_k):>10}")
    for name, res in (("before", results_before), ("after", results_after)):
        print(f"  {name:<8}{res['recall']:>10.3f}{res['mrr']:>10.3f}")
    print(f"\nDone in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

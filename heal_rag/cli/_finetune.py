"""``heal-rag finetune``: fine-tune an embedding model on a BEIR corpus with the HEAL loss.

The command mirrors :class:`heal_rag.HEALFinetuneEngine`: same names, same defaults.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from heal_rag._loss_options import CONTRAST_MODES, HARD_NEGATIVE_SOURCES, LEVEL_WEIGHT_PRESETS
from heal_rag.cli._common import check_models, check_outputs, positive_int, require_corpus_folder
from heal_rag.cli._export import FINETUNE_EXPORTS, export_model
from heal_rag.cli._hierarchy import add_hnmfk_arguments, hnmfk_params
from heal_rag.errors import InvalidValueError
from heal_rag.training_args import HEALTrainingArguments

logger = logging.getLogger(__name__)

#: the flags' defaults are the engine's: one source (the settings chosen on the SciFact dev split)
DEFAULTS = HEALTrainingArguments()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune`` to the top-level parser."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune an embedding model on a corpus with the HEAL loss",
        description=(
            "Fine-tune a sentence-transformers model on CORPUS (a BEIR folder) with the HEAL loss and save "
            "it, "
            "with its topic hierarchy, to DIR. Training queries: the judged queries of --train-qrels SPLIT, "
            "questions from an LLM (--llm), or by default offline pseudo-queries (a title for its abstract, "
            "else a sentence for the rest of its document). The queries of the corpus' evaluation split "
            "(--eval-split, default 'test' when present) are never trained on."
        ),
    )
    parser.add_argument(
        "corpus", metavar="CORPUS", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to save the fine-tuned model to")
    parser.add_argument(
        "--train-qrels", default=None, metavar="SPLIT", help="train on the judged queries of this qrels split"
    )
    parser.add_argument(
        "--eval-split",
        default=None,
        metavar="SPLIT",
        help="split whose queries are kept out of training (default: 'test' when the corpus has it)",
    )
    parser.add_argument(
        "--no-hierarchy",
        action="store_true",
        help="train the flat baseline: same code and data, the document identity as the only label",
    )
    parser.add_argument(
        "--hierarchy",
        default=None,
        metavar="HDIR",
        help="use a hierarchy saved by 'heal-rag hierarchy build' instead of building one",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="NAME_OR_PATH",
        help="sentence-transformers model name or path (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--llm",
        default=None,
        metavar="LLM",
        help="generate training questions with an LLM: local, the URL of an OpenAI-compatible server, or "
        "MODULE:NAME (a LlamaIndex LLM object, or a function returning one, e.g. my_llms:make_llm); "
        "none or absent: offline pseudo-queries",
    )
    parser.add_argument("--llm-model", default="default", help="model name for an --llm URL")
    parser.add_argument("--llm-cache", default=None, metavar="FILE", help="JSONL cache of LLM questions")
    parser.add_argument(
        "--questions-per-doc", type=positive_int, default=1, metavar="N", help="LLM questions per document"
    )
    training = parser.add_argument_group("training options")
    training.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULTS.epochs,
        metavar="N",
        help=f"passes over the pairs ({DEFAULTS.epochs})",
    )
    training.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N steps (overrides --epochs)",
    )
    training.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS.batch_size,
        metavar="N",
        help=f"batch size ({DEFAULTS.batch_size}); HEAL's topic-balanced batches need at least 8 (2 "
        "topics x 2 leaves x 2 documents with a 2-level hierarchy), --no-hierarchy at least 2",
    )
    training.add_argument(
        "--learning-rate",
        type=float,
        default=DEFAULTS.learning_rate,
        metavar="LR",
        help=f"learning rate ({DEFAULTS.learning_rate:g})",
    )
    training.add_argument(
        "--temperature",
        type=float,
        default=DEFAULTS.temperature,
        metavar="T",
        help=f"HEAL temperature ({DEFAULTS.temperature:g})",
    )
    training.add_argument(
        "--contrast",
        choices=CONTRAST_MODES,
        default=DEFAULTS.contrast,
        help="how the levels combine: a positive is contrasted with only that level's negatives (graded, "
        "default) or with every document of the batch (supcon), or one cross-entropy to a target spread "
        "over the tree (soft)",
    )
    training.add_argument(
        "--hard-negatives",
        choices=HARD_NEGATIVE_SOURCES,
        default=DEFAULTS.hard_negatives,
        help="one extra negative document per pair: mined (default: one of the nearest documents under "
        "the base model, with sentence-transformers' mine_hard_negatives), tree (a document of the same "
        "leaf topic; needs the hierarchy) or none",
    )
    training.add_argument(
        "--level-weights",
        default=DEFAULTS.level_weights,
        metavar="PRESET|W,...",
        help="λ per level: document-heavy (default), fine-heavy, coarse-heavy, uniform, or comma-separated "
        "floats (topic "
        "levels coarse to fine, then the document level)",
    )
    training.add_argument(
        "--no-document-level",
        action="store_true",
        help="train on the topic levels only, without the document identity",
    )
    training.add_argument(
        "--max-seq-length",
        type=positive_int,
        default=DEFAULTS.max_seq_length,
        metavar="N",
        help=f"token limit ({DEFAULTS.max_seq_length})",
    )
    training.add_argument(
        "--mixed-precision",
        choices=("bf16", "fp16"),
        default=DEFAULTS.mixed_precision,
        help="train with autocast: bf16 (CPUs with AVX-512 BF16, recent GPUs; 2x faster on such a CPU) or "
        "fp16 (GPUs); default fp32",
    )
    training.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: automatic)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in DIR")
    parser.add_argument(
        "--export",
        choices=FINETUNE_EXPORTS,
        default=None,
        help="also export the trained model for fast CPU encoding (as heal-rag export DIR; onnx-int8: "
        "with the int8 copy)",
    )
    add_hnmfk_arguments(parser)  # --depth, --k-min, --k-max, --min-topic-size, --max-features, --seed
    parser.set_defaults(handler=run_finetune)


def parse_level_weights(text: str) -> str | list[float]:
    """Parse --level-weights: a preset name, or comma-separated floats."""
    if text in LEVEL_WEIGHT_PRESETS:
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidValueError(
            "--level-weights must be document-heavy, fine-heavy, coarse-heavy, uniform or comma-separated "
            "numbers; got "
            f"{text!r}."
        ) from None


def run_finetune(args: argparse.Namespace) -> int:
    """Run ``heal-rag finetune``."""
    from heal_rag.datasets import available_splits, check_train_split, load_beir
    from heal_rag.training.engine import HEALFinetuneEngine

    corpus = require_corpus_folder(args.corpus, layout="corpus.jsonl, queries.jsonl")
    from heal_rag.llms import resolve_llm

    llm = resolve_llm(args.llm, model=args.llm_model, what="--llm")[0]  # fails now, not after loading
    if args.train_qrels and llm is not None:
        raise InvalidValueError("Give either --train-qrels or --llm, not both.")
    # every argument and output checked before minutes of loading and training
    from heal_rag.model_dir import check_output_dir

    check_output_dir(args.out, overwrite=args.overwrite)
    check_outputs((args.llm_cache, "--llm-cache", True))
    check_models([args.base_model], "--base-model")
    training = HEALTrainingArguments(  # every training flag validated before any loading
        use_hierarchy=not args.no_hierarchy,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        temperature=args.temperature,
        contrast=args.contrast,
        hard_negatives=args.hard_negatives,
        level_weights=parse_level_weights(args.level_weights),
        use_document_level=not args.no_document_level,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
    )
    splits = available_splits(corpus)
    if args.eval_split is not None:
        if args.eval_split not in splits:
            raise InvalidValueError(
                f"--eval-split {args.eval_split!r} is not a split of {corpus} (available: "
                f"{', '.join(splits) or 'none'})."
            )
        eval_split: str | None = args.eval_split
    else:
        eval_split = "test" if "test" in splits else None
    check_train_split(
        args.train_qrels, eval_split, train_name="--train-qrels", advice=", or set --eval-split"
    )

    if args.train_qrels is not None:
        dataset = load_beir(corpus, split=args.train_qrels)
        queries: Any = dataset
    else:
        dataset = load_beir(corpus, split=None)
        queries = llm if llm is not None else "pseudo"
    eval_queries = load_beir(corpus, split=eval_split).queries if eval_split else None

    hierarchy: Any = None
    if not args.no_hierarchy:
        if args.hierarchy:
            from heal_rag.hierarchy import Hierarchy

            hierarchy = Hierarchy.load(args.hierarchy)
        else:
            hierarchy = hnmfk_params(args)
    show_progress = None  # None: follow the heal_rag log level main() set (-q hides bars)
    engine = HEALFinetuneEngine(
        dataset.documents,
        args=training,
        base_model=args.base_model,
        output_dir=args.out,
        hierarchy=hierarchy,
        queries=queries,
        eval_queries=eval_queries,
        device=args.device,
        overwrite=args.overwrite,
        query_cache_path=args.llm_cache,
        llm_kwargs={"num_questions_per_doc": args.questions_per_doc},
        show_progress=show_progress,
    )
    engine.finetune()
    metrics = engine.metrics_ or {}
    mode = "flat (--no-hierarchy)" if args.no_hierarchy else "HEAL"
    print(f"Fine-tuned ({mode}) on {metrics.get('n_pairs')} pairs from {metrics.get('queries')}", end="")
    dropped = metrics.get("dropped_eval_overlap") or 0
    print(f"; {dropped} pair(s) dropped as {eval_split} queries" if dropped else "")
    if engine.hierarchy_ is not None:
        h = engine.hierarchy_
        print(f"Hierarchy: {h.n_levels} level(s), {len(h.topics)} topics over {h.n_documents} documents")
    print(
        f"{metrics.get('steps')} steps in {metrics.get('training_wall_time_s')} s "
        f"({metrics.get('samples_per_second')} samples/s), final loss "
        f"{metrics.get('train_loss', float('nan')):.4f}"
    )
    print(f"Saved to {engine.model_dir_} (load with heal_rag.load_model_dir or SentenceTransformer)")
    if args.export is not None:
        backend, _, quantize = args.export.partition("-")
        export_model(str(engine.model_dir_), backend, quantize or None)
    return 0

"""HEAL training: the loss, the hierarchy-aware batch sampler, training queries and the fine-tune engine.

Importing this package imports torch (through the loss); ``heal_rag`` itself stays light (lazy exports).
"""

from heal_rag.model_dir import HEALModelDir, is_heal_model_dir, load_model_dir
from heal_rag.training.engine import HEALFinetuneEngine
from heal_rag.training.loss import HEALLoss, heal_loss
from heal_rag.training.queries import (
    DEFAULT_QUERY_PROMPT,
    LLMQueryGenerator,
    TrainingPair,
    exclude_eval_queries,
    generate_llm_queries,
    make_pseudo_queries,
    pairs_from_qa_json,
    pairs_from_qrels,
)
from heal_rag.training.sampler import HierarchicalBatchSampler, heal_batch_sampler
from heal_rag.training_args import HEALTrainingArguments

__all__ = [
    "DEFAULT_QUERY_PROMPT",
    "HEALFinetuneEngine",
    "HEALLoss",
    "HEALModelDir",
    "HEALTrainingArguments",
    "HierarchicalBatchSampler",
    "LLMQueryGenerator",
    "TrainingPair",
    "exclude_eval_queries",
    "generate_llm_queries",
    "heal_batch_sampler",
    "heal_loss",
    "is_heal_model_dir",
    "load_model_dir",
    "make_pseudo_queries",
    "pairs_from_qa_json",
    "pairs_from_qrels",
]

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from heal_rag.training.sampler import HierarchicalBatchSampler, batch_positive_stats, heal_batch_sampler


def synthetic_labels(n_topics=8, leaves_per_topic=8, docs_per_leaf=5, queries_per_doc=1):
    rows = []
    doc = 0
    for topic in range(n_topics):
        for leaf in range(leaves_per_topic):
            leaf_id = 1000 + topic * leaves_per_topic + leaf  # ids unique across the tree
            for _ in range(docs_per_leaf):
                rows.extend([topic, leaf_id, doc] for _ in range(queries_per_doc))
                doc += 1
    return np.array(rows, dtype=np.int64)


def check_no_duplicates(labels, batches, keys=None):
    for batch in batches:
        docs = labels[batch, -1]
        assert len(set(docs.tolist())) == len(batch)
        if keys is not None:
            seen = [k for i in batch for k in keys[i]]
            assert len(seen) == len(set(seen))


def test_batches_span_topics_leaves_and_documents():
    labels = synthetic_labels()
    sampler = HierarchicalBatchSampler(labels, batch_size=32, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    assert all(len(b) == 32 for b in batches)
    check_no_duplicates(labels, batches)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 320  # each sample exactly once: 320 = 10 x 32
    assert sampler.topics_per_batch == 4
    n_topics = [len(np.unique(labels[batch, 0])) for batch in batches]
    assert sum(n == 4 for n in n_topics) >= 8  # topics run short only at the end of the epoch
    for batch in batches[:-1]:
        rows = labels[batch]
        topics = np.unique(rows[:, 0])
        assert len(topics) >= 2
        lone = 0
        for topic in topics:
            leaves = np.unique(rows[rows[:, 0] == topic, 1], return_counts=True)[1]
            assert len(leaves) >= 2
            lone += int((leaves < 2).sum())
        # filling a batch exactly may split a chunk: its halves can leave lone leaves here and next batch
        assert lone <= 3


def test_positive_share_high_with_sampler_low_with_random_batches():
    labels = synthetic_labels()
    heal = batch_positive_stats(labels, list(HierarchicalBatchSampler(labels, batch_size=32, seed=0)))
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(labels))
    random_batches = [perm[i : i + 32].tolist() for i in range(0, len(labels), 32)]
    flat = batch_positive_stats(labels, random_batches)
    assert heal["share_with_positive"][1] >= 0.95  # (nearly) every anchor has a same-leaf document
    assert heal["share_with_positive"][0] >= 0.99
    assert flat["share_with_positive"][1] < 0.5
    assert heal["mean_positives"][0] > 1.5 * flat["mean_positives"][0]
    assert heal["share_with_positive"][2] == flat["share_with_positive"][2] == 0.0  # no duplicate documents


def test_deterministic_per_seed_and_epoch():
    labels = synthetic_labels()
    a = HierarchicalBatchSampler(labels, batch_size=16, seed=3)
    b = HierarchicalBatchSampler(labels, batch_size=16, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second
    assert sorted(i for x in first for i in x) == sorted(i for x in second for i in x)
    a.set_epoch(0)
    assert list(a) == first
    assert list(HierarchicalBatchSampler(labels, batch_size=16, seed=4)) != first


def test_several_queries_per_document_and_dedup_keys():
    labels = synthetic_labels(n_topics=4, leaves_per_topic=4, docs_per_leaf=4, queries_per_doc=3)
    # queries of one document share nothing, but every tenth sample repeats a common text
    keys = [(f"q{i}", "generic question" if i % 10 == 0 else f"d{labels[i, 2]}") for i in range(len(labels))]
    sampler = HierarchicalBatchSampler(labels, batch_size=16, seed=0, dedup_keys=keys, drop_last=False)
    batches = list(sampler)
    check_no_duplicates(labels, batches, keys)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    # the 20 "generic" samples each need their own batch, the rest is covered
    assert len(flat) >= len(labels) - 20
    assert sum(1 for i in flat if i % 10 == 0) <= len(batches)


def test_drop_last_false_keeps_the_tail():
    labels = synthetic_labels(n_topics=3, leaves_per_topic=2, docs_per_leaf=5)  # 30 samples
    kept = list(HierarchicalBatchSampler(labels, batch_size=8, drop_last=False, seed=0))
    assert sum(map(len, kept)) == 30 and len(kept[-1]) == 6
    dropped = list(HierarchicalBatchSampler(labels, batch_size=8, drop_last=True, seed=0))
    assert [len(b) for b in dropped] == [8, 8, 8]


def test_flat_labels_and_single_level():
    docs_only = np.arange(20)[:, None]
    batches = list(HierarchicalBatchSampler(docs_only, batch_size=5, seed=0))
    assert len(batches) == 4 and sorted(i for b in batches for i in b) == list(range(20))
    one_level = synthetic_labels()[:, [0, 2]]
    sampler = HierarchicalBatchSampler(one_level, batch_size=8, seed=0)
    assert sampler.min_batch_size == 2 * 2  # 2 topics x 1 leaf x 2 documents
    check_no_duplicates(one_level, list(sampler))


def test_plain_dataloader():
    labels = synthetic_labels()
    dataset = torch.utils.data.TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    sampler = HierarchicalBatchSampler(labels, batch_size=32, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    got = [index.tolist() for index, _ in loader]
    assert got == list(sampler)
    assert len(loader) == len(sampler)


def test_bad_input_errors():
    labels = synthetic_labels()
    with pytest.raises(ValueError, match="need batch_size >= 16"):
        HierarchicalBatchSampler(labels, batch_size=12, topics_per_batch=4)
    with pytest.raises(ValueError, match="need batch_size >= 8"):
        HierarchicalBatchSampler(labels, batch_size=6)
    with pytest.raises(ValueError, match="exceeds the number of distinct documents"):
        HierarchicalBatchSampler(labels[:10], batch_size=16, topics_per_batch=1)
    with pytest.raises(ValueError, match="integer topic and document ids"):
        HierarchicalBatchSampler(labels + 0.5, batch_size=16)
    with pytest.raises(ValueError, match="between 1 and the number of level-0 topics"):
        HierarchicalBatchSampler(labels, batch_size=64, topics_per_batch=9)
    with pytest.raises(ValueError, match="one entry per sample"):
        HierarchicalBatchSampler(labels, batch_size=16, dedup_keys=["a"])
    with pytest.raises(ValueError, match="shape"):
        HierarchicalBatchSampler(np.zeros((0, 3), dtype=int), batch_size=16)


def test_sentence_transformers_trainer_uses_the_sampler(tmp_path):
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from heal_rag._models import default_model_path
    from heal_rag.training.loss import HEALLoss

    labels = synthetic_labels(n_topics=3, leaves_per_topic=2, docs_per_leaf=4)  # 24 pairs
    words = ["cell", "alloy", "virus", "crack", "gene", "steel"]
    anchors = [f"question {i} about {words[row[1] % 6]}?" for i, row in enumerate(labels)]
    positives = [f"document {row[2]} on {words[row[1] % 6]} in topic {row[0]}." for row in labels]
    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives, "label": labels.tolist()})

    model = SentenceTransformer(default_model_path(), device="cpu")
    model.max_seq_length = 32
    loss = HEALLoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=5,
        batch_sampler=heal_batch_sampler(docs_per_leaf=2),
        use_cpu=True,
        dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler
    assert isinstance(sampler, HierarchicalBatchSampler) and sampler.seed == 5
    assert sampler.dedup_keys is not None and len(sampler.dedup_keys[0]) == 2  # anchor and positive texts
    batch = next(iter(loader))
    assert batch["label"].shape == (8, 3) and batch["label"].dtype == torch.int64
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # per-level terms logged by the trainer, summing to the loss
        parts = entry["level_0"] + entry["level_1"] + entry["document"]
        assert parts == pytest.approx(entry["loss"], abs=2e-3)
    assert set(loss.last_level_losses) == {"level_0", "level_1", "document"}


def test_adapter_errors_without_label_column():
    from datasets import Dataset

    factory = heal_batch_sampler()
    dataset = Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]})
    with pytest.raises(ValueError, match="needs a label column"):
        factory(dataset, batch_size=2, drop_last=False, valid_label_columns=["label"], generator=None, seed=0)

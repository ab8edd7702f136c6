import math

import pytest
import torch

from heal_rag.training.loss import HEALLoss, heal_loss, preset_level_weights

QUERIES = [
    "What lowers blood pressure in adults?",
    "Which alloys resist creep at high temperature?",
    "How do vaccines train the immune system?",
    "What causes metal fatigue in aircraft?",
    "Does exercise reduce the risk of diabetes?",
    "How are malware samples classified?",
]
DOCS = [
    "ACE inhibitors reduce blood pressure by blocking angiotensin conversion.",
    "Nickel superalloys keep their strength and resist creep near their melting point.",
    "Vaccines expose the immune system to antigens so that memory cells form.",
    "Cyclic loading grows small cracks until aluminium airframe parts fail.",
    "Regular physical activity improves insulin sensitivity and lowers diabetes incidence.",
    "Static and dynamic features let classifiers group malware into families.",
]
# level-0 topic (medicine 0, materials 1, security 2), level-1 topic, document id
LABELS = torch.tensor([[0, 3, 0], [1, 5, 1], [0, 4, 2], [1, 5, 3], [0, 3, 4], [2, 6, 5]])


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    from heal_rag._models import default_model_path

    return SentenceTransformer(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def embeddings(model):
    with torch.no_grad():
        q = model.encode(QUERIES, convert_to_tensor=True)
        d = model.encode(DOCS, convert_to_tensor=True)
    return q, d


def test_two_samples_by_hand():
    # Orthonormal embeddings, temperature 1: S = identity.
    q = torch.eye(2)
    d = torch.eye(2)
    labels = torch.tensor([[0, 10], [0, 11]])  # same topic, different documents
    total, per_level = heal_loss(q, d, labels, level_weights=[1.0, 3.0], temperature=1.0, contrast="supcon")
    lse = math.log(math.e + 1)
    level0 = -0.5 * ((1 - lse) + (0 - lse))  # both documents are positives at level 0
    doc = -(1 - lse)  # only its own document at the document level
    assert per_level.tolist() == pytest.approx([level0, doc], abs=1e-6)
    assert total.item() == pytest.approx((level0 + 3 * doc) / 4, abs=1e-6)
    raw, _ = heal_loss(
        q, d, labels, level_weights=[1.0, 3.0], temperature=1.0, normalize_weights=False, contrast="supcon"
    )
    assert raw.item() == pytest.approx(level0 + 3 * doc, abs=1e-6)


def test_three_samples_with_unknown_label_by_hand():
    q = torch.eye(3) * 5.0  # norms are removed by the cosine
    d = torch.eye(3)
    labels = torch.tensor([[0, 1], [0, 2], [-1, 3]])  # sample 2 has no level-0 topic
    total, per_level = heal_loss(q, d, labels, temperature=0.5, contrast="supcon")
    lse = math.log(math.exp(2) + 2)
    # level 0: anchors 0 and 1 each have positives {0, 1}; anchor 2 contributes nothing
    level0 = -0.5 * ((2 - lse) + (0 - lse))
    assert per_level[0].item() == pytest.approx(level0, abs=1e-5)
    assert per_level[1].item() == pytest.approx(lse - 2, abs=1e-5)
    assert total.item() == pytest.approx((level0 + lse - 2) / 2, abs=1e-5)


def test_level_without_any_positive_gives_zero():
    labels = torch.tensor([[-1, 0], [-1, 1]])
    total, per_level = heal_loss(torch.randn(2, 4), torch.randn(2, 4), labels)
    assert per_level[0].item() == 0.0
    assert total.item() == pytest.approx(per_level[1].item() / 2)


def test_prefix_path_agrees_with_column_and_catches_non_unique_ids():
    q, d = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), torch.randn(5, 8)
    unique = torch.tensor([[0, 2, 0], [0, 2, 1], [0, 3, 2], [1, 4, 3], [1, 4, 4]])
    a = heal_loss(q, d, unique, prefix=False)[1]
    b = heal_loss(q, d, unique, prefix=True)[1]
    assert torch.allclose(a, b)
    # child ids numbered per parent: 0/0 and 1/0 are different clusters, only prefix=True sees it
    per_parent = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 0, 3], [1, 0, 4]])
    c = heal_loss(q, d, per_parent, prefix=True)[1]
    e = heal_loss(q, d, per_parent, prefix=False)[1]
    assert torch.allclose(a, c)
    assert not torch.allclose(c[1], e[1])


def test_equals_multiple_negatives_ranking_loss_on_real_embeddings(model, embeddings):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = embeddings
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0)
    expected = mnrl.compute_loss_from_embeddings([q, d], None)
    total, per_level = heal_loss(q, d, LABELS[:, -1:], temperature=0.05)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # HEALLoss with the hierarchy switched off, through forward() on tokenised features
    flat = HEALLoss(model, use_hierarchy=False, temperature=0.05, return_components=False)
    features = [model.preprocess(QUERIES), model.preprocess(DOCS)]
    with torch.no_grad():
        got = flat(features, LABELS)
        ref = mnrl(features, None)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # any preset reduces to weight 1 on a single level
    for preset in ("coarse-heavy", "uniform"):
        other = HEALLoss(model, level_weights=preset, use_hierarchy=False, return_components=False)
        assert other.compute_loss_from_embeddings([q, d], LABELS).item() == pytest.approx(
            ref.item(), rel=1e-5
        )


def test_hierarchy_changes_the_loss(embeddings):
    q, d = embeddings
    flat, _ = heal_loss(q, d, LABELS[:, -1:])
    full, per_level = heal_loss(q, d, LABELS)
    assert per_level.shape == (3,)
    assert not math.isclose(flat.item(), full.item(), rel_tol=1e-3)
    # SupCon: coarse levels have more positives to share the probability mass, so a higher per-anchor loss
    supcon_levels = heal_loss(q, d, LABELS, contrast="supcon")[1]
    assert supcon_levels[0] > supcon_levels[2]


def test_gradients_are_finite():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(8, 16, generator=g, requires_grad=True)
    d = torch.randn(8, 16, generator=g, requires_grad=True)
    labels = torch.tensor([[0, 2, i] for i in range(4)] + [[1, 3, i] for i in range(4, 8)])
    total, _ = heal_loss(q, d, labels, temperature=0.01, symmetric=True)
    total.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all()
    assert q.grad.abs().sum() > 0
    # extreme similarities: log-sum-exp keeps it finite
    big = torch.randn(4, 3, requires_grad=True)
    loss, _ = heal_loss(big, big.detach() * 1e6, labels[:4], temperature=1e-4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()


@pytest.mark.parametrize("symmetric", [False, True])
def test_invariant_to_batch_order(embeddings, symmetric):
    q, d = embeddings
    conf = torch.linspace(0.3, 1.0, 6)[:, None].repeat(1, 2)
    perm = torch.tensor([4, 2, 5, 0, 3, 1])
    a_total, a_levels = heal_loss(q, d, LABELS, symmetric=symmetric, confidence=conf)
    b_total, b_levels = heal_loss(q[perm], d[perm], LABELS[perm], symmetric=symmetric, confidence=conf[perm])
    assert torch.allclose(a_total, b_total, atol=1e-6)
    assert torch.allclose(a_levels, b_levels, atol=1e-6)


def test_confidence_of_one_changes_nothing_and_zero_removes_anchor(embeddings):
    q, d = embeddings
    base = heal_loss(q, d, LABELS)[1]
    assert torch.allclose(heal_loss(q, d, LABELS, confidence=torch.ones(6, 2))[1], base)
    conf = torch.ones(6, 3)
    conf[5, 0] = 0.0  # sample 5 is alone in its level-0 topic anyway: removing it must match -1 label
    unknown = LABELS.clone()
    unknown[5, 0] = -1
    assert torch.allclose(heal_loss(q, d, LABELS, confidence=conf)[1], heal_loss(q, d, unknown)[1], atol=1e-6)


def test_symmetric_adds_the_reverse_direction(model, embeddings):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = embeddings
    sym = MultipleNegativesRankingLoss(
        model, scale=5.0, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    expected = sym.compute_loss_from_embeddings([q, d], None)
    total, _ = heal_loss(q, d, LABELS[:, -1:], temperature=0.2, symmetric=True)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bf16_autocast_on_cpu_computes_in_float32():
    g = torch.Generator().manual_seed(2)
    layer = torch.nn.Linear(16, 8)
    x, y = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    labels = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 3], [1, 4], [1, 5]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, d = layer(x), layer(y)
        assert q.dtype == torch.bfloat16
        total, per_level = heal_loss(q, d, labels)
    assert total.dtype == torch.float32 and per_level.dtype == torch.float32
    reference, _ = heal_loss(q.float(), d.float(), labels)
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(3)
    q, d = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    labels = torch.tensor([[i % 2, 10 + i % 4, i] for i in range(16)])
    cpu_total, cpu_levels = heal_loss(q, d, labels, symmetric=True)
    qc = q.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        gpu_total, gpu_levels = heal_loss(qc, d.cuda(), labels.cuda(), symmetric=True)
    assert gpu_total.device.type == "cuda" and gpu_total.dtype == torch.float32
    assert gpu_total.item() == pytest.approx(cpu_total.item(), rel=1e-4)
    assert torch.allclose(gpu_levels.cpu(), cpu_levels, rtol=1e-4)
    gpu_total.backward()
    assert torch.isfinite(qc.grad).all()


def test_presets():
    assert preset_level_weights("fine-heavy", 3) == pytest.approx([2 ** (1 / 3), 2**0.5, 2.0])
    assert preset_level_weights("coarse-heavy", 3) == pytest.approx([2.0, 2**0.5, 2 ** (1 / 3)])
    assert preset_level_weights("uniform", 2) == [1.0, 1.0]
    assert preset_level_weights("document-heavy", 3) == pytest.approx([0.05, 0.1, 1.0])
    assert preset_level_weights("document-heavy", 1) == [1.0]
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_level_weights("deep", 2)


def test_loss_module_returns_named_components_summing_to_total(model, embeddings):
    q, d = embeddings
    loss = HEALLoss(model, level_weights="fine-heavy")
    parts = loss.compute_loss_from_embeddings([q, d], LABELS)
    assert list(parts) == ["level_0", "level_1", "document"]
    total, per_level = heal_loss(q, d, LABELS, level_weights=preset_level_weights("fine-heavy", 3))
    assert torch.stack(list(parts.values())).sum().item() == pytest.approx(total.item(), rel=1e-6)
    assert list(loss.last_level_losses.values()) == pytest.approx(per_level.tolist())
    topics_only = HEALLoss(model, use_document_level=False, level_weights=[1.0, 2.0], return_components=False)
    expected, _ = heal_loss(q, d, LABELS[:, :2], level_weights=[1.0, 2.0])
    assert topics_only.compute_loss_from_embeddings([q, d], LABELS).item() == pytest.approx(expected.item())
    config = loss.get_config_dict()
    assert config["level_weights"] == "fine-heavy" and config["temperature"] == 0.05
    assert "HEAL" in loss.citation


def test_bad_input_errors(model):
    q, d = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        heal_loss(q, d, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        heal_loss(q, d, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="temperature must be a positive"):
        heal_loss(q, d, torch.zeros(3, 2, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="has 3 entries but the labels have 2"):
        heal_loss(q, d, torch.zeros(3, 2, dtype=torch.long), level_weights=[1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        heal_loss(q, d, torch.zeros(3, 2, dtype=torch.long), level_weights=[1, -1])
    with pytest.raises(ValueError, match="query_emb must have shape"):
        heal_loss(q, torch.randn(3, 5), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="confidence values"):
        heal_loss(q, d, torch.zeros(3, 2, dtype=torch.long), confidence=torch.full((3, 2), 2.0))
    with pytest.raises(ValueError, match="must be > 0"):
        HEALLoss(model, temperature=-1)
    with pytest.raises(ValueError, match="cannot both be False"):
        HEALLoss(model, use_hierarchy=False, use_document_level=False)
    with pytest.raises(ValueError, match="preset must be one of"):
        HEALLoss(model, level_weights="steep")
    with pytest.raises(ValueError, match="needs one"):
        HEALLoss(model, use_hierarchy=False, level_weights=[1.0, 2.0])
    loss = HEALLoss(model, level_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="has 2 entries but the labels have 3"):
        loss.compute_loss_from_embeddings([torch.randn(6, 4), torch.randn(6, 4)], LABELS)
    with pytest.raises(ValueError, match="needs labels"):
        loss.compute_loss_from_embeddings([q, d], None)


def test_graded_contrast_by_hand():
    # Orthonormal embeddings, temperature 1: S = identity. Same topic, different documents.
    q, d = torch.eye(2), torch.eye(2)
    labels = torch.tensor([[0, 10], [0, 11]])
    _, per_level = heal_loss(q, d, labels, level_weights=[1.0, 1.0], temperature=1.0, contrast="graded")
    # level 0: both documents are positives and there is no negative, so every term is -log(e^s / e^s) = 0
    assert per_level[0].item() == pytest.approx(0.0, abs=1e-6)
    # document level: positive = own document, negative = the other one: -log(e / (e + 1))
    assert per_level[1].item() == pytest.approx(math.log(math.e + 1) - 1, abs=1e-6)
    # three documents, two topics: anchor 0's level-0 positives {0, 1} are each contrasted with doc 2 only
    q3, d3 = torch.eye(3), torch.eye(3)
    labels3 = torch.tensor([[0, 10], [0, 11], [1, 12]])
    _, levels3 = heal_loss(q3, d3, labels3, temperature=1.0, contrast="graded")
    a0 = -0.5 * ((1 - math.log(math.e + 1)) + (0 - math.log(2)))  # own doc s=1, sibling s=0, negative s=0
    a1 = -0.5 * ((0 - math.log(2)) + (1 - math.log(math.e + 1)))
    a2 = -(1 - math.log(math.e + 2))  # alone in topic 1: own doc against both others
    assert levels3[0].item() == pytest.approx((a0 + a1 + a2) / 3, abs=1e-6)


def test_graded_contrast_equals_mnrl_on_document_level_and_is_order_invariant(model, embeddings):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = embeddings
    expected = MultipleNegativesRankingLoss(model, scale=20.0).compute_loss_from_embeddings([q, d], None)
    total, _ = heal_loss(q, d, LABELS[:, -1:], temperature=0.05, contrast="graded")
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    perm = torch.tensor([4, 2, 5, 0, 3, 1])
    a = heal_loss(q, d, LABELS, contrast="graded", symmetric=True)[1]
    b = heal_loss(q[perm], d[perm], LABELS[perm], contrast="graded", symmetric=True)[1]
    assert torch.allclose(a, b, atol=1e-6)
    # graded coarse levels do not ask for equal similarity to all same-topic documents: lower than SupCon
    supcon = heal_loss(q, d, LABELS, contrast="supcon")[1]
    assert (a[:2] < supcon[:2]).all()


def test_graded_contrast_gradients_finite_when_a_level_has_no_negative():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 8, generator=g, requires_grad=True)
    d = torch.randn(4, 8, generator=g, requires_grad=True)
    labels = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3]])  # one topic for the whole batch
    total, per_level = heal_loss(q, d, labels, temperature=0.02, contrast="graded")
    total.backward()
    assert per_level[0].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all() and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="contrast"):
        heal_loss(q, d, labels, contrast="bogus")


def test_hard_negatives_flat_equal_mnrl_with_negatives(model, embeddings):
    """Extra negative documents (doc_labels) in flat mode are exactly MNRL's (anchor, positive, negative)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = embeddings
    generator = torch.Generator().manual_seed(0)
    n = d.roll(1, dims=0) + 0.1 * torch.randn(d.shape, generator=generator)  # other documents, perturbed
    expected = MultipleNegativesRankingLoss(model, scale=20.0).compute_loss_from_embeddings([q, d, n], None)
    doc_ids = torch.arange(12)[:, None]  # 6 positives, 6 distinct negatives
    total, _ = heal_loss(q, torch.cat([d, n]), doc_ids[:6], temperature=0.05, doc_labels=doc_ids)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # HEALLoss with 3 text columns: label rows are [pair block, negative block]
    labels = torch.cat([LABELS, LABELS + torch.tensor([0, 0, 100])], dim=1)  # same topics, other documents
    flat = HEALLoss(model, use_hierarchy=False, temperature=0.05, return_components=False)
    assert flat.compute_loss_from_embeddings([q, d, n], labels).item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="2 equal blocks"):
        flat.compute_loss_from_embeddings([q, d, n], torch.cat([LABELS, LABELS[:, :2]], dim=1))


def test_same_leaf_negative_is_a_topic_positive(embeddings):
    """A negative from the anchor's own leaf counts as a positive at the topic levels only."""
    q, d = embeddings
    n = d.flip(0)
    own = LABELS
    same_leaf = torch.cat([LABELS[:, :2], LABELS[:, 2:] + 100], dim=1)  # same path, other document
    other_topic = torch.cat([torch.full((6, 2), 50), LABELS[:, 2:] + 100], dim=1)  # unrelated topics
    docs = torch.cat([d, n])
    _, leaf_levels = heal_loss(q, docs, own, doc_labels=torch.cat([own, same_leaf]))
    _, far_levels = heal_loss(q, docs, own, doc_labels=torch.cat([own, other_topic]))
    # the document level sees the same negatives either way; the topic levels differ
    assert leaf_levels[2].item() == pytest.approx(far_levels[2].item(), rel=1e-6)
    assert not torch.allclose(leaf_levels[:2], far_levels[:2])


def _soft_reference(q, d, labels, weights, temperature):
    """Plain-loop cross-entropy to the tree-distance target."""
    q = torch.nn.functional.normalize(q, dim=-1)
    d = torch.nn.functional.normalize(d, dim=-1)
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ d[j]) / temperature for j in range(len(d))]
        log_z = math.log(sum(math.exp(x) for x in logits))
        target = [
            sum(w for w, a, b in zip(weights, labels[i], labels[j], strict=True) if a == b)
            for j in range(len(d))
        ]
        mass = sum(target)
        total += -sum(t / mass * (x - log_z) for t, x in zip(target, logits, strict=True))
    return total / len(q)


def test_soft_targets_match_a_plain_loop_and_reduce_to_mnrl(model, embeddings):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, d = embeddings
    weights = [0.1, 0.3, 1.0]
    total, per_level = heal_loss(q, d, LABELS, level_weights=weights, temperature=0.1, contrast="soft")
    reference = _soft_reference(q, d, LABELS.tolist(), weights, 0.1)
    assert total.item() == pytest.approx(reference, rel=1e-5)
    assert (torch.tensor(weights) * per_level).sum().item() == pytest.approx(total.item(), rel=1e-6)
    # the document level alone: a one-hot target, i.e. MNRL
    flat, _ = heal_loss(q, d, LABELS[:, -1:], temperature=0.05, contrast="soft")
    expected = MultipleNegativesRankingLoss(model, scale=20.0).compute_loss_from_embeddings([q, d], None)
    assert flat.item() == pytest.approx(expected.item(), rel=1e-5)
    # HEALLoss components sum to the loss
    loss = HEALLoss(model, level_weights=weights, temperature=0.1, contrast="soft")
    parts = loss.compute_loss_from_embeddings([q, d], LABELS)
    assert sum(parts.values()).item() == pytest.approx(reference, rel=1e-5)

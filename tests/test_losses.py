"""Tests for modeling_eclip.losses against brute-force, explicitly looped references."""

import itertools
import math

import pytest
import torch

from modeling_eclip import losses as L

SEEDS = [0, 1, 2, 3]
N, K, D = 8, 3, 6
ATOL = 1e-5


def _unit(*shape, gen, dtype=torch.float32):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen, dtype=dtype), dim=-1)


def _batch(seed, n=N):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        img=_unit(n, D, gen=gen),
        txt=_unit(n, D, gen=gen),
        inst=_unit(n, K, D, gen=gen),
        inst2=_unit(n, K, D, gen=gen),
        # n rows drawn from n // 2 ids: duplicates are guaranteed (pigeonhole).
        ids=torch.randint(0, n // 2, (n,), generator=gen) * 7 + 3,
        scale=torch.tensor(5.0 + 10.0 * torch.rand((), generator=gen).item()),
    )


# ---------------------------------------------------------------- references (loops)


def _dot(u, v):
    return sum(a * b for a, b in zip(u.tolist(), v.tolist()))


def ref_targets(row_ids, col_ids):
    out = torch.zeros(len(row_ids), len(col_ids))
    for i, r in enumerate(row_ids.tolist()):
        pos = [j for j, c in enumerate(col_ids.tolist()) if c == r]
        for j in pos:
            out[i, j] = 1.0 / len(pos)
    return out


def ref_soft_ce(logits, targets):
    total = 0.0
    for row, trow in zip(logits.tolist(), targets.tolist()):
        lse = math.log(sum(math.exp(x) for x in row))
        total += sum(t * (lse - x) for x, t in zip(row, trow))
    return total / len(logits)


def ref_contrastive(score_a2b, score_b2a, scale, row_ids, col_ids):
    """Symmetric multi-positive InfoNCE; score_*(i, j) -> float for local row i, column j."""
    row_ids, col_ids, scale = row_ids.tolist(), col_ids.tolist(), float(scale)
    total = 0.0
    for score in (score_a2b, score_b2a):
        for i, r in enumerate(row_ids):
            logits = [scale * score(i, j) for j in range(len(col_ids))]
            lse = math.log(sum(math.exp(x) for x in logits))
            pos = [j for j, c in enumerate(col_ids) if c == r]
            total += sum(lse - logits[j] for j in pos) / len(pos) / len(row_ids)
    return total / 2


def ref_itc(img, txt, scale, ids):
    return ref_contrastive(
        lambda i, j: _dot(img[i], txt[j]), lambda i, j: _dot(txt[i], img[j]), scale, ids, ids
    )


def ref_score(inst_i, txt_j):
    return max(_dot(q, txt_j) for q in inst_i)


def ref_inter(inst, txt, scale, ids):
    return ref_contrastive(
        lambda i, j: ref_score(inst[i], txt[j]), lambda i, j: ref_score(inst[j], txt[i]), scale, ids, ids
    )


def ref_select_index(inst, txt):
    index = []
    for i in range(len(inst)):
        sims = [_dot(inst[i, k], txt[i]) for k in range(inst.shape[1])]
        index.append(max(range(len(sims)), key=sims.__getitem__))
    return torch.tensor(index)


def ref_intra(inst1, inst2, txt, scale, ids):
    v1 = inst1[torch.arange(len(inst1)), ref_select_index(inst1, txt)]
    v2 = inst2[torch.arange(len(inst2)), ref_select_index(inst2, txt)]
    return ref_itc(v1, v2, scale, ids)


def _hf_clip_loss(logits_per_text):
    # transformers v4 names it clip_loss, v5 image_text_contrastive_loss; imported
    # lazily because importing transformers dominates this file's runtime.
    from transformers.models.clip import modeling_clip

    fn = getattr(modeling_clip, "clip_loss", None) or modeling_clip.image_text_contrastive_loss
    return fn(logits_per_text)


# ---------------------------------------------------------------- targets / CE


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_positive_targets_matches_reference(seed):
    ids = _batch(seed)["ids"]
    cols = torch.cat([ids, torch.tensor([999, 1000])])  # extra columns of other products
    targets = L.multi_positive_targets(ids, cols)
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets, ref_targets(ids, cols), atol=ATOL, rtol=0)
    torch.testing.assert_close(targets.sum(-1), torch.ones(len(ids)))


def test_multi_positive_targets_raises_without_positive():
    with pytest.raises(ValueError, match="must appear among the columns"):
        L.multi_positive_targets(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_cross_entropy_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(5, 7, generator=gen)
    targets = torch.rand(5, 7, generator=gen).softmax(-1)
    loss = L.soft_cross_entropy(logits, targets)
    assert loss.shape == ()
    assert abs(loss.item() - ref_soft_ce(logits, targets)) < ATOL


def test_soft_cross_entropy_and_selection_loss_upcast_half_precision():
    logits = torch.randn(4, 6).bfloat16()
    assert L.soft_cross_entropy(logits, torch.eye(4, 6)).dtype == torch.float32
    assert L.selection_loss(logits, torch.tensor([0, 1, 2, 3])).dtype == torch.float32


# ---------------------------------------------------------------- losses vs reference


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("loss, reference, images", [
    (L.catalog_contrastive_loss, ref_itc, "img"), (L.inter_product_loss, ref_inter, "inst"),
], ids=["catalog_contrastive", "inter_product"])
def test_image_text_losses_match_reference(seed, loss, reference, images):
    b = _batch(seed)
    value = loss(b[images], b["txt"], b["scale"], b["ids"])
    assert abs(value.item() - reference(b[images], b["txt"], b["scale"], b["ids"])) < ATOL


@pytest.mark.parametrize("seed", SEEDS)
def test_instance_text_scores_matches_reference(seed):
    b = _batch(seed)
    txt = b["txt"][:5]
    scores, best = L.instance_text_scores(b["inst"], txt)
    assert scores.shape == best.shape == (N, 5) and best.dtype == torch.long
    for i in range(N):
        for j in range(5):
            sims = [_dot(b["inst"][i, k], txt[j]) for k in range(K)]
            assert abs(scores[i, j].item() - max(sims)) < ATOL
            assert best[i, j].item() == max(range(K), key=sims.__getitem__)


@pytest.mark.parametrize("seed", SEEDS)
def test_intra_product_loss_matches_reference(seed):
    b = _batch(seed)
    v1, _ = L.select_instances(b["inst"], b["txt"])
    v2, _ = L.select_instances(b["inst2"], b["txt"])
    loss = L.intra_product_loss(v1, v2, b["scale"], b["ids"])
    expected = ref_intra(b["inst"], b["inst2"], b["txt"], b["scale"], b["ids"])
    assert abs(loss.item() - expected) < ATOL


@pytest.mark.parametrize("seed", SEEDS)
def test_selection_loss_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(N, K, generator=gen)
    target = torch.randint(0, K, (N,), generator=gen)
    expected = ref_soft_ce(logits, torch.nn.functional.one_hot(target, K).float())
    assert abs(L.selection_loss(logits, target).item() - expected) < ATOL


def test_loss_names():
    assert L.LOSS_NAMES == ("itc", "inter", "intra", "selection")


# ---------------------------------------------------------------- select_instances


@pytest.mark.parametrize("seed", SEEDS)
def test_select_instances_index_and_gradient_routing(seed):
    b = _batch(seed)
    inst = b["inst"].clone().requires_grad_(True)
    txt = b["txt"].clone().requires_grad_(True)
    selected, index = L.select_instances(inst, txt)

    assert index.dtype == torch.long
    assert torch.equal(index, ref_select_index(b["inst"], b["txt"]))
    torch.testing.assert_close(selected, b["inst"][torch.arange(N), index])

    upstream = torch.randn(N, D, generator=torch.Generator().manual_seed(seed))
    (selected * upstream).sum().backward()
    chosen = torch.zeros(N, K, dtype=torch.bool)
    chosen[torch.arange(N), index] = True
    torch.testing.assert_close(inst.grad[chosen], upstream)
    assert torch.count_nonzero(inst.grad[~chosen]) == 0
    assert txt.grad is None  # the (discrete) choice is not differentiated


# ---------------------------------------------------------------- CLIP equivalence


@pytest.mark.parametrize("seed", SEEDS)
def test_distinct_ids_equal_transformers_clip_loss(seed):
    b = _batch(seed)
    expected = _hf_clip_loss(b["scale"] * b["txt"] @ b["img"].T)
    distinct = torch.randperm(N, generator=torch.Generator().manual_seed(seed)) * 11
    for ids in (None, distinct):
        loss = L.catalog_contrastive_loss(b["img"], b["txt"], b["scale"], ids)
        torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- duplicates


def _similarity_grad(sim, ids):
    """d loss / d sim, through the public API: eye rows make ``img @ txt.T == sim``."""
    txt = sim.T.clone().requires_grad_(True)
    L.catalog_contrastive_loss(torch.eye(len(sim)), txt, torch.tensor(1.0), ids).backward()
    return txt.grad.T


@pytest.mark.parametrize("seed", SEEDS)
def test_duplicates_are_never_negatives(seed):
    b = _batch(seed)
    img, txt, scale, ids = b["img"], b["txt"], b["scale"], b["ids"]
    same = ids[:, None] == ids[None, :]
    dup = same & ~torch.eye(N, dtype=torch.bool)
    assert dup.any()

    # Swapping the text columns of two duplicates leaves the loss unchanged: both are
    # positives with the same target weight.
    i, j = dup.nonzero()[0].tolist()
    perm = torch.arange(N)
    perm[[i, j]] = perm[[j, i]]
    loss = L.catalog_contrastive_loss(img, txt, scale, ids)
    swapped = L.catalog_contrastive_loss(img, txt, scale, ids, all_text_embeds=txt[perm], all_image_embeds=img)
    torch.testing.assert_close(swapped, loss, atol=ATOL, rtol=0)
    # ...whereas the plain CLIP loss treats duplicates as negatives and differs.
    assert abs(loss.item() - _hf_clip_loss(scale * txt @ img.T).item()) > 1e-3

    # Gradient on the similarity matrix: true negatives are only ever pushed apart, and a
    # product's block of similarities is never pushed down as a whole.
    sim = scale * img @ txt.T
    grad = _similarity_grad(sim, ids)
    assert (grad[~same] >= 0).all()
    for pid in ids.unique():
        rows = ids == pid
        assert grad[rows][:, rows].sum() <= 1e-7
    # CLIP pushes every duplicate pair apart; the catalog loss pulls each one by exactly
    # its target weight 1/count (per direction, averaged, over N rows) relative to CLIP.
    clip_grad = _similarity_grad(sim, None)
    assert (clip_grad[dup] > 0).all()
    count = same.sum(1, keepdim=True).float()
    pull = (1 / count + 1 / count.T) / (2 * N)
    torch.testing.assert_close((clip_grad - grad)[dup], pull[dup], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- local-loss sharding


def _three_losses(b):
    v1, _ = L.select_instances(b["inst"], b["txt"])
    v2, _ = L.select_instances(b["inst2"], b["txt"])
    return [
        (L.catalog_contrastive_loss, b["img"], b["txt"]),
        (L.inter_product_loss, b["inst"], b["txt"]),
        (L.intra_product_loss, v1, v2),
    ]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("split", [4, 3])
def test_local_loss_shards_recombine_to_full_batch(seed, split):
    b = _batch(seed)
    ids, scale = b["ids"], b["scale"]
    for fn, a, c in _three_losses(b):
        a = a.detach().requires_grad_(True)
        c = c.detach().requires_grad_(True)
        full = fn(a, c, scale, ids)
        full_grads = torch.autograd.grad(full, (a, c))

        sharded = sum(
            fn(a[s], c[s], scale, ids[s], a, c, ids) * len(ids[s]) / N
            for s in (slice(0, split), slice(split, N))
        )
        torch.testing.assert_close(sharded, full, atol=ATOL, rtol=0)
        for g_shard, g_full in zip(torch.autograd.grad(sharded, (a, c)), full_grads):
            torch.testing.assert_close(g_shard, g_full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which", range(3))
def test_global_columns_require_product_ids(which):
    b = _batch(0)
    fn, a, c = _three_losses(b)[which]
    with pytest.raises(ValueError, match="product_ids"):
        fn(a[:4], c[:4], b["scale"], None, None, c)  # global columns, no ids


def test_mismatched_column_ids_raise():
    b = _batch(0)
    with pytest.raises(ValueError):
        L.catalog_contrastive_loss(b["img"][:4], b["txt"][:4], b["scale"], b["ids"][:4], all_text_embeds=b["txt"])


# ---------------------------------------------------------------- gradcheck


def test_inter_product_loss_gradcheck():
    gen = torch.Generator().manual_seed(0)
    inst = _unit(4, 2, 3, gen=gen, dtype=torch.float64).requires_grad_(True)
    txt = _unit(4, 3, gen=gen, dtype=torch.float64).requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda q, t, s: L.inter_product_loss(q, t, s, ids), (inst, txt, scale))
    # Local-loss form: local rows against global columns.
    assert torch.autograd.gradcheck(
        lambda q, t, s: L.inter_product_loss(q[:2], t[:2], s, ids[:2], q, t, ids), (inst, txt, scale)
    )


# ---------------------------------------------------------------- scene-aware targets


def _members(ids, gen, width=3):
    """Each image shows its own product first, then 0-2 other products of the batch (a scene), padded with its own."""
    rows = []
    for own in ids.tolist():
        others = [c for c in ids.tolist() if c != own]
        count = int(torch.randint(0, 3, (), generator=gen))
        shown = [others[int(torch.randint(0, len(others), (), generator=gen))] for _ in range(count)] if others else []
        rows.append(([own] + shown + [own] * width)[:width])
    return torch.tensor(rows)


def ref_scene_contrastive(score, scale, ids, members):
    """Looped reference: image i's positives are the texts of every product it shows; text j's positives are the
    images showing its product. `score(i, j)` is image i vs text j (single process, square batch)."""
    ids, members, scale, n = ids.tolist(), members.tolist(), float(scale), len(ids)

    def ce(logits, positives):
        lse = math.log(sum(math.exp(x) for x in logits))
        return sum(lse - logits[j] for j in positives) / len(positives)

    i2t = sum(ce([scale * score(i, j) for j in range(n)], [j for j in range(n) if ids[j] in members[i]])
              for i in range(n)) / n
    t2i = sum(ce([scale * score(i, j) for i in range(n)], [i for i in range(n) if ids[j] in members[i]])
              for j in range(n)) / n
    return (i2t + t2i) / 2


@pytest.mark.parametrize("seed", SEEDS)
def test_scene_aware_losses_match_reference(seed):
    b = _batch(seed)
    members = _members(b["ids"], torch.Generator().manual_seed(100 + seed))
    itc = L.catalog_contrastive_loss(b["img"], b["txt"], b["scale"], b["ids"], member_ids=members)
    ref = ref_scene_contrastive(lambda i, j: _dot(b["img"][i], b["txt"][j]), b["scale"], b["ids"], members)
    assert abs(itc.item() - ref) < ATOL
    inter = L.inter_product_loss(b["inst"], b["txt"], b["scale"], b["ids"], member_ids=members)
    ref = ref_scene_contrastive(lambda i, j: max(_dot(b["inst"][i, k], b["txt"][j]) for k in range(K)),
                                b["scale"], b["ids"], members)
    assert abs(inter.item() - ref) < ATOL


def test_scene_aware_targets_reduce_to_catalog_targets_without_scenes():
    b = _batch(0)
    alone = b["ids"][:, None].repeat(1, 4)  # every image shows only its own product
    assert torch.equal(L.member_targets(alone, b["ids"]), L.multi_positive_targets(b["ids"], b["ids"]))
    assert torch.equal(L.scene_positive_targets(b["ids"], alone), L.multi_positive_targets(b["ids"], b["ids"]))
    plain = L.catalog_contrastive_loss(b["img"], b["txt"], b["scale"], b["ids"])
    assert L.catalog_contrastive_loss(b["img"], b["txt"], b["scale"], b["ids"], member_ids=alone).item() == (
        pytest.approx(plain.item(), abs=1e-6))


def test_a_distractor_text_is_a_positive_not_a_negative():
    """Pushing an image away from the text of a product pasted into it is what scene-aware targets prevent."""
    ids = torch.tensor([1, 2, 3])
    members = torch.tensor([[1, 2], [2, 2], [3, 3]])  # image 0 is a scene showing products 1 and 2
    img = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    txt = img.clone().requires_grad_()
    L.catalog_contrastive_loss(img, txt, torch.tensor(10.0), ids).backward()
    plain_grad = txt.grad[1].clone()
    txt.grad = None
    L.catalog_contrastive_loss(img, txt, torch.tensor(10.0), ids, member_ids=members).backward()
    # Descending the gradient moves text 1 towards image 0 only with scene-aware targets.
    assert -(plain_grad @ img[0]) < -(txt.grad[1] @ img[0])
    assert (-(txt.grad[1]) @ img[0]).item() > 0


def test_member_ids_must_start_with_the_rows_own_product():
    b = _batch(0)
    wrong = torch.roll(b["ids"], 1)[:, None].repeat(1, 2)
    with pytest.raises(ValueError, match="own product id first"):
        L.catalog_contrastive_loss(b["img"], b["txt"], b["scale"], b["ids"], member_ids=wrong)
    with pytest.raises(ValueError, match="without member_ids"):
        L.inter_product_loss(b["inst"], b["txt"], b["scale"], b["ids"], all_member_ids=b["ids"][:, None])


def test_soft_instance_scores_bound_the_max_and_reach_every_query():
    b = _batch(1)
    hard = L.instance_text_scores(b["inst"], b["txt"])[0]
    for tau in (1.0, 0.1, 0.01):
        soft = L.soft_instance_text_scores(b["inst"], b["txt"], tau)
        assert (soft >= hard - 1e-6).all() and (soft <= hard + tau * math.log(K) + 1e-6).all()
    torch.testing.assert_close(L.soft_instance_text_scores(b["inst"], b["txt"], 1e-4), hard, atol=1e-3, rtol=0)
    inst = b["inst"].clone().requires_grad_()
    L.inter_product_loss(inst, b["txt"], b["scale"], b["ids"], temperature=0.1).backward()
    assert (inst.grad.norm(dim=-1) > 0).all()  # every query of every image learns
    inst.grad = None
    L.inter_product_loss(inst, b["txt"], b["scale"], b["ids"]).backward()
    assert (inst.grad.norm(dim=-1) == 0).any()  # the hard max leaves losing queries without gradient
    with pytest.raises(ValueError, match="positive"):
        L.soft_instance_text_scores(b["inst"], b["txt"], 0.0)


# ---------------------------------------------------------------- one-to-one query matching


def ref_assignment(inst, members, txt, ids):
    """Looped reference: for each image, the injective map of its distinct shown products (that have a text) to
    queries with the largest summed similarity; -1 for repeated or text-less slots."""
    out = []
    for n in range(len(inst)):
        slots = [w for w, m in enumerate(members[n].tolist())
                 if m in ids.tolist() and m not in members[n, :w].tolist()]
        texts = [txt[ids.tolist().index(members[n, w].item())] for w in slots]
        best = max(itertools.permutations(range(inst.shape[1]), len(slots)),
                   key=lambda ks: sum(_dot(inst[n, k], t) for k, t in zip(ks, texts)))
        row = [-1] * members.shape[1]
        for w, k in zip(slots, best):
            row[w] = k
        out.append(row)
    return torch.tensor(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_to_one_assignment_is_the_best_injective_map(seed):
    b = _batch(seed)
    gen = torch.Generator().manual_seed(200 + seed)
    inst = _unit(N, 4, D, gen=gen)
    members = _members(b["ids"], gen)
    members[0, -1] = 999  # a product without a text in this batch is left unassigned
    assigned = L.assign_member_queries(inst, members, b["txt"], b["ids"], max_cells=50)  # several chunks
    assert torch.equal(assigned, ref_assignment(inst, members, b["txt"], b["ids"]))
    for row in assigned.tolist():
        used = [k for k in row if k >= 0]
        assert len(used) == len(set(used))
    # Scores: member texts on their assigned query, every other pair on max_k.
    scores = L.matched_instance_text_scores(inst, b["txt"], b["ids"], members, assigned)
    for n in range(N):
        for m in range(N):
            slot = [w for w in range(members.shape[1]) if members[n, w] == b["ids"][m] and assigned[n, w] >= 0]
            expected = (_dot(inst[n, assigned[n, slot[0]]], b["txt"][m]) if slot
                        else max(_dot(inst[n, k], b["txt"][m]) for k in range(4)))
            assert abs(scores[n, m].item() - expected) < ATOL


def test_one_to_one_matching_gives_each_product_of_a_scene_its_own_query():
    """The collapse case: one query is the best match of both products a scene shows. The max trains only that
    query on both; one-to-one matching trains a second query on the second product."""
    texts = torch.eye(4)[:2]  # products 0 and 1
    scene = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0, 0], [0.6, 0.5, 0.5, 0.4]]), dim=-1)
    alone = torch.nn.functional.normalize(torch.tensor([[0, 1.0, 0.2, 0], [0, 0.2, 1.0, 0.3]]), dim=-1)
    ids, members = torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 1]])
    for one_to_one, queries_trained in ((False, 1), (True, 2)):
        inst = torch.stack([scene, alone]).requires_grad_()
        L.inter_product_loss(inst, texts, torch.tensor(10.0), ids, member_ids=members, one_to_one=one_to_one).backward()
        assert int((inst.grad[0].norm(dim=-1) > 0).sum()) == queries_trained


def test_one_to_one_matching_without_scenes_is_the_max():
    b = _batch(0)
    ids = torch.arange(N)  # distinct products (a duplicate's text would be held to its product's assigned query)
    alone = ids[:, None].repeat(1, 3)  # each image shows only its own product: its text takes its best query
    plain = L.inter_product_loss(b["inst"], b["txt"], b["scale"], ids, member_ids=alone)
    for members in (alone, None):
        matched = L.inter_product_loss(b["inst"], b["txt"], b["scale"], ids, member_ids=members, one_to_one=True)
        assert matched.item() == pytest.approx(plain.item(), abs=1e-6)


@pytest.mark.parametrize("split", [4, 3])
def test_one_to_one_local_loss_shards_recombine_to_full_batch(split):
    """Across processes each image's assignment must see every process's texts: shards equal the whole batch."""
    b = _batch(1)
    members = _members(b["ids"], torch.Generator().manual_seed(5))
    inst, txt = b["inst"].clone().requires_grad_(), b["txt"].clone().requires_grad_()
    full = L.inter_product_loss(inst, txt, b["scale"], b["ids"], member_ids=members, one_to_one=True)
    full_grads = torch.autograd.grad(full, (inst, txt))
    sharded = sum(
        L.inter_product_loss(inst[s], txt[s], b["scale"], b["ids"][s], inst, txt, b["ids"], members[s], members,
                             one_to_one=True) * len(b["ids"][s]) / N
        for s in (slice(0, split), slice(split, N))
    )
    torch.testing.assert_close(sharded, full, atol=ATOL, rtol=0)
    for g_shard, g_full in zip(torch.autograd.grad(sharded, (inst, txt)), full_grads):
        torch.testing.assert_close(g_shard, g_full, atol=ATOL, rtol=0)


def test_one_to_one_matching_errors():
    b = _batch(0)
    wide = b["ids"][:, None].repeat(1, K + 1)
    with pytest.raises(ValueError, match="only 3 instance queries"):
        L.assign_member_queries(b["inst"], wide, b["txt"], b["ids"])
    with pytest.raises(ValueError, match="alternatives"):
        L.inter_product_loss(b["inst"], b["txt"], b["scale"], b["ids"], member_ids=wide[:, :2], temperature=0.1,
                             one_to_one=True)


def test_member_selection_targets_spread_over_the_products_an_image_shows():
    """A scene's target covers the queries of every product it shows; a plain photo's is its text's query."""
    d, k = 6, 5
    texts = torch.eye(d)[:3]  # products 10, 11, 12
    text_ids = torch.tensor([10, 11, 12])
    instances = torch.zeros(2, k, d)
    instances[0, 1], instances[0, 3], instances[0, 4] = texts[0], texts[1], texts[2]  # a scene of 10, 11, 12
    instances[1, 2] = texts[1]  # a photo of 11
    instances = torch.nn.functional.normalize(instances + 1e-3, dim=-1)
    members = torch.tensor([[10, 11, 12, 10], [11, 11, 11, 11]])
    for one_to_one in (False, True):
        targets = L.member_selection_targets(instances, members, texts, text_ids, one_to_one=one_to_one)
        expected = torch.zeros(2, k)
        expected[0, [1, 3, 4]] = 1 / 3
        expected[1, 2] = 1.0
        torch.testing.assert_close(targets, expected)
    # The soft target is what the selection loss trains towards; a one-hot target is the index form.
    logits = torch.randn(2, k, requires_grad=True)
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2]), k).float()
    torch.testing.assert_close(L.selection_loss(logits, one_hot), L.selection_loss(logits, torch.tensor([1, 2])))


def test_selection_weighted_embeds_is_the_normalised_softmax_mix_of_the_instances():
    gen = torch.Generator().manual_seed(0)
    instances, logits = _unit(4, K, D, gen=gen), torch.randn(4, K, generator=gen)
    for i in range(4):
        weights = [math.exp(v) for v in logits[i].tolist()]
        mixed = sum(w / sum(weights) * instances[i, k] for k, w in enumerate(weights))
        torch.testing.assert_close(L.selection_weighted_embeds(instances, logits)[i], mixed / mixed.norm())


def test_selection_retrieval_loss_trains_the_weighting_towards_the_shown_products():
    """It is the scene-aware contrastive loss of the text-free embedding, its gradient reaches the selection scores
    only, and a head that weights the instances holding the products beats one that weights an empty instance."""
    d, k = 8, 4
    texts = torch.eye(d)[:4]  # products 0..3
    ids = torch.arange(4)
    instances = torch.nn.functional.normalize(torch.eye(d)[4:8].expand(4, k, d).clone(), dim=-1)  # k "empty" slots
    instances[0, 1], instances[0, 2] = texts[0], texts[1]  # image 0: a scene of products 0 and 1
    for i in (1, 2, 3):
        instances[i, 3] = texts[i]  # images 1-3: photos of 1, 2, 3
    members = torch.tensor([[0, 1], [1, 1], [2, 2], [3, 3]])
    scale = torch.tensor(10.0)
    on_products = torch.full((4, k), -5.0)
    on_products[0, [1, 2]] = 5.0
    on_products[1:, 3] = 5.0
    on_empty = torch.full((4, k), -5.0)
    on_empty[:, 0] = 5.0
    good = L.selection_retrieval_loss(instances, on_products, texts, scale, ids, member_ids=members)
    bad = L.selection_retrieval_loss(instances, on_empty, texts, scale, ids, member_ids=members)
    assert good < bad
    torch.testing.assert_close(good, L.catalog_contrastive_loss(
        L.selection_weighted_embeds(instances, on_products), texts, scale, ids, member_ids=members))
    # Global columns equal to the local rows give the one-process loss.
    torch.testing.assert_close(good, L.selection_retrieval_loss(
        instances, on_products, texts, scale, ids, instances, on_products, texts, ids, members, members))
    with pytest.raises(ValueError, match="go together"):
        L.selection_retrieval_loss(instances, on_products, texts, scale, ids, all_instance_embeds=instances)

    leaves = [t.clone().requires_grad_(True) for t in (instances, on_empty, texts, scale)]
    L.selection_retrieval_loss(*leaves, ids, member_ids=members).backward()
    assert leaves[1].grad.abs().sum() > 0
    assert all(t.grad is None for t in (leaves[0], leaves[2], leaves[3]))  # instances, texts, scale held fixed

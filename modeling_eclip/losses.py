"""Catalog-aware contrastive losses for ECLIP.

Small, pure functions of tensors in the style of open_clip's ``loss.py``; ``pretraining_loss`` weighs them into the
pretraining objective (across processes given an all-gather), ``classification_loss`` is the task heads'. The module
is ~700 lines because every objective of the model lives here, in the one file that ``save_pretrained`` ships beside
the modeling code (remote-code loading trains with the same losses); each function stands alone.

Conventions
-----------
* All embeddings are already L2-normalised.
* ``logit_scale`` is the multiplier (already exponentiated), a scalar tensor.
* ``product_ids`` are catalog ids: rows sharing an id are the same product and are
  never negatives. The target of row ``i`` is uniform over every column with the
  same id ("multi-positive" targets).
* Every loss is symmetric: the two directions are averaged.
* Distributed training is "local-loss" style: a rank passes its LOCAL rows plus the
  GLOBAL (all-gathered) columns through the ``all_*`` arguments, which default to the
  local tensors. Each loss is a mean over the local rows, so the full-batch loss is
  ``sum_r loss_r * N_r / N``.
"""

import itertools
from typing import NamedTuple

import torch

LOSS_NAMES = ("itc", "inter", "intra", "selection")

__all__ = [
    "LOSS_NAMES",
    "member_selection_targets",
    "member_targets",
    "scene_positive_targets",
    "multi_positive_targets",
    "soft_cross_entropy",
    "catalog_contrastive_loss",
    "instance_text_scores",
    "soft_instance_text_scores",
    "assign_member_queries",
    "matched_instance_text_scores",
    "inter_product_loss",
    "select_instances",
    "intra_product_loss",
    "selection_loss",
    "selection_weighted_embeds",
    "selection_retrieval_loss",
    "pretraining_loss",
    "classification_loss",
]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # At least float32 for log-softmax stability under fp16/bf16 autocast; float64 is
    # kept so that gradcheck remains meaningful.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def multi_positive_targets(row_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """Uniform targets over the columns that share each row's product id.

    Args:
        row_ids: LongTensor [N], product ids of the rows.
        col_ids: LongTensor [M], product ids of the columns.

    Returns:
        FloatTensor [N, M] with ``targets[i, j] = 1 / count_i`` if
        ``row_ids[i] == col_ids[j]`` else 0, where ``count_i`` is the number of
        matching columns. Each row sums to 1.

    Raises:
        ValueError: if some row's product id does not appear among the columns.
    """
    return _normalise_positives(row_ids[:, None] == col_ids[None, :], row_ids)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets, averaged over rows.

    Args:
        logits: [N, M].
        targets: [N, M], each row a probability distribution.

    Returns:
        Scalar ``mean_i -sum_j targets[i, j] * log_softmax(logits, -1)[i, j]``,
        computed in (at least) float32.
    """
    logits = _upcast(logits)
    log_probs = logits.log_softmax(dim=-1)
    return -(targets.to(log_probs.dtype) * log_probs).sum(dim=-1).mean()


def _resolve_ids(
    product_ids: torch.Tensor | None,
    all_product_ids: torch.Tensor | None,
    num_rows: int,
    num_cols: tuple[int, int],
    has_global_cols: bool,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column product ids, defaulting to "every row is its own product"."""
    if product_ids is None:
        # Local row indices are not global column indices, so without ids we cannot
        # know which all-gathered column is each row's positive.
        if has_global_cols or all_product_ids is not None:
            raise ValueError(
                "product_ids must be given when global (all_*) columns are passed"
            )
        product_ids = torch.arange(num_rows, device=device)
    col_ids = product_ids if all_product_ids is None else all_product_ids
    if product_ids.shape[0] != num_rows or set(num_cols) != {col_ids.shape[0]}:
        raise ValueError(
            f"product id lengths (rows {product_ids.shape[0]}, columns "
            f"{col_ids.shape[0]}) do not match rows {num_rows} / columns {num_cols}"
        )
    return product_ids, col_ids


def scene_positive_targets(row_ids: torch.Tensor, col_member_ids: torch.Tensor) -> torch.Tensor:
    """Uniform targets over the columns whose image shows each row's product.

    Scene-aware catalog targets: an image that pastes product B among others shows B, so the text of B is one of
    its positives (and it is one of the text's), not a negative. Called with the roles swapped (rows = the images'
    members, columns = text ids) through ``member_targets``.

    Args:
        row_ids: LongTensor [N], product ids of the rows (texts).
        col_member_ids: LongTensor [M, W], the products each column image shows (its own id included).

    Returns:
        FloatTensor [N, M]; each row sums to 1.
    """
    positives = (row_ids[:, None, None] == col_member_ids[None, :, :]).any(dim=-1)
    return _normalise_positives(positives, row_ids)


def member_targets(row_member_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """Uniform targets over the columns (texts) whose product the row image shows.

    Args:
        row_member_ids: LongTensor [N, W], the products each row image shows (its own id included).
        col_ids: LongTensor [M], product ids of the columns (texts).

    Returns:
        FloatTensor [N, M]; each row sums to 1.
    """
    positives = (row_member_ids[:, :, None] == col_ids[None, None, :]).any(dim=1)
    return _normalise_positives(positives, row_member_ids[:, 0])


def _normalise_positives(positives: torch.Tensor, row_ids: torch.Tensor) -> torch.Tensor:
    """Boolean [N, M] positives -> rows summing to 1; `row_ids` [N] name the rows in the error."""
    counts = positives.sum(dim=1, keepdim=True)
    # A row without a positive has no defined target; silently returning zeros would
    # train it only to push everything away.
    if bool((counts == 0).any()):
        missing = row_ids[counts.squeeze(1) == 0].tolist()
        raise ValueError(
            f"rows' product ids must appear among the columns; no positive column for product ids {missing}"
        )
    return positives.float() / counts


def _symmetric_loss(
    logits_a2b: torch.Tensor,
    logits_b2a: torch.Tensor,
    row_ids: torch.Tensor,
    col_ids: torch.Tensor,
    row_member_ids: torch.Tensor | None = None,
    col_member_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Average of both directions' multi-positive cross-entropies, each [N, M]. With member ids (side a = images),
    a2b rows target every text whose product the image shows and b2a rows every image that shows their product.
    """
    if row_member_ids is None or col_member_ids is None:
        targets = multi_positive_targets(row_ids, col_ids)
    a2b_targets = targets if row_member_ids is None else member_targets(row_member_ids, col_ids)
    b2a_targets = targets if col_member_ids is None else scene_positive_targets(row_ids, col_member_ids)
    return (soft_cross_entropy(logits_a2b, a2b_targets) + soft_cross_entropy(logits_b2a, b2a_targets)) / 2


def _resolve_members(
    member_ids: torch.Tensor | None,
    all_member_ids: torch.Tensor | None,
    row_ids: torch.Tensor,
    col_ids: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Checked image member ids (rows, columns); ``None`` keeps the plain catalog targets."""
    if member_ids is None:
        if all_member_ids is not None:
            raise ValueError("all_member_ids was given without member_ids")
        return None, None
    all_member_ids = member_ids if all_member_ids is None else all_member_ids
    for name, members, ids in (("member_ids", member_ids, row_ids), ("all_member_ids", all_member_ids, col_ids)):
        if members.dim() != 2 or members.shape[0] != ids.shape[0] or not bool((members[:, 0] == ids).all()):
            raise ValueError(
                f"{name} must be [rows, W] with each row's own product id first; got shape {tuple(members.shape)} "
                f"for {ids.shape[0]} rows"
            )
    return member_ids, all_member_ids


class _Columns(NamedTuple):
    images: torch.Tensor  # every process's image (or instance) rows: the loss's columns
    texts: torch.Tensor
    global_cols: bool  # whether they came from other processes too
    row_ids: torch.Tensor
    col_ids: torch.Tensor
    members: torch.Tensor | None
    all_members: torch.Tensor | None


def _columns(images, texts, product_ids, all_images, all_texts, all_product_ids, member_ids, all_member_ids) -> _Columns:
    """The columns of an image-text loss (the global ones, defaulting to the local rows) and the checked ids."""
    global_cols = all_images is not None or all_texts is not None
    all_images = images if all_images is None else all_images
    all_texts = texts if all_texts is None else all_texts
    row_ids, col_ids = _resolve_ids(
        product_ids, all_product_ids, images.shape[0], (all_images.shape[0], all_texts.shape[0]), global_cols,
        images.device,
    )
    return _Columns(all_images, all_texts, global_cols, row_ids, col_ids,
                    *_resolve_members(member_ids, all_member_ids, row_ids, col_ids))


def catalog_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None = None,
    all_image_embeds: torch.Tensor | None = None,
    all_text_embeds: torch.Tensor | None = None,
    all_product_ids: torch.Tensor | None = None,
    member_ids: torch.Tensor | None = None,
    all_member_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Catalog-aware symmetric image-text contrastive loss ("itc").

    Args:
        image_embeds: [N, D] local image rows.
        text_embeds: [N, D] local text rows.
        logit_scale: scalar tensor, the (already exponentiated) multiplier.
        product_ids: LongTensor [N]. ``None`` means every row is its own product,
            which reduces to the CLIP loss; only allowed without ``all_*`` tensors.
        all_image_embeds: [M, D] global image columns (default: ``image_embeds``).
        all_text_embeds: [M, D] global text columns (default: ``text_embeds``).
        all_product_ids: LongTensor [M] (default: ``product_ids``).
        member_ids: LongTensor [N, W], optional: the products each local image
            shows, its own id first (a scene shows its distractors too). Given,
            the targets are scene-aware: an image's positives are the texts of
            every product it shows, a text's positives every image showing it.
        all_member_ids: LongTensor [M, W] for the global image columns.

    Returns:
        Scalar: mean of the image->text (local images vs all texts) and
        text->image (local texts vs all images) losses.
    """
    cols = _columns(image_embeds, text_embeds, product_ids, all_image_embeds, all_text_embeds, all_product_ids,
                    member_ids, all_member_ids)
    return _symmetric_loss(
        logit_scale * image_embeds @ cols.texts.T, logit_scale * text_embeds @ cols.images.T, cols.row_ids,
        cols.col_ids, cols.members, cols.all_members,
    )


def instance_text_scores(
    instance_embeds: torch.Tensor, text_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-text similarity as the best-matching instance query.

    Args:
        instance_embeds: [N, K, D].
        text_embeds: [M, D].

    Returns:
        scores: [N, M], ``max_k <q_ik, t_j>``.
        best_query: LongTensor [N, M], the maximising ``k``.
    """
    scores, best_query = torch.einsum("nkd,md->nmk", instance_embeds, text_embeds).max(dim=-1)
    return scores, best_query


def soft_instance_text_scores(
    instance_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Smooth maximum over the instance queries, ``tau * logsumexp_k(<q_ik, t_j> / tau)``.

    At most ``tau * log K`` above ``max_k``, and equal to it as ``tau -> 0``. Its gradient reaches every query in
    proportion to ``softmax_k(<q_ik, t_j> / tau)``, where the hard max trains only the winner: a query that loses
    early never gets a text's gradient again, and one query ends up taking every product.

    Args:
        instance_embeds: [N, K, D].
        text_embeds: [M, D].
        temperature: ``tau > 0``.

    Returns:
        scores: [N, M].
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    sims = torch.einsum("nkd,md->nmk", _upcast(instance_embeds), _upcast(text_embeds))
    return temperature * torch.logsumexp(sims / temperature, dim=-1)


def assign_member_queries(
    instance_embeds: torch.Tensor,
    member_ids: torch.Tensor,
    text_embeds: torch.Tensor,
    text_ids: torch.Tensor,
    max_cells: int = 1 << 24,
) -> torch.Tensor:
    """One-to-one assignment of the products a scene shows to distinct instance queries (no gradient).

    For each image, the texts of the products it shows (one text per distinct product: the first column with its
    id) are matched to distinct queries so that the summed similarity is the largest (an exact search over the
    ``K! / (K - W)!`` injective maps, in chunks of at most ``max_cells`` entries). Under a plain ``max_k`` every
    product of a scene may pick the same query, and one query ends up taking every product (query collapse); the
    assignment makes each query answer for a different product, as DETR's matching does for its object queries.

    Args:
        instance_embeds: [N, K, D].
        member_ids: LongTensor [N, W], the products each image shows (repeats are ignored; ``W <= K``).
        text_embeds: [M, D].
        text_ids: LongTensor [M], product ids of the texts.

    Returns:
        LongTensor [N, W]: the query of each member slot, -1 for a repeated id or a product without a text here.
    """
    num_rows, num_queries, _ = instance_embeds.shape
    width = member_ids.shape[1]
    if width > num_queries:
        raise ValueError(
            f"a scene shows up to {width} products but there are only {num_queries} instance queries; one-to-one "
            "matching needs num_instance_queries >= 1 + the compositor's maximum number of distractors"
        )
    with torch.no_grad():
        is_text = member_ids[:, :, None] == text_ids[None, None, :]  # [N, W, M]
        repeated = (member_ids[:, :, None] == member_ids[:, None, :]).tril(diagonal=-1).any(dim=-1)
        valid = is_text.any(dim=-1) & ~repeated
        member_texts = text_embeds[is_text.float().argmax(dim=-1)]  # [N, W, D]
        costs = torch.einsum("nwd,nkd->nwk", member_texts.float(), instance_embeds.float())
        costs = costs.masked_fill(~valid[:, :, None], 0.0)  # an empty slot takes a leftover query at no cost
        maps = torch.tensor(list(itertools.permutations(range(num_queries), width)), device=costs.device)
        slots = torch.arange(width, device=costs.device)
        best = torch.empty(num_rows, dtype=torch.long, device=costs.device)
        chunk = max(1, max_cells // max(1, maps.shape[0] * width))
        for start in range(0, num_rows, chunk):
            block = costs[start:start + chunk]  # [n, W, K]
            best[start:start + chunk] = block[:, slots[None, :], maps].sum(dim=-1).argmax(dim=-1)
        return maps[best].masked_fill(~valid, -1)


def matched_instance_text_scores(
    instance_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_ids: torch.Tensor,
    member_ids: torch.Tensor,
    assigned: torch.Tensor,
) -> torch.Tensor:
    """Image-text scores with the scene members' texts held to their assigned queries.

    ``s(I, T) = <q_{k*}, t>`` where ``T`` names a product the image shows and ``k*`` is the query assigned to it
    (``assign_member_queries``), and ``max_k <q_k, t>`` for every other pair.

    Args:
        instance_embeds: [N, K, D].
        text_embeds: [M, D].
        text_ids: LongTensor [M].
        member_ids: LongTensor [N, W].
        assigned: LongTensor [N, W], -1 where a slot has no assignment.

    Returns:
        scores: [N, M].
    """
    sims = torch.einsum("nkd,md->nmk", instance_embeds, text_embeds)
    with torch.no_grad():
        query = sims.argmax(dim=-1)
        for slot in range(member_ids.shape[1]):
            named = (member_ids[:, slot, None] == text_ids[None, :]) & (assigned[:, slot, None] >= 0)
            query = torch.where(named, assigned[:, slot, None], query)
    return sims.gather(-1, query.unsqueeze(-1)).squeeze(-1)


def inter_product_loss(
    instance_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None = None,
    all_instance_embeds: torch.Tensor | None = None,
    all_text_embeds: torch.Tensor | None = None,
    all_product_ids: torch.Tensor | None = None,
    member_ids: torch.Tensor | None = None,
    all_member_ids: torch.Tensor | None = None,
    temperature: float | None = None,
    one_to_one: bool = False,
) -> torch.Tensor:
    """Catalog-aware symmetric contrastive loss on ``s(I, T) = max_k <q_k, t>``.

    The arguments are ``catalog_contrastive_loss``'s, with each image's instance embeddings [N, K, D] (and
    ``all_instance_embeds`` [M, K, D]) in the place of its image embedding; with member ids a scene's instances may
    match the text of every product it shows. And:

        temperature: if given (> 0), train on the smooth maximum
            ``soft_instance_text_scores`` instead of the hard one.
        one_to_one: with member ids, score the texts of the products a scene
            shows on distinct queries (``assign_member_queries``); other pairs
            keep ``max_k``. Without member ids it changes nothing.

    Returns:
        Scalar: mean of image->text (local images vs all texts) and text->image
        (local texts vs all images, max over each column image's queries).
    """
    cols = _columns(instance_embeds, text_embeds, product_ids, all_instance_embeds, all_text_embeds, all_product_ids,
                    member_ids, all_member_ids)
    all_instance, all_text, global_cols = cols.images, cols.texts, cols.global_cols
    row_ids, col_ids, members, all_members = cols.row_ids, cols.col_ids, cols.members, cols.all_members
    if one_to_one and temperature is not None:
        raise ValueError("one_to_one matching and a smooth-max temperature are alternatives; pass one of them")
    if one_to_one and members is not None:
        i2t = matched_instance_text_scores(
            instance_embeds, all_text, col_ids, members, assign_member_queries(instance_embeds, members, all_text, col_ids)
        )
        if global_cols:  # each column image's assignment needs the texts of every process
            assigned = assign_member_queries(all_instance, all_members, all_text, col_ids)
            t2i = matched_instance_text_scores(all_instance, text_embeds, row_ids, all_members, assigned).T
        else:
            t2i = i2t.T
        return _symmetric_loss(logit_scale * i2t, logit_scale * t2i, row_ids, col_ids, members, all_members)
    if temperature is None:
        def score(instances, texts):
            return instance_text_scores(instances, texts)[0]
    else:
        def score(instances, texts):
            return soft_instance_text_scores(instances, texts, temperature)
    i2t = score(instance_embeds, all_text)
    # Single process: the text->image score matrix is the transpose of image->text.
    t2i = score(all_instance, text_embeds).T if global_cols else i2t.T
    return _symmetric_loss(logit_scale * i2t, logit_scale * t2i, row_ids, col_ids, members, all_members)


def select_instances(
    instance_embeds: torch.Tensor, text_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, for each row, the instance query that best matches its own text.

    The choice is a discrete, non-differentiable decision (computed under
    ``no_grad``); the returned embedding is a gather, so gradient reaches only the
    chosen query of each row.

    Args:
        instance_embeds: [N, K, D].
        text_embeds: [N, D], the paired text of each row.

    Returns:
        selected: [N, D], ``instance_embeds[i, index[i]]``.
        index: LongTensor [N], ``argmax_k <q_ik, t_i>``.
    """
    with torch.no_grad():
        index = torch.einsum("nkd,nd->nk", instance_embeds, text_embeds).argmax(dim=-1)
    rows = torch.arange(instance_embeds.shape[0], device=instance_embeds.device)
    return instance_embeds[rows, index], index


def intra_product_loss(
    view1_embeds: torch.Tensor,
    view2_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None = None,
    all_view1_embeds: torch.Tensor | None = None,
    all_view2_embeds: torch.Tensor | None = None,
    all_product_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Catalog-aware symmetric instance-to-instance loss between two views of each product.

    ``catalog_contrastive_loss`` with the text-selected instance of view 1 (``select_instances``), [N, D], in the
    place of the images and that of view 2 in the place of the texts (``all_view*_embeds``: their global columns),
    and no scene members: the product is what the two views share.
    """
    return catalog_contrastive_loss(
        view1_embeds, view2_embeds, logit_scale, product_ids, all_view1_embeds, all_view2_embeds, all_product_ids
    )


def member_selection_targets(
    instance_embeds: torch.Tensor,
    member_ids: torch.Tensor,
    text_embeds: torch.Tensor,
    text_ids: torch.Tensor,
    one_to_one: bool = False,
) -> torch.Tensor:
    """What the selection head should find when an image shows several products: the queries of all of them.

    Each product an image shows (its own first, then the scene's others, as in ``member_ids``) picks its query with
    its text: ``argmax_k <q_k, t>``, or with ``one_to_one`` the one-to-one assignment of ``assign_member_queries``
    (so that two products never share a query). The target spreads uniformly over the picked queries. A plain photo
    (one product) gives the one-hot of its text's query, as ``select_instances`` does. In a synthesised scene
    nothing but the text tells which pasted product is "the" product, so a head trained on the named product alone
    can only learn which query is picked most often; the products' queries are what the image itself shows.

    Args:
        instance_embeds: [N, K, D].
        member_ids: LongTensor [N, W], the products each image shows, its own first.
        text_embeds: [M, D] and text_ids: LongTensor [M], the texts of the batch (every process's, when gathered).

    Returns:
        [N, K] target distributions (no gradient).
    """
    with torch.no_grad():
        num_rows, num_queries, _ = instance_embeds.shape
        if one_to_one:
            queries = assign_member_queries(instance_embeds, member_ids, text_embeds, text_ids)
        else:
            is_text = member_ids[:, :, None] == text_ids[None, None, :]
            repeated = (member_ids[:, :, None] == member_ids[:, None, :]).tril(diagonal=-1).any(dim=-1)
            member_texts = text_embeds[is_text.float().argmax(dim=-1)]
            queries = torch.einsum("nwd,nkd->nwk", member_texts.float(), instance_embeds.float()).argmax(dim=-1)
            queries = queries.masked_fill(~is_text.any(dim=-1) | repeated, -1)
        targets = torch.zeros(num_rows, num_queries, device=instance_embeds.device)
        valid = queries >= 0
        rows = torch.arange(num_rows, device=targets.device)[:, None].expand_as(queries)
        targets.index_put_((rows[valid], queries[valid]), torch.ones_like(queries[valid], dtype=targets.dtype),
                           accumulate=True)
        return targets / targets.sum(dim=-1, keepdim=True).clamp(min=1.0)


def selection_loss(selection_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the query-selection head.

    Args:
        selection_logits: [N, K] predicted scores over instance queries.
        target: LongTensor [N], the query to select (e.g. ``select_instances``), or [N, K] target distributions
            (``member_selection_targets``).

    Returns:
        Scalar mean cross-entropy, computed in (at least) float32.
    """
    if target.dim() == 2:
        return soft_cross_entropy(selection_logits, target)
    return torch.nn.functional.cross_entropy(_upcast(selection_logits), target)


def selection_weighted_embeds(instance_embeds: torch.Tensor, selection_logits: torch.Tensor) -> torch.Tensor:
    """The text-free image embedding: the instances weighted by the softmax of the selection scores, re-normalised.

    Args:
        instance_embeds: [N, K, D] normalised instance embeddings.
        selection_logits: [N, K].

    Returns:
        [N, D], unit norm.
    """
    weights = selection_logits.softmax(dim=-1).unsqueeze(-1).to(instance_embeds.dtype)
    return torch.nn.functional.normalize((weights * instance_embeds).sum(1), dim=-1)


def selection_retrieval_loss(
    instance_embeds: torch.Tensor,
    selection_logits: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None = None,
    all_instance_embeds: torch.Tensor | None = None,
    all_selection_logits: torch.Tensor | None = None,
    all_text_embeds: torch.Tensor | None = None,
    all_product_ids: torch.Tensor | None = None,
    member_ids: torch.Tensor | None = None,
    all_member_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The selection objective that trains the head for what it is used for: text-free retrieval.

    The catalog-aware (and, given ``member_ids``, scene-aware) contrastive loss of ``catalog_contrastive_loss`` on
    the text-free embedding ``selection_weighted_embeds`` against the texts, with the instances detached: the only
    thing it can change is the weighting, so it learns which instances to keep when no text says which product is
    meant, and leaves what the instances are to the other objectives. A head that mixes in an instance that shows no
    product blurs the embedding and loses the shown products' texts to other images'.

    Args:
        instance_embeds: [N, K, D]; selection_logits: [N, K]; text_embeds: [N, D], the local rows.
        all_instance_embeds: [M, K, D], all_selection_logits: [M, K], all_text_embeds: [M, D]: the global columns
            (default: the local tensors).
        product_ids, all_product_ids, member_ids, all_member_ids: as in ``catalog_contrastive_loss``.

    Returns:
        Scalar.
    """
    embeds = selection_weighted_embeds(instance_embeds.detach(), selection_logits)
    all_embeds = None
    if all_instance_embeds is not None or all_selection_logits is not None:
        if all_instance_embeds is None or all_selection_logits is None:
            raise ValueError("all_instance_embeds and all_selection_logits go together.")
        all_embeds = selection_weighted_embeds(all_instance_embeds.detach(), all_selection_logits)
    return catalog_contrastive_loss(
        embeds, text_embeds.detach(), logit_scale.detach(), product_ids, all_embeds,
        None if all_text_embeds is None else all_text_embeds.detach(), all_product_ids, member_ids, all_member_ids,
    )


def pretraining_loss(
    config,
    logit_scale: torch.Tensor,
    text_embeds: torch.Tensor,
    global_image_embeds: torch.Tensor,
    instance_embeds: torch.Tensor | None = None,
    selection_logits: torch.Tensor | None = None,
    view_instance_embeds: torch.Tensor | None = None,
    product_ids: torch.Tensor | None = None,
    gather=None,
    member_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted pretraining loss (DESIGN.md, objectives 1-5) of one process's rows; `EclipModel.compute_loss`.

    Args:
        config: the model's ``EclipConfig`` (loss weights, ``scene_positives``, ``instance_matching``,
            ``inter_temperature``, ``selection_target``).
        logit_scale: the clamped, exponentiated scale.
        text_embeds, global_image_embeds: [N, D]; instance_embeds, view_instance_embeds: [N, K, D];
            selection_logits: [N, K]: this process's normalised embeddings (no instances: the CLIP baseline).
        product_ids: LongTensor [N], catalog ids; ``None`` makes every row its own product (one process only).
        gather: maps a local tensor to the concatenation of every process's tensor, with gradients (an all-gather);
            each loss then takes the local rows against the global columns ("local loss"). ``None``: one process.
        member_ids: LongTensor [N, W], the products each image shows, its own id first; used by the image-text
            losses when ``config.scene_positives`` is set, ignored otherwise.

    Returns:
        ``(loss, components)``: the weighted sum and a dict of the unweighted objectives that are on (``itc``,
        ``inter``, ``intra``, ``selection``). Without instances the loss is the ITC alone.
    """
    if gather is not None and product_ids is None:
        raise ValueError("product_ids are required when negatives are gathered across processes.")
    if product_ids is not None and product_ids.shape[0] != text_embeds.shape[0]:
        raise ValueError(f"product_ids has {product_ids.shape[0]} rows for a batch of {text_embeds.shape[0]}.")

    def everywhere(tensor):  # an absent optional input (member_ids) stays absent
        return None if gather is None or tensor is None else gather(tensor)

    all_ids = everywhere(product_ids)
    if not config.scene_positives:
        member_ids = None
    elif member_ids is not None and product_ids is None:
        raise ValueError("member_ids need product_ids (the first member of each row is its own product id).")
    all_members = everywhere(member_ids)
    one_to_one = config.instance_matching == "one_to_one"
    components: dict[str, torch.Tensor] = {}
    weights = {"itc": config.itc_weight, "inter": config.inter_weight, "intra": config.intra_weight,
               "selection": config.selection_weight}
    if instance_embeds is None:
        weights["itc"] = 1.0  # the CLIP baseline trains on the global ITC whatever the ECLIP weights say
    if weights["itc"] > 0:
        components["itc"] = catalog_contrastive_loss(
            global_image_embeds, text_embeds, logit_scale, product_ids,
            everywhere(global_image_embeds), everywhere(text_embeds), all_ids, member_ids, all_members,
        )
    if instance_embeds is not None:
        if weights["inter"] > 0:
            components["inter"] = inter_product_loss(
                instance_embeds, text_embeds, logit_scale, product_ids,
                everywhere(instance_embeds), everywhere(text_embeds), all_ids, member_ids, all_members,
                temperature=config.inter_temperature, one_to_one=one_to_one,
            )
        selected, selected_index = select_instances(instance_embeds, text_embeds)
        if weights["selection"] > 0 and selection_logits is not None:
            if config.selection_target == "retrieval":
                components["selection"] = selection_retrieval_loss(
                    instance_embeds, selection_logits, text_embeds, logit_scale, product_ids,
                    everywhere(instance_embeds), everywhere(selection_logits), everywhere(text_embeds), all_ids,
                    member_ids, all_members,
                )
            else:
                target = selected_index
                if config.selection_target == "members" and member_ids is not None:
                    target = member_selection_targets(
                        instance_embeds, member_ids, text_embeds if gather is None else everywhere(text_embeds),
                        product_ids if gather is None else all_ids, one_to_one=one_to_one,
                    )
                components["selection"] = selection_loss(selection_logits, target)
        if weights["intra"] > 0 and view_instance_embeds is not None:
            view_selected, _ = select_instances(view_instance_embeds, text_embeds)
            components["intra"] = intra_product_loss(
                selected, view_selected, logit_scale, product_ids, everywhere(selected), everywhere(view_selected),
                all_ids,
            )
    if not components:
        raise ValueError("Every pretraining objective is switched off (all loss weights are 0).")
    loss = sum(weights[name] * value for name, value in components.items())
    return loss, components


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None = None) -> torch.Tensor:
    """transformers' sequence-classification loss, except that a one-logit head is binary (BCE), not regression,
    unless ``problem_type="regression"`` says so. ``problem_type``: the config's (``None``: inferred)."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "multi_label_classification"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return torch.nn.functional.mse_loss(logits.view(-1), labels.to(logits.dtype).view(-1))
    if problem_type == "single_label_classification":
        return torch.nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).view(logits.shape))

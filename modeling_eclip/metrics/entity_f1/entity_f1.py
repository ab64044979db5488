"""Entity-level precision / recall / F1 for BIO-tagged sequences (conlleval semantics)."""

import datasets

from modeling_eclip.metrics import base  # the module, not its class: evaluate loads a module's first Metric class

_DESCRIPTION = """
Entity-level scores for BIO tagging (e.g. attribute extraction: B-BRAND, I-BRAND, O).

Entities are maximal spans as in conlleval / seqeval's default mode: a B-X tag
always starts an entity; an I-X tag continues the current entity only if it is
of type X, otherwise (after O, or after a different type, or at the start) it
starts a new X entity. An entity counts as correct only if its type, start and
end all match a reference entity exactly. precision / recall / f1 are
micro-averaged over entities; per_type gives the same per entity type, plus
support (number of reference entities of that type).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): predicted tag sequences.
    references (`list` of `list` of `str`): reference tag sequences. Each
        prediction must be as long as its reference. Tags are "O" or
        "B-<TYPE>" / "I-<TYPE>".

Returns:
    `precision`, `recall`, `f1`: floats (0.0 when undefined).
    `per_type`: {type: {"precision", "recall", "f1", "support"}} for every type in
        predictions or references.

Raises:
    ValueError: a sequence-length mismatch or a malformed tag.

Examples:
    >>> metric = evaluate.load("modeling_eclip/metrics/entity_f1")
    >>> metric.compute(predictions=[["B-BRAND", "O"]], references=[["B-BRAND", "O"]])["f1"]
    1.0
"""

_CITATION = """
@inproceedings{tjong2003conll,
  title={Introduction to the CoNLL-2003 Shared Task: Language-Independent Named Entity Recognition},
  author={Tjong Kim Sang, Erik F. and De Meulder, Fien},
  booktitle={CoNLL},
  year={2003}
}
"""


def _spans(tags):
    """Set of (type, start, end_exclusive) entities in one BIO sequence."""
    spans, start, etype = set(), None, None
    # A trailing "O" flushes an entity that runs to the end of the sequence.
    for i, tag in enumerate(list(tags) + ["O"]):
        if tag == "O":
            prefix, typ = "O", None
        else:
            prefix, _, typ = tag.partition("-")
            if prefix not in ("B", "I") or not typ:
                raise ValueError(f"malformed BIO tag {tag!r}; expected 'O', 'B-<TYPE>' or 'I-<TYPE>'")
        if start is not None and (prefix != "I" or typ != etype):
            spans.add((etype, start, i))
            start = None
        if prefix != "O" and start is None:
            start, etype = i, typ
    return spans


def _prf(tp, n_pred, n_gold):
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class EntityF1(base.EclipMetric):
    DESCRIPTION, INPUTS_DESCRIPTION, CITATION = _DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION
    FEATURES = {
        "predictions": datasets.Sequence(datasets.Value("string")),
        "references": datasets.Sequence(datasets.Value("string")),
    }

    def _compute(self, predictions, references):
        pred, gold = set(), set()
        for n, (p_tags, g_tags) in enumerate(zip(predictions, references)):
            if len(p_tags) != len(g_tags):
                raise ValueError(f"sequence {n}: {len(p_tags)} predicted tags vs {len(g_tags)} reference tags")
            # The sequence index keeps equal spans in different sentences apart.
            pred |= {(n, *s) for s in _spans(p_tags)}
            gold |= {(n, *s) for s in _spans(g_tags)}
        tp = pred & gold
        precision, recall, f1 = _prf(len(tp), len(pred), len(gold))

        per_type = {}
        for typ in sorted({e[1] for e in pred | gold}):
            n_tp, n_pred, n_gold = (sum(e[1] == typ for e in s) for s in (tp, pred, gold))
            p, r, f = _prf(n_tp, n_pred, n_gold)
            per_type[typ] = {"precision": p, "recall": r, "f1": f, "support": n_gold}
        return {"precision": precision, "recall": recall, "f1": f1, "per_type": per_type}

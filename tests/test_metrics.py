"""Metric modules under modeling_eclip/metrics, checked against hand-computed values."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from modeling_eclip.metrics import METRIC_NAMES, best_f1_threshold, load_metric


@pytest.fixture(scope="module")
def metrics():
    # In memory: evaluate leaks its cache-file lock when _compute raises, which costs the
    # next compute on the same instance a 1 s lock timeout.
    return {name: load_metric(name, keep_in_memory=True) for name in METRIC_NAMES}


# ---------------------------------------------------------------- retrieval

# Gallery of 10 items. Sorted by score (desc) the ranks are:
#   idx: 1  6  4  8  3  7  0  5  2  9
#   rank:1  2  3  4  5  6  7  8  9  10
ROW = [0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]


def test_retrieval_single_relevant(metrics):
    # Relevant items 1, 4, 0 sit at ranks 1, 3, 7:
    # R@1 = 1/3 (only rank 1), R@5 = 2/3 (ranks 1, 3), R@10 = 3/3, MRR = (1 + 1/3 + 1/7) / 3.
    out = metrics["retrieval"].compute(scores=[ROW] * 3, relevant=[[1], [4], [0]])
    assert out == pytest.approx({"recall@1": 1 / 3, "recall@5": 2 / 3, "recall@10": 1.0, "mrr": (1 + 1 / 3 + 1 / 7) / 3})


def test_retrieval_multiple_relevant_custom_k(metrics):
    # Query 0: relevant {5, 8} at ranks {8, 4} -> first hit at rank 4, RR = 1/4.
    # Query 1: relevant {2, 9} at ranks {9, 10} -> first hit at rank 9, RR = 1/9.
    # R@1 = 0, R@4 = 1/2 (query 0 only), R@9 = 2/2, MRR = (1/4 + 1/9) / 2.
    out = metrics["retrieval"].compute(scores=[ROW] * 2, relevant=[[5, 8], [9, 2]], k_values=(1, 4, 9))
    assert out == pytest.approx({"recall@1": 0.0, "recall@4": 0.5, "recall@9": 1.0, "mrr": (1 / 4 + 1 / 9) / 2})


def test_retrieval_ties_stable_by_index(metrics):
    # Item 1 (0.9) is rank 1; items 0, 2, 3 tie at 0.5 and keep index order: ranks 2, 3, 4.
    # Query 0 (relevant 2) -> rank 3, query 1 (relevant 0) -> rank 2.
    # R@1 = 0, R@2 = 1/2, R@3 = 1, MRR = (1/3 + 1/2) / 2.
    row = [0.5, 0.9, 0.5, 0.5]
    out = metrics["retrieval"].compute(scores=[row, row], relevant=[[2], [0]], k_values=(1, 2, 3))
    assert out == pytest.approx({"recall@1": 0.0, "recall@2": 0.5, "recall@3": 1.0, "mrr": (1 / 3 + 1 / 2) / 2})


def test_retrieval_1000x1000_numpy(metrics):
    # The diagonal (score >= 1) beats every off-diagonal score (< 0.5): perfect retrieval.
    n = 1000
    sim = np.random.default_rng(0).random((n, n)) * 0.5 + np.eye(n)
    out = metrics["retrieval"].compute(scores=sim, relevant=[[i] for i in range(n)])
    assert out == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "mrr": 1.0}


@pytest.mark.parametrize(
    "scores, relevant, kwargs",
    [
        ([ROW, ROW], [[1], []], {}),  # query without a relevant item
        ([ROW], [[10]], {}),  # index past the gallery
        ([ROW], [[-1]], {}),  # negative index
        ([ROW, ROW[:5]], [[1], [1]], {}),  # ragged rows
        ([ROW], [[1]], {"k_values": (0, 5)}),  # k must be positive
        ([[0.1, float("nan")]], [[0]], {}),
    ],
)
def test_retrieval_errors(metrics, scores, relevant, kwargs):
    with pytest.raises(ValueError):
        metrics["retrieval"].compute(scores=scores, relevant=relevant, **kwargs)


# ----------------------------------------------------------- classification

# refs  = [0, 0, 0, 1, 1, 2], preds = [0, 0, 1, 1, 2, 2]; correct at positions 0, 1, 3, 5 -> acc 4/6.
# class 0: tp 2, pred 2, true 3 -> P 1,   R 2/3, F1 4/5
# class 1: tp 1, pred 2, true 2 -> P 1/2, R 1/2, F1 1/2
# class 2: tp 1, pred 2, true 1 -> P 1/2, R 1,   F1 2/3
# macro = (4/5 + 1/2 + 2/3) / 3 = 59/90; weighted = (3*4/5 + 2*1/2 + 1*2/3) / 6 = 61/90.
CLS_REFS, CLS_PREDS = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]


def test_classification(metrics):
    out = metrics["classification"].compute(predictions=CLS_PREDS, references=CLS_REFS)
    assert out == pytest.approx({"accuracy": 4 / 6, "macro_f1": 59 / 90, "weighted_f1": 61 / 90})


def test_classification_labels_kwarg(metrics):
    # Unseen class 3 adds F1 = 0 (zero_division=0) to the macro mean: 59/90 * 3/4 = 59/120.
    # It has support 0, so weighted F1 and accuracy are unchanged.
    out = metrics["classification"].compute(predictions=CLS_PREDS, references=CLS_REFS, labels=[0, 1, 2, 3])
    assert out == pytest.approx({"accuracy": 4 / 6, "macro_f1": 59 / 120, "weighted_f1": 61 / 90})


# --------------------------------------------------------------- clustering


def test_clustering_permuted_ids_are_perfect(metrics):
    out = metrics["clustering"].compute(predictions=[7, 7, 3, 3, 5], references=[0, 0, 1, 1, 2])
    assert out == pytest.approx({"nmi": 1.0, "ari": 1.0})


def test_clustering_hand_computed(metrics):
    # refs [0, 0, 1, 1], preds [0, 0, 0, 1]; contingency rows=refs: [[2, 0], [1, 1]].
    # ARI: sum C(n_ij, 2) = 1; rows sum C = 1 + 1 = 2; cols (3, 1) sum C = 3; C(4, 2) = 6.
    #      expected = 2 * 3 / 6 = 1, max = (2 + 3) / 2 = 2.5 -> ARI = (1 - 1) / (2.5 - 1) = 0.
    # NMI (arithmetic): joint p = 1/2, 1/4, 1/4 at (0,0), (1,0), (1,1); marginals refs (1/2, 1/2), preds (3/4, 1/4).
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.25))
    h_ref = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    out = metrics["clustering"].compute(predictions=[0, 0, 0, 1], references=[0, 0, 1, 1])
    assert out["ari"] == pytest.approx(0.0, abs=1e-12)
    assert out["nmi"] == pytest.approx(mi / ((h_ref + h_pred) / 2))


# ------------------------------------------------------------ pair_matching

# Predict a match when score >= t. Positives at 0.3, 0.5, 0.6, 0.8 (4 in total).
#   t    pred  tp  P     R    F1 = 2tp / (pred + 4)
#   0.1  8     4   1/2   1    8/12
#   0.2  7     4   4/7   1    8/11
#   0.3  6     4   2/3   1    8/10   <- best
#   0.4  5     3   3/5   3/4  6/9
#   0.5  4     3   3/4   3/4  6/8
#   0.6  3     2   2/3   1/2  4/7
#   0.7  2     1   1/2   1/4  2/6
#   0.8  1     1   1     1/4  2/5
# ROC AUC: positive/negative pairs ordered correctly: 0.3 > 2 negs, 0.5 > 3, 0.6 > 3, 0.8 > 4 -> 12/16.
PM_SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
PM_LABELS = [0, 0, 1, 0, 1, 1, 0, 1]


def test_best_f1_threshold():
    threshold, f1 = best_f1_threshold(PM_SCORES, PM_LABELS)
    assert threshold == pytest.approx(0.3)
    assert f1 == pytest.approx(0.8)


def test_pair_matching_given_threshold_is_inclusive(metrics):
    # t = 0.5 row of the table; the pair scoring exactly 0.5 counts as predicted positive.
    # Precision >= 0.7: t = 0.5 (R 3/4), t = 0.8 (R 1/4) -> 3/4.
    out = metrics["pair_matching"].compute(
        scores=PM_SCORES, references=PM_LABELS, threshold=0.5, target_precision=0.7
    )
    assert out == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75, "roc_auc": 0.75, "recall_at_precision": 0.75, "threshold": 0.5}
    )


def test_pair_matching_searches_threshold_when_none(metrics):
    # Best row t = 0.3. Precision >= 0.95 only at t = 0.8 (R 1/4).
    out = metrics["pair_matching"].compute(scores=PM_SCORES, references=PM_LABELS)
    assert out == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "roc_auc": 0.75, "recall_at_precision": 0.25, "threshold": 0.3}
    )


def test_pair_matching_recall_at_precision_unreachable(metrics):
    # The top score is a negative: t = 0.9 gives P 0, t = 0.1 gives P 1/2; nothing reaches 0.95.
    out = metrics["pair_matching"].compute(scores=[0.9, 0.1], references=[0, 1], threshold=0.5)
    assert out["recall_at_precision"] == 0.0
    assert out["roc_auc"] == 0.0


@pytest.mark.parametrize(
    "scores, references, kwargs",
    [
        ([0.1, 0.2], [0, 2], {}),  # non-binary label
        ([0.1, 0.2], [0, 0], {}),  # no positive
        ([0.1, 0.2], [1, 1], {}),  # no negative: ROC AUC undefined
        ([0.1, 0.2], [0, 1], {"target_precision": 0.0}),
    ],
)
def test_pair_matching_errors(metrics, scores, references, kwargs):
    with pytest.raises(ValueError):
        metrics["pair_matching"].compute(scores=scores, references=references, **kwargs)


def test_best_f1_threshold_errors():
    with pytest.raises(ValueError):
        best_f1_threshold([0.1, 0.2, 0.3], [0, 1])


# ---------------------------------------------------------------- entity_f1


def test_entity_f1(metrics):
    refs = [
        ["B-BRAND", "I-BRAND", "O", "B-COLOR", "O"],  # BRAND[0:2], COLOR[3:4]
        ["O", "B-COLOR", "I-COLOR", "O"],  # COLOR[1:3]
        ["B-BRAND", "I-COLOR"],  # BRAND[0:1], COLOR[1:2]: I- of another type starts an entity
    ]
    preds = [
        ["B-BRAND", "O", "O", "B-SIZE", "O"],  # BRAND[0:1] wrong span, SIZE[3:4] wrong type
        ["O", "I-COLOR", "I-COLOR", "O"],  # I- after O starts COLOR[1:3]: correct
        ["B-BRAND", "B-COLOR"],  # BRAND[0:1], COLOR[1:2]: both correct
    ]
    # 5 gold, 5 predicted, 3 exact matches -> P = R = F1 = 3/5.
    # BRAND: 2 gold, 2 pred, 1 tp. COLOR: 3 gold, 2 pred, 2 tp -> P 1, R 2/3, F1 4/5. SIZE: 0 gold, 1 pred.
    out = metrics["entity_f1"].compute(predictions=preds, references=refs)
    assert out["precision"] == pytest.approx(0.6)
    assert out["recall"] == pytest.approx(0.6)
    assert out["f1"] == pytest.approx(0.6)
    expected = {
        "BRAND": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "COLOR": {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3},
        "SIZE": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
    }
    assert out["per_type"].keys() == expected.keys()
    for typ, scores in expected.items():
        assert out["per_type"][typ] == pytest.approx(scores), typ


def test_entity_f1_same_span_in_different_sentences(metrics):
    # Gold BRAND[0:1] in both sentences; the single prediction matches only sentence 0.
    # P = 1/1, R = 1/2, F1 = 2/3.
    out = metrics["entity_f1"].compute(predictions=[["B-BRAND"], ["O"]], references=[["B-BRAND"], ["B-BRAND"]])
    assert (out["precision"], out["recall"]) == (1.0, 0.5)
    assert out["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "preds, refs",
    [
        ([["O", "O"]], [["O"]]),  # length mismatch
        ([["X-BRAND"]], [["O"]]),  # unknown prefix
        ([["B-"]], [["O"]]),  # missing type
    ],
)
def test_entity_f1_errors(metrics, preds, refs):
    with pytest.raises(ValueError):
        metrics["entity_f1"].compute(predictions=preds, references=refs)


# ------------------------------------------------------------------ loading


def test_load_metric_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="retrieval.*entity_f1"):
        load_metric("accuracy")


@pytest.mark.slow
def test_offline_loading_in_subprocess(tmp_path):
    # Fresh HF cache and a socket that refuses to connect: loading must come from the local folders.
    script = textwrap.dedent(
        """
        import socket

        def _no_network(*args, **kwargs):
            raise OSError("network disabled in test")

        socket.socket.connect = _no_network
        socket.create_connection = _no_network

        from modeling_eclip.metrics import METRIC_NAMES, load_metric

        for name in METRIC_NAMES:
            assert load_metric(name).name == name, name
        print("loaded", len(METRIC_NAMES))
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loaded 5" in proc.stdout

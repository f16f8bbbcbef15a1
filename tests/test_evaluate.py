import itertools

import numpy as np
import pytest

from models.bits import pack_codes
from retrieval.evaluate import (
    evaluate_codes,
    hamming_map,
    mean_neighbours,
    radius_precision_recall,
    ranked_ap,
    relevance,
    tie_aware_map,
    unique_codes,
)


def brute_ap(order, rel):
    """AP of one ranking, straight from the definition."""
    hits, total = 0, 0.0
    for i, item in enumerate(order, start=1):
        if rel[item]:
            hits += 1
            total += hits / i
    return total / max(rel.sum(), 1)


def brute_tie_aware_ap(dist, rel):
    """Average AP over every ordering of the tied items."""
    groups = [np.flatnonzero(dist == d) for d in sorted(set(dist))]
    aps = [
        brute_ap(np.concatenate(perm), rel) for perm in itertools.product(*[itertools.permutations(g) for g in groups])
    ]
    return np.mean(aps)


@pytest.mark.parametrize("seed", range(8))
def test_tie_aware_map_equals_average_over_tie_orders(seed):
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, 3, size=(3, 7))
    rel = rng.random((3, 7)) < 0.4
    rel[0, 0] = True  # at least one query with a relevant item
    expected = [brute_tie_aware_ap(dist[q], rel[q]) if rel[q].any() else 0.0 for q in range(3)]
    assert np.allclose(tie_aware_map(dist, rel), expected)


def test_without_ties_tie_aware_ap_is_plain_ap():
    rng = np.random.default_rng(0)
    dist = np.stack([rng.permutation(9) for _ in range(4)])
    rel = rng.random((4, 9)) < 0.5
    plain = [brute_ap(np.argsort(dist[q]), rel[q]) for q in range(4)]
    assert np.allclose(tie_aware_map(dist, rel), plain)


def test_map_at_k_matches_brute_force():
    rng = np.random.default_rng(1)
    dist = rng.integers(0, 5, size=(5, 12))
    rel = rng.random((5, 12)) < 0.4
    k = 4
    expected = []
    for q in range(5):
        order = np.argsort(dist[q], kind="stable")[:k]
        hits, total = 0, 0.0
        for i, item in enumerate(order, start=1):
            if rel[q, item]:
                hits += 1
                total += hits / i
        expected.append(total / hits if hits else 0.0)
    assert hamming_map(dist, rel, k=k) == pytest.approx(np.mean(expected))
    assert np.allclose(ranked_ap(np.argsort(dist, axis=1, kind="stable"), rel, k), expected)


def test_radius_precision_recall_matches_brute_force():
    rng = np.random.default_rng(2)
    dist = rng.integers(0, 6, size=(6, 15))
    rel = rng.random((6, 15)) < 0.3
    precision, recall = radius_precision_recall(dist, rel, max_radius=5)
    for r in range(6):
        p, rc = [], []
        for q in range(6):
            inside = dist[q] <= r
            found = (inside & rel[q]).sum()
            p.append(found / inside.sum() if inside.sum() else 0.0)
            rc.append(found / rel[q].sum() if rel[q].sum() else 0.0)
        assert precision[r] == pytest.approx(np.mean(p))
        assert recall[r] == pytest.approx(np.mean(rc))
    assert recall[-1] == pytest.approx(np.mean([1.0 if rel[q].any() else 0.0 for q in range(6)]))


def test_neighbours_and_unique_codes_by_hand():
    dist = np.array([[0, 1, 2, 3], [2, 2, 0, 0]])
    assert mean_neighbours(dist) == {0: 1.5, 1: 2.0, 2: 3.5}
    codes = pack_codes(np.array([[1] + [0] * 7, [1] + [0] * 7, [0] * 8]))
    assert unique_codes(codes) == 2


def test_relevance_is_sharing_a_label():
    q = np.array([[1, 0, 1]])
    d = np.array([[0, 0, 1], [0, 1, 0], [1, 1, 0]])
    assert relevance(q, d).tolist() == [[True, False, True]]


def test_perfect_codes_give_map_one():
    labels = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    bits = np.zeros((6, 8), int)
    for i, c in enumerate(labels.argmax(1)):
        bits[i, c] = 1
    codes = pack_codes(bits)
    report = evaluate_codes(codes, codes, labels, labels, 8)
    assert report.map_all == pytest.approx(1.0)
    assert report.precision_by_radius[0] == pytest.approx(1.0)
    assert report.recall_by_radius[0] == pytest.approx(1.0)
    assert report.mean_ones_database == 1.0

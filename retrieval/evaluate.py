"""Retrieval metrics over codes and labels. Knows nothing of models: it scores rankings.

Relevance: a database item is relevant to a query when they share at least one label.
Hamming rankings have many ties (sparse codes collide on purpose), so mAP@all is the
tie-aware average precision of McSherry & Najork (ECIR 2008): the expected AP when tied items
come in random order. It does not depend on the database's order, unlike a sort that breaks
ties by index. mAP@k breaks ties by database index (stable sort), the usual convention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from models.bits import hamming_distances, unpack_codes


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Multi-hot labels [q, c], [n, c] -> bool [q, n]: do they share a label?"""
    query_labels, db_labels = np.asarray(query_labels, np.float32), np.asarray(db_labels, np.float32)
    if query_labels.shape[1] > 256:  # a library's thousands of tags: a sparse product, not a dense one
        from scipy import sparse

        product = sparse.csr_matrix(query_labels) @ sparse.csr_matrix(db_labels).T
        return product.toarray() > 0
    return (query_labels @ db_labels.T) > 0


def tie_aware_map(distances: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Expected AP of each query when items at equal integer distance are in random order.

    distances: int [q, n] (smaller is better), relevant: bool [q, n]. Returns AP [q]; a query
    with no relevant item gets 0. For a tie group at positions p+1..p+g holding r relevant
    items after c relevant ones, a relevant item at position p+j has in expectation
    (j−1)(r−1)/(g−1) relevant items before it within the group, so the group adds
    (r/g) Σ_j [c + 1 + (j−1)(r−1)/(g−1)] / (p+j), a sum of harmonic numbers.
    """
    distances = np.asarray(distances)
    if distances.size and distances.min() < 0:
        raise ValueError("distances must be non-negative integers")
    q, n = distances.shape
    levels = int(distances.max()) + 1 if distances.size else 1
    rows = np.repeat(np.arange(q), n)
    flat = rows * levels + distances.ravel()
    g = np.bincount(flat, minlength=q * levels).reshape(q, levels).astype(np.float64)
    r = np.bincount(flat, weights=relevant.ravel().astype(np.float64), minlength=q * levels)
    r = r.reshape(q, levels)
    p = np.cumsum(g, axis=1) - g  # items ranked before each group
    c = np.cumsum(r, axis=1) - r  # relevant items ranked before each group
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
    h = table[(p + g).astype(np.int64)] - table[p.astype(np.int64)]  # harmonic numbers H(p+g) − H(p)
    # Σ_j 1/(p+j) = h;  Σ_j (j−1)/(p+j) = g − (p+1)·h
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g > 1, (r - 1) / np.maximum(g - 1, 1), 0.0)
        contrib = np.where(g > 0, (r / np.maximum(g, 1)) * ((c + 1) * h + ratio * (g - (p + 1) * h)), 0.0)
    total_relevant = relevant.sum(1)
    ap = contrib.sum(1) / np.maximum(total_relevant, 1)
    return np.where(total_relevant > 0, ap, 0.0)


def ranked_ap(order: np.ndarray, relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """AP of each query for a given ranking order [q, n] (best first), optionally at cutoff k.

    AP@k = Σ_{i<=k} P(i)·rel(i) / (relevant items in the top k); 0 when there are none.
    """
    rel = np.take_along_axis(relevant, order, axis=1)
    if k is not None:
        rel = rel[:, :k]
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    precision_sum = (rel * hits / ranks).sum(1)
    n_rel = rel.sum(1)
    return np.where(n_rel > 0, precision_sum / np.maximum(n_rel, 1), 0.0)


def score_map(scores: np.ndarray, relevant: np.ndarray, k: int | None = None) -> float:
    """mAP for real-valued scores [q, n] (larger is better), e.g. float cosine retrieval."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return float(ranked_ap(order, relevant, k).mean())


def hamming_map(distances: np.ndarray, relevant: np.ndarray, k: int | None = None) -> float:
    """mAP@all (tie-aware) when k is None, else mAP@k with ties broken by index."""
    if k is None:
        return float(tie_aware_map(distances, relevant).mean())
    order = np.argsort(distances, axis=1, kind="stable")
    return float(ranked_ap(order, relevant, k).mean())


def radius_precision_recall(
    distances: np.ndarray, relevant: np.ndarray, max_radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall of the Hamming ball of radius r, for r = 0..max_radius.

    A query whose ball is empty has precision 0 (the convention of Liu et al., KSH 2012), so
    a method cannot look precise by returning nothing.
    """
    levels = max_radius + 1
    q = distances.shape[0]
    clipped = np.minimum(distances, levels)  # everything beyond max_radius in one overflow bin
    rows = np.repeat(np.arange(q), distances.shape[1])
    flat = rows * (levels + 1) + clipped.ravel()
    counts = np.bincount(flat, minlength=q * (levels + 1)).reshape(q, levels + 1)[:, :levels]
    hits = np.bincount(flat, weights=relevant.ravel().astype(np.float64), minlength=q * (levels + 1))
    hits = hits.reshape(q, levels + 1)[:, :levels]
    retrieved = np.cumsum(counts, axis=1)
    found = np.cumsum(hits, axis=1)
    precision = np.where(retrieved > 0, found / np.maximum(retrieved, 1), 0.0)
    total = relevant.sum(1, keepdims=True)
    recall = np.where(total > 0, found / np.maximum(total, 1), 0.0)
    return precision.mean(0), recall.mean(0)


def mean_neighbours(distances: np.ndarray, radii: tuple[int, ...] = (0, 1, 2)) -> dict[int, float]:
    """Mean number of database items within Hamming radius r of a query."""
    return {r: float((distances <= r).sum(1).mean()) for r in radii}


def unique_codes(codes: np.ndarray) -> int:
    """Number of distinct codes among packed codes [n, bytes]."""
    return int(np.unique(np.asarray(codes), axis=0).shape[0])


def mean_ones(codes: np.ndarray) -> float:
    """Mean number of ones per code."""
    return float(unpack_codes(codes).sum(1).mean())


@dataclass
class HashingReport:
    """Every figure of one query set against one database, for one method and direction."""

    map_all: float  # tie-aware mAP over the whole Hamming ranking
    map_at_50: float  # mAP of the top 50
    precision_by_radius: list[float]  # precision within radius r, r = 0..bits
    recall_by_radius: list[float]  # recall within radius r, r = 0..bits
    unique_codes: int  # distinct database codes
    neighbours: dict[int, float]  # mean database items within radius 0, 1, 2
    mean_ones_query: float  # mean ones per query code
    mean_ones_database: float  # mean ones per database code
    query_ms: float  # mean time to rank the whole database for one query, milliseconds

    def to_dict(self) -> dict:
        return {
            "map_all": self.map_all,
            "map_at_50": self.map_at_50,
            "precision_by_radius": self.precision_by_radius,
            "recall_by_radius": self.recall_by_radius,
            "unique_codes": self.unique_codes,
            "neighbours": {str(k): v for k, v in self.neighbours.items()},
            "mean_ones_query": self.mean_ones_query,
            "mean_ones_database": self.mean_ones_database,
            "query_ms": self.query_ms,
        }


def evaluate_codes(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    bits: int,
) -> HashingReport:
    """All metrics for packed query codes against packed database codes."""
    start = time.perf_counter()
    distances = hamming_distances(query_codes, db_codes)
    query_ms = 1000 * (time.perf_counter() - start) / max(len(query_codes), 1)
    relevant = relevance(query_labels, db_labels)
    precision, recall = radius_precision_recall(distances, relevant, bits)
    return HashingReport(
        map_all=hamming_map(distances, relevant),
        map_at_50=hamming_map(distances, relevant, k=50),
        precision_by_radius=precision.tolist(),
        recall_by_radius=recall.tolist(),
        unique_codes=unique_codes(db_codes),
        neighbours=mean_neighbours(distances),
        mean_ones_query=mean_ones(query_codes),
        mean_ones_database=mean_ones(db_codes),
        query_ms=query_ms,
    )

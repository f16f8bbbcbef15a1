import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bits import hamming_distances, pack_codes
from retrieval.buckets import BucketIndex


def sparse_codes(rng, n, bits, ones, noise=0.5):
    """Codes like the sparse model's: few ones, many photos sharing a code."""
    protos = rng.random((max(1, n // 8), bits)) < ones / bits
    rows = protos[rng.integers(0, len(protos), n)].copy()
    flip = rng.random((n, bits)) < noise / bits
    return pack_codes(rows ^ flip)


@pytest.mark.parametrize("bits", [16, 64, 128])
@pytest.mark.parametrize("k", [1, 7, 50, 1000])
def test_knn_matches_brute_force(bits, k):
    rng = np.random.default_rng(bits + k)
    codes = sparse_codes(rng, 300, bits, ones=5)
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    index = BucketIndex(ids, codes, bits)
    queries = np.concatenate([codes[:5], sparse_codes(rng, 5, bits, ones=12)])
    truth = hamming_distances(queries, codes)
    by_id = dict(zip(ids.tolist(), range(len(ids))))
    for q in range(len(queries)):
        dist, found = index.knn(queries[q], k)
        expected = np.sort(truth[q])[: min(k, len(ids))]
        assert np.array_equal(dist, expected)  # the k smallest distances, nearest first
        assert len(set(found.tolist())) == len(found)
        assert all(truth[q, by_id[i]] == d for i, d in zip(found.tolist(), dist.tolist()))


@given(seed=st.integers(0, 10_000), r=st.integers(0, 6), bits=st.sampled_from([8, 32, 64, 72]))
@settings(max_examples=60, deadline=None)
def test_radius_matches_brute_force(seed, r, bits):
    rng = np.random.default_rng(seed)
    codes = sparse_codes(rng, 120, bits, ones=4)
    ids = np.arange(120, dtype=np.int64) * 3 + 1
    index = BucketIndex(ids, codes, bits)
    query = sparse_codes(rng, 1, bits, ones=4)[0]
    truth = hamming_distances(query[None], codes)[0]
    dist, found = index.radius(query, r)
    assert sorted(found.tolist()) == sorted(ids[truth <= r].tolist())
    assert np.all(np.diff(dist) >= 0)
    assert np.array_equal(dist, truth[(found - 1) // 3])


def test_sparse_codes_cost_at_most_16_bytes_a_photo():
    rng = np.random.default_rng(0)
    codes = sparse_codes(rng, 20_000, 64, ones=6, noise=0.3)
    index = BucketIndex(np.arange(20_000), codes, 64)
    assert index.distinct_codes < 20_000 / 2
    assert index.nbytes() / len(index) <= 16


def test_empty_index():
    index = BucketIndex(np.zeros(0, np.int64), np.zeros((0, 8), np.uint8), 64)
    assert len(index.knn(np.zeros(8, np.uint8), 5)[1]) == 0
    assert len(index.radius(np.zeros(8, np.uint8), 3)[1]) == 0

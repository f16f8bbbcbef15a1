import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bits import hamming_distances, pack_codes
from retrieval.multi_index import MultiIndex


def sparse_codes(rng, n, bits, ones, noise=0.5):
    """Codes like the sparse model's: few ones, many photos sharing a code."""
    protos = rng.random((max(1, n // 8), bits)) < ones / bits
    rows = protos[rng.integers(0, len(protos), n)].copy()
    flip = rng.random((n, bits)) < noise / bits
    return pack_codes(rows ^ flip)


@pytest.mark.parametrize("bits", [16, 48, 64, 128])
@pytest.mark.parametrize("k", [1, 7, 50, 1000])
@pytest.mark.parametrize("max_level", [0, 1, 3])  # how far the two-half tables go before the scan
def test_knn_matches_brute_force(bits, k, max_level):
    rng = np.random.default_rng(bits + k)
    codes = sparse_codes(rng, 300, bits, ones=5)
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    index = MultiIndex(ids, codes, bits, max_level=max_level)
    queries = np.concatenate([codes[:5], sparse_codes(rng, 5, bits, ones=12)])
    truth = hamming_distances(queries, codes)
    by_id = dict(zip(ids.tolist(), range(len(ids))))
    for q in range(len(queries)):
        dist, found = index.knn(queries[q], k)
        expected = np.sort(truth[q])[: min(k, len(ids))]
        assert np.array_equal(dist, expected)  # the k smallest distances, nearest first
        assert len(set(found.tolist())) == len(found)
        assert all(truth[q, by_id[i]] == d for i, d in zip(found.tolist(), dist.tolist()))


@given(
    seed=st.integers(0, 10_000), r=st.integers(0, 8), bits=st.sampled_from([8, 32, 64, 72]), max_level=st.integers(0, 3)
)
@settings(max_examples=80, deadline=None)
def test_radius_matches_brute_force(seed, r, bits, max_level):
    rng = np.random.default_rng(seed)
    codes = sparse_codes(rng, 120, bits, ones=4)
    ids = np.arange(120, dtype=np.int64) * 3 + 1
    index = MultiIndex(ids, codes, bits, max_level=max_level)
    query = sparse_codes(rng, 1, bits, ones=4)[0]
    truth = hamming_distances(query[None], codes)[0]
    dist, found = index.radius(query, r)
    assert sorted(found.tolist()) == sorted(ids[truth <= r].tolist())
    assert np.all(np.diff(dist) >= 0)
    assert np.array_equal(dist, truth[(found - 1) // 3])


@pytest.mark.parametrize("ones", [2, 6, 10])
def test_knn_from_the_tables_equals_the_scan(ones):
    """The tables answer exactly when the k-th neighbour is within their reach (2·level + 1),
    and then give what the exact scan gives; otherwise they hand over to the scan."""
    rng = np.random.default_rng(ones)
    codes = sparse_codes(rng, 5000, 64, ones=ones, noise=1)
    index = MultiIndex(np.arange(5000), codes, 64, max_level=3)
    near = np.unpackbits(codes[rng.integers(0, 5000, 40)], axis=1) ^ (rng.random((40, 64)) < 3 / 64)
    queries = pack_codes(near)  # a few bits away from photos in the index, like a query of a known tag
    truth = hamming_distances(queries, codes)
    answered = 0
    for q, query in enumerate(queries):
        dist, pos, certain = index._run(query, 10, index.levels, -1)
        kth = np.sort(truth[q])[9]
        assert certain == (kth <= 2 * (index.levels - 1) + 1)
        if certain:
            answered += 1
            assert np.array_equal(dist, np.sort(truth[q])[:10])
            assert np.array_equal(truth[q, index.ids[pos]], dist)
    assert answered >= 10


def test_codes_cost_at_most_16_bytes_a_photo():
    rng = np.random.default_rng(0)
    codes = sparse_codes(rng, 200_000, 64, ones=6, noise=0.3)
    index = MultiIndex(np.arange(200_000), codes, 64)
    assert index.nbytes() / len(index) <= 16


def test_empty_index():
    index = MultiIndex(np.zeros(0, np.int64), np.zeros((0, 8), np.uint8), 64)
    assert len(index.knn(np.zeros(8, np.uint8), 5)[1]) == 0
    assert len(index.radius(np.zeros(8, np.uint8), 3)[1]) == 0


def test_code_index_lets_faiss_go_while_searching_and_rebuilds_it_on_change(tmp_path):
    from retrieval.index import CodeIndex

    rng = np.random.default_rng(5)
    codes = sparse_codes(rng, 500, 64, ones=6)
    ids = np.arange(500, dtype=np.int64) * 2 + 1
    index = CodeIndex.build(64, 1, ids, codes)
    assert index.nbytes() / index.ntotal <= 16 + 1  # asking for it builds the search structure first
    dist, found = index.knn(codes[0], 5)
    assert index._faiss is None  # only the search structure is held now
    assert index.nbytes() / index.ntotal <= 16 + 1  # (+ the directories of a small index)
    index.remove(np.array([int(found[0])]))  # rebuilt from the search structure, then changed
    assert index.ntotal == 499 and int(found[0]) not in index.ids()
    index.add(np.array([10_001]), codes[:1])
    assert index.knn(codes[0], 1)[0][0] == 0 and 10_001 in index.knn(codes[0], 5)[1]
    index.save(tmp_path / "codes.faiss")
    again, rebuilt = CodeIndex.open(tmp_path / "codes.faiss", bits=64, model_id=1, ids=index.ids(), codes=index.codes())
    assert not rebuilt and sorted(again.ids()) == sorted(index.ids())


def test_a_saved_index_that_missed_a_changed_code_is_rebuilt(tmp_path):
    """A process killed after committing a re-embedded photo's new code, before saving the index:
    same ids, one code different. The saved index must not be trusted."""
    from retrieval.index import CodeIndex

    rng = np.random.default_rng(6)
    codes = sparse_codes(rng, 50, 64, ones=6)
    ids = np.arange(50, dtype=np.int64)
    CodeIndex.build(64, 1, ids, codes).save(tmp_path / "codes.faiss")
    changed = codes.copy()
    changed[7] ^= 0xFF
    index, rebuilt = CodeIndex.open(tmp_path / "codes.faiss", bits=64, model_id=1, ids=ids[::-1], codes=changed[::-1])
    assert rebuilt and np.array_equal(index.codes()[np.argsort(index.ids())], changed)
    assert not CodeIndex.open(tmp_path / "codes.faiss", bits=64, model_id=1, ids=ids, codes=changed)[1]
    assert not list(tmp_path.glob("*.tmp"))

"""Hamming search that uses the shape of sparse codes: photos grouped by identical code.

Sparse similarity-preserving codes concentrate: many photos share a code, and a query's
neighbours sit within a Hamming distance of one or two. So the index keeps one sorted array of
the distinct codes (as 64-bit keys) and, per distinct code, the ids of its photos. A query
first probes its own code and every code one and two bit flips away (binary search in the
sorted keys, 2,081 probes at 64 bits); when those buckets hold at least k photos the answer is
exact and done. Otherwise it falls back to a scan over the distinct codes, which is still
exact. Memory: 8 bytes per photo (its id) plus 16 bytes per distinct code (key, start, size).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

PROBE_RADIUS = 2  # bit flips enumerated before falling back to a scan of the distinct codes


def code_keys(codes: np.ndarray) -> np.ndarray:
    """Packed codes [n, bytes] -> [n, words] uint64, big-endian, zero-padded to whole words."""
    codes = np.ascontiguousarray(codes, np.uint8)
    n, nbytes = codes.shape
    words = max(1, -(-nbytes // 8))
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :nbytes] = codes
    return padded.view(">u8").astype(np.uint64)


class BucketIndex:
    """Read-only kNN and radius search over (ids, packed codes); rebuilt when the codes change."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, bits: int) -> None:
        self.bits = bits
        ids = np.asarray(ids, np.int64)
        keys = code_keys(codes) if len(ids) else np.zeros((0, max(1, -(-bits // 64))), np.uint64)
        self.words = keys.shape[1]
        if self.words == 1:
            unique, inverse, counts = np.unique(keys[:, 0], return_inverse=True, return_counts=True)
            self.keys = unique  # [u] sorted, so probes are binary searches
        else:
            unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
            self.keys = unique  # [u, words]
        order = np.argsort(inverse.ravel(), kind="stable")
        self.ids = ids[order]  # photo ids grouped by bucket
        offsets = np.int32 if len(ids) < 2**31 else np.int64
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(offsets)  # bucket b: from starts[b]
        self.sizes = counts.astype(offsets)
        self._masks = self._flip_masks() if self.words == 1 else []

    def _flip_masks(self) -> list[np.ndarray]:
        """XOR masks of every code at distance 0, 1, …, PROBE_RADIUS (bits sit at the top of the word)."""
        single = [np.uint64(1) << np.uint64(63 - i) for i in range(self.bits)]
        masks = [np.zeros(1, np.uint64)]
        for r in range(1, PROBE_RADIUS + 1):
            masks.append(np.array([np.bitwise_xor.reduce(c) for c in combinations(single, r)], np.uint64))
        return masks

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def distinct_codes(self) -> int:
        return len(self.sizes)

    def nbytes(self) -> int:
        return self.keys.nbytes + self.ids.nbytes + self.starts.nbytes + self.sizes.nbytes

    # --- search ----------------------------------------------------------------------------

    def knn(self, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest photos to one packed code: (distances, ids), nearest first."""
        if len(self.ids) == 0 or k <= 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        key = code_keys(np.asarray(code).reshape(1, -1))[0]
        if self.words == 1:
            buckets, dists, found = [], [], 0
            for r, masks in enumerate(self._masks):
                hit = self._lookup(key[0] ^ masks)
                buckets.append(hit)
                dists.append(np.full(len(hit), r, np.int32))
                found += int(self.sizes[hit].sum())
                if found >= k:  # everything within r is found and it is enough: exact
                    return self._gather(np.concatenate(buckets), np.concatenate(dists), k)
        d = self._scan(key)
        within = np.cumsum(np.bincount(d, weights=self.sizes, minlength=self.bits + 1))
        limit = int(np.searchsorted(within, min(k, len(self.ids))))  # smallest distance covering k photos
        chosen = np.flatnonzero(d <= limit)
        chosen = chosen[np.argsort(d[chosen], kind="stable")]
        return self._gather(chosen, d[chosen], k)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every photo within Hamming distance r of one packed code: (distances, ids), nearest first."""
        if len(self.ids) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        key = code_keys(np.asarray(code).reshape(1, -1))[0]
        if self.words == 1 and r <= PROBE_RADIUS:
            hits = [self._lookup(key[0] ^ masks) for masks in self._masks[: r + 1]]
            dists = [np.full(len(h), i, np.int32) for i, h in enumerate(hits)]
            return self._gather(np.concatenate(hits), np.concatenate(dists), len(self.ids))
        d = self._scan(key)
        chosen = np.flatnonzero(d <= r)
        chosen = chosen[np.argsort(d[chosen], kind="stable")]
        return self._gather(chosen, d[chosen], len(self.ids))

    def _lookup(self, probes: np.ndarray) -> np.ndarray:
        """Buckets whose key is one of `probes`."""
        pos = np.searchsorted(self.keys, probes)
        pos[pos == len(self.keys)] = 0
        return pos[self.keys[pos] == probes]

    def _scan(self, key: np.ndarray) -> np.ndarray:
        """Hamming distance from `key` to every distinct code."""
        keys = self.keys.reshape(len(self.keys), -1)
        return np.bitwise_count(keys ^ key).sum(axis=1, dtype=np.int32)

    def _gather(self, buckets: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k photos of `buckets` (already nearest first), with their distances."""
        sizes = self.sizes[buckets]
        keep = int(np.searchsorted(np.cumsum(sizes), k)) + 1  # buckets needed to reach k photos
        buckets, sizes, dists = buckets[:keep], sizes[:keep], dists[:keep]
        sizes = sizes.astype(np.int64)
        total = int(sizes.sum())
        offsets = np.repeat(self.starts[buckets] - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)
        return np.repeat(dists, sizes)[:k].astype(np.int32), self.ids[offsets[:k]]

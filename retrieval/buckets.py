"""Hamming search that uses the shape of sparse codes: photos grouped by identical code.

Sparse similarity-preserving codes concentrate: many photos share a code, and a query's
neighbours sit within a Hamming distance of one or two. So the index keeps one sorted array of
the distinct codes (as 64-bit keys) and, per distinct code, the ids of its photos. A query
first probes its own code and every code one and two bit flips away (binary search in the
sorted keys, 2,081 probes at 64 bits); when those buckets hold at least k photos the answer is
exact and done. Otherwise it falls back to a FAISS scan over the distinct codes, still exact.
Memory: 4 bytes per photo (its id) plus, per distinct code, the code (at 64 bits the sorted keys
are a view of FAISS's own copy, so it is stored once) and where its photos start.
"""

from __future__ import annotations

from itertools import combinations

import faiss
import numpy as np

PROBE_RADIUS = 2  # bit flips enumerated before falling back to a scan of the distinct codes


def code_keys(codes: np.ndarray) -> np.ndarray:
    """Packed codes [n, bytes] -> [n, words] uint64 (the bytes read in native little-endian
    order, zero-padded to whole words). Hamming distance is the same on keys as on codes."""
    codes = np.ascontiguousarray(codes, np.uint8)
    n, nbytes = codes.shape
    words = max(1, -(-nbytes // 8))
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :nbytes] = codes
    return padded.view("<u8").astype(np.uint64)


class BucketIndex:
    """Read-only kNN and radius search over (ids, packed codes); rebuilt when the codes change."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, bits: int) -> None:
        self.bits = bits
        ids = np.asarray(ids, np.int64)
        keys = code_keys(codes) if len(ids) else np.zeros((0, max(1, -(-bits // 64))), np.uint64)
        self.words = keys.shape[1]
        if self.words == 1:
            unique, inverse, counts = np.unique(keys[:, 0], return_inverse=True, return_counts=True)
            self.keys = unique  # [u] sorted, so probes are binary searches (shared with FAISS below)
        else:
            unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
            self.keys = unique  # [u, words]
        order = np.argsort(inverse.ravel(), kind="stable")
        small = len(ids) == 0 or (ids.min() >= 0 and ids.max() < 2**31)  # SQLite row ids of a photo library
        self.ids = ids[order].astype(np.int32 if small else np.int64)  # photo ids grouped by bucket
        offsets = np.int32 if len(ids) < 2**31 else np.int64
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(offsets)  # bucket b: ids[starts[b]:starts[b+1]]
        self._masks = self._flip_masks() if self.words == 1 else []
        distinct = unique.reshape(len(unique), self.words).view(np.uint8)[:, : -(-bits // 8)]
        self._scan_index = faiss.IndexBinaryFlat(bits)  # the fallback: exact scan of the distinct codes
        if len(distinct):
            self._scan_index.add(np.ascontiguousarray(distinct))
            if bits == 64:  # FAISS copied the codes: make the keys a view of that copy, not a second one
                self.keys = faiss.rev_swig_ptr(self._scan_index.xb.data(), len(unique) * 8).view("<u8")

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def _flip_masks(self) -> list[np.ndarray]:
        """XOR masks of every code at distance 0, 1, …, PROBE_RADIUS (the code fills the low bits)."""
        single = [np.uint64(1) << np.uint64(i) for i in range(self.bits)]
        masks = [np.zeros(1, np.uint64)]
        for r in range(1, PROBE_RADIUS + 1):
            masks.append(np.array([np.bitwise_xor.reduce(c) for c in combinations(single, r)], np.uint64))
        return masks

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def distinct_codes(self) -> int:
        return len(self.starts) - 1

    def nbytes(self) -> int:
        shared = self.bits == 64 and self.distinct_codes > 0  # keys are a view of the FAISS codes
        keys = 0 if shared else self.keys.nbytes
        return keys + self.ids.nbytes + self.starts.nbytes + self._scan_index.ntotal * self.bits // 8

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
                found += int((self.starts[hit + 1] - self.starts[hit]).sum())
                if found >= k:  # everything within r is found and it is enough: exact
                    return self._gather(np.concatenate(buckets), np.concatenate(dists), k)
        # k nearest distinct codes always hold at least k photos
        d, chosen = self._scan_index.search(self._packed(code), min(k, self.distinct_codes))
        return self._gather(chosen[0], d[0], k)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every photo within Hamming distance r of one packed code: (distances, ids), nearest first."""
        if len(self.ids) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        key = code_keys(np.asarray(code).reshape(1, -1))[0]
        if self.words == 1 and r <= PROBE_RADIUS:
            hits = [self._lookup(key[0] ^ masks) for masks in self._masks[: r + 1]]
            dists = [np.full(len(h), i, np.int32) for i, h in enumerate(hits)]
            return self._gather(np.concatenate(hits), np.concatenate(dists), len(self.ids))
        _, d, chosen = self._scan_index.range_search(self._packed(code), r + 1)
        order = np.argsort(d, kind="stable")
        return self._gather(chosen[order], d[order], len(self.ids))

    def _lookup(self, probes: np.ndarray) -> np.ndarray:
        """Buckets whose key is one of `probes`."""
        pos = np.searchsorted(self.keys, probes)
        pos[pos == len(self.keys)] = 0
        return pos[self.keys[pos] == probes]

    def _packed(self, code: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(code, np.uint8).reshape(1, -1))

    def _gather(self, buckets: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k photos of `buckets` (already nearest first), with their distances."""
        sizes = self.starts[buckets + 1] - self.starts[buckets]
        keep = int(np.searchsorted(np.cumsum(sizes), k)) + 1  # buckets needed to reach k photos
        buckets, sizes, dists = buckets[:keep], sizes[:keep].astype(np.int64), dists[:keep]
        total = int(sizes.sum())
        offsets = np.repeat(self.starts[buckets] - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)
        return np.repeat(dists, sizes)[:k].astype(np.int32), self.ids[offsets[:k]].astype(np.int64)

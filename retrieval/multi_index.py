"""Exact Hamming search in two halves: multi-index hashing (Norouzi et al., CVPR 2012) with m = 2.

Split a code into a high and a low half. If two codes are within Hamming distance 2s + 1, one
of their halves is within s (pigeonhole). So the search enumerates, level s = 0, 1, 2, …, every
half-code at distance exactly s from the query's halves, looks each up in a table of halves,
and scores what it finds by the full distance; after level s every photo within 2s + 1 has been
seen, and once k of them are that near the answer is exact and the search stops. A query whose
neighbours are far (the levels would cost more than a scan) falls back to a FAISS scan, also
exact. The sparse codes of a trained model put most neighbours within a few bits, so most
queries stop at level 0, 1 or 2.

The tables cost almost nothing on top of the codes themselves:
- photos are kept sorted by code (as a 64-bit key), so the high-half table is the sorted keys
  plus a directory on their top bits (at 64 bits the keys are a view of FAISS's own copy of the
  codes, the one the fallback scans);
- the low-half table is a permutation of the photos sorted by their low half, stored in 3 bytes
  a photo (4 above 16.7M photos), with its own directory;
- and 4 bytes a photo for the photo ids (SQLite row ids).
So 15–16 bytes a photo at 64 bits. The lookups are compiled with numba: per query they touch a
few thousand table entries, too few to amortise numpy's per-call cost.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import faiss
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

PHOTOS_PER_SLOT = 16  # directory size: top bits of each half addressed directly, ~16 photos a slot,
# found by binary search (the two directories then cost 0.5 byte a photo)
MAX_LEVEL = 3  # the search never enumerates more than C(half, 3) half-codes per half
PROBES_PER_SCANNED_CODE = 1 / 200  # a level is worth probing while its probes cost less than a scan


@intrinsic
def _popcount(typingctx, value):
    """The CPU's popcount instruction on a uint64."""

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(cache=True, inline="always")
def _perm_at(perm, j):
    """Entry j of a permutation stored little-endian in perm.shape[1] bytes per entry."""
    position = np.int64(0)
    for b in range(perm.shape[1]):
        position |= np.int64(perm[j, b]) << (8 * b)
    return position


@njit(cache=True)
def _grow(array, size):
    bigger = np.empty(max(2 * len(array), size), array.dtype)
    bigger[: len(array)] = array
    return bigger


@njit(cache=True, inline="always")
def _collect(cand_dist, cand_pos, histogram, count, difference, pos):
    """Record a candidate (its distance = popcount of `difference`) at `count`, growing the buffers
    when full; returns (cand_dist, cand_pos, count + 1)."""
    if count == len(cand_dist):
        cand_dist = _grow(cand_dist, count + 1)
        cand_pos = _grow(cand_pos, count + 1)
    d = np.int64(_popcount(difference))
    cand_dist[count] = d
    cand_pos[count] = pos
    histogram[d] += 1
    return cand_dist, cand_pos, count + 1


@njit(cache=True)
def _search(keys, high_dir, perm, low_dir, half, dir_bits, masks, mask_starts, query, k, levels, radius):
    """Levels 0..levels-1 of the two-half search for one 64-bit query key.

    kNN mode (radius < 0): stops as soon as the k nearest are certain; returns their
    (distances, positions, True), or (…, False) when `levels` did not make them certain.
    Radius mode: runs every level and returns all positions within `radius` (always certain).
    Each photo is collected once, through the half nearer to the query (the high one on a tie).
    """
    low_mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    dir_shift = np.uint64(half - dir_bits)
    q_high = query >> shift
    q_low = query & low_mask
    cand_dist = np.empty(1024, np.int64)
    cand_pos = np.empty(1024, np.int64)
    count = 0
    histogram = np.zeros(130, np.int64)  # collected photos by distance
    certain = False
    for level in range(levels):
        for m in range(mask_starts[level], mask_starts[level + 1]):
            # high half: a run of the sorted keys
            probe = q_high ^ masks[m]
            slot = np.int64(probe >> dir_shift)
            lo, hi = np.int64(high_dir[slot]), np.int64(high_dir[slot + 1])
            while lo < hi:  # first key whose high half is >= probe
                mid = (lo + hi) >> 1
                if (keys[mid] >> shift) < probe:
                    lo = mid + 1
                else:
                    hi = mid
            pos = lo
            while pos < len(keys) and (keys[pos] >> shift) == probe:
                if np.int64(_popcount((keys[pos] & low_mask) ^ q_low)) >= level:  # else seen via the low half
                    cand_dist, cand_pos, count = _collect(cand_dist, cand_pos, histogram, count, keys[pos] ^ query, pos)
                pos += 1
            # low half: a run of the permutation sorted by low half
            probe = q_low ^ masks[m]
            slot = np.int64(probe >> dir_shift)
            lo, hi = np.int64(low_dir[slot]), np.int64(low_dir[slot + 1])
            while lo < hi:
                mid = (lo + hi) >> 1
                if (keys[_perm_at(perm, mid)] & low_mask) < probe:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo
            while j < len(perm):
                pos = _perm_at(perm, j)
                if (keys[pos] & low_mask) != probe:
                    break
                if np.int64(_popcount((keys[pos] >> shift) ^ q_high)) > level:  # else seen via the high half
                    cand_dist, cand_pos, count = _collect(cand_dist, cand_pos, histogram, count, keys[pos] ^ query, pos)
                j += 1
        if radius < 0 and np.sum(histogram[: 2 * level + 2]) >= k:  # all within 2·level+1 are in
            certain = True
            break
    dist = cand_dist[:count]
    pos = cand_pos[:count]
    if radius >= 0:
        keep = dist <= radius
        dist, pos = dist[keep], pos[keep]
    elif certain:
        kth = 0
        seen = 0
        while seen + histogram[kth] < k:
            seen += histogram[kth]
            kth += 1
        keep = dist <= kth
        dist, pos = dist[keep], pos[keep]
    order = np.argsort(dist * len(keys) + pos)  # nearest first, ties in key order
    if radius < 0:
        order = order[:k]
    return dist[order], pos[order], certain or radius >= 0


def code_keys(codes: np.ndarray) -> np.ndarray:
    """Packed codes [n, bytes] -> [n, words] uint64 (the bytes read in native little-endian
    order, zero-padded to whole words). Hamming distance is the same on keys as on codes."""
    codes = np.ascontiguousarray(codes, np.uint8)
    n, nbytes = codes.shape
    words = max(1, -(-nbytes // 8))
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :nbytes] = codes
    return padded.view("<u8").astype(np.uint64)


def _level_masks(half: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """XOR masks of every half-code at distance 0, 1, …, levels-1, level by level."""
    masks, starts = [np.zeros(1, np.uint64)], [0, 1]
    for level in range(1, levels):
        flips = np.array(list(combinations(range(half), level)), np.int64)
        level_masks = np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64), axis=1)
        masks.append(level_masks.astype(np.uint64))
        starts.append(starts[-1] + len(level_masks))
    return np.concatenate(masks), np.array(starts, np.int64)


class MultiIndex:
    """Read-only exact kNN and radius search over (ids, packed codes); rebuilt when the codes change."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, bits: int, *, max_level: int | None = None) -> None:
        self.bits = bits
        ids = np.asarray(ids, np.int64)
        codes = np.ascontiguousarray(codes, np.uint8).reshape(len(ids), bits // 8)
        small = len(ids) == 0 or (ids.min() >= 0 and ids.max() < 2**31)  # SQLite row ids of a photo library
        self.halves = bits <= 64  # codes fit one 64-bit key: the two-half tables apply
        self._scan = faiss.IndexBinaryFlat(bits)  # the fallback: an exact scan, in table order
        if not self.halves:
            self.ids = ids.astype(np.int32 if small else np.int64)
            self._scan.add(codes)
            self.levels = 0
            return
        keys = code_keys(codes)[:, 0]
        order = np.argsort(keys, kind="stable")
        self.ids = ids[order].astype(np.int32 if small else np.int64)  # photo ids in key order
        self.half = bits // 2
        self.dir_bits = int(np.clip(np.log2(max(1, len(ids)) / PHOTOS_PER_SLOT), 0, self.half))
        sorted_codes = codes[order]
        if len(ids):
            self._scan.add(sorted_codes)
        if bits == 64 and len(ids):  # FAISS copied the codes: the keys are a view of that copy
            self.keys = faiss.rev_swig_ptr(self._scan.xb.data(), len(ids) * 8).view("<u8")
        else:
            self.keys = keys[order]
        dir_shift = np.uint64(self.half - self.dir_bits)
        slots = np.arange(2**self.dir_bits + 1, dtype=np.uint64)
        offsets = np.int32 if len(ids) < 2**31 else np.int64
        self.high_dir = np.searchsorted(self.keys >> np.uint64(self.half) >> dir_shift, slots).astype(offsets)
        low = self.keys & np.uint64((1 << self.half) - 1)
        by_low = np.argsort(low, kind="stable")
        self.low_dir = np.searchsorted(low[by_low] >> dir_shift, slots).astype(offsets)
        width = 3 if len(ids) < 2**24 else 4
        self.perm = np.ascontiguousarray(by_low.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :width])
        if max_level is None:  # probe a level while its probes cost less than scanning every photo
            max_level = max(
                (s for s in range(MAX_LEVEL + 1) if 2 * comb(self.half, s) <= len(ids) * PROBES_PER_SCANNED_CODE),
                default=0,
            )
        self.levels = min(max_level, MAX_LEVEL) + 1
        self.masks, self.mask_starts = _level_masks(self.half, self.levels)

    def __len__(self) -> int:
        return len(self.ids)

    def codes(self) -> np.ndarray:
        """Packed codes [n, bits/8], in the order of self.ids."""
        return faiss.vector_to_array(self._scan.xb).reshape(len(self.ids), self.bits // 8)

    def nbytes(self) -> int:
        """Bytes held: codes (once), ids, and the two tables."""
        total = self.ids.nbytes + self._scan.ntotal * self.bits // 8
        if self.halves:
            shared = self.bits == 64 and len(self.ids) > 0
            total += (0 if shared else self.keys.nbytes) + self.perm.nbytes + self.high_dir.nbytes
            total += self.low_dir.nbytes
        return total

    # --- search ----------------------------------------------------------------------------

    def knn(self, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest photos to one packed code: (distances, ids), nearest first."""
        if len(self.ids) == 0 or k <= 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        k = min(k, len(self.ids))
        if self.halves and self.levels:
            dist, pos, certain = self._run(code, k, self.levels, -1)
            if certain:
                return dist.astype(np.int32), self.ids[pos].astype(np.int64)
        dist, pos = self._scan.search(self._packed(code), k)
        return dist[0].astype(np.int32), self.ids[pos[0]].astype(np.int64)

    def radius(self, code: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Every photo within Hamming distance r of one packed code: (distances, ids), nearest first."""
        if len(self.ids) == 0 or r < 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        needed = r // 2 + 1  # levels 0..r//2 see every photo within 2·(r//2)+1 >= r
        if self.halves and needed <= self.levels:
            dist, pos, _ = self._run(code, len(self.ids), needed, r)
        else:
            _, d, pos = self._scan.range_search(self._packed(code), r + 1)
            order = np.lexsort((pos, d))
            dist, pos = d[order], pos[order]
        return dist.astype(np.int32), self.ids[pos].astype(np.int64)

    def _run(self, code: np.ndarray, k: int, levels: int, radius: int):
        query = code_keys(np.asarray(code, np.uint8).reshape(1, -1))[0, 0]
        return _search(
            self.keys, self.high_dir, self.perm, self.low_dir, self.half, self.dir_bits,
            self.masks, self.mask_starts, query, k, levels, radius,
        )  # fmt: skip

    def _packed(self, code: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(code, np.uint8).reshape(1, -1))

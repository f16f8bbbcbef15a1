"""Binary codes: packing {0,1} bit matrices into bytes and Hamming distances between them."""

from __future__ import annotations

import numpy as np


class CodeLengthError(ValueError):
    """A code length that is not a positive multiple of 8 (codes are stored as whole bytes)."""


def check_code_length(bits: int) -> int:
    if bits <= 0 or bits % 8:
        raise CodeLengthError(f"code length must be a positive multiple of 8, got {bits}")
    return bits


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """[n, m] array of 0/1 (or bool) -> [n, m/8] uint8, most significant bit first (FAISS layout)."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"expected a 2-d bit matrix, got shape {bits.shape}")
    check_code_length(bits.shape[1])
    return np.packbits(bits.astype(bool), axis=1)


def unpack_codes(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """[n, m/8] uint8 -> [n, m] uint8 of 0/1."""
    codes = np.asarray(codes, dtype=np.uint8)
    unpacked = np.unpackbits(codes, axis=1)
    return unpacked if bits is None else unpacked[:, :bits]


def hamming_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Packed codes [q, m/8] and [n, m/8] -> Hamming distances [q, n] as int32.

    Uses |a| + |b| - 2 a.b on the unpacked bits: one BLAS call, exact for m < 2**24.
    """
    q = unpack_codes(queries).astype(np.float32)
    d = unpack_codes(database).astype(np.float32)
    dist = q.sum(1, keepdims=True) + d.sum(1)[None, :] - 2.0 * (q @ d.T)
    return np.rint(dist).astype(np.int32)

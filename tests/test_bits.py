import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.bits import CodeLengthError, hamming_distances, pack_codes, unpack_codes


@given(
    st.integers(1, 16).flatmap(
        lambda nbytes: arrays(np.uint8, st.tuples(st.integers(0, 20), st.just(8 * nbytes)), elements=st.integers(0, 1))
    )
)
def test_pack_unpack_round_trip(bits):
    packed = pack_codes(bits)
    assert packed.shape == (bits.shape[0], bits.shape[1] // 8)
    assert np.array_equal(unpack_codes(packed), bits)


@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.just(4)), elements=st.integers(0, 255)))
def test_hamming_equals_bit_count_of_xor(packed):
    d = hamming_distances(packed, packed[::-1])
    ref = np.unpackbits(packed[:, None, :] ^ packed[::-1][None, :, :], axis=2).sum(2)
    assert np.array_equal(d, ref)


def test_pack_layout_is_most_significant_bit_first():
    assert pack_codes(np.array([[1, 0, 0, 0, 0, 0, 0, 1]])).tolist() == [[129]]


def test_pack_rejects_partial_bytes():
    with pytest.raises(CodeLengthError):
        pack_codes(np.zeros((2, 12)))

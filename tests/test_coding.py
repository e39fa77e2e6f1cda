"""Coding ids and orders: dense and hashed factorization, packed text keys, per-batch dictionaries."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gpuseg import coding
from gpuseg.coding import (EncodedText, as_numbers, _hash_codes, code_entries, code_ids, factorize_keys,
                           factorize_values, id_present, key_hash, order_codes, text_keys)
from gpuseg.errors import GpusegError
from gpuseg.backend import to_numpy


def same_partition(a, b) -> bool:
    """Whether two code arrays group the elements the same way."""
    a, b = to_numpy(a), to_numpy(b)
    pairs = {(x, y) for x, y in zip(a.tolist(), b.tolist())}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("values", [[30, 10, 20, 10], [5.0, -2.0, 5.0, 7.0], [2**40, 3, 2**40, -7]])
def test_factorize_codes_in_sorted_order(xp, values):
    v = xp.asarray(values)
    codes, uniques = factorize_values(v)
    assert to_numpy(uniques).tolist() == sorted(set(values))
    assert to_numpy(uniques[codes]).tolist() == values


@pytest.mark.parametrize("values, dtype", [([2**54 + 3, 2**54 + 4, 2**54 + 4], np.int64),
                                           ([2**60 + 100, 2**60 + 1, 2**60 + 50], np.int64),
                                           ([-2**62 - 7, -2**62 - 9, -2**62 - 7], np.int64),
                                           ([2**63 + 9, 2**63 + 5, 2**64 - 1], np.uint64)])
def test_factorize_64_bit_ids_beyond_float_precision(xp, values, dtype):
    # The range was measured in floats: ids 2**54 + 3 and + 4 became one customer (on a GPU, whose
    # indexing wraps, a customer with an id not in the data), and wider spans failed.
    codes, uniques = factorize_values(xp.asarray(np.array(values, dtype=dtype)))
    assert to_numpy(uniques).tolist() == sorted(set(values))
    assert to_numpy(uniques[codes]).tolist() == values


def test_factorize_writes_zero_not_minus_zero(xp):
    # CuPy's unique keeps the first of equal values, so a -0.0 id sorted first came out as "-0.0".
    v = xp.asarray([-0.0, 2.5, 0.0, -0.0, 1e300])
    codes, uniques = factorize_values(v)
    u = to_numpy(uniques)
    assert u.tolist() == [0.0, 2.5, 1e300] and not np.signbit(u[0])
    assert to_numpy(codes).tolist() == [0, 1, 0, 0, 2]


def test_factorize_does_not_overflow_small_integer_types(xp):
    v = xp.asarray(np.array([-128, 127, 0, 127], dtype=np.int8))
    codes, uniques = factorize_values(v)
    assert to_numpy(codes).tolist() == [0, 2, 1, 2]
    assert to_numpy(uniques).tolist() == [-128, 0, 127]


def test_factorize_non_integral_floats(xp):
    v = xp.asarray([0.5, 0.25, 0.5, 1e300])
    codes, uniques = factorize_values(v)
    assert to_numpy(uniques).tolist() == [0.25, 0.5, 1e300]
    assert to_numpy(codes).tolist() == [1, 0, 1, 2]


def test_partitioned_hash_equals_one_table(monkeypatch, rng):
    values = rng.integers(0, 2**62, 50_000).astype(np.uint64)
    values = np.concatenate([values, values[::3], rng.choice(values, 1000)])
    monkeypatch.setattr(coding, "_PARTITION_MIN", 1000)
    codes, uniques = _hash_codes(values, workers=2)
    assert len(uniques) == len(np.unique(values))
    assert np.array_equal(uniques[codes], values)
    floats = np.array([0.0, -0.0, 1.5, 1.5, -3.0] * 400)
    codes, uniques = _hash_codes(floats, workers=2)
    assert sorted(uniques.tolist()) == [-3.0, 0.0, 1.5]  # -0.0 and 0.0 are one id
    assert same_partition(codes, [0, 0, 1, 1, 2] * 400)


@pytest.mark.parametrize("collide", [False, True])
@pytest.mark.parametrize("digits", [6, 8])
def test_equal_codes_of_wide_keys_by_hash_checked(rng, monkeypatch, collide, digits):
    """Keys too wide to pack (text keys of 8 bytes, as numbers, or of 16) are grouped by a hash;
    equal hashes of different keys are caught, and the keys coded by unique_inverse instead."""
    words = text_keys(pa.array([f"{'C' if i % 5 == 0 else ''}{v}" for i, v in
                                enumerate(rng.integers(10**(digits - 1), 10**digits, 3000))]))
    assert words.dtype.itemsize == (8 if digits < 8 else 16)
    values = as_numbers(np.concatenate([words, words[::3]]))
    if collide:  # every key hashes alike
        monkeypatch.setattr(coding, "key_hash", lambda keys: np.zeros(len(keys), np.uint64))
    fell_back, real = [], coding.unique_inverse
    monkeypatch.setattr(coding, "unique_inverse", lambda v: fell_back.append(1) or real(v))
    codes, n = coding.equal_codes(values)
    assert bool(fell_back) == collide
    assert n == len(np.unique(values)) and same_partition(codes, np.unique(values, return_inverse=True)[1])
    assert sorted(set(codes.tolist())) == list(range(n))
    # Distinct keys (no equal hashes, unless every hash is alike): one code each.
    distinct = np.unique(values)[::-1]
    codes, n = coding.equal_codes(distinct)
    assert n == len(distinct) and sorted(codes.tolist()) == list(range(n))
    assert bool(fell_back) == collide
    # Narrow integers take the packed sort of their values.
    codes, n = coding.equal_codes(np.array([5, 3, 5, 9]))
    assert n == 3 and codes.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("collide", [False, True])
def test_distinct_keys_of_any_width(monkeypatch, collide):
    """Wide keys are told apart by their hashes; equal hashes are settled by the keys."""
    if collide:
        monkeypatch.setattr(coding, "key_hash", lambda keys: np.zeros(len(keys), np.uint64))
    for width in (1, 9):  # 8- and 16-byte keys
        keys = text_keys(pa.array([c * width for c in "abcdef"]))
        assert coding._distinct(keys)
        assert not coding._distinct(keys[[0, 1, 2, 1]])


def test_unique_inverse_of_whole_floats_merges_negative_zero():
    codes, uniques = coding.unique_inverse(np.array([-0.0, 2.0, 0.0, -3.0]))
    assert uniques.tolist() == [-3.0, 0.0, 2.0] and not np.signbit(uniques[1])
    assert codes.tolist() == [1, 2, 1, 0]


def test_mostly_distinct_judges_by_the_share_of_distinct_values(rng):
    n = 1 << 20
    assert coding._mostly_distinct(rng.integers(0, 10 * n, n))      # 95% distinct
    assert not coding._mostly_distinct(rng.integers(0, n // 10, n))  # 10%
    # Sorted runs (a log ordered by customer) are sampled at random rows, not in runs.
    assert not coding._mostly_distinct(np.sort(rng.integers(0, n // 10, n)))
    assert not coding._mostly_distinct(np.arange(1000))  # too few rows to sample


@pytest.mark.parametrize("distinct", [0.05, 0.95])
def test_hash_codes_by_table_or_by_sort_agree(rng, distinct):
    """Both ways of coding a batch (Arrow's table, or a sort when most values are distinct)
    give each row its value back and one code per value."""
    n = 1 << 17
    values = rng.integers(0, int(distinct * 3 * n), n) * 7 - 5
    floats = values.astype(np.float64) / 4
    floats[:3] = [-0.0, 0.0, -0.0]
    for v in (values, floats):
        codes, uniques = _hash_codes(v)
        assert coding._mostly_distinct(v + 0.0) == (distinct > 0.5)
        assert len(uniques) == len(np.unique(v))
        assert np.array_equal(uniques[codes], v)
    assert codes[0] == codes[1] == codes[2]  # -0.0 and 0.0: one id either way


@pytest.mark.parametrize("case", ["small span", "wide span", "negative", "uint8", "one value", "descending",
                                  "full int64 range", "uint64 beyond int64", "uint64 near the top",
                                  "big-endian uint64 near the top", "int8 full range", "whole floats",
                                  "negative whole floats", "fractions", "floats past 2**63", "float32"])
def test_unique_inverse_by_packed_sort_is_numpys(rng, case, monkeypatch):
    """Integers (and whole-number floats) sorted packed with their row index give np.unique's codes
    and uniques exactly, dtype of the uniques included; other values, and spans that leave no
    room for the row bits, fall back."""
    values = {"small span": rng.integers(0, 100, 5000),
              "wide span": rng.integers(0, 2**40, 1 << 17),       # 2^40 << 17 bits still fits
              "negative": rng.integers(-50, 50, 1001).astype(np.int32),
              "uint8": rng.integers(0, 10, 3000).astype(np.uint8),
              "one value": np.array([7]),
              "descending": np.arange(100_000)[::-1].copy(),
              "full int64 range": np.array([2**63 - 1, -2**63, 0, 5, -2**63]),   # no room: np.unique
              "uint64 beyond int64": np.array([2**64 - 1, 3, 2**63, 3], dtype=np.uint64),
              "uint64 near the top": np.array([2**64 - 1, 2**64 - 5, 2**64 - 1, 2**64 - 3], dtype=np.uint64),
              "big-endian uint64 near the top": (np.arange(10, dtype=np.uint64) % 3 + np.uint64(2**63 + 5)).astype(">u8"),
              "int8 full range": np.array([127, -128, 0, 127, -1], dtype=np.int8),
              "whole floats": rng.integers(0, 5 * 10**6, 20_000) + 0.0,
              "negative whole floats": rng.integers(-10**6, 10**6, 20_000) * 3.0,
              "fractions": rng.integers(0, 1000, 5000) / 4,
              "floats past 2**63": np.array([2.0**63, 1.0, 2.0**63, -2.0**64]),
              "float32": rng.integers(0, 1000, 5000).astype(np.float32)}[case]
    fell_back, real_unique = [], np.unique
    monkeypatch.setattr(np, "unique", lambda *a, **k: fell_back.append(1) or real_unique(*a, **k))
    codes, uniques = coding.unique_inverse(values)
    monkeypatch.undo()
    # The packed sort takes whole floats; np.unique is left for the rest.
    assert bool(fell_back) == (case in ("full int64 range", "uint64 beyond int64", "fractions", "floats past 2**63"))
    want_uniques, want_codes = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(uniques, want_uniques)
    assert uniques.dtype == want_uniques.dtype
    np.testing.assert_array_equal(codes, want_codes.reshape(-1))


def test_small_hash_treats_negative_zero_as_zero():
    """Below the partition size too (Arrow's table, which keys floats by their bits)."""
    codes, uniques = _hash_codes(np.array([0.0, -0.0, 1.5, -0.0, 2.5]))
    assert uniques.tolist() == [0.0, 1.5, 2.5]
    assert codes.tolist() == [0, 0, 1, 0, 2]


def test_byte_keys_are_exact_and_keep_text_order():
    text = pa.array(["b", "ab", "abc", "a", "", "zzzzzzzz", "C25489434", "é", "ab", "a-uuid-of-36-characters-0123456789ab"])
    keys = text_keys(text)
    assert keys.dtype == np.dtype("S40")
    assert keys[1] == keys[8] and len(set(keys.tolist())) == 9
    assert keys[4] == b""
    assert np.argsort(keys, kind="stable").tolist() == pc.sort_indices(text).to_numpy().tolist()
    short = text_keys(text.slice(0, 6))
    assert short.dtype == np.dtype("S8")
    # The hash does not depend on the padding width, so batches of different widths agree.
    assert np.array_equal(key_hash(short), key_hash(keys[:6]))
    assert np.argsort(as_numbers(short), kind="stable").tolist() == \
        pc.sort_indices(text.slice(0, 6)).to_numpy().tolist()
    assert text_keys(pa.array(["x" * 65])) is None  # longer than KEY_BYTES_MAX
    assert text_keys(pa.array(["a\x00"])) is None   # a NUL would be ambiguous with the padding


def test_byte_keys_equal_the_text_padded_with_nuls(rng):
    """Every width and length: a key is the text's bytes, NUL-padded to the key width."""
    words = ["".join(rng.choice(list("ab9Cé-"), n)) for n in rng.integers(0, 30, 400)]
    for text in (pa.array(words), pa.array(words).slice(7, 300), pa.array([w[:8] for w in words])):
        keys = text_keys(text)
        width = keys.dtype.itemsize
        assert keys.tolist() == [w.encode().ljust(width, b"\0").rstrip(b"\0") for w in text.to_pylist()]
        assert width == max(8, -(-max(len(w.encode()) for w in text.to_pylist()) // 8) * 8)


def _encoded(text: pa.Array, keep: np.ndarray | None = None) -> list:
    """What an encoding gives back: each kept row's (trimmed) text, None where null."""
    enc = EncodedText.encode(text, keep)
    assert enc.dictionary.to_pylist() == pc.utf8_trim_whitespace(enc.dictionary).to_pylist()
    if enc.keys is not None:
        assert enc.keys.tolist() == text_keys(enc.dictionary).tolist()
    return enc.decode().to_pylist()


@pytest.mark.parametrize("rows", [
    ["A1", "A1", "B2", "B2", "B2", "C3"],                  # one run per invoice
    ["A1", "B2", "A1", "A1", "C3", "B2", "C3"],            # an invoice in several runs
    [" A1", "A1 ", "A1", "", "B2", " ", "x" * 9, "x" * 9],  # blanks, spaces, a wider key
    ["A1", "B2", "B2", "C3", "C3", "C3", "D4"],            # runs starting at a dropped row
])
def test_plain_text_encoded_by_runs_gives_each_row_back(rows):
    text = pa.array(rows)
    trimmed = [r.strip() for r in rows]
    assert _encoded(text) == trimmed
    enc = EncodedText.encode(text)
    assert len(enc.dictionary) == len(set(rows))  # one entry per distinct text
    keep = np.array([i % 3 != 1 for i in range(len(rows))])
    assert _encoded(text, keep) == [t for t, k in zip(trimmed, keep) if k]
    assert _encoded(text, np.zeros(len(rows), dtype=bool)) == []
    # The same as text read dictionary-encoded, kept by the same mask.
    assert _encoded(text.dictionary_encode(), keep) == _encoded(text, keep)


def test_text_with_nulls_or_nul_bytes_is_hashed_as_strings():
    assert _encoded(pa.array(["A1", None, "A1"]), np.array([True, True, False])) == ["A1", None]
    enc = EncodedText.encode(pa.array(["a\x00", "a", "a\x00"]))
    assert enc.keys is None and enc.indices.tolist() == [0, 1, 0]


def test_host_codes_sparse_integers_by_sort(monkeypatch, rng):
    """Ids spanning more than 4 values a row are sorted, not scattered over their span."""
    def no_scratch(*args):
        raise AssertionError("direct indexing over a sparse span")
    values = rng.integers(0, 1 << 22, 5000) * 3.0  # integral floats, as pandas leaves ids with gaps
    monkeypatch.setattr(coding, "_dense_scratch", no_scratch)
    codes, uniques = factorize_values(values, sort=True)
    assert uniques.dtype == values.dtype and uniques.tolist() == sorted(set(values.tolist()))
    assert np.array_equal(uniques[codes], values)
    with pytest.raises(AssertionError, match="sparse span"):
        factorize_values(np.arange(1000) % 7)  # a dense span: scattered


def test_factorize_byte_keys_partitioned(monkeypatch, rng):
    words = np.array([f"C{v}".encode() for v in rng.integers(0, 10**12, 3000)], dtype="S16")
    keys = np.concatenate([words, words[::2]])
    monkeypatch.setattr(coding, "_PARTITION_MIN", 100)
    codes, uniques = factorize_keys(keys, sort=True)
    assert uniques.tolist() == sorted(set(keys.tolist()))
    assert np.array_equal(uniques[codes], keys)


def test_text_from_several_batches_trimmed_merged_and_sorted():
    parts = [EncodedText.encode(pa.array(["b ", "a", None, "b"])), EncodedText.encode(pa.array([" a", "c", "  "]))]
    codes, uniques, present = code_ids(parts, sort=True)
    assert uniques.to_pylist() == ["a", "b", "c"]
    assert to_numpy(present).tolist() == [True, True, False, True, True, True, False]
    assert to_numpy(codes)[to_numpy(present)].tolist() == [1, 0, 1, 0, 2]


def test_long_text_takes_the_string_path():
    long = ["customer-" + "0" * 60 + "1", "customer-" + "0" * 60 + "2"]  # over KEY_BYTES_MAX
    parts = [EncodedText.encode(pa.array(long)), EncodedText.encode(pa.array(long[::-1] + [" x "]))]
    assert parts[0].keys is None
    codes, uniques, present = code_ids(parts, sort=True)
    assert uniques.to_pylist() == long + ["x"]
    assert present is None and to_numpy(codes).tolist() == [0, 1, 1, 0, 2]


def test_integer_text_becomes_integers_only_when_asked():
    parts = [EncodedText.encode(pa.array(["12", " 3"])), EncodedText.encode(pa.array(["7"]))]
    _, as_text = code_entries(parts, sort=True)
    codes, as_int = code_entries(parts, sort=True, text_to_int=True)
    assert as_text.to_pylist() == ["12", "3", "7"]
    assert as_int.type == pa.int64() and as_int.to_pylist() == [3, 7, 12]
    assert to_numpy(codes).tolist() == [2, 0, 1]


def test_mixed_types_across_batches_become_text():
    parts = [pa.array([5, 6], pa.int64()), EncodedText.encode(pa.array(["X9", "5"]))]
    codes, uniques, _ = code_ids(parts, sort=True)
    assert uniques.to_pylist() == ["5", "6", "X9"]
    assert to_numpy(codes).tolist() == [0, 1, 2, 0]


def test_orders_invoices_shared_by_customers_and_customer_days(xp):
    customer = xp.asarray([0, 0, 1, 1, 0, 0, 1])
    day = xp.asarray([10, 11, 10, 10, 12, 12, 12], dtype=xp.int32)
    invoice = xp.asarray([0, 0, 0, 1, -1, -1, -1])  # invoice 0 is shared by customers 0 and 1
    has = xp.asarray([True, True, True, True, False, False, False])
    order, n = order_codes(customer, day, invoice, has, 2)
    assert n == 5
    assert same_partition(order, [0, 0, 1, 2, 3, 3, 4])


def test_orders_of_no_lines(xp):
    empty = xp.asarray([], dtype=xp.int64)
    order, n = order_codes(empty, empty.astype(xp.int32), empty, None, 0)
    assert n == 0 and order.shape == (0,)
    assert order_codes(empty, empty.astype(xp.int32))[1] == 0


@pytest.mark.parametrize("arr", [
    pa.array([3.0, None, float("nan"), -0.0, float("inf"), 7.5, None, 2.0]),
    pa.array([1, None, 3, 4, None, 6, 7, 8], pa.int32()),
    pa.array([5, 6, 7, 8, 9, 10, 11, 12, 13, 14], pa.uint64()).slice(2),   # an offset into its buffers
    pa.array([1.5, None, 2.5, 3.5, None, 4.5, 5.5, 6.5, 7.5], pa.float32()).slice(1),
    pa.nulls(8, pa.float64()),
    pa.array(["a", None, "c", "d", "e", "f", "g", "h"]),
])
def test_kept_rows_and_present_ids_of_every_layout(arr):
    """Kept rows filtered in NumPy are Arrow's filter exactly (nulls, offsets, types); ids
    present are the valid, finite (and, for text, non-blank) ones."""
    from gpuseg.cleaning import _kept_rows
    keep = np.array([i % 3 != 1 for i in range(len(arr))])
    def values(a):  # NaN as text, so that lists compare
        return ["nan" if isinstance(v, float) and v != v else v for v in a.to_pylist()]
    got = _kept_rows(arr, keep)
    assert got.type == arr.type and values(got) == values(arr.filter(pa.array(keep)))
    assert _kept_rows(arr, np.ones(len(arr), bool)) is arr
    want = [v is not None and (isinstance(v, str) or np.isfinite(v)) for v in arr.to_pylist()]
    assert id_present(arr).tolist() == want


_ONE_TYPE_CASES = [
    # (parts, text_to_int, the ids as one process codes them together)
    ([pa.array([1, 2], pa.int32()), pa.array([2, 3])], False, pa.array([1, 2, 2, 3])),
    ([pa.array([1, 2]), pa.array([2.0, 3.0])], True, pa.array([1, 2, 2, 3])),   # Parquet, whole floats
    ([pa.array([1, 2]), pa.array([2.5])], True, pa.array(["1", "2", "2.5"])),
    ([pa.array([1.5], pa.float32()), pa.array([1.5, 2.0])], True, pa.array([1.5, 1.5, 2.0])),  # floats stay floats
    ([pa.array([1.5], pa.float32()), pa.array(["x"])], True, pa.array(["1.5", "x"])),
    ([pa.array([0.1, 1.1], pa.float32()), pa.array([0.1])], True, pa.array([0.1, 1.1, 0.1])),  # as written
    ([pa.array([0.1], pa.float32()), pa.array(["x"])], True, pa.array(["0.1", "x"])),
    ([pa.array([1e15, 1e15 + 0.5]), pa.array([1, 2])], True,  # a fraction a float64 holds stays one
     pa.array(["1000000000000000", "1.0000000000000005e+15", "1", "2"])),
    ([pa.array([1e15]), pa.array([7])], True, pa.array([10**15, 7])),          # whole: the integer it holds
    ([pa.array([1e15, 0.5]), pa.array(["x"])], True, pa.array(["1000000000000000", "0.5", "x"])),
    ([pa.array([" a", "b "]), pa.array(["a"]).dictionary_encode()], False, pa.array(["a", "b", "a"])),
    ([pa.array([" 7", "8"]), pa.array(["09"])], True, pa.array(["7", "8", "09"])),   # 09 is no canonical integer
    ([pa.array([" 7", "8"]), pa.array(["9"])], True, pa.array([7, 8, 9])),
    ([pa.array([2**63 + 1], pa.uint64()), pa.array([4], pa.int8())], False, pa.array([2**63 + 1, 4], pa.uint64())),
    ([pa.array([None, None], pa.string()), pa.array([None], pa.float64())], True, pa.array([None] * 3, pa.string())),
]


@pytest.mark.parametrize("parts, text_to_int, expected", _ONE_TYPE_CASES)
def test_batches_converted_alone_equal_the_batches_coded_together(parts, text_to_int, expected):
    # Dask partitions and streamed scoring never hold every batch: they send id_facts ahead and
    # convert each batch alone to unified_type, which must give what one process gives.
    from gpuseg.coding import _unify, id_facts, to_unified, unified_type
    together = _unify(parts, text_to_int)
    assert together.equals(expected)
    target = unified_type([id_facts(p) for p in parts], text_to_int)
    alone = [to_unified(p, target) for p in parts]
    assert all(a.type == target for a in alone)
    assert pa.concat_arrays(alone).equals(together)


def test_uint64_past_int64_and_negative_ids_have_no_common_type():
    from gpuseg.coding import id_facts, unified_type
    with pytest.raises(GpusegError, match="no integer type holds both"):
        unified_type([id_facts(pa.array([2**63], pa.uint64())), id_facts(pa.array([-1]))])
    # An all-null integer batch has no minimum: it is not negative (once a TypeError).
    assert unified_type([id_facts(pa.array([2**63], pa.uint64())), id_facts(pa.array([None], pa.int64()))]) \
        == pa.uint64()


def test_negative_zero_is_zeros_customer_as_text_too():
    # Streamed scoring split -0.0 and 0 ("-0" and "0") where one process codes one customer '0'.
    from gpuseg.coding import _unify
    assert _unify([pa.array([-0.0, 5.5]), pa.array([0, 6])], True).to_pylist() == ["0", "5.5", "0", "6"]

"""Coding: ids and orders to dense integer codes, in the array namespace.

Customer ids are coded 0..C-1 in sorted id order; an *order* is an invoice of
one customer, or one customer-day where a line has no invoice. Integers in a
dense range are coded by direct indexing (linear time, NumPy or CuPy); other
numbers by a sort or a hash on the host (partitioned by key so that each part fits the
cache, the parts on a thread pool) or a sort on the device. Text is
dictionary-encoded per batch on the host (:class:`EncodedText`), short text is
turned into fixed-width byte keys, and only integer codes travel to the device.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .backend import default_workers, get_namespace, to_numpy
from .errors import GpusegError

#: A canonical integer written as text (that int64 holds: at most 18 digits; "-0" is not one).
INT_TEXT = r"^(0|-?[1-9][0-9]{0,17})$"


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_encoded_text(t: pa.DataType) -> bool:
    """Dictionary-encoded text (Parquet text read as a dictionary, pandas categoricals)."""
    return pa.types.is_dictionary(t) and is_text(t.value_type)



def number_values(arr: pa.Array) -> np.ndarray:
    """The value slots of an integer or float array, as NumPy sees them (null slots hold
    any value), without a copy."""
    dtype = arr.type.to_pandas_dtype()
    if arr.buffers()[1] is None:  # no value slots at all (every row null)
        return np.zeros(len(arr), dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset:arr.offset + len(arr)]


def id_present(arr: pa.Array) -> np.ndarray:
    """Which ids are there: not null, not blank text, not a non-finite float."""
    if arr.null_count == 0 and (pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        return np.ones(len(arr), dtype=bool)
    if pa.types.is_dictionary(arr.type):
        if len(arr.dictionary) == 0:  # every row null (a row group of guest checkouts)
            return np.zeros(len(arr), dtype=bool)
        blank = id_present(arr.dictionary)
        return arr.is_valid().to_numpy(zero_copy_only=False) & blank[pc.fill_null(arr.indices, 0).to_numpy()]
    t = arr.type
    if pa.types.is_floating(t):
        present = np.isfinite(number_values(arr))
        if arr.null_count:
            present &= arr.is_valid().to_numpy(zero_copy_only=False)
        return present
    valid = arr.is_valid()
    if is_text(t):
        valid = pc.and_(valid, pc.not_equal(pc.utf8_trim_whitespace(arr), ""))
    return pc.fill_null(valid, False).to_numpy(zero_copy_only=False)


def all_int_text(text: pa.Array) -> bool:
    return bool(pc.all(pc.match_substring_regex(pc.utf8_trim_whitespace(text), INT_TEXT)).as_py())


def _code_dtype(n: int) -> Any:
    return np.int32 if n < 2**31 else np.int64


def factorize_values(values: Any, sort: bool = True, owned: bool = False) -> tuple[Any, Any]:
    """Integer codes and unique values of a numeric array without NaN, in its namespace.

    Integers (or integral floats, as ids with gaps come from pandas) in a
    dense range are coded by direct indexing, in linear time, in sorted order.
    Other values: a sort or Arrow's hash table on the host (:func:`_hash_codes`;
    sorted afterwards when ``sort``), a sort on the device. ``owned`` lets the
    array be overwritten.

    On the host the range counts as dense up to 4 values per row: beyond, the
    scattered bool and rank arrays miss the cache, and one sort is faster
    (2.5·10⁵ ids spanning 2²³: 21 against 6 ms). The device codes spans of up
    to :data:`_DENSE_MIN` directly.
    """
    xp = get_namespace(values)
    n = int(values.shape[0])
    if n == 0:
        return xp.empty(0, dtype=np.int32), values[:0]
    if values.dtype.kind in "iu" and values.dtype.itemsize < 8:
        values, owned = values.astype(xp.int64), True  # room for value - min
    lo_v, hi_v = values.min(), values.max()
    if values.dtype.kind in "iu":  # exact: 64-bit ids above 2**53 are not floats
        integral, lo_i, hi_i = True, int(lo_v), int(hi_v)
    else:
        lo, hi = float(lo_v), float(hi_v)
        integral = abs(lo) < 2**52 and abs(hi) < 2**52 and bool(xp.all(values == xp.floor(values)))
        lo_i, hi_i = (int(lo), int(hi)) if integral else (0, 0)
    span = hi_i - lo_i + 1
    if integral and span <= (4 * n if xp is np else max(4 * n, _DENSE_MIN)):
        offset = xp.subtract(values, values.dtype.type(lo_i), out=values if owned else None)
        offset = offset.astype(_code_dtype(span), copy=False)
        present, rank = _dense_scratch(xp, span)
        try:
            present[offset] = True
            uniques = xp.flatnonzero(present)
            present[uniques] = False  # clean again for the next call
        except BaseException:
            present[:] = False
            raise
        # Ranks by a scatter of the few present values (a cumsum over the whole span costs more).
        dtype = _code_dtype(int(uniques.shape[0]))
        rank = rank.view(dtype) if rank.dtype == dtype else xp.empty(span, dtype=dtype)
        rank[uniques] = xp.arange(uniques.shape[0], dtype=rank.dtype)
        return rank[offset], uniques.astype(values.dtype) + values.dtype.type(lo_i)  # uint64 ids past 2**63 too
    if xp is np:
        return _host_codes(values, sort)
    if values.dtype.kind == "f":
        values = values + 0.0  # -0.0 and 0.0 are one value: the unique kept is 0.0, as on the host
    uniques, codes = xp.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(_code_dtype(int(uniques.shape[0])), copy=False), uniques


#: On the device, integers spanning at most this many values are coded by direct
#: indexing (a bool and an int32 per value in the span), even when few are present.
_DENSE_MIN = 1 << 23
#: Above this many values a hash table outgrows the caches: partition first.
_PARTITION_MIN = 1 << 21
_PARTITION_BITS = 8


def _hash_codes(values: np.ndarray, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes and uniques of a numeric host array.

    Small arrays: Arrow's hash table (codes in order of first appearance,
    which keeps later scatters local), unless most values are distinct
    (:func:`_mostly_distinct`): then one sort is faster. Large ones: one
    hash table over 10⁷ distinct keys spends its time in cache misses
    (12.7 s for 3·10⁷ keys here), and so does one sort (5.7 s); split by
    the top bits of a multiplicative hash (a counting sort), each part fits
    the cache and is sorted on a thread pool (NumPy releases the GIL): 1.5 s.
    """
    n = len(values)
    if values.dtype.kind == "f":
        values = values + 0.0  # -0.0 and 0.0 are one value, but not one bit pattern
    if n < _PARTITION_MIN:
        if values.dtype.kind == "S" or _mostly_distinct(values):
            return unique_inverse(values)
        enc = pc.dictionary_encode(pa.array(values))
        return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "fS" and values.dtype.itemsize != 8:
        values = values.astype(np.int64)
    part = (key_hash(values) >> np.uint64(64 - _PARTITION_BITS)).astype(np.uint8)
    order = np.argsort(part, kind="stable")  # a counting sort for 8-bit keys
    bounds = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=1 << _PARTITION_BITS))])
    del part
    grouped = values[order]

    def encode(i: int) -> tuple[np.ndarray, np.ndarray]:
        return unique_inverse(grouped[bounds[i]:bounds[i + 1]])

    with ThreadPoolExecutor(workers or default_workers()) as pool:
        parts = list(pool.map(encode, range(len(bounds) - 1)))
    base = np.concatenate([[0], np.cumsum([len(u) for _, u in parts])])
    grouped = np.empty(n, dtype=_code_dtype(int(base[-1])))
    for i, (c, _) in enumerate(parts):
        np.add(c.reshape(-1), base[i], out=grouped[bounds[i]:bounds[i + 1]], casting="unsafe")
    codes = np.empty_like(grouped)
    codes[order] = grouped
    return codes, np.concatenate([u for _, u in parts])


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and sorted uniques, as ``np.unique(values, return_inverse=True)`` gives them.

    Integers whose span leaves room for a row index below 2⁶³ are packed as
    ``(value - min) << b | row`` and put in order by one sort: NumPy's
    vectorised sort of int64 is several times faster than the argsort
    ``np.unique`` does (10⁶ customer-day keys: 38 against 71 ms), and the
    row bits give each value's rows back. Whole-number floats (ids exported
    by pandas next to missing ones) are sorted as integers the same way.
    Other values go to ``np.unique``.
    """
    n = len(values)
    bits = max(1, (n - 1).bit_length())
    whole = whole_numbers(values) if values.dtype.kind == "f" and n else None
    if whole is not None:
        values = values + 0.0  # -0.0 and 0.0: one value, given back as 0.0
    if (values.dtype.kind in "iu" or whole is not None) and n:
        ints = values if whole is None else whole
        lo, hi = int(ints.min()), int(ints.max())
        if hi - lo < 1 << (63 - bits):
            # A copy, into which the rest is packed; offsets from the minimum fit int64.
            if ints.dtype.kind == "u" and ints.dtype.itemsize == 8:  # past 2⁶³: subtract before the cast
                packed = (ints - ints.dtype.type(lo)).astype(np.int64)
            else:
                packed = ints if whole is not None else ints.astype(np.int64)
                packed -= lo
            rows, first = sort_packed(packed, bits)
            return run_codes(rows, first), values[rows[first]]
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1), uniques


def whole_numbers(values: np.ndarray) -> np.ndarray | None:
    """Float values as int64 when every one is a whole number in int64's range, else None
    (a fraction, NaN or infinity)."""
    with np.errstate(invalid="ignore"):
        whole = values.astype(np.int64)
    return whole if bool((whole == values).all()) else None


def sort_packed(packed: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort non-negative int64 keys below 2^(63 - bits), in place, with each row's index packed
    into the low ``bits``: the rows in key order, and where each key's run starts."""
    packed <<= bits
    packed |= np.arange(len(packed), dtype=np.int64)
    packed.sort()
    rows = packed & ((1 << bits) - 1)
    packed >>= bits
    first = np.empty(len(packed), dtype=bool)
    first[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=first[1:])
    return rows, first


def run_codes(rows: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each row's code: the number of the run of equal keys that row is in (:func:`sort_packed`)."""
    dtype = _code_dtype(len(rows))
    ranks = np.cumsum(first, dtype=dtype)
    ranks -= 1
    codes = np.empty(len(rows), dtype=dtype)
    codes[rows] = ranks
    return codes


def equal_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes of a host array, equal exactly for equal values, in no particular order, and
    how many there are: :func:`unique_inverse` without the uniques.

    Byte keys (:func:`text_keys`: invoice ids), and 64-bit integers too wide
    for its packed sort (8-byte keys as numbers), are sorted packed by 63 - b
    bits of a hash instead, and each run of equal hashes is checked to hold
    one value (a collision falls back to :func:`unique_inverse`); only
    neighbours with equal hashes are compared, and when there are none the
    codes are the rows' own numbers. Retail log at 10⁸ lines, the ~2·10⁵
    invoices of a customer bucket: 4.2 against 7.6 ms as 8-byte numbers; as
    16-byte keys np.unique's sort of byte strings took most of the merge.
    """
    n = len(values)
    bits = max(1, (n - 1).bit_length())
    if n and (values.dtype.kind == "S" or (values.dtype.kind in "iu" and values.dtype.itemsize == 8 and
                                           int(values.max()) - int(values.min()) >= 1 << (63 - bits))):
        rows, first = sort_packed((key_hash(values) >> np.uint64(bits + 1)).view(np.int64), bits)
        count = int(np.count_nonzero(first))
        if count == n:  # no two hashes equal: every value its own code
            return np.arange(n, dtype=_code_dtype(n)), n
        pairs = np.flatnonzero(~first[1:])  # neighbours in hash order with equal hashes
        if bool((values[rows[pairs]] == values[rows[pairs + 1]]).all()):
            return run_codes(rows, first), count
    codes, uniques = unique_inverse(values)
    return codes, len(uniques)


#: Rows sampled to guess how many of a batch's values are distinct.
_SAMPLE = 4096


def _mostly_distinct(values: np.ndarray) -> bool:
    """Whether more than a quarter of ``values`` are likely distinct, judged from a random sample.

    m rows drawn (with replacement) from n values with D distinct, about
    evenly used, repeat about m²/2·(1/n + 1/D) times: the same row drawn
    twice, or two rows of one value. D > n/4 when that is under m²/2·5/n.
    Above n/4 a sort (:func:`unique_inverse`) beats Arrow's hash table, whose
    inserts then miss the cache: on 10⁶ random 40-bit ids, 31 against 64 ms
    at 33% distinct, 27 against 19-24 ms at 12%, 31 against 11 ms at 2%
    (and 7 against 10 ms for 2.5·10⁵ customer ids of a retail log's orders,
    82% distinct). Uneven use (heavy buyers) only adds repeats, so the guess
    errs towards the table. The choice changes the codes' numbering, never
    which rows share a code.
    """
    n = len(values)
    if n < 4 * _SAMPLE:
        return False
    sample = values[np.random.default_rng(n).integers(0, n, _SAMPLE)]
    repeats = _SAMPLE - len(np.unique(sample))
    return 2 * repeats * n < 5 * _SAMPLE * _SAMPLE


_scratch = threading.local()


def _dense_scratch(xp: Any, span: int) -> tuple[Any, Any]:
    """A zeroed bool array and an int32 array of at least ``span`` entries, kept per
    thread on the host: every batch codes its ids over the whole id range, and
    fresh arrays of that size cost their page faults each time."""
    if xp is not np:
        return xp.zeros(span, dtype=bool), xp.empty(span, dtype=np.int32)
    present = getattr(_scratch, "present", None)
    if present is None or len(present) < span:
        _scratch.present, _scratch.rank = np.zeros(span, dtype=bool), np.empty(span, dtype=np.int32)
    return _scratch.present[:span], _scratch.rank[:span]


@dataclass(frozen=True)
class IdFacts:
    """What :func:`unified_type` needs to know of one batch's ids: small, so that a
    front-end that never holds every batch at once (Dask partitions, streamed
    scoring) can send it ahead and convert each batch alone (:func:`to_unified`)."""

    type: pa.DataType
    valid: int                   # ids that are not null
    beyond_int64: bool = False   # uint64 ids past 2**63 - 1
    negative: bool = False
    int_text: bool | None = None  # every id as text is a canonical integer (None: not asked)


def id_facts(arr: pa.Array, int_text: bool = True) -> IdFacts:
    """:class:`IdFacts` of one batch's ids (nulls ignored); ``int_text`` asks whether
    the ids as text are canonical integers (a cast and a match for floats and text)."""
    arr = _decoded(arr)
    t, n = arr.type, len(arr)
    lo, hi = pc.min_max(arr).values() if n and (pa.types.is_integer(t)) else (pa.scalar(None), pa.scalar(None))
    lo, hi = lo.as_py(), hi.as_py()
    beyond = t == pa.uint64() and hi is not None and hi > 2**63 - 1
    negative = pa.types.is_signed_integer(t) and lo is not None and lo < 0
    as_int: bool | None = None
    if pa.types.is_integer(t):  # Arrow writes integers in plain decimals
        as_int = lo is None or (-10**18 < lo and hi < 10**18)
    elif int_text:
        as_int = bool(pc.all(pc.match_substring_regex(to_unified(arr, pa.string()), INT_TEXT), min_count=0).as_py())
    return IdFacts(t, n - arr.null_count, beyond, negative, as_int)


def unified_type(facts: list[IdFacts], text_to_int: bool = False) -> pa.DataType:
    """The one type that the ids of several batches take together (every front-end's rule).

    One type stays (text trimmed); integers of several widths become int64, or
    uint64 where one is past int64's range (and none negative); floats of several
    widths become float64; other mixtures
    become text, as Arrow casts each. With ``text_to_int`` (the text came from
    CSV files, where ids are read as text to keep leading zeros) text that is
    all canonical integers becomes int64, as the file would have typed it;
    text from Parquet stays text.

    Raises
    ------
    GpusegError
        When uint64 ids past 2**63 meet negative ids: no integer type holds both.
    """
    types = {f.type for f in facts}
    if not facts:
        return pa.string()
    if len(types) == 1:
        target = types.pop()
    elif all(pa.types.is_integer(t) for t in types):
        if not any(f.beyond_int64 for f in facts):
            return pa.int64()
        if any(f.negative for f in facts):
            raise GpusegError("customer or invoice ids are uint64 past 2**63 in some files and negative in others; "
                              "no integer type holds both: give them one type (text, for instance)")
        return pa.uint64()
    elif all(pa.types.is_floating(t) for t in types):  # float16 and float32 hold their values in float64
        return pa.float64()
    else:
        target = pa.string()
    if is_text(target) and text_to_int and sum(f.valid for f in facts):
        if any(f.int_text is None for f in facts if f.valid):
            raise ValueError("unified_type: ask id_facts for int_text when text may become integers")
        if all(f.int_text for f in facts if f.valid):
            return pa.int64()
    return target


def to_unified(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """One batch's ids in the type :func:`unified_type` chose: text trimmed, other types cast."""
    arr = _decoded(arr)
    if arr.type == target and not is_text(target):
        return arr
    if pa.types.is_integer(arr.type) and pa.types.is_integer(target):
        return arr.cast(target)
    if pa.types.is_floating(arr.type):
        if not pa.types.is_float64(arr.type):
            # A narrower float as written: its shortest text read as float64, so that float32's
            # 0.1 is float64's 0.1 (not 0.10000000149011612). Arrow writes no half floats.
            arr = arr.cast(pa.float32()).cast(pa.string()).cast(pa.float64())
        arr = pc.add(arr, 0.0)  # -0.0 is 0.0's customer (Arrow would write "-0")
        if pa.types.is_floating(target):
            return arr
        if pa.types.is_integer(target):  # every value whole (unified_type): the integer it holds
            return arr.cast(target)
        return float_text(arr)
    text = pc.utf8_trim_whitespace(arr.cast(target if is_text(target) else pa.string()))
    return text if is_text(target) else text.cast(target)


def float_text(values: pa.Array) -> pa.Array:
    """float64 ids as text, whole values as the integer they hold, as the integer path
    writes them: Arrow writes 1e15 and up in exponent form ("1e+15",
    "1.2345678901234568e+17"), where the same id read as an integer, or as text, is
    "1000000000000000". Fractions (below 2**52 a float64 holds them) keep Arrow's text."""
    text = values.cast(pa.string())
    exponent = pc.fill_null(pc.match_substring(text, "e+"), False).to_numpy(zero_copy_only=False)
    if not exponent.any():
        return text
    v = np.nan_to_num(values.to_numpy(zero_copy_only=False), nan=0.5, posinf=0.5, neginf=0.5)
    exponent &= v == np.floor(v)
    fits = exponent & (np.abs(v) < 2.0 ** 63)
    if fits.any():
        whole = pa.array(v[fits].astype(np.int64)).cast(pa.string())
        text = pc.replace_with_mask(text, pa.array(fits), whole)
    rest = exponent & ~fits
    if rest.any():  # past int64 (rare): Python's integers
        big = [str(int(x)) for x in v[rest]]
        text = pc.replace_with_mask(text, pa.array(rest), pa.array(big, pa.string()))
    return text


def _decoded(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _unify(parts: list[pa.Array], text_to_int: bool = False) -> pa.Array:
    """Concatenate id arrays from several batches or files in their :func:`unified_type`."""
    parts = [_decoded(p) for p in parts]
    if not parts:
        return pa.array([], pa.string())
    needs = text_to_int and any(is_text(p.type) for p in parts) or len({p.type for p in parts}) > 1
    target = unified_type([id_facts(p, int_text=text_to_int and needs) for p in parts], text_to_int)
    return pa.concat_arrays([to_unified(p, target) for p in parts])


def factorize(arr: pa.Array, sort: bool = True) -> tuple[np.ndarray, pa.Array]:
    """Integer codes and unique values of a null-free Arrow array (host).

    With ``sort``, codes follow the sorted order of the values.
    """
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        codes, uniques = factorize_values(arr.to_numpy(zero_copy_only=False), sort)
        return codes, pa.array(uniques, arr.type)
    enc = pc.dictionary_encode(arr)
    codes, dictionary = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary
    if sort and len(dictionary):
        order = pc.sort_indices(dictionary).to_numpy()
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes, dictionary = rank[codes], dictionary.take(pa.array(order))
    return codes.astype(_code_dtype(len(dictionary)), copy=False), dictionary


#: Text ids longer than this are hashed as strings (slowly) instead of as byte keys.
KEY_BYTES_MAX = 64


#: The first n bytes of a little-endian 8-byte word, n = 0..8.
_FIRST_BYTES = np.array([(1 << 8 * n) - 1 for n in range(9)], dtype="<u8")


def text_keys(text: pa.Array) -> np.ndarray | None:
    """Text as fixed-width byte keys (NumPy ``S`` dtype, NUL-padded to a multiple of 8 bytes):
    equal keys for equal text, ordered as the text sorts, hashed and sorted as
    numbers. None when some text is longer than :data:`KEY_BYTES_MAX` or holds
    a NUL byte (which would make the padding ambiguous).

    Factorizing byte keys is several times faster than Arrow's string hash
    (14.5 s for 2.5·10⁷ distinct invoice ids here), and ids are short. Each
    8-byte word of the keys is one gather of unaligned words from Arrow's
    string data, its bytes past the text's end masked off (10⁶ invoice ids
    of 6-7 bytes: 14-17 ms, against 35-38 ms a byte column at a time).
    """
    if text.null_count or not pa.types.is_string(text.type):
        return None
    if len(text) == 0:
        return np.empty(0, "S8")
    offsets = _offsets(text)
    lengths = np.diff(offsets)
    longest = int(lengths.max())
    if longest > KEY_BYTES_MAX:
        return None
    width = max(8, -(-longest // 8) * 8)
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[int(offsets[0]):int(offsets[-1])] \
        if text.buffers()[2] is not None else np.empty(0, np.uint8)
    if not data.all():
        return None
    data = np.concatenate([data, np.zeros(width, np.uint8)])
    # Every byte offset as the start of an 8-byte word (overlapping, unaligned).
    words = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    starts = offsets[:-1] - offsets[0]
    keys = []
    for j in range(width // 8):
        word = words[starts + 8 * j if j else starts]
        word &= _FIRST_BYTES[np.clip(lengths - 8 * j, 0, 8) if j else lengths if width == 8 else
                             np.minimum(lengths, 8)]
        keys.append(word)
    return (keys[0] if len(keys) == 1 else np.stack(keys, axis=1)).view(f"S{width}").reshape(-1)


def _distinct(keys: np.ndarray) -> bool:
    """Whether no two byte keys are equal: one sort of 8-byte keys as numbers, or of wider
    keys' hashes (distinct hashes are distinct keys; only equal ones need the keys' own
    sort, which for byte strings is several times slower)."""
    sorted_keys = np.sort(keys.view(np.uint64) if keys.dtype.itemsize == 8 else key_hash(keys))
    if not bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        return True
    return keys.dtype.itemsize != 8 and len(np.unique(keys)) == len(keys)


def _offsets(text: pa.Array) -> np.ndarray:
    """A string array's n + 1 offsets into its data."""
    return np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]


def _text_bytes(text: pa.Array) -> int:
    """The bytes of a string array's text (its data between the first and last offset)."""
    offsets = _offsets(text)
    return int(offsets[-1] - offsets[0])


def as_numbers(keys: np.ndarray) -> np.ndarray:
    """8-byte keys as uint64 in the same order (big-endian), for the numeric paths."""
    return keys.view(">u8").astype(np.uint64) if keys.dtype.kind == "S" and keys.dtype.itemsize == 8 else keys


def key_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each key (ints, or byte keys of any width: the zero padding adds nothing)."""
    if keys.dtype.kind == "S":
        words = np.ascontiguousarray(keys).view(np.uint64).reshape(len(keys), -1)
        h = np.zeros(len(keys), dtype=np.uint64)
        for j in range(words.shape[1]):
            h ^= words[:, j] * np.uint64(0x9E3779B97F4A7C15 + 2 * j)
        return h * np.uint64(0xBF58476D1CE4E5B9)
    return keys.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def factorize_keys(keys: np.ndarray, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Codes and uniques of host keys: numbers (:func:`factorize_values`) or byte keys."""
    keys = as_numbers(keys)
    if keys.dtype.kind != "S":
        return factorize_values(keys, sort, owned=True)
    return _host_codes(keys, sort)


def _host_codes(values: np.ndarray, sort: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_hash_codes`, with the codes renumbered in sorted order when ``sort``."""
    codes, uniques = _hash_codes(values)
    if sort:
        order = np.argsort(uniques, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes, uniques = rank[codes], uniques[order]
    return codes.astype(_code_dtype(len(uniques)), copy=False), uniques


@dataclass
class EncodedText:
    """Text ids of one batch, dictionary-encoded in its worker thread.

    The per-batch work (hashing rows, trimming, the integer check, packing
    short text into integer keys) runs on the thread pool; only the
    dictionaries, a few per cent of the rows for invoice ids, meet on one
    thread in :func:`code_ids`.
    """

    indices: np.ndarray            # int32 entry of each row, -1 where null
    dictionary: pa.Array           # trimmed text
    keys: np.ndarray | None        # byte key of each entry (see text_keys); None when some is long
    _all_int: bool | None = None   # computed when first asked (see all_int)
    runs: np.ndarray | None = None  # when entry i is rows runs[i]..runs[i+1]-1: the row each starts at

    @classmethod
    def encode(cls, text: pa.Array, keep: np.ndarray | None = None) -> "EncodedText":
        """Encode the rows of ``text`` that ``keep`` marks (all rows when None).

        Text read dictionary-encoded keeps its dictionary (only the entries some
        row uses). Plain text that turns into byte keys (:func:`text_keys`) is
        coded by runs of equal neighbours (:meth:`_by_runs`). Other text goes to
        Arrow's hash.
        """
        if pa.types.is_string(text.type) and not text.null_count and \
                (encoded := cls._by_runs(text, keep)) is not None:
            return encoded
        if keep is not None and not keep.all():
            text = text.filter(pa.array(keep))
        if pa.types.is_dictionary(text.type):
            indices = pc.fill_null(text.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            used = np.zeros(len(text.dictionary) + 1, dtype=bool)
            used[indices] = True  # index -1 marks the extra last slot
            entries = np.flatnonzero(used[:-1])
            dictionary = text.dictionary if len(entries) == len(text.dictionary) else \
                text.dictionary.take(pa.array(entries))
            if len(entries) < len(text.dictionary):
                rank = np.full(len(text.dictionary) + 1, -1, dtype=np.int64)
                rank[entries] = np.arange(len(entries))
                indices = rank[indices]
            indices = indices.astype(np.int32)
        else:
            enc = pc.dictionary_encode(text)
            dictionary = enc.dictionary
            indices = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        dictionary = pc.utf8_trim_whitespace(dictionary.cast(pa.string()))
        return cls(indices, dictionary, text_keys(dictionary))

    @classmethod
    def _by_runs(cls, text: pa.Array, keep: np.ndarray | None = None) -> "EncodedText | None":
        """Encode plain text by runs of equal neighbours; None when its runs' text does not
        turn into byte keys (:func:`text_keys`).

        An export lists an invoice's lines together, so invoice ids come in
        runs: Arrow compares neighbours, and only the first row of each run is
        keyed and coded. When no two runs share a key (the usual case), one
        sort shows it and the runs are the entries. Retail log, a row group of
        10⁶ lines and 2.5·10⁵ invoices: 30-33 ms (37-43 ms keying every row
        to compare keys), where reading the invoices as a dictionary took 50 ms
        more than reading them plain, and encoding that 21 ms.
        """
        n = len(text)
        rows = None if keep is None or keep.all() else np.flatnonzero(keep)
        change = np.empty(n, dtype=bool)
        if n:
            change[0] = True
            np.logical_not(pc.equal(text.slice(1), text.slice(0, n - 1)).to_numpy(zero_copy_only=False),
                           out=change[1:])
        if rows is None:
            head = change
        else:  # a kept row starts a run where it or a dropped row since the kept one before it changed
            head = change[keep]
            moved = np.searchsorted(rows, np.flatnonzero(change & ~keep))
            head[moved[moved < len(rows)]] = True
            head[:1] = True
        starts = np.flatnonzero(head)
        heads = text.take(pa.array(starts if rows is None else rows[starts]))
        keys = text_keys(heads)
        if keys is None:
            return None
        runs = None
        if _distinct(keys):  # one run per entry: runs are the entries
            indices = np.cumsum(head, dtype=np.int32)
            indices -= 1
            runs, dictionary = starts, heads
        else:
            codes, count = equal_codes(keys)
            indices = np.repeat(codes.astype(np.int32, copy=False), np.diff(starts, append=len(head)))
            first = np.empty(count, dtype=np.int64)
            first[codes[::-1]] = np.arange(len(codes))[::-1]  # the first run of each entry
            dictionary, keys = heads.take(pa.array(first)), keys[first]
        trimmed = pc.utf8_trim_whitespace(dictionary)
        # Trimming only removes bytes: when it removed none, the heads' keys are the entries' keys.
        if _text_bytes(trimmed) != _text_bytes(dictionary):
            keys = text_keys(trimmed)
        return cls(indices, trimmed, keys, runs=runs)

    @property
    def all_int(self) -> bool:
        """Whether every entry is a canonical integer (asked only where text may become
        numbers: CSV customer ids, and invoices merged across batches at once)."""
        if self._all_int is None:
            self._all_int = bool(len(self.dictionary)) and all_int_text(self.dictionary)
        return self._all_int

    def __len__(self) -> int:
        return len(self.indices)

    def local_codes(self, xp: Any = np) -> tuple[Any, Any]:
        """Each row's dictionary entry (in ``xp``) and which rows have a non-blank id
        (None when all do): entries are codes within the batch."""
        blank = (self.keys == b"") if self.keys is not None else \
            pc.fill_null(pc.equal(self.dictionary, ""), True).to_numpy(zero_copy_only=False)
        if self.runs is not None and not blank.any():  # runs: text without nulls, one entry per run
            return xp.asarray(self.indices), None
        present = self.indices >= 0
        if blank.any():
            present &= ~blank[np.maximum(self.indices, 0)]
        return xp.asarray(self.indices), None if bool(present.all()) else xp.asarray(present)

    def entries(self) -> "EncodedText":
        """The dictionary alone (no rows), as a batch's id set for :func:`code_entries`."""
        return EncodedText(np.empty(0, np.int32), self.dictionary, self.keys, self._all_int)

    def decode(self) -> pa.Array:
        idx = pa.array(self.indices, mask=self.indices < 0)
        return self.dictionary.take(idx)


def _entry_codes(parts: list[EncodedText], sort: bool, text_to_int: bool,
                 uniques: bool = True) -> tuple[np.ndarray, pa.Array | int]:
    """Codes of the dictionary entries of several batches (one after the other), merging
    equal entries (equal as integers with ``text_to_int``); blank entries get -1.
    Returns the codes and the unique values (their number, without ``uniques``)."""
    text = pa.concat_arrays([p.dictionary for p in parts])
    entry = np.full(len(text), -1, dtype=np.int64)
    if text_to_int and all(p.all_int or not len(p.dictionary) for p in parts):
        codes, values = factorize(text.cast(pa.int64()), sort)
        entry[:] = codes
        return entry, values if uniques else len(values)
    if all(p.keys is not None or not len(p.dictionary) for p in parts):
        keys = np.concatenate([p.keys for p in parts if p.keys is not None] or [np.empty(0, "S8")])
        keep = np.flatnonzero(keys != b"")  # the empty text: no id
        codes, _ = factorize_keys(keys[keep], sort)
        entry[keep] = codes
        n = int(codes.max()) + 1 if len(codes) else 0
        if not uniques:
            return entry, n
        first = np.empty(n, dtype=np.int64)
        first[codes[::-1]] = keep[::-1]  # the first entry of each code
        return entry, text.take(pa.array(first))
    blank = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(~blank)
    codes, values = factorize(text.take(pa.array(keep)) if len(keep) < len(text) else text, sort)
    entry[keep] = codes
    return entry, values if uniques else len(values)


def code_entries(parts: list[Any], xp: Any = np, sort: bool = True, text_to_int: bool = False,
                 uniques: bool = True) -> tuple[Any, pa.Array | int]:
    """Codes of the entries of several batches' id sets, one after the other.

    Each part is a set of ids of one batch: an :class:`EncodedText` (its
    dictionary entries) or an Arrow array of numbers. Equal ids get equal
    codes across batches; blank text gets -1. Returns the codes (in ``xp``)
    and the unique ids in code order (their number, without ``uniques``).
    """
    if parts and all(isinstance(p, EncodedText) for p in parts):
        entry, values = _entry_codes(parts, sort, text_to_int, uniques)
        return xp.asarray(entry), values
    arrays = [p.dictionary if isinstance(p, EncodedText) else p for p in parts]
    codes, values, _ = code_ids(arrays, xp, sort, text_to_int)
    return codes, values if uniques else len(values)


def n_entries(part: Any) -> int:
    """How many ids a part given to :func:`code_entries` holds."""
    return len(part.dictionary) if isinstance(part, EncodedText) else len(part)


def code_ids(parts: list[Any], xp: Any = np, sort: bool = True,
             text_to_int: bool = False) -> tuple[Any, pa.Array, Any]:
    """Codes of the ids of several batches, their unique values, and which rows have an id.

    ``parts`` are Arrow arrays or, for text, :class:`EncodedText` (encoded in
    the worker threads); the dictionaries are unified here once, on the host,
    and only integer codes go to ``xp``'s device. Numbers are coded in ``xp``.

    Returns
    -------
    codes : int array of shape (n,) in ``xp``
        Any value where the row has no id.
    uniques : pyarrow.Array
    present : bool array of shape (n,) in ``xp``, or None when every row has an id
    """
    if parts and all(isinstance(p, EncodedText) for p in parts):
        entry, uniques = _entry_codes(parts, sort, text_to_int)
        starts = np.cumsum([0] + [len(p.dictionary) for p in parts])
        # Index -1 (a null row) reads the -1 appended to each batch's entries.
        codes = xp.concatenate([xp.asarray(np.append(entry[starts[i]:starts[i + 1]], -1))[xp.asarray(p.indices)]
                                for i, p in enumerate(parts)])
        codes = codes.astype(_code_dtype(len(uniques)), copy=False)
        present = codes >= 0
        return codes, uniques, None if bool(present.all()) else present
    parts = [p.decode() if isinstance(p, EncodedText) else p for p in parts]
    if parts and all(pa.types.is_integer(p.type) or pa.types.is_floating(p.type) for p in parts) \
            and len({p.type for p in parts}) == 1:
        has = np.concatenate([id_present(p) for p in parts])
        every = bool(has.all())
        values = np.concatenate([p.to_numpy(zero_copy_only=False) if p.null_count == 0 else
                                 pc.fill_null(p, 0).to_numpy(zero_copy_only=False) for p in parts])
        values = xp.asarray(values if every else values[has])
        codes, uniques = factorize_values(values, sort, owned=True)
        uniques = pa.array(to_numpy(uniques), parts[0].type)
        if every:
            return codes, uniques, None
        out = xp.full(has.shape[0], -1, dtype=codes.dtype)
        has_x = xp.asarray(has)
        out[has_x] = codes
        return out, uniques, has_x
    arr = _unify(parts, text_to_int)
    has = id_present(arr)
    every = bool(has.all())
    codes, uniques = factorize(arr if every else arr.filter(pa.array(has)), sort)
    if every:
        return xp.asarray(codes), uniques, None
    out = np.full(len(arr), -1, dtype=codes.dtype)
    out[has] = codes
    return xp.asarray(out), uniques, xp.asarray(has)


def order_codes(customer: Any, day: Any, invoice: Any | None = None, has_invoice: Any | None = None,
                n_invoices: int = 0) -> tuple[Any, int]:
    """Order codes: invoices within customers, customer-days where there is no invoice.

    Parameters
    ----------
    customer, day : int arrays of shape (n,), one namespace
    invoice : int array of shape (n,), optional
        Invoice codes, dense in ``0..n_invoices-1`` over the rows that have
        one (any value where ``has_invoice`` is False), as :func:`code_ids` gives.
    has_invoice : bool array of shape (n,), optional
        None: every row has an invoice (when ``invoice`` is given).

    Returns
    -------
    order : int32 (or int64) array of shape (n,), and the number of orders
    """
    xp = get_namespace(customer)
    n = int(customer.shape[0])
    if n == 0:
        return xp.empty(0, dtype=np.int32), 0
    if invoice is None:
        has = xp.zeros(n, dtype=bool)
    else:
        has = has_invoice if has_invoice is not None else xp.ones(n, dtype=bool)
    every = invoice is not None and bool(has.all())
    parts: list[tuple[Any, Any]] = []  # (codes, rows) per kind of order
    n_orders = 0
    if invoice is not None and bool(has.any()):
        rows = None if every else xp.flatnonzero(has)
        inv = invoice if every else invoice[rows]
        cust = customer if every else customer[rows]
        n_inv = n_invoices
        owner = xp.empty(n_inv, dtype=cust.dtype)
        owner[inv] = cust
        if bool(xp.all(owner[inv] == cust)):  # the usual case: an invoice has one customer
            codes, n_orders = inv, n_inv
        else:
            key = cust.astype(xp.int64) * n_inv + inv
            codes, uniq = factorize_values(key, sort=False, owned=True)
            n_orders = int(uniq.shape[0])
        if every:
            return codes, n_orders
        parts.append((codes, rows))
    rows = xp.flatnonzero(~has)
    d = day[rows].astype(xp.int64)
    lo = int(d.min())
    key = customer[rows].astype(xp.int64) * (int(d.max()) - lo + 1) + (d - lo)
    codes, uniq = factorize_values(key, sort=False, owned=True)
    parts.append((codes.astype(xp.int64) + n_orders, rows))
    n_orders += int(uniq.shape[0])
    order = xp.empty(n, dtype=_code_dtype(n_orders))
    for codes, rows in parts:
        order[rows] = codes
    return order, n_orders

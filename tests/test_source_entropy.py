"""Source entropy (Eq. 4), grouping keys and the top/bottom cut, against values computed by hand."""

import math
import unicodedata

import numpy as np
import pytest

from key_reference import _ODD_SPACE, block_key_function, key_function
from nd_fairseq.filtering.cut import bottom_count, select_indices, top_count
from nd_fairseq.filtering.entropy import conditional_entropy, group_entropy
from nd_fairseq.filtering.hashing import block_hashes, hash_keys
from nd_fairseq.filtering.keys import normalize_line
from nd_fairseq.filtering.memory_scoring import source_entropy, target_entropy
from nd_fairseq.io_utils import InputError

# A hand-made corpus: (query, response) pairs.
PAIRS = [
    ("hi", "yeah"),                   # 0  "yeah" answers hi, hi, how are you
    ("hi", "yeah"),                   # 1
    ("how are you", "yeah"),          # 2
    ("a", "ok"),                      # 3  "ok" answers a, b, c, d once each
    ("b", "ok"),                      # 4
    ("c", "ok"),                      # 5
    ("d", "ok"),                      # 6
    ("a", "sure"),                    # 7  "sure" answers a, a, b, b
    ("a", "sure"),                    # 8
    ("b", "sure"),                    # 9
    ("b", "sure"),                    # 10
    ("c", "no"),                      # 11 "no" answers c, d
    ("d", "no"),                      # 12
    ("e", "the weather is nice"),     # 13 one query
    ("e", "same"),                    # 14 one query, twice
    ("e", "same"),                    # 15
]
QUERIES = [q for q, _ in PAIRS]
RESPONSES = [r for _, r in PAIRS]

H_YEAH = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # 0.918296 bits
H_OK = -(4 * 0.25 * math.log2(0.25))  # 2 bits
H_SURE = -(2 * 0.5 * math.log2(0.5))  # 1 bit
H_NO = -(2 * 0.5 * math.log2(0.5))  # 1 bit: ties with "sure"
EXPECTED_BITS = [H_YEAH] * 3 + [H_OK] * 4 + [H_SURE] * 4 + [H_NO] * 2 + [0.0] * 3


def test_hand_computed_source_entropy_in_bits():
    h = source_entropy(QUERIES, RESPONSES, key="exact", base="2")
    assert h.dtype == np.float64 and h.shape == (16,)
    np.testing.assert_allclose(h, EXPECTED_BITS, rtol=0, atol=1e-12)
    assert round(H_YEAH, 6) == 0.918296
    assert h[13] == 0.0 and h[14] == 0.0 and h[15] == 0.0  # one query: exactly zero
    assert h[7] == h[11]  # "sure" {2, 2} and "no" {1, 1}: both exactly 1 bit, a tie


def test_nats_and_base_10():
    bits = source_entropy(QUERIES, RESPONSES, key="exact", base="2")
    nats = source_entropy(QUERIES, RESPONSES, key="exact", base="e")
    dits = source_entropy(QUERIES, RESPONSES, key="exact", base="10")
    np.testing.assert_allclose(nats, bits * math.log(2), atol=1e-12)
    np.testing.assert_allclose(nats, np.array(EXPECTED_BITS) * math.log(2), atol=1e-12)
    np.testing.assert_allclose(dits, np.array(EXPECTED_BITS) * math.log10(2), atol=1e-12)
    assert nats[3] == pytest.approx(math.log(4))
    with pytest.raises(InputError, match="log base"):
        source_entropy(QUERIES, RESPONSES, base="1")


def test_target_entropy_swaps_roles():
    h = target_entropy(QUERIES, RESPONSES, key="exact")
    # H_tgt(q): the entropy of the responses that answer q
    h_a = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))  # a: ok, sure, sure
    expected = {"hi": 0.0, "how are you": 0.0, "a": h_a, "b": h_a, "c": 1.0, "d": 1.0, "e": h_a}
    np.testing.assert_allclose(h, [expected[q] for q in QUERIES], atol=1e-12)


def test_equal_entropies_from_different_counts_tie_exactly():
    # "A" answers 4 queries once each, "B" the same 4 twice each: both log 4, as the same float
    queries = list("abcd") + list("aabbccdd")
    responses = ["A"] * 4 + ["B"] * 8
    for base in ("2", "e", "10"):
        h = source_entropy(queries, responses, key="exact", base=base)
        assert h[0] == h[4], base
        assert len(set(h.tolist())) == 1


def test_group_entropy_function():
    group = np.array([7, 7, 7, 3, 3, 9], dtype=np.uint64)
    member = np.array([1, 1, 2, 5, 6, 1], dtype=np.uint64)
    groups, sizes, h = group_entropy(group, member)  # bits by default
    assert groups.tolist() == [3, 7, 9]
    assert sizes.tolist() == [2, 3, 1]
    np.testing.assert_allclose(h, [1.0, H_YEAH, 0.0], atol=1e-12)
    g0, s0, h0 = group_entropy(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert g0.size == s0.size == h0.size == 0


def test_conditional_entropy_groups_the_pairs_and_gives_eq4_per_group():
    # group 5 holds pairs 1, 3, 4 with members 2, 2, 4: H = H_YEAH; group 7 pairs 0, 2, members 1, 3: 1 bit
    group = np.array([7, 5, 7, 5, 5], dtype=np.uint64)
    member = np.array([1, 2, 3, 2, 4], dtype=np.uint64)
    order, group_id, size, entropy = conditional_entropy(group, member)  # bits by default
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4] and group_id.shape == (5,)
    runs = group[order].tolist()
    assert runs in ([5, 5, 5, 7, 7], [7, 7, 5, 5, 5])  # the pairs of a group are adjacent
    per_pair = np.empty(5)
    per_pair[order] = entropy[group_id]
    np.testing.assert_allclose(per_pair, [1.0, H_YEAH, 1.0, H_YEAH, H_YEAH], atol=1e-12)
    sizes = np.empty(5, dtype=np.int64)
    sizes[order] = size[group_id]
    assert sizes.tolist() == [2, 3, 2, 3, 3] and size.sum() == 5
    # in nats: the same counts, another log
    nats = conditional_entropy(group, member, ln_base=1.0).entropy
    np.testing.assert_allclose(np.sort(nats[size > 0]), np.sort(entropy[size > 0]) * math.log(2), atol=1e-12)


def test_misaligned_and_bad_key():
    with pytest.raises(InputError, match="misaligned"):
        source_entropy(["a", "b"], ["c"])
    with pytest.raises(InputError, match="grouping key"):
        source_entropy(["a"], ["b"], key="prefix:0")
    with pytest.raises(InputError, match="grouping key"):
        key_function("words")


# Grouping keys -----------------------------------------------------------------------------------


def test_exact_vs_normalized_keys():
    # NFKC (full-width letters, ligature, no-break space), case and whitespace variants of "yeah"
    responses = ["Yeah", "yeah ", " YEAH", "ｙｅａｈ", "yeah\u00a0", "yeah"]
    queries = [f"q{i}" for i in range(len(responses))]
    exact = source_entropy(queries, responses, key="exact")
    normalized = source_entropy(queries, responses, key="normalized")
    assert exact.tolist() == [0.0] * 6  # six distinct strings
    np.testing.assert_allclose(normalized, [math.log2(6)] * 6, atol=1e-12)


def test_normalized_key_collapses_every_unicode_whitespace():
    responses = ["i don't know", "i  don't\tknow", "I DON'T KNOW ", "i\u2028don't\u1680know", "ﬁne", "fine"]
    queries = ["a", "b", "c", "d", "e", "f"]
    h = source_entropy(queries, responses, key="normalized")
    np.testing.assert_allclose(h, [2.0] * 4 + [1.0] * 2, atol=1e-12)
    assert key_function("normalized")(responses) == ["i don't know"] * 4 + ["fine"] * 2
    # the whitespace list of the fast path is complete: every str whitespace that NFKC keeps
    # (other than " " and "\n") is in it
    kept = {c for c in map(chr, range(0x3100)) if c.isspace() and unicodedata.normalize("NFKC", c) == c}
    assert kept - {" ", "\n"} == set(_ODD_SPACE)


def test_prefix_keys():
    responses = ["yeah i know", "yeah i know right", "Yeah  I", "no idea"]
    queries = ["a", "b", "c", "d"]
    assert key_function("prefix:2")(responses) == ["yeah i", "yeah i", "yeah i", "no idea"]
    h2 = source_entropy(queries, responses, key="prefix:2")
    np.testing.assert_allclose(h2, [math.log2(3)] * 3 + [0.0], atol=1e-12)
    h3 = source_entropy(queries, responses, key="prefix:3")
    np.testing.assert_allclose(h3, [1.0, 1.0, 0.0, 0.0], atol=1e-12)
    h1 = source_entropy(queries, responses, key="prefix:1")
    np.testing.assert_allclose(h1, [math.log2(3)] * 3 + [0.0], atol=1e-12)


def test_block_keys_and_hashes_agree_with_the_per_line_definition():
    rng = np.random.default_rng(0)
    alphabet = ["a", "B", " ", "  ", "\t", "\r", "é", "É", "😂", "\u2028", "\x1c", "\u1680", "ﬁ", "\xa0",
                "Σ", "yeah", "ok ", " i", "\x85"]
    for _ in range(300):
        lines = ["".join(rng.choice(alphabet, size=rng.integers(0, 7))) for _ in range(rng.integers(1, 9))]
        data = "\n".join(lines).encode()
        for key in ("exact", "normalized", "prefix:1", "prefix:3"):
            if key == "exact":
                ref = [line.encode() for line in lines]
            else:
                ref = [normalize_line(line.encode()) for line in lines]
                if key.startswith("prefix"):
                    k = int(key.split(":")[1])
                    ref = [b" ".join(r.split(b" ")[:k]) for r in ref]
            assert block_key_function(key)(data) == ref
            assert np.array_equal(block_hashes(data, key), hash_keys(ref))
            # the str keys of key_function are the same keys
            assert [k.encode() for k in key_function(key)(lines)] == ref


def test_hash_is_a_function_of_the_bytes_only():
    keys = [b"", b"a", b"yeah", b"x" * 31, b"x" * 32, b"x" * 33, b"y" * 200, "héllo".encode()]
    h = hash_keys(keys)
    assert len(set(h.tolist())) == len(keys)
    # the same key at other offsets, in other blocks and alone hashes the same
    again = hash_keys([b"zz", b"y" * 200, b"", b"x" * 33, b"yeah"])
    assert again[1] == h[6] and again[2] == h[0] and again[3] == h[5] and again[4] == h[2]
    assert np.array_equal(hash_keys(["yeah"]), hash_keys([b"yeah"]))


# The cut -----------------------------------------------------------------------------------------


def test_top_and_bottom_half_ties_broken_by_line_order():
    h = source_entropy(QUERIES, RESPONSES, key="exact")
    # the order: score descending, ties by line number: ok (lines 3-6, 2 bits), the six 1-bit
    # lines 7-12, yeah (0-2, 0.918 bits), the zeros 13-15
    top = select_indices(h, "top", 0.5)
    bottom = select_indices(h, "bottom", 0.5)
    assert top.tolist() == [3, 4, 5, 6, 7, 8, 9, 10]  # the first 4 of the six tied 1-bit lines
    assert bottom.tolist() == [0, 1, 2, 11, 12, 13, 14, 15]  # the other two tied lines
    assert sorted(top.tolist() + bottom.tolist()) == list(range(16))
    # other ratios: top r and bottom 1 - r are complementary
    for r in (0.1, 0.3, 0.55, 0.9):
        t, b = select_indices(h, "top", r), select_indices(h, "bottom", 1 - r)
        assert len(t) == top_count(16, r) and len(b) == bottom_count(16, 1 - r)
        assert sorted(t.tolist() + b.tolist()) == list(range(16))
    # bottom 25%: the last 4 of the order
    assert select_indices(h, "bottom", 0.25).tolist() == [2, 13, 14, 15]


def test_threshold_mode():
    h = source_entropy(QUERIES, RESPONSES, key="exact")
    assert select_indices(h, "top", threshold=0.95).tolist() == list(range(3, 13))
    assert select_indices(h, "bottom", threshold=0.95).tolist() == [0, 1, 2, 13, 14, 15]
    # score == T goes to the bottom
    assert 7 not in select_indices(h, "top", threshold=1.0).tolist()
    assert 7 in select_indices(h, "bottom", threshold=1.0).tolist()


def test_counts_and_bad_subset():
    assert top_count(16, 0.5) == 8 and bottom_count(16, 0.5) == 8
    assert top_count(5, 0.5) == 3 and bottom_count(5, 0.5) == 2  # ceil for the top
    assert top_count(3, 0.0) == 0 and top_count(3, 1.0) == 3
    with pytest.raises(InputError, match="subset"):
        select_indices(np.zeros(3), "middle")
    with pytest.raises(InputError, match="outside"):
        select_indices(np.zeros(3), "top", 1.5)


def test_groups_whose_hashes_share_the_low_bits():
    # groups are first ordered by the low 32 bits of their hash; equal low bits must not merge them
    low = np.uint64(0x1234)
    group = np.array([(k << 32) | 0x1234 for k in (1, 2, 1, 3, 2, 1)], dtype=np.uint64)
    member = np.array([10, 11, 12, 13, 11, 10], dtype=np.uint64)
    groups, sizes, h = group_entropy(group, member)
    assert (groups & np.uint64(0xFFFFFFFF) == low).all()
    assert (groups >> np.uint64(32)).tolist() == [1, 2, 3]
    assert sizes.tolist() == [3, 2, 1]
    np.testing.assert_allclose(h, [H_YEAH, 0.0, 0.0], atol=1e-12)  # group 1: members 10, 12, 10

"""fairseq 0.12 drops the last batch when it is smaller than --required-batch-size-multiple."""

import numpy as np

import nd_fairseq


def test_last_incomplete_batch_is_kept():
    nd_fairseq.register()
    from fairseq.data import data_utils

    indices = np.arange(60, dtype=np.int64)
    sizes = np.full(60, 10, dtype=np.int64)
    batches = data_utils.batch_by_size(indices, lambda i: 10, num_tokens_vec=sizes, max_sentences=32,
                                       required_batch_size_multiple=8)
    assert [len(b) for b in batches] == [32, 24, 4]
    assert np.array_equal(np.concatenate(batches), indices)
    # token-bounded batches: 61 sentences of 10 tokens, at most 100 tokens -> 8 per batch (multiple of 8)
    batches = data_utils.batch_by_size(np.arange(61, dtype=np.int64), lambda i: 10,
                                       num_tokens_vec=np.full(61, 10, dtype=np.int64), max_tokens=100,
                                       required_batch_size_multiple=8)
    assert sum(len(b) for b in batches) == 61 and len(batches[-1]) == 5

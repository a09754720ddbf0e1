"""`length_sorted_batches`: the one sort-by-length batching every stage uses."""

import numpy as np
import pytest

from jaxcot.generate.api import length_batches
from jaxcot.importance.batching import plan_batches
from jaxcot.shapes import length_sorted_batches


def test_batches_are_stably_sorted_chunks():
    lengths = [5, 3, 5, 1, 3, 9, 1]
    up = [b.tolist() for b in length_sorted_batches(lengths, 3)]
    assert up == [[3, 6, 1], [4, 0, 2], [5]]  # ascending, ties in input order
    down = [b.tolist() for b in length_sorted_batches(lengths, 3, descending=True)]
    assert down == [[5, 0, 2], [1, 4, 3], [6]]  # longest first, ties still in input order
    assert all(b.dtype == np.int64 for b in length_sorted_batches(lengths, 2))
    assert list(length_sorted_batches([], 4)) == []
    with pytest.raises(ValueError):
        next(length_sorted_batches(lengths, 0))


def test_callers_keep_their_batches():
    """The generator's and the scorer's batches are those they formed with their own sorts."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = [int(x) for x in rng.integers(1, 40, rng.integers(0, 30))]
        size = int(rng.integers(1, 7))
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        assert length_batches(lengths, size) == [order[k:k + size] for k in range(0, len(order), size)]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        assert [g for _, g in plan_batches(lengths, size)] == [order[k:k + size] for k in range(0, len(order), size)]
        # a set of whole ascending batches, given again, forms the same batches
        batches = length_batches(lengths, size)
        own = [i for b in batches[::2] for i in b]
        assert [[own[i] for i in b] for b in length_batches([lengths[i] for i in own], size)] == batches[::2]

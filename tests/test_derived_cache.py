"""The one cache of tensor-derived data (face masks, multigrid hierarchies): keyed on identity and
version, so an in-place edit or a new tensor at a reused address never returns stale data."""

import torch

from taichi_dp.derived_cache import DerivedCache


def test_builds_once_per_tensor_and_rebuilds_after_an_in_place_edit():
    cache: DerivedCache[float] = DerivedCache(4)
    calls = []
    t = torch.ones(3)

    def build():
        calls.append(1)
        return float(t.sum())

    assert cache.get("k", t, build) == 3.0
    assert cache.get("k", t, build) == 3.0 and len(calls) == 1
    t.mul_(2)  # same identity, new version
    assert cache.get("k", t, build) == 6.0 and len(calls) == 2
    assert cache.get("other", t, build) == 6.0 and len(calls) == 3  # the key matters too


def test_an_equal_tensor_with_another_identity_is_another_entry_and_lru_evicts():
    cache: DerivedCache[int] = DerivedCache(2)
    a, b = torch.zeros(2), torch.zeros(2)
    assert cache.get("k", a, lambda: 1) == 1
    assert cache.get("k", b, lambda: 2) == 2  # equal values, another tensor
    assert cache.get("k", None, lambda: 3) == 3 and len(cache) == 2  # the oldest (a) was evicted
    assert cache.get("k", a, lambda: 4) == 4

import numpy as np
import pytest

from workloads.ramlm.tiers import ClusterMap, TierSpecError, frequency_order, parse_tiers, top_k, uniform_tiers


def test_parse_seed_spec():
    tiers = parse_tiers("100,15,20;400,10,12;rest,5,8", 50257)
    assert [(t.start, t.count, t.neurons, t.bits) for t in tiers] == [(0, 100, 15, 20), (100, 400, 10, 12), (500, 49757, 5, 8)]
    # the spec's memory size for tier0_20bit
    assert sum(t.total_neurons for t in tiers) == 254285
    assert sum(t.total_neurons * t.bits for t in tiers) == 2068280


@pytest.mark.parametrize("spec, message", [
    ("100,15", "expected 3 fields"),
    ("100,15,20;400,10", "expected 3 fields"),
    ("60000,15,20;rest,5,8", "beyond the vocabulary size"),
    ("40000,15,20;20000,5,8;rest,3,8", "beyond the vocabulary size"),
    ("100,15,20;400,10,12", "covers 500 clusters"),
    ("rest,5,8;100,15,20", "only be the last tier"),
    ("50257,5,8;rest,3,8", "no clusters left"),
    ("100,0,8;rest,5,8", "neurons must be positive"),
    ("100,5,61;rest,5,8", "bits must be in 1..60"),
    ("abc,5,8;rest,5,8", "count must be an integer"),
    ("", "empty"),
])
def test_parse_errors_are_clear(spec, message):
    with pytest.raises(TierSpecError, match=message):
        parse_tiers(spec, 50257)


def test_uniform_is_one_tier():
    (t,) = uniform_tiers(1000, 3, 8)
    assert (t.start, t.count, t.neurons, t.bits) == (0, 1000, 3, 8)


def test_frequency_order_counts_then_first_occurrence_then_unseen_by_id():
    train = np.array([4, 2, 2, 7, 4, 7, 1])   # counts: 4:2, 2:2, 7:2, 1:1; first seen 4 < 2 < 7
    order = frequency_order(train, 9)
    assert order.tolist() == [4, 2, 7, 1, 0, 3, 5, 6, 8]
    assert top_k(train, 9, 3).tolist() == [4, 2, 7]
    assert top_k(train, 9, 100).tolist() == [4, 2, 7, 1]   # never an unseen token


def test_cluster_map_is_one_consistent_mapping():
    train = np.array([3, 3, 3, 1, 1, 0])
    tiers = parse_tiers("1,2,4;2,1,4;rest,1,2", 5)
    cmap = ClusterMap.build(tiers, train, "frequency")
    assert cmap.cluster_order.tolist() == [3, 1, 0, 2, 4]
    assert cmap.to_tokens(cmap.to_logical(np.arange(5))).tolist() == list(range(5))
    assert cmap.tier_of_token.tolist() == [1, 1, 2, 0, 2]   # token 3 (most frequent) is tier 0
    legacy = ClusterMap.build(tiers, train, "token_id")
    assert legacy.tier_of_token.tolist() == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        ClusterMap.build(tiers, train, "alphabetical")

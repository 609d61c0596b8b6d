"""Training batches grouped by length within shuffled buckets: a partition of the data, less
padding than plain shuffling, and an order that is a function of the seed alone."""

import random

from clbench.data.encoding import length_grouped_batches
from clbench.data.task import Example
from clbench.results.io import load_results
from clbench.training.runner import run
from clbench.training.train import LengthGroupedSampler, _length

_RNG = random.Random(7)
LENGTHS = [_RNG.randrange(5, 300) for _ in range(1000)]


def _padding(batches: list[list[int]]) -> int:
    return sum(len(b) * max(LENGTHS[i] for i in b) - sum(LENGTHS[i] for i in b) for b in batches)


def test_batches_partition_the_data_and_sort_within_buckets():
    batches = length_grouped_batches(LENGTHS, 8, seed=3, bucket=5)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert [len(b) for b in batches].count(8) == len(LENGTHS) // 8  # one short batch at most
    assert all(LENGTHS[b[k]] <= LENGTHS[b[k + 1]] for b in batches for k in range(len(b) - 1))
    assert batches != sorted(batches, key=lambda b: LENGTHS[b[0]])  # the batch order is shuffled


def test_grouping_cuts_the_padding_of_plain_shuffling():
    order = list(range(len(LENGTHS)))
    random.Random(3).shuffle(order)
    shuffled = [order[i : i + 8] for i in range(0, len(order), 8)]
    grouped = length_grouped_batches(LENGTHS, 8, seed=3)
    assert _padding(grouped) < _padding(shuffled) / 5


def test_the_order_is_a_function_of_the_seed():
    first = length_grouped_batches(LENGTHS, 8, seed="0:1")
    assert length_grouped_batches(list(LENGTHS), 8, seed="0:1") == first
    assert length_grouped_batches(LENGTHS, 8, seed="0:2") != first

    # The sampler: pass p is length_grouped_batches with seed (seed, p), whatever came before.
    sampler = LengthGroupedSampler(LENGTHS, 8, seed=1002)
    passes = [list(sampler) for _ in range(3)]
    assert passes == [sampler.batches(p) for p in range(3)]
    assert passes[0] != passes[1] and len(sampler) == len(passes[0]) == 125
    assert list(LengthGroupedSampler(LENGTHS, 8, seed=1002)) == passes[0]


def test_a_pair_counts_its_longer_response():
    pair = Example("Q?", " a", "t", rejected=" a much longer answer")
    assert _length(pair) == len("Q?") + len(" a much longer answer")
    assert _length(Example("Q?", " a", "t")) == 4


def test_results_record_the_padded_fraction_of_each_stage(tiny_tasks, tiny_config):
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    stages = results["timings"]["stages"][1:]
    assert len(stages) == 3 and all(0 <= s["padded_fraction"] < 0.5 for s in stages)

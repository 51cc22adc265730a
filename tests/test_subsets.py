"""Tests for harness.data.subsets: parsing, stratified nested subsets, validation splits."""

from __future__ import annotations

import pytest
import torch

from harness.data.subsets import (
    SubsetError,
    SubsetSpec,
    allocate,
    class_counts,
    parse_subset,
    split_validation,
    subset_indices,
)

CLASSES = tuple("abcdefghij")


def balanced(per_class: int = 100, num_classes: int = 10) -> torch.Tensor:
    """Labels 0..K-1 repeating: index i has class i % K."""
    return torch.arange(per_class * num_classes) % num_classes


def take(labels: torch.Tensor, text: str, seed: int = 0, num_classes: int = 10) -> torch.Tensor:
    return subset_indices(labels, parse_subset(text), seed=seed, num_classes=num_classes, dataset="toy")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500", SubsetSpec("count", 500, "500")),
        ("5k", SubsetSpec("count", 5000, "5k")),
        ("5000", SubsetSpec("count", 5000, "5k")),
        (" 10K ", SubsetSpec("count", 10_000, "10k")),
        ("50k", SubsetSpec("count", 50_000, "50k")),
        ("1.5k", SubsetSpec("count", 1500, "1500")),
        ("full", SubsetSpec("full", None, "full")),
        ("FULL", SubsetSpec("full", None, "full")),
        ("50pc", SubsetSpec("per_class", 50, "50pc")),
    ],
)
def test_parse_subset_accepted_forms(text: str, expected: SubsetSpec) -> None:
    assert parse_subset(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0", "0pc", "-5", "5m", "1.2345k", "5 k", "1e3", "all", "50 pc"])
def test_parse_subset_rejects_bad_text_naming_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="accepted forms: a count like '500', '5k'"):
        parse_subset(text)


def test_equal_counts_when_divisible() -> None:
    labels = balanced()
    counts = class_counts(labels, take(labels, "500"), CLASSES)
    assert counts == dict.fromkeys(CLASSES, 50)


def test_remainder_spread_one_each_over_five_classes() -> None:
    labels = balanced()
    counts = sorted(class_counts(labels, take(labels, "455"), CLASSES).values())
    assert counts == [45] * 5 + [46] * 5


def test_remainder_classes_depend_on_seed() -> None:
    labels = balanced()
    heavy = [{c for c, n in class_counts(labels, take(labels, "455", seed=s), CLASSES).items() if n == 46} for s in range(4)]
    assert len({frozenset(h) for h in heavy}) > 1


def test_small_class_gives_all_and_rest_is_spread() -> None:
    # Class sizes 5, 100, 100; 150 wanted: class a gives its 5, b and c share 145 as 72/73.
    labels = torch.tensor([0] * 5 + [1] * 100 + [2] * 100)
    counts = class_counts(labels, take(labels, "150", num_classes=3), ("a", "b", "c"))
    assert counts["a"] == 5
    assert sorted([counts["b"], counts["c"]]) == [72, 73]


def test_allocate_water_fills_in_class_order() -> None:
    assert allocate([5, 100, 100], 150, [2, 0, 1]) == [5, 72, 73]
    assert allocate([5, 100, 100], 150, [1, 2, 0]) == [5, 73, 72]
    assert allocate([3, 3, 3], 9, [0, 1, 2]) == [3, 3, 3]
    assert allocate([10, 10, 10], 4, [1, 0, 2]) == [1, 2, 1]
    with pytest.raises(ValueError, match="cannot take 31 from 30"):
        allocate([10, 10, 10], 31, [0, 1, 2])


def test_subsets_nest_for_one_seed() -> None:
    labels = balanced()
    small, medium, full = (set(take(labels, t, seed=3).tolist()) for t in ("500", "1k", "full"))
    assert small < medium == full  # 1k of 1,000 images is all of them
    assert (len(small), len(medium), len(full)) == (500, 1000, 1000)


def test_every_size_contains_the_previous_one_on_imbalanced_data() -> None:
    labels = torch.tensor([0] * 7 + [1] * 40 + [2] * 13 + [3] * 60)
    previous: set[int] = set()
    for n in range(4, 121, 3):
        current = set(take(labels, str(n), seed=5, num_classes=4).tolist())
        assert len(current) == n
        assert previous <= current
        previous = current


def test_indices_are_sorted_int64_and_unique() -> None:
    idx = take(balanced(), "455")
    assert idx.dtype == torch.int64
    assert torch.equal(idx, torch.sort(idx).values)
    assert idx.unique().numel() == 455


def test_pinned_indices_for_seed_zero() -> None:
    # Frozen output of the PCG64-based selection: any change of RNG or algorithm shows here.
    labels = balanced()
    assert take(labels, "20").tolist() == [64, 70, 100, 166, 208, 222, 271, 277, 332, 338, 373, 475, 659, 705, 804, 841, 857, 896, 913, 929]
    assert take(labels, "15").tolist() == [70, 166, 208, 222, 271, 277, 332, 338, 373, 705, 804, 841, 896, 913, 929]


def test_same_seed_same_indices_and_different_seeds_differ() -> None:
    labels = balanced()
    assert torch.equal(take(labels, "300", seed=7), take(labels, "300", seed=7))
    assert not torch.equal(take(labels, "300", seed=7), take(labels, "300", seed=8))


def test_per_class_spec_takes_n_of_each_and_nests() -> None:
    labels = torch.tensor([0] * 30 + [1] * 50 + [2] * 40)
    ten, thirty = take(labels, "10pc", num_classes=3), take(labels, "30pc", num_classes=3)
    assert class_counts(labels, thirty, ("a", "b", "c")) == {"a": 30, "b": 30, "c": 30}
    assert set(ten.tolist()) < set(thirty.tolist())


def test_full_is_every_index() -> None:
    assert torch.equal(take(balanced(3), "full"), torch.arange(30))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1001", r"larger than the data: dataset 'toy' has 1000 images in 10 classes; use at most 1000"),
        ("9", r"smaller than the class count: dataset 'toy' has 1000 images in 10 classes; use at least 10"),
        ("101pc", r"needs 101 images per class but class 0 has only 100 .*use at most 100pc"),
    ],
)
def test_impossible_subsets_raise_subset_error(text: str, message: str) -> None:
    with pytest.raises(SubsetError, match=message):
        take(balanced(), text)
    assert issubclass(SubsetError, ValueError)


def test_labels_outside_num_classes_and_bad_seed_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside 0..4"):
        take(balanced(), "50", num_classes=5)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        take(balanced(), "50", seed=-1)


def test_validation_split_is_stratified_disjoint_and_complete() -> None:
    labels = balanced()
    subset = take(labels, "500")
    train, val = split_validation(subset, labels, fraction=0.1, seed=0)
    assert class_counts(labels, val, CLASSES) == dict.fromkeys(CLASSES, 5)
    assert class_counts(labels, train, CLASSES) == dict.fromkeys(CLASSES, 45)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == subset.tolist()
    assert train.dtype == val.dtype == torch.int64
    again = split_validation(subset, labels, fraction=0.1, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(split_validation(subset, labels, fraction=0.1, seed=1)[1], val)


def test_validation_keeps_one_per_class_when_possible_and_rounds_exactly() -> None:
    # class 0: 1 image (stays in train), class 1: 2 (one each), class 2: 100 (0.29 * 100 = 29).
    labels = torch.tensor([0] + [1] * 2 + [2] * 100)
    train, val = split_validation(torch.arange(103), labels, fraction=0.29, seed=0)
    assert class_counts(labels, val, ("a", "b", "c")) == {"a": 0, "b": 1, "c": 29}
    assert class_counts(labels, train, ("a", "b", "c")) == {"a": 1, "b": 1, "c": 71}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_validation_fraction_must_be_inside_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_validation(torch.arange(10), balanced(1), fraction=fraction, seed=0)


def test_class_counts_keeps_zero_classes_in_order() -> None:
    labels = torch.tensor([2, 2, 0, 2])
    assert class_counts(labels, torch.tensor([0, 1, 2]), ("x", "y", "z")) == {"x": 1, "y": 0, "z": 2}
    with pytest.raises(ValueError, match="only 2 class names"):
        class_counts(labels, torch.tensor([0]), ("x", "y"))

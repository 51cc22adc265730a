"""Stratified, nested, seed-deterministic training subsets ("5k of CIFAR-10") and validation splits.

How a subset of ``n`` images over ``K`` classes is chosen, for one seed:

* Each class ``c`` gets its own random stream, ``PCG64(SeedSequence([seed, 1, c]))``, which
  permutes that class's indices; a subset takes a *prefix* of each class's permutation.
* Counts are water-filled in a seeded class order: every class gets ``min(available, L)`` for the
  largest level ``L`` that fits, and the ``r`` left over go one each to the first ``r`` classes
  (in the seeded order) that still have images. On balanced data this is "``n // K`` each, plus
  one for ``n % K`` classes"; a class with too few images gives all it has and the shortfall is
  spread over the others the same way.
* Both rules only ever add images as ``n`` grows, so subsets of one seed nest: 5k ⊂ 10k ⊂ 50k.

Randomness comes only from raw PCG64 draws seeded explicitly (never global state); numpy
guarantees those bits stable across versions and platforms, so a seed means the same images
everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

# Stream tags keep the class order, the per-class picks and the validation picks independent.
_ORDER, _PICK, _VALIDATION = 0, 1, 2
_ACCEPTED = "a count like '500', '5k', '1.5k' (k = 1000), 'full' (every image), or a per-class count like '50pc'"
_COUNT = re.compile(r"^(\d+(?:\.\d+)?)(k?)$")
_PER_CLASS = re.compile(r"^(\d+)pc$")


class SubsetError(ValueError):
    """A subset that the dataset cannot provide (too large, or smaller than its class count)."""


@dataclass(frozen=True)
class SubsetSpec:
    """A parsed subset size. ``kind`` is "count" (``value`` images in total), "per_class"
    (``value`` per class) or "full" (``value`` is ``None``); ``label`` is the canonical text used
    in test ids (``5k``, ``500``, ``50pc``, ``full``)."""

    kind: Literal["count", "per_class", "full"]
    value: int | None
    label: str


def parse_subset(text: str) -> SubsetSpec:
    """Parse ``'500'``, ``'5k'``, ``'1.5k'``, ``'full'`` or ``'50pc'`` (case and spaces ignored).

    Canonical labels write multiples of 1000 as ``Nk`` and everything else in plain digits, so
    ``'5000'`` and ``'5k'`` both give ``5k`` and ``'1.5k'`` gives ``1500``.
    """
    clean = str(text).strip().lower()
    if clean == "full":
        return SubsetSpec("full", None, "full")
    if match := _PER_CLASS.match(clean):
        per_class = int(match.group(1))
        if per_class < 1:
            raise ValueError(f"subset {text!r} asks for 0 images per class; accepted forms: {_ACCEPTED}")
        return SubsetSpec("per_class", per_class, f"{per_class}pc")
    if match := _COUNT.match(clean):
        try:
            amount = Decimal(match.group(1)) * (1000 if match.group(2) else 1)
        except InvalidOperation as exc:  # unreachable with the regex above, kept for safety
            raise ValueError(f"cannot read subset {text!r}; accepted forms: {_ACCEPTED}") from exc
        if amount != amount.to_integral_value() or amount < 1:
            raise ValueError(f"subset {text!r} is not a positive whole number of images; accepted forms: {_ACCEPTED}")
        count = int(amount)
        return SubsetSpec("count", count, f"{count // 1000}k" if count % 1000 == 0 else str(count))
    raise ValueError(f"cannot read subset {text!r}; accepted forms: {_ACCEPTED}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _permutation(n: int, seed: int, *stream: int) -> np.ndarray:
    """A permutation of ``range(n)`` from the PCG64 stream ``(seed, *stream)``.

    Sorting raw 64-bit draws (rather than calling ``Generator.permutation``) relies only on the
    bit generator and SeedSequence, whose outputs numpy promises never to change; the
    ``Generator`` methods carry no such promise. Stable sort makes (astronomically rare) ties
    deterministic too.
    """
    _check_seed(seed)
    keys = np.random.PCG64(np.random.SeedSequence([seed, *stream])).random_raw(n)
    return np.argsort(np.asarray(keys, dtype=np.uint64).reshape(-1), kind="stable")


def _by_class(labels: torch.Tensor, num_classes: int) -> list[np.ndarray]:
    """Indices of each class, ascending; validates the label vector."""
    array = np.asarray(labels.detach().cpu(), dtype=np.int64).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"labels span {array.min()}..{array.max()}, outside 0..{num_classes - 1} (num_classes={num_classes})")
    order = np.argsort(array, kind="stable")
    bounds = np.searchsorted(array[order], np.arange(num_classes + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(num_classes)]


def allocate(available: Sequence[int], total: int, class_order: Sequence[int]) -> list[int]:
    """Per-class counts summing to ``total``: water-filling, remainder in ``class_order``.

    ``available[c]`` caps class ``c``. Raises ``ValueError`` when ``total`` exceeds the sum.
    """
    if total > sum(available):
        raise ValueError(f"cannot take {total} from {sum(available)} available")
    low, high = 0, max(available, default=0)
    while low < high:  # largest level L with sum(min(a, L)) <= total
        mid = (low + high + 1) // 2
        if sum(min(a, mid) for a in available) <= total:
            low = mid
        else:
            high = mid - 1
    counts = [min(a, low) for a in available]
    left = total - sum(counts)
    for c in class_order:
        if left == 0:
            break
        if available[c] > counts[c]:
            counts[c] += 1
            left -= 1
    return counts


def subset_indices(labels: torch.Tensor, spec: SubsetSpec, *, seed: int, num_classes: int, dataset: str) -> torch.Tensor:
    """Sorted int64 indices into ``labels`` of the subset ``spec`` for ``seed`` (see module doc)."""
    groups = _by_class(labels, num_classes)
    size = sum(len(g) for g in groups)
    about = f"dataset {dataset!r} has {size} images in {num_classes} classes"
    if spec.kind == "full":
        _check_seed(seed)  # validated even though "full" does not use it
        return torch.arange(size, dtype=torch.int64)
    assert spec.value is not None
    if spec.kind == "per_class":
        smallest = min(range(num_classes), key=lambda c: len(groups[c]))
        if len(groups[smallest]) < spec.value:
            raise SubsetError(
                f"subset {spec.label} needs {spec.value} images per class but class {smallest} has only "
                f"{len(groups[smallest])} ({about}); use at most {len(groups[smallest])}pc or a total count"
            )
        counts = [spec.value] * num_classes
    else:
        if spec.value > size:
            raise SubsetError(f"subset {spec.label} ({spec.value} images) is larger than the data: {about}; use at most {size} or 'full'")
        if spec.value < num_classes:
            raise SubsetError(f"subset {spec.label} ({spec.value} images) is smaller than the class count: {about}; use at least {num_classes}")
        order = _permutation(num_classes, seed, _ORDER).tolist()
        counts = allocate([len(g) for g in groups], spec.value, order)
    picked = [groups[c][_permutation(len(groups[c]), seed, _PICK, c)[: counts[c]]] for c in range(num_classes)]
    return torch.from_numpy(np.sort(np.concatenate(picked))).to(torch.int64)


def split_validation(indices: torch.Tensor, labels: torch.Tensor, *, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``indices`` (into ``labels``) into sorted ``(train, validation)`` int64 tensors.

    Per class with ``n`` members, ``round(fraction * n)`` (halves up) go to validation, but at
    least one when ``n >= 2`` and never all of them, so every class stays trainable and, where
    possible, measurable. Picks come from a per-class seeded permutation, so the split depends
    only on ``seed`` and the data.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1 (e.g. 0.1), got {fraction!r}")
    idx = np.asarray(indices.detach().cpu(), dtype=np.int64).reshape(-1)
    if np.unique(idx).size != idx.size:
        raise ValueError("indices contain duplicates; pass the output of subset_indices")
    sub_labels = np.asarray(labels.detach().cpu(), dtype=np.int64)[idx]
    # Exact rational arithmetic: 0.29 * 100 in floats is 28.999…, which would round down.
    share = Fraction(fraction).limit_denominator(1_000_000)
    train_parts, val_parts = [], []
    for c in np.unique(sub_labels).tolist():
        members = np.sort(idx[sub_labels == c])
        n = members.size
        n_val = min(max(int(share * n + Fraction(1, 2)), 1 if n >= 2 else 0), n - 1)
        shuffled = members[_permutation(n, seed, _VALIDATION, c)]
        val_parts.append(shuffled[:n_val])
        train_parts.append(shuffled[n_val:])
    empty = np.empty(0, dtype=np.int64)
    train = np.sort(np.concatenate(train_parts)) if train_parts else empty
    val = np.sort(np.concatenate(val_parts)) if val_parts else empty
    return torch.from_numpy(train).to(torch.int64), torch.from_numpy(val).to(torch.int64)


def planned_size(dataset: str, subset: str) -> int | None:
    """The images subset ``subset`` of a registered ``dataset`` holds, before any data is read;
    ``None`` for an image folder or shard set (its size is known once it is read)."""
    from harness.data.registry import dataset_info, path_form

    if path_form(dataset) is not None:
        return None
    info, spec = dataset_info(dataset), parse_subset(subset)
    if spec.kind == "full" or spec.value is None:
        return info.train_size
    return spec.value * info.num_classes if spec.kind == "per_class" else spec.value


def class_counts(labels: torch.Tensor, indices: torch.Tensor, classes: Sequence[str]) -> dict[str, int]:
    """How many of ``indices`` fall in each class, as ``{class name: count}`` in class order (zeros kept)."""
    picked = torch.as_tensor(labels).reshape(-1)[torch.as_tensor(indices, dtype=torch.int64)]
    counts = torch.bincount(picked, minlength=len(classes))
    if counts.numel() > len(classes):
        raise ValueError(f"labels reach {counts.numel() - 1} but only {len(classes)} class names were given")
    return {name: int(counts[i]) for i, name in enumerate(classes)}

"""WebDataset shards as a dataset: ``wds:PATTERN``, read member by member with the ``webdataset`` library.

``PATTERN`` names the training shards with WebDataset's brace syntax
(``/data/bins/train-{000000..000009}.tar``; a relative pattern is under the data root). Each sample
is the group of members sharing a key: an image (``jpg``, ``jpeg`` or ``png``), its class in ``cls``
(a class index, as WebDataset writers store it, or a class name) and optionally a caption in
``txt``. Beside the shards, ``dataset.json`` may state:

* ``"test"``: the test shards' pattern, relative to that folder (``"test-{000000..000001}.tar"``).
  Without it, the test shards are PATTERN with ``train`` in its file name read as ``test``, else ``val``.
* ``"classes"``: the class names; an integer ``cls`` is then an index into them, any other ``cls`` a
  name among them. Without it the classes are the distinct ``cls`` values of the training shards,
  sorted (numerically when all are integers).
* ``"hflip"``: whether training may mirror the images (default true), as for image folders.

Shards are streamed, never unpacked; each split is decoded through the same resize path as image
folders (:func:`harness.data.convert.decode_stream`), so a folder and its shards (``python -m harness
data to-wds``) give the same uint8 split. The label index (:mod:`harness.data.shard_index`) is built
once per set of shards and cached. A bad shard is a :class:`DatasetCorrupt` naming it and its member.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from harness.data.convert import decode_stream
from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable, corrupt
from harness.data.registry import WDS_PREFIX
from harness.data.shard_index import IMAGE_EXTENSIONS, Entry, NamedBytes, class_names, label_index, read_shard, webdataset
from harness.data.types import TensorSplit

# The file beside the shards stating their test pattern, class names and flips (as image folders' dataset.json).
SHARD_FACTS = "dataset.json"
# The eval split's word in a shard file name, in the order image folders look for it: test wins over val.
_EVAL_WORDS = ("test", "val")


def resolve(path_text: str, root: Path) -> Path:
    """The training shards' pattern: ``~`` expanded, absolute kept, relative taken under the data root."""
    path = Path(path_text).expanduser()
    return (path if path.is_absolute() else root / path).absolute()


def facts_dir(resolved: Path) -> Path:
    """Where the shards' ``dataset.json`` is: the folder holding the training shards."""
    return resolved.parent


def _facts(name: str, folder: Path) -> dict[str, Any]:
    path = folder / SHARD_FACTS
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise corrupt(name, path, f"not readable JSON ({exc})", fix='write e.g. {"classes": ["cat", "dog"], "test": "test-{000000..000001}.tar"}') from None
    if not isinstance(facts, dict) or not all(isinstance(c, str) for c in facts.get("classes", [])) or not isinstance(facts.get("test", ""), str):
        raise corrupt(name, path, f"expected an object with 'classes' (a list of names) and 'test' (a shard pattern), got {facts!r}",
                      fix='write e.g. {"classes": ["cat", "dog"], "test": "test-{000000..000001}.tar"}')
    return facts


def _expand(pattern: Path) -> list[Path]:
    """The shard paths ``pattern`` names, brace ranges expanded as WebDataset expands them."""
    return [Path(p) for p in webdataset().shardlists.expand_urls(str(pattern))]


def split_pattern(name: str, pattern: Path, split: str) -> Path:
    """The pattern of ``split``'s shards: ``pattern`` for train; for test ``dataset.json``'s ``test``,
    else the first sibling pattern (``train`` read as ``test``, then ``val``) that names an existing file."""
    if split == "train":
        return pattern
    given = _facts(name, pattern.parent).get("test")
    if given:
        return pattern.parent / str(given)
    if "train" not in pattern.name:
        raise DatasetUnavailable(
            f"dataset {name!r} (test split): the training pattern's file name {pattern.name!r} has no 'train' to read as 'test'. "
            f"Fix: name the shards train-*.tar and test-*.tar, or write {{\"test\": \"PATTERN\"}} in {pattern.parent / SHARD_FACTS}.",
            dataset=name, path=pattern)
    siblings = [pattern.with_name(pattern.name.replace("train", other)) for other in _EVAL_WORDS]
    for sibling in siblings:
        if any(p.is_file() for p in _expand(sibling)):
            return sibling
    return siblings[0]


def shard_paths(name: str, pattern: Path, split: str) -> list[Path]:
    """Every shard of ``split``, in pattern order; :class:`DatasetUnavailable` when one is missing."""
    chosen = split_pattern(name, pattern, split)
    paths = _expand(chosen)
    special = [p for p in paths if p.exists() and not p.is_file()]
    if special:  # never opened: reading a FIFO or a device would hang or never end
        from harness.files import special_kind

        raise corrupt(name, special[0], f"{special_kind(special[0])}, not a shard file", fix=f"put a tar file at {special[0]} or narrow the pattern")
    missing = [p for p in paths if not p.is_file()]
    if len(missing) == len(paths):
        raise DatasetUnavailable(
            f"dataset {name!r} ({split} split): shard pattern {chosen} matches no file. Fix: check the pattern "
            f"(brace ranges like train-{{000000..000009}}.tar), or write shards with: python -m harness data to-wds SRC {chosen.parent}",
            dataset=name, path=chosen)
    if missing:
        raise DatasetUnavailable(
            f"dataset {name!r} ({split} split): {len(missing)} of the {len(paths)} shards {chosen} names are missing, "
            f"first {missing[0]}. Fix: copy the missing shards, or narrow the brace range to the shards there are.",
            dataset=name, path=missing[0])
    return paths


def check(path_text: str, root: Path) -> Path:
    """The training pattern, or :class:`DatasetUnavailable` when the library is missing or a split's
    pattern matches no file. Reads no shard: a session checks this before any case runs."""
    name, pattern = WDS_PREFIX + path_text, resolve(path_text, root)
    webdataset()
    for split in ("train", "test"):
        shard_paths(name, pattern, split)
    return pattern


def _classes(name: str, pattern: Path, root: Path) -> tuple[tuple[str, ...], bool, list[Entry]]:
    """The class names (``dataset.json``'s, else the training shards' sorted ``cls`` values), whether
    they were given (an integer ``cls`` then indexes them), and the training shards' label index."""
    train = label_index(name, shard_paths(name, pattern, "train"), root)
    given = _facts(name, pattern.parent).get("classes")
    return (tuple(given), True, train) if given else (class_names(train), False, train)


def check_classes(path_text: str, root: Path) -> None:
    """Refuse shards that cannot train a classifier (:class:`DatasetUnusable`): no sample, or one class.
    Builds (or reads) the training shards' label index; decodes no image."""
    name, pattern = WDS_PREFIX + path_text, check(path_text, root)
    classes, indexed, train = _classes(name, pattern, root)
    position = {c: i for i, c in enumerate(classes)}
    train_shards = shard_paths(name, pattern, "train")
    labels = {_label(name, e, train_shards[e.shard], classes, position, indexed) for e in train}  # each in range, or refused
    if len(labels) < 2:
        found = "no sample" if not train else f"one class ({train[0].cls})"
        raise DatasetUnusable(f"dataset {name!r}: the training shards {pattern} hold {found}; a classifier needs at least 2 classes. "
                              "Fix: write shards of every class (python -m harness data to-wds SRC OUT).", dataset=name, path=pattern)
    test_shards = shard_paths(name, pattern, "test")
    test = label_index(name, test_shards, root)
    test_labels = {_label(name, e, test_shards[e.shard], classes, position, indexed) for e in test}
    if test_labels != labels:  # as image folders: a class absent from one split makes its figure meaningless
        missing, extra = sorted(classes[i] for i in labels - test_labels), sorted(classes[i] for i in test_labels - labels)
        raise DatasetUnusable(f"dataset {name!r}: the test shards {split_pattern(name, pattern, 'test')} and the training shards hold different classes "
                              f"(missing from test: {missing[:10]}, only in test: {extra[:10]}). Fix: write both splits from the same "
                              "classes (python -m harness data to-wds SRC OUT).", dataset=name, path=test_shards[0])


def _label(name: str, entry: Entry, shard: Path, classes: tuple[str, ...], position: dict[str, int], indexed: bool) -> int:
    """The class index of ``entry``'s ``cls``: with ``indexed`` (dataset.json's classes) an integer is the
    index itself; otherwise, and for any other text, the position of that class name."""
    text = entry.cls or ""  # the index refuses samples without one
    if indexed and text.isdigit():
        if int(text) < len(classes):
            return int(text)
    elif text in position:
        return position[text]
    raise corrupt(name, shard, f"member {entry.key}.cls is {entry.cls!r}, not one of the {len(classes)} training classes {list(classes)[:10]}",
                  fix=f"relabel the sample, or list every class in {shard.parent / SHARD_FACTS} as \"classes\"")


def _images(name: str, shards: list[Path], entries: list[Entry]) -> Iterator[tuple[tuple[Path, str], IO[bytes]]]:
    """Each entry's image member, streamed from its shard in index order."""
    position = 0
    for number, shard in enumerate(shards):
        for sample in read_shard(name, shard, members=IMAGE_EXTENSIONS):
            entry = entries[position] if position < len(entries) else None
            if entry is None or (entry.shard, entry.key) != (number, sample["__key__"]):
                raise DatasetCorrupt(f"dataset {name!r}: {shard} changed while it was read (sample {sample['__key__']!r} is not in its "
                                     "label index). Fix: run again once the shards are written.", dataset=name, path=shard)
            position += 1
            member = f"{entry.key}.{entry.image}"
            yield (shard, member), NamedBytes(sample[entry.image], member)


def load(path_text: str, split: str, root: Path, *, img_size: int) -> TensorSplit:
    """``split`` of the shards ``wds:path_text`` as uint8 RGB at ``img_size`` (see the module docstring)."""
    name, pattern = WDS_PREFIX + path_text, check(path_text, root)
    check_classes(path_text, root)
    classes, indexed, train = _classes(name, pattern, root)
    shards = shard_paths(name, pattern, split)
    entries = train if split == "train" else label_index(name, shards, root)
    position = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([_label(name, e, shards[e.shard], classes, position, indexed) for e in entries], dtype=torch.int64)

    def unreadable(member: tuple[Path, str], exc: Exception) -> Exception:
        return corrupt(name, member[0], f"member {member[1]} is not a readable image ({type(exc).__name__}: {exc})",
                       fix=f"replace or drop sample {member[1].rsplit('.', 1)[0]!r} and rewrite the shard")

    images = decode_stream(_images(name, shards, entries), len(entries), img_size, on_error=unreadable)
    # Captions are kept only when every sample has one: a caption protocol needs a text per image.
    captions = tuple(e.caption for e in entries if e.caption is not None)
    return TensorSplit(images, labels, classes, captions if len(captions) == len(entries) and entries else None)

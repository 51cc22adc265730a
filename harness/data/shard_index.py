"""The label index of a set of WebDataset shards: each sample's key, image member, class and caption.

A split's labels must be known before its images are decoded (to size the split, to take the
class names from the training shards while reading the test shards, to refuse a one-class set
before any case runs), and tar files can only be read from the start. So the shards are scanned
once, reading no image, and the index is cached as JSON under ``<data root>/.wds-index/``, named
by a digest of the shards' resolved paths, sizes and modification times: a re-read (the test
split, the next session) reads the JSON, and rewriting a shard builds a new index.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import tarfile
import warnings
from collections.abc import Collection, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.data.errors import DatasetUnavailable, corrupt
from harness.files import write_atomic

# A sample's members, by WebDataset's suffix convention: the first image suffix found is the image.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
LABEL, CAPTION = "cls", "txt"
INSTALL = "pip install -e '.[wds]'"
INDEX_DIR = ".wds-index"
# Bumped when the index's content changes meaning; an index of another version is rebuilt.
# 2: built by a scan that refuses shards cut short or empty, and images PIL cannot identify or over its limit.
INDEX_VERSION = 2
# Hex characters of the digest naming an index file: 64 bits, no collision among a machine's shard sets.
_DIGEST_CHARS = 16
_FIX = "rewrite the shard (python -m harness data to-wds SRC OUT writes valid ones)"


def webdataset(dataset: str = "") -> ModuleType:
    """The ``webdataset`` module, or :class:`DatasetUnavailable` naming how to install it."""
    try:
        return importlib.import_module("webdataset")
    except ImportError:
        about = f"dataset {dataset!r}: " if dataset else ""
        raise DatasetUnavailable(f"{about}reading WebDataset shards needs the webdataset library, which is not installed. Fix: {INSTALL}.",
                                 dataset=dataset, path=Path("webdataset")) from None


@dataclass(frozen=True)
class Entry:
    """One sample: its shard (position in the split's shard list), key, image suffix, ``cls`` text and caption."""

    shard: int
    key: str
    image: str
    cls: str
    caption: str | None


def read_shard(name: str, shard: Path, *, members: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard as WebDataset groups them (``__key__`` plus one bytes value per suffix),
    streamed; with ``members``, only those suffixes are read. A file that is not a readable tar is a
    :class:`DatasetCorrupt` naming the shard and the last sample read."""
    wds = webdataset(name)

    def wanted(fname: str) -> bool:
        return members is None or str(wds.tariterators.base_plus_ext(fname)[1]).lower() in members

    last: str | None = None
    try:
        for sample in wds.tariterators.tarfile_samples([{"url": str(shard)}], select_files=wanted):
            last = str(sample["__key__"])
            yield sample
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        where = f"after sample {last!r}" if last is not None else "at its first member"
        problem = str(exc.args[0]) if exc.args else type(exc).__name__
        raise corrupt(name, shard, f"not a readable tar archive {where} ({type(exc).__name__}: {problem})", fix=_FIX) from None


def _text(name: str, shard: Path, key: str, suffix: str, value: bytes) -> str:
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise corrupt(name, shard, f"member {key}.{suffix} is not UTF-8 text", fix=_FIX) from None
    if suffix == LABEL and not text:
        raise corrupt(name, shard, f"member {key}.{suffix} is empty; it should hold the sample's class", fix=_FIX)
    return text


# tar's block, and its end-of-archive marker: two zero blocks after the last member.
_BLOCK = 512
_END_MARKER = 2 * _BLOCK
_GZIP_MAGIC = b"\x1f\x8b"


def check_complete(name: str, shard: Path) -> None:
    """Refuse a shard cut short (:class:`DatasetCorrupt` naming the shard and the member): ``tarfile``
    and WebDataset read a truncated tar up to the cut and stop without a word, so a case would train on
    fewer samples than the shard holds. Every member's data must lie within the file, and the archive
    must end with tar's end marker. Reads the headers only. A compressed shard is checked by its
    decompressor, which raises at a cut (:func:`read_shard`)."""
    size = shard.stat().st_size
    with shard.open("rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            return
    end, last = 0, None
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if info.offset_data + info.size > size:
                    raise corrupt(name, shard, f"member {info.name} is cut short: {info.size} bytes from offset {info.offset_data}, the file "
                                  f"ends after {size - info.offset_data} of them (a copy or download cut off)", fix=_FIX)
                end, last = info.offset_data + -(-info.size // _BLOCK) * _BLOCK, info.name
    except tarfile.TarError as exc:
        where = f"after member {last}" if last is not None else "at its first member"
        raise corrupt(name, shard, f"not a readable tar archive {where} ({type(exc).__name__}: {exc})", fix=_FIX) from None
    with shard.open("rb") as f:
        f.seek(end)
        tail = f.read(_END_MARKER)
    if len(tail) < _END_MARKER or tail.strip(b"\0"):
        after = f"after member {last}" if last is not None else "at its start"
        raise corrupt(name, shard, f"cut short {after}: the tar's end marker is missing, so members after it may be lost", fix=_FIX)


class NamedBytes(io.BytesIO):
    """A tar member's bytes, whose repr (which PIL's errors quote) is the member's name, not an object address."""

    def __init__(self, data: bytes, member: str) -> None:
        super().__init__(data)
        self.member = member

    def __repr__(self) -> str:
        return repr(self.member)


def check_image_header(name: str, where: Path, member: str | None, source: NamedBytes | Path, fix: str) -> None:
    """Refuse an image (``member`` of the shard ``where``, or the image file ``where`` when ``None``)
    that PIL cannot identify, or that is over its decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``),
    before any case decodes it: :class:`DatasetCorrupt` naming it and ``fix``. Reads its header only."""
    from PIL import Image

    what = f"member {member} is " if member is not None else ""
    try:
        with warnings.catch_warnings():  # between 1x and 2x the limit PIL warns; refused below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
    except Image.DecompressionBombError as exc:
        raise corrupt(name, where, f"{what}over PIL's decompression limit ({exc})", fix=fix) from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's three for a file it cannot read
        unreadable = "not a readable image" if member is not None else "unreadable image"
        raise corrupt(name, where, f"{what}{unreadable} ({type(exc).__name__}: {exc})", fix=fix) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:  # between 1x and 2x PIL only warns; decoding it would take the memory
        raise corrupt(name, where, f"{what}{width}x{height} pixels, over PIL's decompression limit of {limit}", fix=fix)


def scan(name: str, shards: list[Path]) -> list[Entry]:
    """Read every sample's members but its image: one :class:`Entry` per sample, in shard order.

    A sample without an image member or without ``cls``, a shard cut short (:func:`check_complete`) or
    holding no sample, is a :class:`DatasetCorrupt` naming the shard and the sample.
    """
    entries: list[Entry] = []
    for number, shard in enumerate(shards):
        check_complete(name, shard)
        before = len(entries)
        for sample in read_shard(name, shard):
            key = str(sample["__key__"])
            present = ", ".join(f"{key}.{suffix}" for suffix in sorted(s for s in sample if not s.startswith("__")))
            image = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
            if image is None:
                raise corrupt(name, shard, f"sample {key!r} has no image member ({key}.jpg, .jpeg or .png); its members: {present}", fix=_FIX)
            if LABEL not in sample:
                raise corrupt(name, shard, f"sample {key!r} has no label member {key}.{LABEL} (its members: {present}); every image needs "
                              f"its class", fix=f"write each sample's class index (or class name) as KEY.{LABEL}, or {_FIX}")
            check_image_header(name, shard, f"{key}.{image}", NamedBytes(sample[image], f"{key}.{image}"),
                               fix=f"replace or drop sample {key!r} and rewrite the shard")
            caption = _text(name, shard, key, CAPTION, sample[CAPTION]) if CAPTION in sample else None
            entries.append(Entry(number, key, image, _text(name, shard, key, LABEL, sample[LABEL]), caption))
        if len(entries) == before:
            raise corrupt(name, shard, "holds no sample (an empty tar)", fix=f"delete it and narrow the shard pattern, or {_FIX}")
    return entries


def class_names(entries: list[Entry]) -> tuple[str, ...]:
    """The distinct ``cls`` values, sorted: numerically when every one is an integer (``2`` before ``10``)."""
    values = {e.cls for e in entries}
    return tuple(sorted(values, key=int) if all(v.isdigit() for v in values) else sorted(values))


def _stamp(shards: list[Path]) -> list[dict[str, Any]]:
    stats = [(p.resolve(), p.stat()) for p in shards]
    return [{"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns} for path, st in stats]


def index_path(shards: list[Path], root: Path) -> Path:
    """Where the index of ``shards`` is cached under the data root ``root``."""
    digest = hashlib.sha256(json.dumps(_stamp(shards), sort_keys=True).encode()).hexdigest()[:_DIGEST_CHARS]
    return root / INDEX_DIR / f"{digest}.json"


def _cached(path: Path, stamp: list[dict[str, Any]]) -> list[Entry] | None:
    """The entries stored at ``path`` when it is an index of these very shards, else ``None`` (rebuild)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["version"] != INDEX_VERSION or doc["shards"] != stamp:
            return None
        return [Entry(int(s), str(k), str(i), str(c), None if t is None else str(t)) for s, k, i, c, t in doc["samples"]]
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-written by an old tool, or of another shape
        return None


def label_index(name: str, shards: list[Path], root: Path) -> list[Entry]:
    """The entries of ``shards``: read from the cached index when it matches them, else scanned and cached."""
    path, stamp = index_path(shards, root), _stamp(shards)
    cached = _cached(path, stamp)
    if cached is not None:
        return cached
    entries = scan(name, shards)
    doc = {"version": INDEX_VERSION, "shards": stamp, "samples": [list(astuple(e)) for e in entries]}
    try:
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc), encoding="utf-8"))
    except OSError:
        pass  # a read-only data root: the shards are scanned again next time, nothing else changes
    return entries

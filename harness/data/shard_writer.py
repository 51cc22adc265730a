"""WebDataset shards written from an image folder or a CSV: what ``python -m harness data to-wds`` does.

From an image folder (any layout ``imagefolder:PATH`` reads): ``OUT/train-NNNNNN.tar`` and
``OUT/test-NNNNNN.tar`` holding exactly the images ``imagefolder:`` loads for each split, in the
same order, so ``wds:OUT/train-{...}.tar`` gives the same split, subsets and results. Each sample is
``KEY.png|jpg|jpeg`` (the file's bytes, unchanged; other formats are re-encoded as lossless PNG)
and ``KEY.cls`` (the class index); ``OUT/dataset.json`` names the classes, the test pattern and the
folder's ``hflip``.

From a CSV with the header ``filepath,caption[,label]`` (relative paths are taken beside the CSV):
one split (``--split``), each sample ``KEY.<image>``, ``KEY.txt`` (the caption) and, with a label
column, ``KEY.cls`` (the label as written: a class name or index). The classes are then the
distinct labels of the training shards.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from harness.data.errors import DatasetUnavailable, DatasetUnusable, corrupt
from harness.data.imagefolder import folder_samples
from harness.data.registry import WDS_PREFIX
from harness.data.shard_index import CAPTION, IMAGE_EXTENSIONS, LABEL, webdataset
from harness.data.shards import SHARD_FACTS

# One sample of a split: image file, its caption and its cls text (None when the source has none).
_Sample = tuple[Path, str | None, str | None]
# Every member's modification time in the tar: fixed, so the same source writes byte-identical shards, and an
# integer: tarfile stores a float mtime in an extra PAX header per member, which doubles the headers a reader parses.
_MTIME = 0
CSV_COLUMNS = ("filepath", "caption")


@dataclass(frozen=True)
class Written:
    """One split written: its shard files and the ``wds:`` pattern naming them."""

    split: str
    shards: tuple[Path, ...]
    samples: int

    @property
    def pattern(self) -> str:
        """The brace pattern of the shards (``OUT/train-{000000..000003}.tar``)."""
        first = self.shards[0]
        last = len(self.shards) - 1
        return str(first.with_name(f"{self.split}-{{000000..{last:06d}}}.tar")) if last else str(first)


def _image_member(path: Path) -> tuple[str, bytes]:
    """The suffix and bytes a shard stores for image ``path``: the file itself when it is a jpg, jpeg or png."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in IMAGE_EXTENSIONS:
        data = path.read_bytes()
        try:  # copied as they are, so checked here: verify() reads a PNG's chunks and their checksums
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise corrupt(str(path.parent), path, f"not a readable image ({type(exc).__name__}: {exc})", fix=f"delete or replace {path}") from None
        return suffix, data
    buffer = io.BytesIO()
    with Image.open(path) as img:
        img.save(buffer, format="PNG")  # lossless: the reader decodes the same pixels
    return "png", buffer.getvalue()


def write_split(samples: list[_Sample], out: Path, split: str, *, shard_size: int) -> Written:
    """Write ``samples`` as ``out/<split>-NNNNNN.tar``, ``shard_size`` samples a shard, keys ``000000``, ``000001``, …."""
    existing = sorted(out.glob(f"{split}-*.tar"))
    if existing:
        raise FileExistsError(f"{existing[0]} exists; to-wds never overwrites shards: pass an empty OUT folder")
    if not samples:
        raise DatasetUnusable(f"no {split} image to write into {out}. Fix: give SRC at least one image.", dataset=str(out), path=out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    writer = webdataset().ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0, encoder=False, mtime=_MTIME,
                                      post=lambda fname: written.append(Path(fname)))
    done = False
    try:
        for i, (path, caption, label) in enumerate(samples):
            suffix, data = _image_member(path)
            sample: dict[str, str | bytes] = {"__key__": f"{i:06d}", suffix: data}
            if caption is not None:
                sample[CAPTION] = caption.encode("utf-8")
            if label is not None:
                sample[LABEL] = label.encode("utf-8")
            writer.write(sample)
        done = True
    finally:
        writer.close()
        if not done:  # a refused image (or a kill) leaves no shard set that reads as whole but lacks its tail
            for shard in written:
                shard.unlink(missing_ok=True)
    return Written(split, tuple(written), len(samples))


def _write_facts(out: Path, facts: dict[str, object]) -> None:
    """Merge ``facts`` into ``out/dataset.json`` (a CSV's test split adds its pattern beside the train split's facts)."""
    path = out / SHARD_FACTS
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps({**old, **facts}, indent=2) + "\n", encoding="utf-8")


def from_folder(src: Path, out: Path, *, shard_size: int) -> list[Written]:
    """Both splits of the image folder ``src`` as shards in ``out``, and ``out/dataset.json``."""
    root = src.parent.resolve()
    splits = {split: folder_samples(str(src.resolve()), split, root) for split in ("train", "test")}
    classes = splits["train"][1]
    done = [write_split([(p, None, str(label)) for p, label in pairs], out, split, shard_size=shard_size)
            for split, (pairs, _) in splits.items()]
    facts: dict[str, object] = {"classes": list(classes), "test": Path(done[1].pattern).name}
    source_facts = src / SHARD_FACTS
    if source_facts.is_file():  # the folder's own facts (hflip) hold for its shards
        facts = {**json.loads(source_facts.read_text(encoding="utf-8")), **facts}
    _write_facts(out, facts)
    return done


def from_csv(src: Path, out: Path, *, split: str, shard_size: int) -> list[Written]:
    """The rows of the CSV ``src`` (``filepath,caption[,label]``) as ``split``'s shards in ``out``."""
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        if header[:2] != CSV_COLUMNS or header[2:] not in ((), ("label",)):
            raise corrupt(str(src), src, f"its header is {','.join(header)!r}", fix="start the CSV with the header filepath,caption or filepath,caption,label")
        samples: list[_Sample] = []
        for row_number, row in enumerate(reader, start=2):  # line 1 is the header
            path = Path(row["filepath"]).expanduser()
            path = path if path.is_absolute() else src.parent / path
            if not path.is_file():
                raise DatasetUnavailable(f"{src}, line {row_number}: image {path} does not exist. Fix: correct its filepath "
                                         "(relative paths are taken beside the CSV).", dataset=str(src), path=path)
            samples.append((path, row["caption"], row.get("label")))
    done = write_split(samples, out, split, shard_size=shard_size)
    if split == "test":
        _write_facts(out, {"test": Path(done.pattern).name})
    return [done]


def wds_name(written: list[Written]) -> str:
    """The ``--dataset`` value that reads what was written (the training pattern)."""
    train = next((w for w in written if w.split == "train"), written[0])
    return WDS_PREFIX + train.pattern

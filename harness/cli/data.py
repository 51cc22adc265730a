"""``python -m harness data to-wds SRC OUT``: a dataset's images as WebDataset shards (``--dataset wds:...``).

SRC is an image folder (any layout ``--dataset imagefolder:SRC`` reads; both splits are written,
image for image as that loader holds them) or a CSV ``filepath,caption[,label]`` (one split,
``--split``). The writing itself is :mod:`harness.data.shard_writer`; this module only parses.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from harness.cli.common import UsageError, argtype
from harness.config.parsers import positive_int

# Samples a shard holds: at 32 px PNGs about 3 MB a shard, at full-size photos a few hundred MB,
# within the 100 MB-1 GB shards WebDataset recommends for streaming.
DEFAULT_SHARD_SIZE = 1000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` verb (and its ``to-wds`` action) to ``python -m harness``'s subparsers."""
    data: argparse.ArgumentParser = subparsers.add_parser("data", help="convert datasets: image folder or CSV to WebDataset shards",
                                                          description="Tools for the datasets the suite reads.")
    actions = data.add_subparsers(dest="action", required=True, parser_class=type(data))
    to_wds = actions.add_parser("to-wds", help="write WebDataset shards from an image folder or a CSV (filepath,caption[,label])",
                                description="Write OUT/<split>-NNNNNN.tar with ShardWriter and print the --dataset wds:... that reads them.")
    to_wds.add_argument("src", metavar="SRC", type=Path, help="an image folder (SRC/<split>/<class>/*.png or SRC/<class>/*) or a .csv file")
    to_wds.add_argument("out", metavar="OUT", type=Path, help="the folder to write the shards and dataset.json into (no shard there yet)")
    to_wds.add_argument("--shard-size", metavar="N", type=argtype(functools.partial(positive_int, what="--shard-size")),
                        default=DEFAULT_SHARD_SIZE, help=f"samples per shard (default: {DEFAULT_SHARD_SIZE})")
    to_wds.add_argument("--split", choices=("train", "test"), default="train",
                        help="which split a CSV holds (default: train); an image folder writes both")
    return data


def run(args: argparse.Namespace) -> int:
    """Write the shards, print one line per split and the dataset name; 0."""
    from harness.data.shard_writer import from_csv, from_folder, wds_name  # torch: imported when the verb runs

    src: Path = args.src
    if src.is_file() and src.suffix.lower() == ".csv":
        written = from_csv(src, args.out, split=args.split, shard_size=args.shard_size)
    elif src.is_dir():
        written = from_folder(src, args.out, shard_size=args.shard_size)
    else:
        raise UsageError(f"SRC {src} is neither an image folder nor a .csv file")
    for split in written:
        print(f"{split.split}: {split.samples} samples in {len(split.shards)} shard(s): {split.pattern}")
    print(f"--dataset {wds_name(written)}")
    return 0

"""Class names and prompt templates for zero-shot classification with a CLIP text tower.

A zero-shot head is built from every class name in every template (``"a photo of the digit {}."``):
:func:`prompt_set` gives the built-in set of a dataset, or reads a team's own files
(``--classnames FILE``: one name a line, in label order; ``--templates FILE``: one template a line,
each holding ``{}`` where the name goes). What a case used is recorded and digested: the built-in
set's name, or each file's sha256.

The CIFAR templates are OpenAI's (CLIP's prompt-engineering notebook, also CLIP_benchmark's
``cifar10``/``cifar100`` entries); the digits set is "a photo of the digit {}." with the names
spelt out, plus a handful of CLIP's templates reworded for digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.files import special_kind

DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DIGIT_TEMPLATES: tuple[str, ...] = (
    "a photo of the digit {}.",
    "a photo of the number {}.",
    "a blurry photo of the digit {}.",
    "a low resolution photo of the digit {}.",
    "a black and white photo of the digit {}.",
    "a drawing of the digit {}.",
)

CIFAR10_NAMES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_NAMES: tuple[str, ...] = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)

OPENAI_CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
)

# dataset -> (class names, templates): the built-in sets, named by their dataset in the record.
BUILTIN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "digits": (DIGIT_NAMES, DIGIT_TEMPLATES),
    "mnist": (DIGIT_NAMES, DIGIT_TEMPLATES),
    "cifar10": (CIFAR10_NAMES, OPENAI_CIFAR_TEMPLATES),
    "cifar100": (CIFAR100_NAMES, OPENAI_CIFAR_TEMPLATES),
}

# A dataset without a built-in set reads its own class names into CLIP's plainest template.
GENERIC_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

FILE_FORMAT = "one entry a line (blank lines and lines starting with # are skipped)"


class PromptError(ValueError):
    """A class-names or templates file that cannot serve the dataset; the message names the fix."""


@dataclass(frozen=True)
class PromptSet:
    """Class names (in label order) and templates, with what the record says of each (``source``)."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    classnames_source: str  # "builtin:digits", "dataset:<name>" or "sha256:<hex>"
    templates_source: str

    def prompts(self, classname: str) -> list[str]:
        """Every template filled with ``classname``."""
        return [template.format(classname) for template in self.templates]

    @property
    def setting(self) -> str:
        """What the train kind digests of it (one line: a built-in set's name or the files' sha256)."""
        return f"zeroshot classnames={self.classnames_source} templates={self.templates_source}"


def read_lines(path: Path) -> tuple[list[str], str]:
    """The entries of a prompt file (:data:`FILE_FORMAT`) and ``sha256:<hex>`` of its bytes."""
    try:
        if Path(path).exists() and not Path(path).is_file():  # never opened: a FIFO would hang the session's start
            raise PromptError(f"{path}: {special_kind(Path(path))}, not a file; pass a text file, {FILE_FORMAT}")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read it ({exc.strerror or exc}); pass an existing file, {FILE_FORMAT}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8, {FILE_FORMAT}") from None
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")], "sha256:" + hashlib.sha256(data).hexdigest()


def check_templates(templates: Sequence[str], where: str) -> None:
    """Every template holds exactly one ``{}``; otherwise :class:`PromptError` naming the first one that does not."""
    if not templates:
        raise PromptError(f"{where}: no templates; write one template a line, each with {{}} where the class name goes")
    for template in templates:
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise PromptError(f"{where}: template {template!r} needs exactly one {{}} where the class name goes "
                              f"(e.g. 'a photo of a {{}}.'), and no other braces")


def prompt_sources(dataset: str, classnames_file: Path | None, templates_file: Path | None) -> str:
    """The digested setting of a zero-shot case of ``dataset``: :attr:`PromptSet.setting`, without reading the split."""
    own = f"builtin:{dataset}" if dataset in BUILTIN else f"dataset:{dataset}"
    names = read_lines(classnames_file)[1] if classnames_file is not None else own
    templates = read_lines(templates_file)[1] if templates_file is not None else own
    return f"zeroshot classnames={names} templates={templates}"


def prompt_set(dataset: str, dataset_classes: Sequence[str], classnames_file: Path | None, templates_file: Path | None) -> PromptSet:
    """The prompts a zero-shot case of ``dataset`` (with ``dataset_classes`` in label order) uses.

    Own files win over the built-in set; a dataset without one reads its class names (``_`` as a
    space) into :data:`GENERIC_TEMPLATES`. Raises :class:`PromptError` for a names file whose count
    is not the dataset's or a template without ``{}``."""
    names, templates = BUILTIN.get(dataset, (tuple(c.replace("_", " ") for c in dataset_classes), GENERIC_TEMPLATES))
    names_source = f"builtin:{dataset}" if dataset in BUILTIN else f"dataset:{dataset}"
    templates_source = names_source
    if classnames_file is not None:
        read, names_source = read_lines(classnames_file)
        names = tuple(read)
        if len(names) != len(dataset_classes):
            raise PromptError(f"--classnames {classnames_file}: {len(names)} class names for {len(dataset_classes)} classes of {dataset}; "
                              f"write one name a line, in label order ({', '.join(dataset_classes[:3])}, …)")
    if templates_file is not None:
        read, templates_source = read_lines(templates_file)
        templates = tuple(read)
    check_templates(templates, f"--templates {templates_file}" if templates_file is not None else f"built-in templates of {dataset}")
    if len(names) != len(dataset_classes):
        raise PromptError(f"the built-in class names of {dataset} are {len(names)}, the split has {len(dataset_classes)} classes; "
                          "pass --classnames FILE with one name a line, in label order")
    return PromptSet(tuple(names), tuple(templates), names_source, templates_source)

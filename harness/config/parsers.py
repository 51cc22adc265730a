"""Parsers of option values: text a user wrote (command line or ``pytest.ini``) in, a typed value out.

Each raises :class:`SettingError` naming the valid choices or the fix. The plugin and the
``python -m harness`` command call them as argparse ``type=`` validators (through
:func:`harness.cli.common.argtype`), so bad input is a usage
error at parse time, before any case runs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from harness.contract import NATIVE, unknown
from harness.errors import SettingError

if TYPE_CHECKING:
    from harness.edge.profiles import EdgeProfile

T = TypeVar("T")
# A comma that is not inside braces: the next brace after it, if any, opens one.
_SEPARATOR = re.compile(r",(?![^{]*\})")


def split_list(text: str) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]``; newlines count as commas (multi-line ini values). A comma
    inside braces does not split: ``wds:/data/{train-0,train-1}.tar`` is one shard pattern."""
    return [part.strip() for part in _SEPARATOR.split(text.replace("\n", ",")) if part.strip()]


# Resolutions above this are no backbone's input: 4096 px is 16x ImageNet's 224 and 50 M values an
# image; a case there measures only memory exhaustion, after minutes of building the model.
MAX_IMG_SIZE = 4096
# A head of more classes is nothing a small-data benchmark trains or deploys: ImageNet-21k has 21,843;
# a billion would allocate a 2 TB classifier in the case, not refuse it.
MAX_NUM_CLASSES = 1_000_000
# A memory budget under a mebibyte holds no backbone's weights (the smallest registered edge model,
# mobilevit_xs, has 2.3 M parameters: 9 MB in fp32): such a value is a unit slip (1B for 1GB), refused naming the units.
MIN_PLAN_BUDGET = 2**20


def positive_int(text: str, what: str = "value", high: int | None = None) -> int:
    """A positive integer (at most ``high``), or a :class:`SettingError` saying what was expected."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SettingError(f"{what} must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise SettingError(f"{what} must be a positive integer, got {text!r}")
    if high is not None and value > high:
        raise SettingError(f"{what} must be a positive integer of at most {high}, got {text!r}")
    return value


def int_list(what: str, high: int | None = None) -> Callable[[str], list[int]]:
    """A parser of comma-separated positive integers (``"1,32"``, each at most ``high``) for the option ``what``."""

    def parse(text: str) -> list[int]:
        values = [positive_int(part, f"{what} entry", high) for part in split_list(text)]
        if not values:
            raise SettingError(f"{what} needs at least one positive integer, e.g. 1,32")
        return list(dict.fromkeys(values))

    return parse


def choice(what: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser of one name drawn from ``choices``."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise SettingError(unknown(what, value, choices))
        return value

    return parse


def choice_list(what: str, choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A parser of comma-separated names drawn from ``choices``."""

    def parse(text: str) -> list[str]:
        values = [part.lower() for part in split_list(text)]
        for value in values:
            if value not in choices:
                raise SettingError(unknown(what, value, choices))
        if not values:
            raise SettingError(f"{what} needs at least one of: {', '.join(choices)}")
        return list(dict.fromkeys(values))

    return parse


def parse_devices(text: str) -> list[str]:
    """``auto`` (every available device) or a list of ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    from harness.runtime.devices import available_devices, parse_device

    if text.strip().lower() == "auto":
        return available_devices()
    try:
        values = [parse_device(part) for part in split_list(text)]
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    if not values:
        raise SettingError("devices needs at least one of: auto, cpu, cuda, cuda:N, mps")
    return list(dict.fromkeys(values))


def parse_backbones(text: str) -> list[str]:
    """Registry names, groups and timm model names (see :func:`harness.backbones.factory.resolve_backbones`)."""
    from harness.backbones.factory import resolve_backbones
    from harness.backbones.registry import UnknownBackbone
    from harness.backbones.weights import UnknownWeights, WeightsMismatch

    try:
        names = resolve_backbones(split_list(text))
    except (UnknownBackbone, UnknownWeights, WeightsMismatch) as exc:
        raise SettingError(str(exc)) from None
    if not names:
        raise SettingError("backbones needs at least one name or group (cnn, transformer, hybrid, edge, all)")
    return names


def train_img_sizes(text: str) -> list[int | str]:
    """Training resolutions: pixels, or ``native`` for the input size of each backbone's weights
    (its pretrained config: 224 for most ImageNet weights)."""
    values: list[int | str] = []
    for part in split_list(text):
        values.append(NATIVE if part.lower() == NATIVE else positive_int(part, "train-img-sizes entry (or native)", MAX_IMG_SIZE))
    if not values:
        raise SettingError("train-img-sizes needs at least one size, e.g. 32,224 or native")
    return list(dict.fromkeys(values))



def parse_threads(text: str) -> int | None:
    """``auto`` (torch's default) or a positive thread count for CPU cases."""
    return None if text.strip().lower() == "auto" else positive_int(text, "threads")


def number(what: str, *, low: float = 0.0, high: float | None = None, low_inclusive: bool = False) -> Callable[[str], float]:
    """A parser of a float above ``low`` (or at it, with ``low_inclusive``) and below ``high``."""
    rule = f"{'>=' if low_inclusive else '>'} {low:g}" if high is None else f"in ({low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        above = value >= low if low_inclusive else value > low
        if not (above and (high is None or value < high)):  # NaN fails every comparison
            raise SettingError(f"{what} must be a number {rule}, got {text!r}")
        if not math.isfinite(value):  # inf passes "> 0"; nothing finite-valued can be recorded from it (JSON has no inf)
            raise SettingError(f"{what} must be a finite number {rule}, got {text!r}")
        return value

    return parse


def positive_float(what: str) -> Callable[[str], float]:
    """A parser of a float > 0."""
    return number(what)


def flag(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off) for ini keys of flags."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingError(f"expected true or false, got {text!r}")


def path(text: str) -> Path:
    """A path; ``~`` expanded."""
    return Path(text).expanduser()


def classnames_file(text: str) -> Path:
    """A class-names file (one name a line, in label order), read now so a missing one is a usage error;
    its count is checked against each dataset before any case runs (:mod:`harness.config.preflight`)."""
    from harness.data.prompts import PromptError, read_lines

    file = path(text)
    names = _setting(lambda: read_lines(file), PromptError)[0]
    if not names:
        raise SettingError(f"--classnames {file}: no class names; write one name a line, in label order")
    seen: dict[str, int] = {}
    for line, name in enumerate(names, 1):
        if name.lower() in seen:  # zero-shot could never tell the two apart: their prompts are the same
            raise SettingError(f"--classnames {file}: class name {name!r} (entry {line}) repeats entry {seen[name.lower()]}; "
                               "give every class its own name, one a line, in label order")
        seen[name.lower()] = line
    return file


def templates_file(text: str) -> Path:
    """A prompt-templates file (one a line, each with ``{}`` where the class name goes), checked now."""
    from harness.data.prompts import PromptError, check_templates, read_lines

    file = path(text)
    _setting(lambda: check_templates(read_lines(file)[0], f"--templates {file}"), PromptError)
    return file


def _setting(convert: Callable[[], T], *errors: type[Exception]) -> T:
    """``convert()``, with the library's own error (``ValueError`` unless named) as a :class:`SettingError`."""
    caught = errors or (ValueError,)
    try:
        return convert()
    except caught as exc:
        raise SettingError(str(exc)) from None


def subsets(text: str) -> list[str]:
    """Training subset sizes (``500``, ``5k``, ``full``, ``50pc``) in their canonical spelling."""
    from harness.data.subsets import parse_subset

    return _setting(lambda: [parse_subset(part).label for part in split_list(text)])


def datasets(text: str) -> list[str]:
    """Registered dataset names or path forms (``imagefolder:PATH``, ``wds:PATTERN``)."""
    from harness.data.registry import dataset_info, path_form

    names = split_list(text)
    if not names:
        raise SettingError("dataset needs at least one name, e.g. digits")
    for name in names:
        if path_form(name) is None:
            _setting(functools.partial(dataset_info, name))
    return names


def seg_datasets(text: str) -> list[str]:
    """Segmentation datasets of the dense kind, each a form and a path (``voc:PATH``, ``ade:PATH``, ``segfolder:PATH``)."""
    from harness.data.registry import SEG_FORMS, seg_form

    names = split_list(text)
    if not names:
        raise SettingError("seg-datasets needs at least one dataset, e.g. voc:/data/VOC2012")
    for name in names:
        if seg_form(name) is None or not name.split(":", 1)[1]:
            raise SettingError(f"seg-datasets {name!r}: name a segmentation dataset as " + "; ".join(f.usage for f in SEG_FORMS.values()))
    return names


def augment(text: str) -> tuple[str, ...]:
    """Augmentations that combine (``randaugment,mixup``); ``none`` alone turns them off."""
    from harness.contract import normalise_augment

    return _setting(lambda: normalise_augment(split_list(text)))


def byte_size(text: str) -> int:
    """A size such as ``512MiB`` or ``2GB``."""
    from harness.edge.profiles import parse_bytes

    return _setting(lambda: parse_bytes(text))


def memory_budget(text: str) -> int:
    """A planning budget (:func:`byte_size`) of at least :data:`MIN_PLAN_BUDGET`."""
    value = byte_size(text)
    if value < MIN_PLAN_BUDGET:
        raise SettingError(f"plan-budget {text!r} is {value} bytes, less than any backbone's weights; write the unit in full, e.g. 512MiB or 1GB")
    return value


def edge_profile(text: str) -> EdgeProfile:
    """A named board profile (``orin-nano-8gb``) or ``threads=4,mem=2GiB``."""
    from harness.edge.profiles import parse_edge_profile

    return _setting(lambda: parse_edge_profile(text))


def tolerances(text: str) -> str:
    """A gate tolerance spec (``latency_p50_ms:10%,top1:-1pp``) over the contract's defaults, checked
    here and kept as given: the gate parses it when it judges (:func:`harness.results.tolerances.parse_tolerances`)."""
    from harness.results.tolerances import parse_tolerances

    _setting(lambda: parse_tolerances(text))
    return text


def run_name(text: str) -> str:
    """A name a run can be saved under (``--benchmark-save``)."""
    from harness.results.storage import StorageError, check_run_name

    return _setting(lambda: check_run_name(text), StorageError)


def robustness(text: str) -> tuple[str, ...]:
    """``--robustness``: corruption names and groups (``all``, ``imagenet-c``, ``robot``), comma-separated,
    as the corruptions in registry order; ``none`` is off (an empty tuple). An unknown name is a
    :class:`SettingError` naming the close matches and every valid one."""
    from harness.contract import CORRUPTION_GROUPS, CORRUPTIONS

    names = [part.lower() for part in split_list(text)]
    if names == ["none"]:
        return ()
    wanted: set[str] = set()
    for name in names:
        if name in CORRUPTION_GROUPS:
            wanted.update(CORRUPTION_GROUPS[name])
        elif name in CORRUPTIONS:
            wanted.add(name)
        else:
            raise SettingError(unknown("corruption", name, [*CORRUPTION_GROUPS, *CORRUPTIONS]) + "; or none")
    if not wanted:
        raise SettingError(f"robustness needs a corruption or group: {', '.join([*CORRUPTION_GROUPS, *CORRUPTIONS])}, or none")
    return tuple(c for c in CORRUPTIONS if c in wanted)


def severities(text: str) -> tuple[int, ...]:
    """``--robust-severities``: comma-separated ImageNet-C severities, each 1-5, sorted; anything else is a
    :class:`SettingError` naming the valid range."""
    from harness.contract import SEVERITIES

    values: set[int] = set()
    for part in split_list(text):
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value not in SEVERITIES:
            raise SettingError(f"robust-severities entry {part!r} is not a severity: use integers {SEVERITIES[0]}-{SEVERITIES[-1]}, e.g. 1,3,5")
        values.add(value)
    if not values:
        raise SettingError(f"robust-severities needs at least one severity {SEVERITIES[0]}-{SEVERITIES[-1]}, e.g. 1,2,3,4,5")
    return tuple(sorted(values))

"""Write the lock without torch, for machines that bring their own torch build.

Reads the pip-compile lock (``requirements/constraints.txt``) and writes
``requirements/constraints-no-torch.txt``: the same pins, less torch, torchvision and every
package that only they pull in (the nvidia-*/cuda-* wheels, triton, networkx, jinja2, …),
found from pip-compile's ``# via`` annotations. Packages that something else needs too
(numpy, pillow, sympy, filelock, …) keep their pins. ``tox -e lock`` runs this right after
pip-compile; the standard library is all it needs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "constraints.txt"
OUT = HERE / "constraints-no-torch.txt"
# What a JetPack wheel or a CUDA build from download.pytorch.org replaces: the pair is
# installed (and built) together, so neither may be pinned for someone else's torch.
BRING_YOUR_OWN = ("torch", "torchvision")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")
_VIA_INLINE = re.compile(r"^\s+#\s+via\s+(\S.*)$")
_VIA_HEAD = re.compile(r"^\s+#\s+via\s*$")
_VIA_ITEM = re.compile(r"^\s+#\s{3}(\S.*)$")


def canonical(name: str) -> str:
    """The PEP 503 normalised name, as pip-compile writes it."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Block:
    """One pinned package: the comment/blank lines before it, its pin line, its annotations."""

    name: str
    lines: list[str]
    via: list[str] = field(default_factory=list)


def parse(text: str) -> tuple[list[str], list[Block]]:
    """Split a pip-compile output into its header and one block per pin (split annotations)."""
    header: list[str] = []
    blocks: list[Block] = []
    pending: list[str] = []  # separator lines, attached to the next pin
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            blocks.append(Block(canonical(pin.group(1)), [*pending, line]))
            pending = []
        elif blocks and line.startswith((" ", "\t")):
            block = blocks[-1]
            block.lines.append(line)
            inline = _VIA_INLINE.match(line)
            item = _VIA_ITEM.match(line)
            if inline and not _VIA_HEAD.match(line):
                block.via.append(inline.group(1).strip())
            elif item:
                block.via.append(item.group(1).strip())
        elif blocks:
            pending.append(line)
        else:
            header.append(line)
    if pending and blocks:
        blocks[-1].lines.extend(pending)
    return header, blocks


def dropped_names(blocks: list[Block]) -> set[str]:
    """torch, torchvision, and every pin whose every ``via`` is already dropped."""
    pinned = {b.name for b in blocks}
    dropped = {canonical(n) for n in BRING_YOUR_OWN}
    changed = True
    while changed:
        changed = False
        for block in blocks:
            if block.name in dropped or not block.via:
                continue
            # A via entry that is not a pinned package ("backbone-bench (pyproject.toml)",
            # "-c requirements/torch.txt") is a root: it keeps the pin.
            parents = [canonical(v) for v in block.via]
            if all(p in pinned and p in dropped for p in parents):
                dropped.add(block.name)
                changed = True
    return dropped


def render(blocks: list[Block], dropped: set[str]) -> str:
    """The no-torch constraints file: an explanatory header, then the kept blocks verbatim."""
    kept = [b for b in blocks if b.name not in dropped]
    left_out = sorted(dropped)
    header = [
        "#",
        "# The lock (requirements/constraints.txt) less torch, torchvision and what only they pull in,",
        "# for a machine that brings its own torch (a JetPack wheel, another CUDA build): see the",
        '# README, "Bring your own torch". Written by requirements/no_torch.py; refresh both with:',
        "#",
        "#    tox -e lock",
        "#",
        "# Left out:",
        *(f"#   {name}" for name in left_out),
        "#",
    ]
    body = [line for b in kept for line in b.lines]
    # A separator (e.g. pip-compile's "unsafe packages" note) whose pins were all dropped
    # would otherwise dangle at the end of the file.
    while body and not _PIN.match(body[-1]) and not body[-1].startswith((" ", "\t")):
        body.pop()
    return "\n".join([*header, *body]) + "\n"


def main(argv: list[str]) -> int:
    """``no_torch.py [LOCK [OUT]]``: write OUT from LOCK (defaults beside this script)."""
    lock = Path(argv[0]) if argv else LOCK
    out = Path(argv[1]) if len(argv) > 1 else OUT
    _, blocks = parse(lock.read_text())
    if not any(b.name == "torch" for b in blocks):
        print(f"error: {lock} pins no torch: is it a pip-compile lock?", file=sys.stderr)
        return 2
    dropped = dropped_names(blocks)
    out.write_text(render(blocks, dropped))
    print(f"{out}: {len(blocks) - len(dropped)} pins, left out {len(dropped)}: {', '.join(sorted(dropped))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Detect an NVIDIA Jetson board and the settings that change its speed.

A latency on a Jetson means little without the board, the L4T/JetPack release, the
``nvpmodel`` power mode and whether ``jetson_clocks`` pinned the clocks: the same model runs
at very different speeds in 7 W and MAXN. Everything here is a pure parser over the text the
board prints, plus :func:`jetson_facts`, which reads the files and runs the tools.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.contract import slug

CommandRunner = Callable[[list[str]], str]

# L4T release -> JetPack, from NVIDIA's JetPack archive (developer.nvidia.com/embedded/
# jetpack-archive), exact releases only; cross-checked against jetson_stats' NVIDIA_JETPACK.
L4T_TO_JETPACK: dict[str, str] = {
    "39.2.0": "7.2", "38.2.0": "7.0",
    "36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.0": "6.1", "36.3.0": "6.0", "36.2.0": "6.0 DP",
    "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1",
    "35.2.1": "5.1", "35.1.0": "5.0.2",
    "32.7.6": "4.6.6", "32.7.5": "4.6.5", "32.7.4": "4.6.4", "32.7.3": "4.6.3",
    "32.7.2": "4.6.2", "32.7.1": "4.6.1", "32.6.1": "4.6", "32.5.1": "4.5.1", "32.5.0": "4.5",
    "32.4.4": "4.4.1", "32.4.3": "4.4",
}
# For a release the table has not heard of, only the major JetPack is safe to state: the
# minor does not follow the L4T minor (35.1 was 5.0.2, 35.2.1 was 5.1).
_JETPACK_MAJOR = {"32": "4.x", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}

_RELEASE_LINE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_POWER_MODE = re.compile(r"NV Power Mode:\s*(\S+)")
_CPU_CLOCK = re.compile(
    r"^\s*cpu(\d+):\s+(?:Online=(\d)\s+)?Governor=\S+\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)",
    re.MULTILINE,
)
_GPU_CLOCK = re.compile(r"^\s*GPU MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", re.MULTILINE)
# A rail is "NAME cur/avg" with optional mW units and, on JetPack 6.2+, a third field
# ("VDD_IN 4548mW/4548mW/4548mW"). The lookahead stops "RAM 613/3964MB" from matching.
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/\d+(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU_LOAD = re.compile(r"\bCPU \[([^\]]*)\]")
_GPU_LOAD = re.compile(r"\bGR3D_FREQ (\d+)%")
# CurrentFreq is sampled, and on Orin it can read a notch off the locked value; 2 % is
# below the smallest DVFS step (729.6 -> 806.4 MHz is ~10 %) so a scaling core still fails.
_CLOCK_TOLERANCE = 0.02


class JetsonParseError(ValueError):
    """Text that should come from a Jetson tool does not have the expected format."""


@dataclass(frozen=True)
class TegrastatsLine:
    """One parsed ``tegrastats`` line: rail powers (instantaneous mW) and loads."""

    rails_mw: dict[str, int]
    ram_used_mb: int | None
    ram_total_mb: int | None
    cpu_load_pct: tuple[int | None, ...]  # None for a core that is "off"
    gpu_load_pct: int | None


@dataclass(frozen=True)
class JetsonFacts:
    """What makes a Jetson measurement comparable with another one."""

    model: str
    l4t: str | None
    jetpack: str | None
    power_mode: str | None
    power_mode_id: int | None
    clocks_locked: bool | None  # None: could not tell (jetson_clocks missing or not root)

    def as_machine_info(self) -> dict[str, object]:
        """Keys for pytest-benchmark's ``machine_info``."""
        return {
            "jetson_model": self.model,
            "jetson_l4t": self.l4t,
            "jetson_jetpack": self.jetpack,
            "jetson_power_mode": self.power_mode,
            "jetson_power_mode_id": self.power_mode_id,
            "jetson_clocks_locked": self.clocks_locked,
        }

    def key_suffix(self) -> str:
        """Board and power mode as a slug, e.g. ``jetson-orin-nano-15w``, for baseline keys."""
        return f"{board_slug(self.model)}-{slug(self.power_mode or 'unknown-mode')}"


def board_slug(model: str) -> str:
    """``NVIDIA Jetson Orin Nano Developer Kit`` -> ``jetson-orin-nano`` (vendor/kit words dropped)."""
    text = re.sub(r"\(.*?\)", " ", model)
    text = re.sub(r"\b(NVIDIA|Engineering Reference|Developer Kit|Dev Kit|module)\b", " ", text, flags=re.I)
    return slug(text) or "jetson"


def parse_device_tree_model(raw: bytes | str) -> str:
    """The board name from ``/proc/device-tree/model`` (NUL-terminated, may carry newlines)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    model = text.split("\x00", 1)[0].strip()
    if not model:
        raise JetsonParseError("device-tree model is empty; expected e.g. 'NVIDIA Jetson Orin Nano Developer Kit'")
    return model


def parse_tegra_release(text: str) -> tuple[str, str | None]:
    """``(l4t, jetpack)`` from ``/etc/nv_tegra_release``, e.g. ``("36.3.0", "6.0")``."""
    match = _RELEASE_LINE.search(text)
    if match is None:
        first = text.strip().splitlines()[0] if text.strip() else "<empty>"
        raise JetsonParseError(
            f"nv_tegra_release line {first!r} is not '# R36 (release), REVISION: 3.0, GCID: ...'"
        )
    parts = [match.group(1), *match.group(2).split(".")]
    l4t = ".".join((parts + ["0", "0"])[:3])
    jetpack = L4T_TO_JETPACK.get(l4t) or _JETPACK_MAJOR.get(parts[0])
    return l4t, jetpack


def parse_nvpmodel(text: str) -> tuple[str, int | None]:
    """``(power_mode, mode_id)`` from ``nvpmodel -q`` (``NV Power Mode: 15W`` then ``0``)."""
    match = _POWER_MODE.search(text)
    if match is None:
        raise JetsonParseError(f"no 'NV Power Mode: <name>' line in nvpmodel output {text.strip()[:120]!r}")
    rest = text[match.end():].splitlines()[1:]
    mode_id = next((int(line.strip()) for line in rest if line.strip().isdigit()), None)
    return match.group(1), mode_id


def parse_jetson_clocks(text: str) -> bool | None:
    """Whether ``jetson_clocks --show`` says the clocks are pinned; None when it lists no CPU.

    Locked means every online CPU has MinFreq == MaxFreq with CurrentFreq at that value, and
    the GPU (when listed) has MinFreq == MaxFreq. Checking the GPU matters: in a Nano's 5 W
    mode nvpmodel pins the CPU floor to its ceiling while the GPU still scales.
    """
    cpus = _CPU_CLOCK.findall(text)
    if not cpus:
        return None
    for _, online, low, high, current in cpus:
        if online == "0":
            continue
        if low != high or abs(int(current) - int(high)) > _CLOCK_TOLERANCE * int(high):
            return False
    gpu = _GPU_CLOCK.search(text)
    return gpu is None or gpu.group(1) == gpu.group(2)


def parse_tegrastats(line: str) -> TegrastatsLine:
    """Rails (instantaneous mW), RAM and loads from one ``tegrastats`` line."""
    rails = {name: int(value) for name, value in _RAIL.findall(line)}
    ram = _RAM.search(line)
    cpu = _CPU_LOAD.search(line)
    loads: tuple[int | None, ...] = ()
    if cpu is not None:
        loads = tuple(None if core.strip() == "off" else int(core.split("%")[0]) for core in cpu.group(1).split(","))
    gpu = _GPU_LOAD.search(line)
    if not rails and ram is None:
        raise JetsonParseError(f"not a tegrastats line (no rails, no RAM field): {line.strip()[:120]!r}")
    return TegrastatsLine(
        rails_mw=rails,
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        cpu_load_pct=loads,
        gpu_load_pct=int(gpu.group(1)) if gpu else None,
    )


def _default_run(command: list[str]) -> str:
    # 5 s: both tools answer in well under a second; a hang (e.g. waiting on sudo) must not
    # stall the session start.
    done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    return done.stdout


def jetson_facts(root: Path = Path("/"), run: CommandRunner | None = None) -> JetsonFacts | None:
    """The Jetson this process runs on, or None when it is not a Jetson.

    A board is a Jetson when ``root/etc/nv_tegra_release`` exists or the device-tree model
    names a Jetson. ``run`` executes ``nvpmodel -q`` and ``jetson_clocks --show``; a tool
    that is missing, fails or prints something else leaves its fields None.
    """
    runner = run or _default_run
    model_path = root / "proc/device-tree/model"
    release_path = root / "etc/nv_tegra_release"
    model = None
    if model_path.is_file():
        try:
            model = parse_device_tree_model(model_path.read_bytes())
        except JetsonParseError:
            model = None
    if not release_path.is_file() and (model is None or "jetson" not in model.lower()):
        return None
    l4t = jetpack = None
    if release_path.is_file():
        try:
            l4t, jetpack = parse_tegra_release(release_path.read_text(errors="replace"))
        except JetsonParseError:
            pass
    power_mode, power_mode_id = None, None
    try:
        power_mode, power_mode_id = parse_nvpmodel(runner(["nvpmodel", "-q"]))
    except (OSError, subprocess.SubprocessError, JetsonParseError):
        pass
    try:
        clocks_locked = parse_jetson_clocks(runner(["jetson_clocks", "--show"]))
    except (OSError, subprocess.SubprocessError):
        clocks_locked = None
    return JetsonFacts(
        model=model or "Jetson (unknown model)",
        l4t=l4t,
        jetpack=jetpack,
        power_mode=power_mode,
        power_mode_id=power_mode_id,
        clocks_locked=clocks_locked,
    )

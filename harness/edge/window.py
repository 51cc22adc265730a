"""A power-sampling window around a timed case, and the record keys it yields."""

from __future__ import annotations

from types import TracebackType

from harness.edge.power import PowerReading, PowerSampler, energy_per_image_mj
from harness.edge.sources import pick_sampler


class PowerWindow:
    """Samples power while the ``with`` block runs, when ``enabled``; otherwise does nothing.

    Where no source is readable the record says why (``power_unavailable``) instead of
    carrying a number.
    """

    def __init__(self, device: str, *, enabled: bool) -> None:
        self.enabled = enabled
        self.sampler: PowerSampler | None = None
        self.reason = ""
        self.reading: PowerReading | None = None
        if enabled:
            from harness.edge.jetson import jetson_facts

            self.sampler, self.reason = pick_sampler(device, jetson_facts())

    def __enter__(self) -> PowerWindow:
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.sampler is not None:
            self.reading = self.sampler.stop()

    def record(self, images: int) -> dict[str, object]:
        """``power_mean_w``/``energy_mj_per_img``/``power_source``, or ``power_unavailable``."""
        if not self.enabled:
            return {}
        if self.reading is None:
            return {"power_unavailable": self.reason}
        return {
            "power_mean_w": self.reading.mean_w,
            "energy_mj_per_img": energy_per_image_mj(self.reading, images),
            "power_source": self.reading.source,
        }

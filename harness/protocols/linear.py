"""``linear``: a multinomial logistic-regression head (L-BFGS, L2) on the frozen backbone's
standardised features (:func:`harness.training.probes.fit_linear`), the L2 searched over
:data:`~harness.training.selection.LINEAR_L2_GRID` on a validation split under ``--tune on``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from harness.protocols.frozen import FrozenProtocol
from harness.training.probes import LINEAR_L2, LINEAR_MAX_ITER, LinearProbe, fit_linear
from harness.training.selection import LINEAR_L2_GRID, Prefer, logit_score


@dataclass(frozen=True)
class _Fitted:
    probe: LinearProbe
    device: torch.device

    @property
    def seconds(self) -> float | None:
        return self.probe.seconds

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        return self.probe.logits(queries.to(self.device))


class LinearHead:
    """The linear probe as a :class:`~harness.protocols.frozen.Probe`."""

    name, param = "linear", "l2"
    default: float = LINEAR_L2
    prefer: Prefer = "largest"  # on a tie, the most regularised head

    def grid_values(self, fit_images: int) -> tuple[float, ...]:
        return LINEAR_L2_GRID

    def grid(self) -> Mapping[str, object] | None:
        return {"l2": list(LINEAR_L2_GRID)}

    def recipe(self, searched: bool) -> tuple[str, float | None]:
        return f"lbfgs max_iter={LINEAR_MAX_ITER}", None if searched else LINEAR_L2

    def keys(self, tuned: bool) -> dict[str, object]:
        return {"head": "multinomial logistic regression on standardised features", "solver": "lbfgs",
                "l2": "chosen per seed (tuning)" if tuned else LINEAR_L2, "max_iter": LINEAR_MAX_ITER}

    def fit(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, value: float, device: torch.device) -> _Fitted:
        return _Fitted(fit_linear(x, y, num_classes, l2=value, device=device), device)

    def score(self, scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        return logit_score(scores, labels)


PROBE = LinearHead()
_PROTOCOL = FrozenProtocol(PROBE)
grid, settings_of, run = _PROTOCOL.grid, _PROTOCOL.settings_of, _PROTOCOL.run

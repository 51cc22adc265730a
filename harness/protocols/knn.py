"""``knn``: weighted k-nearest neighbours on the frozen backbone's L2-normalised features (cosine
similarity, temperature-weighted votes: :func:`harness.training.probes.knn_scores`); nothing is
trained, k is searched over :data:`~harness.training.selection.KNN_K_GRID` under ``--tune on``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from harness.protocols.frozen import FrozenProtocol
from harness.training.probes import KNN_K, KNN_TEMPERATURE, knn_scores
from harness.training.selection import KNN_K_GRID, Prefer, knn_grid, vote_score


@dataclass(frozen=True)
class _Neighbours:
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    k: int
    device: torch.device

    @property
    def seconds(self) -> float | None:
        return None  # nothing is fitted

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        return knn_scores(self.x.to(self.device), self.y.to(self.device), queries.to(self.device), self.num_classes, k=self.k)


class KNearest:
    """k-NN as a :class:`~harness.protocols.frozen.Probe`."""

    name, param = "knn", "k"
    default: float = KNN_K
    prefer: Prefer = "smallest"  # on a tie, the most local vote

    def grid_values(self, fit_images: int) -> tuple[float, ...]:
        return knn_grid(fit_images)

    def grid(self) -> Mapping[str, object] | None:
        return {"k": list(KNN_K_GRID)}

    def recipe(self, searched: bool) -> tuple[str, float | None]:
        return (f"knn T={KNN_TEMPERATURE}" if searched else f"knn k={KNN_K} T={KNN_TEMPERATURE}"), None

    def keys(self, tuned: bool) -> dict[str, object]:
        return {"head": "weighted k-NN on L2-normalised features (cosine)", "k": "chosen per seed (tuning)" if tuned else KNN_K,
                "temperature": KNN_TEMPERATURE}

    def fit(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, value: float, device: torch.device) -> _Neighbours:
        return _Neighbours(x, y, num_classes, int(value), device)

    def score(self, scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        return vote_score(scores, labels)


PROBE = KNearest()
_PROTOCOL = FrozenProtocol(PROBE)
grid, settings_of, run = _PROTOCOL.grid, _PROTOCOL.settings_of, _PROTOCOL.run

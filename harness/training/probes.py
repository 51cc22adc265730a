"""Transfer probes on frozen features: a linear head (L-BFGS logistic regression) and weighted k-NN.

Both take the cached features of :mod:`harness.data.features` (``float32 [N, D]``) and give
scores ``[N, C]`` that :func:`harness.training.classification.topk_accuracy` and ``macro_f1`` read.

``fit_linear`` follows the "linear probe" protocol family of CLIP (Radford et al. 2021:
scikit-learn's L-BFGS logistic regression on frozen features) with one fixed regularisation
instead of CLIP's validation sweep over C; ``knn_scores`` is DINO's weighted k-NN (Caron et al.
2021). Neither uses randomness: the head starts from zeros and L-BFGS is full-batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.runtime.devices import synchronize

# L2 strength on the mean cross-entropy of standardised features. In scikit-learn terms it is
# C = 1 / (2 * l2 * N): sklearn's default C = 1 at N = 2,500, the geometric middle of the
# 100-50k training sets here. Per-sample scaling keeps the penalty's share of the objective the
# same at every N, so a fixed value neither starves 100-image fits nor swamps 50k-image ones.
LINEAR_L2 = 2e-4
# CLIP's linear probe ran sklearn's L-BFGS with max_iter=1000. A strongly convex problem on
# standardised features converges in far fewer; the tolerances below stop it there.
LINEAR_MAX_ITER = 1000
# L-BFGS memory: 10 pairs, the default of scipy's L-BFGS-B that sklearn uses; it bounds the
# optimiser's state at 20 copies of the [C, D] head (1.6 GB would be 100 at C=1000, D=2048).
LBFGS_HISTORY = 10
# Stop when the largest gradient entry is below 1e-6 (sklearn's lbfgs stops at tol=1e-4 on the
# same quantity; tighter, since the fits here are cheap) or the loss moves less than float32 resolves.
TOLERANCE_GRAD = 1e-6
TOLERANCE_CHANGE = 1e-9
# A training feature whose std is below this is constant: it is centred but not scaled (std 1),
# since dividing by ~0 would only amplify whatever it does on test data.
CONSTANT_STD = 1e-6
# DINO's weighted k-NN: 20 neighbours, similarity temperature 0.07 (Caron et al. 2021, sec. 4.1).
KNN_K = 20
KNN_TEMPERATURE = 0.07


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear head on standardised features; tensors are on the CPU.

    ``weight`` is ``[C, D]``, ``bias`` ``[C]``; ``mean``/``std`` ``[D]`` are the training
    features' statistics; ``iterations`` is how many L-BFGS iterations ran, ``seconds`` the
    device-synchronised fit time.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    l2: float
    iterations: int
    seconds: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` of ``features`` ``[N, D]`` (on their device), standardised like the training features."""
        if features.ndim != 2 or features.shape[1] != self.weight.shape[1]:
            raise ValueError(f"expected features [N, {self.weight.shape[1]}], got {tuple(features.shape)}")
        dev = features.device
        x = (features.float() - self.mean.to(dev)) / self.std.to(dev)
        return x @ self.weight.to(dev).T + self.bias.to(dev)


def _check_labelled(features: torch.Tensor, labels: torch.Tensor, num_classes: int, what: str) -> None:
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"expected {what} features [N, D] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{what} features are empty {tuple(features.shape)}; check the split and subset")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{what} labels must be integers, got {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{what} labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    if not torch.isfinite(features).all():
        raise ValueError(f"{what} features hold NaN or inf")


def fit_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float = LINEAR_L2,
               max_iter: int = LINEAR_MAX_ITER, device: torch.device | None = None) -> LinearProbe:
    """Fit multinomial logistic regression on standardised ``features`` with full-batch L-BFGS.

    Minimises ``mean cross-entropy + l2 * ||W||^2`` (bias not decayed) from a zero head with
    strong-Wolfe line search, for at most ``max_iter`` iterations. The problem is strictly
    convex for ``l2 > 0`` and nothing is random, so the fit is deterministic (there is no seed
    argument: it would change nothing). Runs on ``device`` (default: the features' device) in float32.
    """
    _check_labelled(features, labels, num_classes, "training")
    if l2 < 0 or max_iter < 1:
        raise ValueError(f"need l2 >= 0 and max_iter >= 1, got l2={l2}, max_iter={max_iter}")
    dev = features.device if device is None else torch.device(device)
    # inference_mode(False)/enable_grad: the caller may sit in a no-grad block, and features
    # extracted under inference mode become normal tensors once an op outside it copies them.
    with torch.inference_mode(False), torch.enable_grad():
        x = features.to(dev, torch.float32)
        y = labels.to(dev, torch.int64)
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        std = torch.where(std < CONSTANT_STD, torch.ones_like(std), std)
        x = (x - mean) / std
        weight = torch.zeros(num_classes, x.shape[1], device=dev, requires_grad=True)
        bias = torch.zeros(num_classes, device=dev, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=LBFGS_HISTORY,
                                tolerance_grad=TOLERANCE_GRAD, tolerance_change=TOLERANCE_CHANGE, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated
            return loss

        synchronize(dev)
        start = time.perf_counter()
        opt.step(closure)  # type: ignore[no-untyped-call]  # torch leaves LBFGS.step unannotated
        synchronize(dev)
        seconds = time.perf_counter() - start
    iterations = int(opt.state[weight].get("n_iter", 0))
    return LinearProbe(weight.detach().cpu(), bias.detach().cpu(), mean.cpu(), std.cpu(), float(l2), iterations, seconds)


def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, num_classes: int, *,
               k: int = KNN_K, temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """DINO's weighted k-NN scores ``[N_test, C]`` (float32, on the features' device).

    Features are L2-normalised; each test point takes its ``min(k, N_train)`` most
    cosine-similar training points and adds ``exp(similarity / temperature)`` to each one's
    class. Test points are processed ``chunk`` at a time, so memory is ``chunk x N_train``
    similarities rather than ``N_test x N_train``.
    """
    _check_labelled(train_features, train_labels, num_classes, "training")
    if test_features.ndim != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"expected test features [N, {train_features.shape[1]}], got {tuple(test_features.shape)}")
    if test_features.shape[0] == 0:
        raise ValueError("test features are empty; check the split")
    if not torch.isfinite(test_features).all():
        raise ValueError("test features hold NaN or inf")
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ValueError(f"need k >= 1, temperature > 0 and chunk >= 1, got k={k}, temperature={temperature}, chunk={chunk}")
    dev = train_features.device
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.to(dev, torch.float32), dim=1)
    labels = train_labels.to(dev, torch.int64)
    k = min(k, train.shape[0])
    out = torch.empty(test.shape[0], num_classes, device=dev)
    for lo in range(0, test.shape[0], chunk):
        sims, idx = (test[lo : lo + chunk] @ train.T).topk(k, dim=1)
        weights = sims.div_(temperature).exp_()
        scores = torch.zeros(weights.shape[0], num_classes, device=dev)
        out[lo : lo + chunk] = scores.scatter_add_(1, labels[idx], weights)
    return out


def load_into_head(probe: LinearProbe, model: torch.nn.Module) -> None:
    """Set a linear classifier to ``probe``'s solution on raw features: LP-FT's start (Kumar et al. 2022).

    The probe standardises its input, ``((f - mean) / std) @ W.T + b``; folding that in gives
    ``W' = W / std`` and ``b' = b - W' @ mean``, so the head's logits on the features it was fitted
    on are the probe's, exactly up to float rounding. ``model`` is a timm model: its
    ``get_classifier()`` is the head.
    """
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not isinstance(head, torch.nn.Linear) or head.bias is None:
        raise ValueError(f"LP-FT sets a linear head from the probe, but this model's classifier is {type(head).__name__ if head is not None else 'not reachable by get_classifier()'}; "
                         "use --protocols linear, or a backbone whose get_classifier() is an nn.Linear with a bias")
    if tuple(head.weight.shape) != tuple(probe.weight.shape):
        raise ValueError(f"the probe's head is {tuple(probe.weight.shape)} but the model's classifier is {tuple(head.weight.shape)}")
    weight = probe.weight / probe.std
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_((probe.bias - weight @ probe.mean).to(head.bias))

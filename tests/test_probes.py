"""harness.training.probes: the L-BFGS linear probe against scikit-learn, DINO's k-NN by hand, digits end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from harness.training.classification import macro_f1, topk_accuracy
from harness.training.probes import KNN_K, LINEAR_L2, fit_linear, knn_scores


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's digits as raw-pixel features: the stratified 75/25 split of harness.data.digits (1,347 / 450)."""
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=bunch.target, random_state=0)
    return x[train], y[train], x[test], y[test]


def blobs(n_per_class: int = 20, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian clusters 10 std apart along separate axes: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    centres = 10.0 * torch.eye(3, dim)
    y = torch.arange(3).repeat_interleave(n_per_class)
    return centres[y] + torch.randn(len(y), dim, generator=g), y


# --- linear probe -----------------------------------------------------------------------------

def test_separable_data_is_fitted_perfectly() -> None:
    x, y = blobs()
    probe = fit_linear(x, y, 3)
    assert topk_accuracy(probe.logits(x), y) == 100.0
    assert probe.weight.shape == (3, 5) and probe.bias.shape == (3,) and probe.l2 == LINEAR_L2
    assert 0 < probe.iterations <= 1000 and probe.seconds > 0


def test_fit_is_deterministic() -> None:
    x, y = blobs(seed=1)
    a, b = fit_linear(x, y, 3), fit_linear(x, y, 3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.iterations == b.iterations


def test_matches_sklearn_logistic_regression(digits) -> None:
    # Our objective, mean CE + l2 ||W||^2, is sklearn's C * sum CE + ||W||^2 / 2 divided by C * N:
    # the same minimiser when C = 1 / (2 * l2 * N). Both leave the intercept unpenalised.
    x_train, y_train, x_test, _ = digits
    x, y, l2 = x_train[:300], y_train[:300], 1e-3
    probe = fit_linear(x, y, 10, l2=l2)
    standardised = ((x - probe.mean) / probe.std).double().numpy()
    clf = LogisticRegression(C=1 / (2 * l2 * len(y)), max_iter=10_000, tol=1e-10).fit(standardised, y.numpy())
    # float32 L-BFGS stopped at a 1e-6 gradient against float64 at 1e-10: equal to ~1e-3 of weights that reach ~1.
    np.testing.assert_allclose(probe.weight.numpy(), clf.coef_, atol=2e-3)
    np.testing.assert_allclose(probe.bias.numpy(), clf.intercept_, atol=1e-2)
    test = ((x_test - probe.mean) / probe.std).double().numpy()
    assert (probe.logits(x_test).argmax(1).numpy() == clf.predict(test)).all()


def test_standardisation_uses_training_statistics_and_keeps_constant_features_inert() -> None:
    x, y = blobs()
    x = torch.cat([x, torch.full((len(y), 1), 3.0)], dim=1)  # a constant (dead) feature
    probe = fit_linear(x, y, 3)
    torch.testing.assert_close(probe.mean, x.mean(0))
    torch.testing.assert_close(probe.std[:5], x[:, :5].std(0, unbiased=False))
    assert probe.std[5] == 1.0 and (probe.weight[:, 5] == 0).all()
    shifted = x.clone()
    shifted[:, 5] = 3.5  # a test-time value of the dead feature changes nothing
    assert torch.equal(probe.logits(shifted), probe.logits(x))


def test_max_iter_caps_iterations() -> None:
    x, y = blobs()
    assert fit_linear(x, y, 3, max_iter=1).iterations == 1


def test_features_from_inference_mode_and_no_grad_callers() -> None:
    x, y = blobs()
    with torch.inference_mode():
        frozen = x * 1.0  # an inference tensor, as extraction makes them
    with torch.no_grad():
        probe = fit_linear(frozen, y, 3)
    assert torch.equal(probe.weight, fit_linear(x, y, 3).weight)


def test_logits_check_the_feature_width() -> None:
    x, y = blobs()
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        fit_linear(x, y, 3).logits(x[:, :4])


BAD_FITS = [
    ("labels", lambda x, y: (x, y[:-1], 3), "labels"),
    ("empty", lambda x, y: (x[:0], y[:0], 3), "empty"),
    ("range", lambda x, y: (x, y, 2), r"\[0, 2\)"),
    ("negative", lambda x, y: (x, y - 1, 3), r"\[0, 3\)"),
    ("one-class", lambda x, y: (x, y * 0, 1), "at least 2"),
    ("float-labels", lambda x, y: (x, y.float(), 3), "integers"),
    ("nan", lambda x, y: (x.index_fill(0, torch.tensor([0]), math.nan), y, 3), "NaN"),
    ("1d", lambda x, y: (x[:, 0], y, 3), r"\[N, D\]"),
]


@pytest.mark.parametrize(("name", "make", "match"), BAD_FITS, ids=[row[0] for row in BAD_FITS])
def test_fit_linear_rejects_bad_inputs(name: str, make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_linear(*make(*blobs()))


# --- k-NN -------------------------------------------------------------------------------------

# Unit vectors along +x, +y, -x; the test point (3, 4) normalises to (0.6, 0.8), so its
# cosine similarities are 0.6, 0.8, -0.6.
TRAIN = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])
TRAIN_LABELS = torch.tensor([0, 1, 1])
TEST = torch.tensor([[3.0, 4.0]])


def test_knn_scores_by_hand() -> None:
    # k = 2 at T = 0.5: neighbours 1 (0.8, class 1) and 0 (0.6, class 0).
    two = knn_scores(TRAIN, TRAIN_LABELS, TEST, 2, k=2, temperature=0.5)
    torch.testing.assert_close(two, torch.tensor([[math.exp(1.2), math.exp(1.6)]]))
    # k = 3 adds neighbour 2 (-0.6, class 1).
    three = knn_scores(TRAIN, TRAIN_LABELS, TEST, 3, k=3, temperature=0.5)
    torch.testing.assert_close(three, torch.tensor([[math.exp(1.2), math.exp(1.6) + math.exp(-1.2), 0.0]]))


def test_knn_k_beyond_the_training_set_uses_all_of_it() -> None:
    assert KNN_K > len(TRAIN)
    default = knn_scores(TRAIN, TRAIN_LABELS, TEST, 2)
    expected = [math.exp(0.6 / 0.07), math.exp(0.8 / 0.07) + math.exp(-0.6 / 0.07)]
    torch.testing.assert_close(default, torch.tensor([expected]))


def test_knn_chunks_agree_with_one_chunk(digits) -> None:
    x_train, y_train, x_test, _ = digits
    whole = knn_scores(x_train, y_train, x_test, 10, chunk=len(x_test))
    for chunk in (1, 7, 64):
        part = knn_scores(x_train, y_train, x_test, 10, chunk=chunk)
        # Not bitwise: BLAS picks other kernels for other row counts (1-2 ulp in a similarity,
        # amplified by exp(s / 0.07) to ~1e-5 relative). The neighbours and predictions are the same.
        torch.testing.assert_close(part, whole, rtol=1e-4, atol=0.0)
        assert torch.equal(part.argmax(1), whole.argmax(1))


BAD_KNN = [
    ("width", {"test": torch.ones(1, 3)}, r"\[N, 2\]"),
    ("empty-test", {"test": torch.ones(0, 2)}, "empty"),
    ("empty-train", {"train": torch.ones(0, 2), "labels": torch.ones(0, dtype=torch.int64)}, "empty"),
    ("label-range", {"labels": torch.tensor([0, 1, 2])}, r"\[0, 2\)"),
    ("one-class", {"classes": 1}, "at least 2"),
    ("k", {"k": 0}, "k >= 1"),
    ("temperature", {"temperature": 0.0}, "temperature > 0"),
    ("chunk", {"chunk": 0}, "chunk >= 1"),
    ("inf", {"test": torch.tensor([[math.inf, 0.0]])}, "NaN or inf"),
]


@pytest.mark.parametrize(("name", "changes", "match"), BAD_KNN, ids=[row[0] for row in BAD_KNN])
def test_knn_rejects_bad_inputs(name: str, changes: dict, match: str) -> None:
    args = {"train": TRAIN, "labels": TRAIN_LABELS, "test": TEST, "classes": 2, **changes}
    extra = {key: args[key] for key in ("k", "temperature", "chunk") if key in args}
    with pytest.raises(ValueError, match=match):
        knn_scores(args["train"], args["labels"], args["test"], args["classes"], **extra)


# --- end to end -------------------------------------------------------------------------------

def test_digits_pixels_linear_and_knn_above_90_percent(digits) -> None:
    # Logistic regression and k-NN on raw digits pixels are both well above 95% in the literature
    # (and sklearn's examples); 90% leaves room without letting a broken probe pass.
    x_train, y_train, x_test, y_test = digits
    linear = fit_linear(x_train, y_train, 10).logits(x_test)
    knn = knn_scores(x_train, y_train, x_test, 10)
    assert topk_accuracy(linear, y_test) > 90.0 and macro_f1(linear, y_test) > 0.9
    assert topk_accuracy(knn, y_test) > 90.0 and macro_f1(knn, y_test) > 0.9

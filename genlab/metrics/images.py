"""Sample-quality metrics for images, in the feature space of a reference classifier.

Every distance here is computed on features from `genlab.metrics.reference`, not on
Inception-v3, so the names say so: `fd_genlab` is the Frechet distance of FID
(Heusel et al. 2017) and `kid_genlab` the kernel distance of KID (Binkowski et al.
2018), but their values do not compare with published FID/KID numbers.

- fd_genlab: Frechet distance between Gaussians fitted to real and generated features.
- kid_genlab: unbiased MMD^2 with the cubic polynomial kernel, mean (and std) over subsets.
- precision, recall, density, coverage: k-nearest-neighbour manifolds (Kynkaanniemi et al.
  2019; Naeem et al. 2020): precision/density ask whether samples look real, recall/coverage
  whether the real data is covered, so a collapsed generator fails recall and coverage.
- classifier_score: exp E_x[KL(p(y|x) || p(y))], the Inception Score (Salimans et al. 2016)
  with the reference classifier's probabilities.
- class_accuracy: for conditional samples, how often the classifier sees the requested class;
  class_fraction/NAME: the predicted-class histogram, where mode collapse shows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Features = np.ndarray | torch.Tensor


def _as_tensor(features: Features, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = torch.as_tensor(features).to(dtype)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(x.shape)}")
    return x


# ---------------------------------------------------------------------------------------------
# Frechet distance


def gaussian_stats(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = _as_tensor(features, torch.float64).numpy()
    if len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(x)}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix; round-off negative eigenvalues become 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(a)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982):

        d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    S1 S2 is not symmetric, and a general matrix square root of it (scipy's sqrtm) can
    return complex round-off for near-singular covariances. It is similar to the symmetric
    PSD matrix S1^(1/2) S2 S1^(1/2), so both have the same eigenvalues, and the trace term
    is the sum of the square roots of the eigenvalues of that symmetric matrix.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away round-off
    trace_root = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    return float(max(distance, 0.0))


def fd_genlab(real_features: Features, fake_features: Features) -> float:
    """Frechet distance between Gaussians fitted to real and generated reference-classifier features."""
    return frechet_distance(*gaussian_stats(real_features), *gaussian_stats(fake_features))


# ---------------------------------------------------------------------------------------------
# kernel distance


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3, the kernel of KID (Binkowski et al. 2018, section 3)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased estimate of MMD^2 (Gretton et al. 2012, eq. 3): the diagonals k(x_i, x_i) are left out,

        1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j),

    so its expectation is exactly 0 when x and y come from the same distribution (it may be negative).
    """
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * k_xy.mean())


def kid_genlab(real_features: Features, fake_features: Features, subsets: int = 100, subset_size: int = 1000,
               seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of unbiased MMD^2 over random subsets (KID, Binkowski et al. 2018).

    Subsets of equal size (at most the smaller sample) are drawn without replacement
    within each subset, from a generator seeded by `seed`. Computed in float64: the
    estimate is a small difference of large kernel sums.
    """
    real, fake = _as_tensor(real_features, torch.float64), _as_tensor(fake_features, torch.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated samples, got {len(real)} and {len(fake)}")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=generator)[:size]]
        y = fake[torch.randperm(len(fake), generator=generator)[:size]]
        values.append(mmd2_unbiased(x, y))
    values_array = np.array(values)
    return float(values_array.mean()), float(values_array.std())


# ---------------------------------------------------------------------------------------------
# precision, recall, density, coverage


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row: the radius of its k-NN ball."""
    radii = [torch.cdist(x[i : i + chunk], x).kthvalue(k + 1, dim=1).values  # +1: the point itself, at 0
             for i in range(0, len(x), chunk)]
    return torch.cat(radii)


def prdc(real_features: Features, fake_features: Features, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020, eqs. 1-4).

    Each real sample X_i owns a ball of radius r(X_i), its distance to its k-th nearest real
    neighbour (likewise r(Y_j) for generated samples):

        precision = 1/M sum_j 1[exists i: |Y_j - X_i| <= r(X_i)]
        recall    = 1/N sum_i 1[exists j: |X_i - Y_j| <= r(Y_j)]
        density   = 1/(kM) sum_j sum_i 1[|Y_j - X_i| <= r(X_i)]
        coverage  = 1/N sum_i 1[min_j |X_i - Y_j| <= r(X_i)]

    Distances come from torch.cdist in chunks of `chunk` generated rows, so memory stays at
    chunk x N floats; one pass over the real-to-generated distances gives all four.
    """
    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} real and generated samples, "
                         f"got {len(real)} and {len(fake)}")
    real_radii, fake_radii = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    in_real_balls = 0  # generated samples inside at least one real ball (precision)
    real_ball_hits = 0  # (generated, real ball) pairs (density)
    real_covered = torch.zeros(len(real), dtype=torch.bool)  # real samples inside a generated ball (recall)
    nearest_fake = torch.full((len(real),), torch.inf)  # distance from each real sample to its nearest sample
    for i in range(0, len(fake), chunk):
        d = torch.cdist(fake[i : i + chunk], real)  # (c, N)
        inside = d <= real_radii[None, :]
        in_real_balls += int(inside.any(dim=1).sum())
        real_ball_hits += int(inside.sum())
        real_covered |= (d <= fake_radii[i : i + chunk, None]).any(dim=0)
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    return {
        "precision": in_real_balls / len(fake),
        "recall": real_covered.float().mean().item(),
        "density": real_ball_hits / (k * len(fake)),
        "coverage": (nearest_fake <= real_radii).float().mean().item(),
    }


# ---------------------------------------------------------------------------------------------
# classifier-based metrics


def classifier_score(probs: Features, eps: float = 1e-12) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) over all samples at once (no splits); between 1 and the class count."""
    p = _as_tensor(probs, torch.float64)
    marginal = p.mean(dim=0, keepdim=True)
    kl = (p * ((p + eps).log() - (marginal + eps).log())).sum(dim=1)
    return float(kl.mean().exp())


def class_histogram(probs: Features) -> np.ndarray:
    """Fraction of samples the classifier assigns to each class (argmax), shape (K,)."""
    p = _as_tensor(probs)
    counts = torch.bincount(p.argmax(dim=1), minlength=p.shape[1])
    return (counts.double() / max(len(p), 1)).numpy()


def class_accuracy(probs: Features, requested: np.ndarray | torch.Tensor) -> float:
    """How often the classifier's top class is the class the sample was generated for."""
    p = _as_tensor(probs)
    requested = torch.as_tensor(requested).long()
    if requested.shape != (len(p),):
        raise ValueError(f"requested classes must have shape ({len(p)},), got {tuple(requested.shape)}")
    return float((p.argmax(dim=1) == requested).double().mean())


# ---------------------------------------------------------------------------------------------
# entry points


def image_metrics(real_features: Features, fake_features: Features, fake_probs: Features | None = None,
                  requested: np.ndarray | torch.Tensor | None = None, real_probs: Features | None = None,
                  classes: tuple[str, ...] | list[str] | None = None, k: int = 5, kid_subsets: int = 100,
                  kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every image metric from features (and, when given, class probabilities) of real and generated images.

    Keys: fd_genlab, kid_genlab, kid_genlab_std, precision, recall, density, coverage; with
    `fake_probs`: classifier_score and class_fraction/NAME per class (NAME from `classes`, else
    the index); with `real_probs` too: class_histogram_tv, the total-variation distance between
    the generated and real predicted-class histograms (0 = same mix, 1 = disjoint); with
    `requested`: class_accuracy.
    """
    kid_mean, kid_std = kid_genlab(real_features, fake_features, kid_subsets, kid_subset_size, seed)
    metrics: dict[str, float] = {"fd_genlab": fd_genlab(real_features, fake_features),
                                 "kid_genlab": kid_mean, "kid_genlab_std": kid_std}
    metrics |= prdc(real_features, fake_features, k=k)
    if fake_probs is not None:
        metrics["classifier_score"] = classifier_score(fake_probs)
        histogram = class_histogram(fake_probs)
        names = list(classes) if classes is not None else [str(i) for i in range(len(histogram))]
        metrics |= {f"class_fraction/{name}": float(f) for name, f in zip(names, histogram, strict=True)}
        if real_probs is not None:
            metrics["class_histogram_tv"] = float(np.abs(histogram - class_histogram(real_probs)).sum() / 2)
        if requested is not None:
            metrics["class_accuracy"] = class_accuracy(fake_probs, requested)
    return metrics


def sample_metrics(reference: Any, real_images: np.ndarray | torch.Tensor, fake_images: np.ndarray | torch.Tensor,
                   requested: np.ndarray | torch.Tensor | None = None, batch_size: int = 1000,
                   **options: Any) -> dict[str, float]:
    """`image_metrics` of images (uint8, or float in [0, 1]) through a `ReferenceClassifier`, with timings.

    Adds reference_accuracy (the classifier's test accuracy: how far to trust its features),
    real_examples, fake_examples, feature_seconds and metric_seconds.
    """
    start = time.time()
    real_features, real_probs = reference.embed(real_images, batch_size)
    fake_features, fake_probs = reference.embed(fake_images, batch_size)
    feature_seconds = time.time() - start
    metrics = image_metrics(real_features, fake_features, fake_probs, requested, real_probs,
                            classes=reference.classes, **options)
    metrics |= {"reference_accuracy": reference.accuracy, "real_examples": len(real_features),
                "fake_examples": len(fake_features), "feature_seconds": feature_seconds,
                "metric_seconds": time.time() - start - feature_seconds}
    return metrics


# -- pixel fidelity (translation, super-resolution) --------------------------------------------


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(1 / MSE), for images in [0, 1]; (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, eq. 13) for images in [0, 1]; (B,).

    Gaussian window of `window` (shrunk to fit small images) and sigma 1.5, constants
    C1 = (0.01)^2 and C2 = (0.03)^2, averaged over the valid positions and the channels.
    """
    window = min(window, *(s - (s + 1) % 2 for s in x.shape[-2:]))  # odd and no larger than the image
    g = torch.exp(-((torch.arange(window, dtype=x.dtype, device=x.device) - window // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)

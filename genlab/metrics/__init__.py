"""Metrics that mean something: likelihoods, sample quality in a reference classifier's feature
space (and in EfficientNet-Lite0's ImageNet features, genlab.metrics.efflite), and text diversity and memorisation.

`GLOSSARY` says, for every metric genlab reports, which direction is better and what it
means; the report and `genlab compare` read it, so a number is never shown without both.
"""

from __future__ import annotations

from typing import NamedTuple

from genlab.metrics.likelihood import bits_per_dim, image_log_likelihood


class MetricInfo(NamedTuple):
    better: str | None  # "lower", "higher", or None (descriptive: not ranked)
    goal: str | None  # the goal `compare` recommends for: quality, diversity, likelihood, speed, size
    meaning: str


GLOSSARY: dict[str, MetricInfo] = {
    "fd_genlab": MetricInfo("lower", "quality", "Frechet distance between Gaussians fitted to real and generated "
                            "features of the reference classifier (FID's formula, genlab's features)"),
    "kid_genlab": MetricInfo("lower", "quality", "kernel inception distance's unbiased MMD^2 (cubic kernel) in the "
                             "same features; near 0 (may dip below) when the distributions match"),
    "precision": MetricInfo("higher", "quality", "fraction of samples inside the real data's k-NN manifold: "
                            "do samples look real"),
    "recall": MetricInfo("higher", "diversity", "fraction of real images inside the samples' k-NN manifold: "
                         "is the data's variety covered; collapse drives it down"),
    "density": MetricInfo("higher", "quality", "how many real neighbourhoods contain each sample, over k; "
                          "about 1 for samples like the data"),
    "coverage": MetricInfo("higher", "diversity", "fraction of real images whose neighbourhood holds a sample"),
    "classifier_score": MetricInfo("higher", "quality", "Inception-Score analogue from the reference classifier: "
                                   "exp E KL(p(y|x) || p(y)), between 1 and the class count"),
    "class_accuracy": MetricInfo("higher", "quality", "conditional samples the reference classifier puts in the "
                                 "requested class"),
    "class_histogram_tv": MetricInfo("lower", "diversity", "total-variation distance between the predicted-class "
                                     "mix of samples and of real images (0 same mix, 1 disjoint)"),
    "fid_inception": MetricInfo("lower", "quality", "standard FID: Frechet distance in Inception-v3 pool3 features "
                                "(only with --inception-weights)"),
    "kid_inception": MetricInfo("lower", "quality", "standard KID in Inception-v3 pool3 features"),
    "is_inception": MetricInfo("higher", "quality", "standard Inception Score (one split, all samples)"),
    "fd-efflite0": MetricInfo("lower", "quality", "Frechet distance between Gaussians fitted to real and generated "
                              "pooled EfficientNet-Lite0 ImageNet features at 224x224 (FID's formula; not FID)"),
    "kid-efflite0": MetricInfo("lower", "quality", "KID's unbiased MMD^2 (cubic kernel) in the same EfficientNet-Lite0 "
                               "features; near 0 (may dip below) when the distributions match"),
    "precision-efflite0": MetricInfo("higher", "quality", "fraction of samples inside the real images' k-NN manifold "
                                     "in EfficientNet-Lite0 features"),
    "recall-efflite0": MetricInfo("higher", "diversity", "fraction of real images inside the samples' k-NN manifold "
                                  "in EfficientNet-Lite0 features"),
    "nll_nats": MetricInfo("lower", "likelihood", "test negative log-likelihood per image in nats "
                           "(importance-weighted bound)"),
    "elbo_nats": MetricInfo("higher", None, "evidence lower bound per test image in nats (the training objective)"),
    "bits_per_dim": MetricInfo("lower", "likelihood", "test NLL in bits per pixel channel"),
    "nats_per_token": MetricInfo("lower", "likelihood", "test cross-entropy per token in nats"),
    "bits_per_char": MetricInfo("lower", "likelihood", "test cross-entropy per character in bits"),
    "perplexity": MetricInfo("lower", "likelihood", "exp(nats per token)"),
    "distinct_2": MetricInfo("higher", "diversity", "unique word bigrams / all bigrams over generated texts"),
    "repetition_4": MetricInfo("lower", "quality", "within-text fraction of repeated 4-grams (degenerate loops)"),
    "memorised_ngrams": MetricInfo("lower", "diversity", "fraction of generated long n-grams copied verbatim "
                                   "from the training text"),
    "psnr_db": MetricInfo("higher", "quality", "peak signal-to-noise ratio of translated test images against "
                          "their targets, dB"),
    "psnr_gain_db": MetricInfo("higher", "quality", "PSNR over bicubic upscaling (super-resolution), dB"),
    "ssim": MetricInfo("higher", "quality", "structural similarity of translated test images to their targets"),
    "table_quality": MetricInfo("higher", "quality", "SDMetrics' quality score of synthetic rows against the test "
                                "rows: the mean of the column-shape and column-pair-trend scores (1: identical)"),
    "column_shapes": MetricInfo("higher", "quality", "mean per-column similarity: 1 - KS statistic (numbers), "
                                "1 - total variation of category frequencies (categories)"),
    "column_pair_trends": MetricInfo("higher", "quality", "mean per-pair similarity of correlations (two numbers) "
                                     "or contingency tables (a category involved)"),
    "tstr_auc": MetricInfo("higher", "utility", "ROC AUC on the real test rows of a gradient-boosting classifier "
                           "trained on synthetic rows (train synthetic, test real)"),
    "tstr_accuracy": MetricInfo("higher", "utility", "accuracy of the same classifier on the real test rows"),
    "real_auc": MetricInfo("higher", "utility", "the same classifier trained on the real training rows: the ceiling"),
    "c2st_auc": MetricInfo("lower", "quality", "ROC AUC of a classifier telling real from synthetic rows "
                           "(0.5: indistinguishable)"),
    "exact_copies": MetricInfo("lower", "privacy", "share of synthetic rows that repeat a training row exactly"),
    "exact_copies_holdout": MetricInfo(None, "privacy", "share of real test rows that repeat a training row: "
                                       "the level copies should not exceed"),
    "dcr_median": MetricInfo("higher", "privacy", "median distance of a synthetic row to its closest training row "
                             "(Gower-like, 0..1), beside dcr_holdout_median"),
    "dcr_holdout_median": MetricInfo(None, "privacy", "the same distance for real test rows"),
    "samples_per_s": MetricInfo("higher", "speed", "images (or texts) generated per second on this machine"),
    "parameters": MetricInfo("lower", "size", "trainable parameters"),
    "train_seconds": MetricInfo(None, None, "wall-clock training time over all sessions"),
    "reference_accuracy": MetricInfo(None, None, "test accuracy of the reference classifier whose features are used"),
    # video (genlab.metrics.video): the test clips' second half from their first, and generated clips' motion
    "forecast_mse": MetricInfo("lower", "quality", "per-pixel squared error of the mean forecast of each test clip's "
                               "second half from its first (pixels in [0, 1])"),
    "forecast_mse_per_frame": MetricInfo("lower", "quality", "the same error summed over a frame's pixels: OpenSTL's "
                                         "MSE convention"),
    "forecast_ssim": MetricInfo("higher", "quality", "structural similarity of the forecast frames to the true ones"),
    "copy_last_mse": MetricInfo("lower", "quality", "the error of copying the last known frame forward: the floor a "
                                "forecast must beat"),
    "interpolation_2x_psnr": MetricInfo("higher", "quality", "PSNR (dB) of the frames made between every second "
                                        "frame of the test clips"),
    "linear_blend_2x_psnr": MetricInfo("higher", "quality", "PSNR (dB) of blending the two neighbouring frames "
                                       "instead: the floor interpolation must beat"),
    "motion_speed_w1": MetricInfo("lower", "quality", "1-Wasserstein distance between generated and test clips' "
                                  "centroid speeds (pixels per frame)"),
    "motion_acceleration_w1": MetricInfo("lower", "quality", "the same for the size of the centroid's acceleration"),
}

__all__ = ["GLOSSARY", "MetricInfo", "bits_per_dim", "image_log_likelihood"]

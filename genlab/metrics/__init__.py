"""Metrics that mean something: likelihoods now; sample-quality metrics build on the same layer."""

from genlab.metrics.likelihood import bits_per_dim, image_log_likelihood

__all__ = ["bits_per_dim", "image_log_likelihood"]

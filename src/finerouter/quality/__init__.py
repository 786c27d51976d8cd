"""The Stage-2 mixture-of-experts quality estimator (paper section 3.2)."""

from finerouter.quality.estimator import QualityEstimator

__all__ = ["QualityEstimator"]

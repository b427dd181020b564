"""ddad: visual anomaly detection with denoising diffusion models."""

from ddad.errors import DdadError

__all__ = ["DdadError"]

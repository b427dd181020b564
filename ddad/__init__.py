"""ddad: visual anomaly detection with denoising diffusion models."""

from ddad.detect import Detector as Detector
from ddad.errors import DdadError

__all__ = ["DdadError"]

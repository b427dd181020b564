"""ddad: visual anomaly detection with denoising diffusion models.

The parts, each a package that imports only those before it: ``data`` (photographs in MVTec
layout), ``diffusion`` (the model, training, reconstruction), ``maps`` (anomaly maps and image
scores), ``evaluation`` (metrics, protocol, pictures); then ``params`` (params.yaml's schema),
``detect`` (the Detector for new photographs), ``tools`` (benchmarks, GPU check) and ``cli``.
``errors`` and ``progress`` serve them all.
"""

import warnings

from ddad.errors import DdadError

# guided-diffusion decorates with a deprecated torch.cuda.amp API; the warning is not ours to fix.
warnings.filterwarnings("ignore", category=FutureWarning, module="guided_diffusion")

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
__all__ = ["DdadError", "Detector", "__version__"]


def __getattr__(name: str) -> object:
    """Import the Detector (and torch with it) only when it is asked for."""
    if name == "Detector":
        from ddad.detect import Detector

        return Detector
    raise AttributeError(f"module 'ddad' has no attribute {name!r}")

"""The anomaly-map kinds (``score.map``), one module and one class each, behind one registry.

Every module of this package is imported here, so a new kind is a new module whose class is
decorated with ``register``: the pipeline, ``ddad detect`` and ``ddad bench`` then know it.
"""

from __future__ import annotations

import importlib
import pkgutil

from ddad.maps.kinds.base import KINDS, MapInput, MapKind, kind_class, map_kind, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["KINDS", "MapInput", "MapKind", "kind_class", "map_kind", "register"]

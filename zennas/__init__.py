"""zennas: zero-shot neural architecture search for object-detection backbones.

``import zennas`` stays light: torch, optuna, ray and mmdet are imported only by the modules that
need them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zennas.errors import FormatError, ScoreError, SpaceError, SpecError, StructureError, ZenNASError

__version__ = "0.1.0"

logging.getLogger("zennas").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from zennas.blocks.backbone import Backbone


def build_backbone(structure: Any, out_stages: Any = None) -> Backbone:
    """Build the ``torch.nn.Module`` for a structure (imports torch on first use)."""
    from zennas.blocks import build_backbone as _build

    return _build(structure, out_stages)


__all__ = [
    "FormatError",
    "ScoreError",
    "SpaceError",
    "SpecError",
    "StructureError",
    "ZenNASError",
    "__version__",
    "build_backbone",
]

"""MMDetection 3.x plug-in: the searched backbone and the Giraffe neck as registered modules.

Importing this package (what a generated config's ``custom_imports=dict(imports=['zennas.mmdet'])``
does) registers ``ZenNASBackbone`` and ``GiraffeNeck`` in ``mmdet.registry.MODELS``. Nothing else
in zennas imports it: ``import zennas`` never pulls mmdet.

- :mod:`zennas.mmdet.backbone`: ``ZenNASBackbone``;
- :mod:`zennas.mmdet.gfpn`: GiraffeDet's GFPN graph and ``GiraffeNeck``;
- :mod:`zennas.mmdet.configs`: ``make_config`` writes a complete detector config;
- :mod:`zennas.mmdet.train`: ``train`` runs mmengine's Runner on a config;
- :mod:`zennas.mmdet.export`: ONNX / TorchScript export of a backbone.
"""

from __future__ import annotations

from mmdet.registry import MODELS

from zennas.mmdet.backbone import ZenNASBackbone
from zennas.mmdet.configs import make_config
from zennas.mmdet.gfpn import GiraffeNeck


def _register(cls: type) -> None:
    """Register ``cls`` under its name; re-importing (or reloading) this package is not an error,
    but a *different* class already holding the name is."""
    existing = MODELS.module_dict.get(cls.__name__)
    if existing is cls:
        return
    if existing is not None and (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__):
        MODELS.register_module(module=cls, force=True)  # the same class, reloaded: take the new object
        return
    MODELS.register_module(module=cls, force=False)  # raises KeyError if someone else has the name


_register(ZenNASBackbone)
_register(GiraffeNeck)


__all__ = ["GiraffeNeck", "ZenNASBackbone", "make_config"]

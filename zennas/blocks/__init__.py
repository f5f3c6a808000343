"""Torch modules for every block type, looked up by name in one registry."""

from zennas.blocks import bottleneck, conv, s2d  # noqa: F401  (register the block types)
from zennas.blocks.backbone import Backbone, Stage, build_backbone, stages
from zennas.blocks.registry import get_block_builder, register_block, registered_blocks, unregister_block

__all__ = ["Backbone", "Stage", "build_backbone", "get_block_builder", "register_block", "registered_blocks", "stages",
           "unregister_block"]

"""Block types looked up by name: one registry, a duplicate name is an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from zennas.errors import StructureError

if TYPE_CHECKING:
    from zennas.blocks.base import BlockModule
    from zennas.space.structure import Block

BlockBuilder = Callable[["Block"], "BlockModule"]
_REGISTRY: dict[str, BlockBuilder] = {}


def register_block(name: str) -> Callable[[BlockBuilder], BlockBuilder]:
    def deco(builder: BlockBuilder) -> BlockBuilder:
        if name in _REGISTRY:
            owner = _REGISTRY[name]
            raise KeyError(f"block type {name!r} is already registered by {owner.__module__}.{owner.__qualname__}")
        _REGISTRY[name] = builder
        return builder

    return deco


def unregister_block(name: str) -> BlockBuilder:
    """Remove a registered builder (tests and plug-ins that registered one); returns it."""
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise KeyError(f"no torch module registered for block type {name!r}") from None


def get_block_builder(name: str) -> BlockBuilder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StructureError(
            f"no torch module registered for block type {name!r} (known: {', '.join(sorted(_REGISTRY))})",
            field="type",
        ) from None


def registered_blocks() -> list[str]:
    return sorted(_REGISTRY)

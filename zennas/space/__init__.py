"""Structures (one candidate backbone) and search spaces, as validated frozen data."""

from zennas.space.formats import (
    dump_structure,
    dumps_tinynas,
    from_tinynas,
    from_zennas,
    load_structure,
    parse_structure,
    to_tinynas,
)
from zennas.space.kinds import BLOCK_KINDS, BlockKind, register_block_kind, unregister_block_kind
from zennas.space.layout import Conv, LayoutWriter, Pool, SpaceToDepth, Unit
from zennas.space.structure import FORMAT_VERSION, Block, Neck, Structure

__all__ = [
    "BLOCK_KINDS",
    "FORMAT_VERSION",
    "Block",
    "BlockKind",
    "Conv",
    "LayoutWriter",
    "Neck",
    "Pool",
    "SpaceToDepth",
    "Structure",
    "Unit",
    "dump_structure",
    "dumps_tinynas",
    "from_tinynas",
    "from_zennas",
    "load_structure",
    "parse_structure",
    "register_block_kind",
    "to_tinynas",
    "unregister_block_kind",
]

from zennas.space.mutation import Mutator, smart_round
from zennas.space.space import (
    BlockTypes,
    Budgets,
    MutationRules,
    SearchSpace,
    check_structure_in_space,
    get_space,
    load_space_file,
    space_from_dict,
    space_names,
)

__all__ += [
    "BlockTypes",
    "Budgets",
    "MutationRules",
    "Mutator",
    "SearchSpace",
    "check_structure_in_space",
    "get_space",
    "load_space_file",
    "smart_round",
    "space_from_dict",
    "space_names",
]

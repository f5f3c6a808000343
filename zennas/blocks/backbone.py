"""Build a ``torch.nn.Module`` backbone from a structure, with its stages declared as data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from zennas.blocks.base import BlockModule
from zennas.blocks.registry import get_block_builder
from zennas.errors import SpecError
from zennas.space.structure import Structure


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a backbone: C1..C5 for a five-stride-2 detection backbone."""

    name: str  # "C1".."Cn"
    end_block: int  # index of the block the stage ends at
    channels: int  # output channels of that block
    stride: int  # total stride of the stage's output w.r.t. the input image


def stages(structure: Structure) -> list[Stage]:
    """The backbone's stages (the rule is :meth:`Structure.stages`)."""
    return [Stage(t["name"], t["end"], t["channels"], t["stride"]) for t in structure.stage_table()]


class Backbone(nn.Module):
    """The searched backbone. ``forward`` returns the feature maps of ``out_stages`` (fine to coarse).

    ``out_stages`` are 0-based stage indices; the default is the last three stages (C3, C4, C5 for a
    detection backbone). ``out_channels`` and ``out_strides`` declare each output, so necks and
    configs are wired from data.
    """

    def __init__(self, structure: Structure, out_stages: Sequence[int] | None = None) -> None:
        super().__init__()
        self.structure = structure
        self.blocks = nn.ModuleList(get_block_builder(b.type)(b) for b in structure.blocks)
        self.stages = stages(structure)
        n = len(self.stages)
        idx = list(range(max(0, n - 3), n)) if out_stages is None else list(out_stages)
        for i in idx:
            if not 0 <= i < n:
                raise SpecError(f"out_stages has {i}, but the structure has {n} stages (0..{n - 1})", field="out_stages")
        if idx != sorted(set(idx)):
            raise SpecError(f"out_stages must be strictly increasing, got {idx}", field="out_stages")
        self.out_stages = tuple(idx)
        self._out_blocks = {self.stages[i].end_block: k for k, i in enumerate(idx)}

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.stages[i].channels for i in self.out_stages)

    @property
    def out_strides(self) -> tuple[int, ...]:
        return tuple(self.stages[i].stride for i in self.out_stages)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs: list[Tensor] = []
        last = max(self._out_blocks) if self._out_blocks else -1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._out_blocks:
                outs.append(x)  # (B, C_stage, H/stride, W/stride)
            if i == last:
                break
        return tuple(outs)

    def block_modules(self) -> list[BlockModule]:
        return list(self.blocks)  # type: ignore[arg-type]


def build_backbone(structure: Structure, out_stages: Sequence[int] | None = None) -> Backbone:
    """The public builder: a structure in, a ``torch.nn.Module`` out."""
    return Backbone(structure, out_stages)

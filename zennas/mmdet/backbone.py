"""``ZenNASBackbone``: a searched structure as an MMDetection 3.x backbone.

The module is a thin :class:`mmengine.model.BaseModule` around the blocks of
:class:`zennas.blocks.Backbone`; its state-dict keys (``blocks.<i>...``) are the same, so a
``zennas`` backbone's ``state_dict()`` loads into it (``init_cfg=dict(type='Pretrained', ...)``).

Stages are indexed from 0 like ``out_indices`` of mmdet's ResNet: for a five-stage detection
backbone, stage ``i`` is ``C(i+1)``, so ``out_indices=(2, 3, 4)`` are C3, C4, C5 (the default: the
last three stages) and ``(1, 2, 3, 4)`` are C2..C5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.model import BaseModule
from torch import Tensor, nn

from zennas.errors import FormatError, SpecError, StructureError
from zennas.space.structure import Structure

# Freshly built backbones are trained from scratch: He init for convs, BN at identity (mmdet's ResNet
# does the same when it has no pretrained weights).
DEFAULT_INIT_CFG: list[dict[str, Any]] = [
    dict(type="Kaiming", layer="Conv2d"),
    dict(type="Constant", val=1, layer=["_BatchNorm", "GroupNorm"]),
]


def _plain(obj: Any) -> Any:
    """mmengine ``ConfigDict``/tuples -> plain dicts and lists (what the structure parsers expect)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


_CONFIG_KEYS = {"in_channels": "in", "out_channels": "out"}


def _json_keys(blocks: Any) -> Any:
    """Block dicts written with config-safe keys (``in_channels``/``out_channels``, the :class:`Block`
    field names) -> our JSON keys (``in``/``out``)."""
    if not isinstance(blocks, list):
        return blocks
    return [
        {_CONFIG_KEYS.get(k, k): v for k, v in b.items()} if isinstance(b, dict) and "type" in b else b
        for b in blocks
    ]


def config_blocks(structure: Any) -> list[dict[str, Any]]:
    """The structure as block dicts with config-safe keys, as generated configs inline it.

    mmengine's ``Config.pretty_text`` (which the Runner uses to log and dump a config) writes dicts as
    ``dict(key=...)``, a syntax error for our JSON key ``in``; so configs use the :class:`Block` field
    names ``in_channels``/``out_channels`` instead, which ``ZenNASBackbone`` reads as well.
    """
    out = []
    for b in to_structure(structure).blocks:
        d = b.to_dict()
        out.append({_INV.get(k, k): v for k, v in d.items()})
    return out


_INV = {v: k for k, v in _CONFIG_KEYS.items()}


def to_structure(structure: Any) -> Structure:
    """A :class:`Structure` from any accepted form.

    ``structure`` is a :class:`Structure`; a list of block dicts (zennas JSON or TinyNAS form, or with
    the config-safe keys ``in_channels``/``out_channels`` of :func:`config_blocks`); a
    structure dict; a path (``str``/``Path``) to a structure file of any supported format; or the
    structure text itself (JSON, TinyNAS literal or ZenNAS string).
    """
    from zennas.space.formats import load_structure, parse_structure, structure_from_obj

    if isinstance(structure, Structure):
        return structure
    if isinstance(structure, Path):
        return load_structure(structure)
    if isinstance(structure, str):
        text = structure.strip()
        if not text:
            raise FormatError("structure is empty", field="structure")
        if text[0] in "[{":
            return parse_structure(text)  # inline JSON / TinyNAS literal
        path = Path(text).expanduser()
        if path.is_file() or "(" not in text:
            return load_structure(path)  # a missing file raises FormatError(field="structure")
        return parse_structure(text)  # a ZenNAS block string
    if isinstance(structure, (Mapping, list, tuple)):
        raw = _plain(structure)
        if isinstance(raw, dict) and "blocks" in raw:
            raw = {**raw, "blocks": _json_keys(raw["blocks"])}
        return structure_from_obj(_json_keys(raw))
    raise StructureError(
        f"structure must be a list of block dicts, a structure dict or a file path, got {type(structure).__name__}",
        field="structure",
    )


class ZenNASBackbone(BaseModule):
    """A zennas structure as an MMDetection backbone.

    Args:
        structure: the structure (see :func:`to_structure` for the accepted forms).
        out_indices: 0-based stage indices whose ends are returned, fine to coarse; default the
            last three stages (C3, C4, C5 of a five-stage detection backbone).
        frozen_stages: ``-1`` freezes nothing; ``k >= 0`` freezes every block up to and including
            stage ``k``'s end block (parameters without grad, their norm layers kept in eval mode).
        norm_eval: keep every BatchNorm of the backbone in eval mode while training.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint='backbone.pth')``
            (a ``state_dict`` of this module or of :class:`zennas.blocks.Backbone`; add
            ``prefix='backbone.'`` to take it out of a detector checkpoint). Default: Kaiming init of
            the convs (training from scratch).
    """

    def __init__(
        self,
        structure: Any,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        init_cfg: dict[str, Any] | list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(init_cfg=DEFAULT_INIT_CFG if init_cfg is None else init_cfg)
        from zennas.blocks import build_backbone

        self.structure = to_structure(structure)
        if out_indices is not None:
            out_indices = [int(i) for i in out_indices]
        try:
            body = build_backbone(self.structure, out_indices)
        except ValueError as e:
            if isinstance(e, StructureError):
                raise
            raise SpecError(str(e), field="out_indices") from e
        self.blocks = body.blocks
        self.stages = body.stages
        self.out_indices = body.out_stages
        n = len(self.stages)
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages < n:
            raise SpecError(
                f"frozen_stages must be -1 (none) or a stage index 0..{n - 1}, got {frozen_stages!r}",
                field="frozen_stages",
            )
        self.frozen_stages = frozen_stages
        self.norm_eval = bool(norm_eval)
        self._out_blocks = {self.stages[i].end_block: k for k, i in enumerate(self.out_indices)}
        self._freeze_stages()

    # -- declared outputs ----------------------------------------------------------------------
    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.stages[i].channels for i in self.out_indices)

    @property
    def out_strides(self) -> tuple[int, ...]:
        return tuple(self.stages[i].stride for i in self.out_indices)

    @property
    def num_frozen_blocks(self) -> int:
        return 0 if self.frozen_stages < 0 else self.stages[self.frozen_stages].end_block + 1

    # -- training behaviour --------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        for block in list(self.blocks)[: self.num_frozen_blocks]:
            block.eval()
            for p in block.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> ZenNASBackbone:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs: list[Tensor] = []
        last = max(self._out_blocks)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._out_blocks:
                outs.append(x)  # (B, C_stage, H / stride, W / stride)
            if i == last:
                break
        return tuple(outs)

    def extra_repr(self) -> str:
        return (
            f"out_indices={self.out_indices}, out_channels={self.out_channels}, "
            f"out_strides={self.out_strides}, frozen_stages={self.frozen_stages}, norm_eval={self.norm_eval}"
        )

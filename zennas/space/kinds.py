"""What each block type *is*, as data: which fields it uses and its layout. One registration per type.

A :class:`BlockKind` holds a block type's fields (bottleneck or not, fixed stride, unit cap, stem)
and its ``layout``: the one function that writes the block down as ops in forward order to a
:class:`zennas.space.layout.LayoutWriter`. Costs, conv MACs, admission estimates and latency ops are derived from
the layout, so none of those modules names a block type; a new type is one
:func:`register_block_kind` call (plus its torch module, :func:`zennas.blocks.register_block`).

This table is torch-free so that structures, costs and scores can be checked and computed without
building a model. The torch modules live in :mod:`zennas.blocks`, registered under the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from zennas.space.layout import Layout, LayoutWriter, Unit, record

if TYPE_CHECKING:
    from zennas.space.structure import Block

@dataclass(frozen=True, slots=True)
class BlockKind:
    name: str  # the block type name used in structures
    layout: Layout  # writes the block's ops in forward order (the one place its structure is written)
    has_bottleneck: bool  # whether `bottleneck` channels are a field of this type
    convs_per_unit: int  # conv layers counted per repeated unit ("layers" budget); the layout's main convs
    fixed_stride: int | None = None  # the only allowed stride, when the type fixes it
    max_layers: int | None = None  # upper bound on `layers` (units), when the type fixes it
    stem: bool = False  # a plain conv usable as the first block
    tinynas_names: tuple[str, ...] = ()  # other TinyNAS/MAE-DET class names imported as this type
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"block kind name must be an identifier, got {self.name!r}")
        if not callable(self.layout):
            raise ValueError(f"block kind {self.name!r}: layout must be callable, got {self.layout!r}")
        if self.convs_per_unit < 1:
            raise ValueError(f"block kind {self.name!r}: convs_per_unit must be >= 1, got {self.convs_per_unit}")
        if self.fixed_stride not in (None, 1, 2):
            raise ValueError(f"block kind {self.name!r}: fixed_stride must be 1, 2 or None, got {self.fixed_stride}")
        if self.max_layers is not None and self.max_layers < 1:
            raise ValueError(f"block kind {self.name!r}: max_layers must be >= 1, got {self.max_layers}")

    def units(self, b: Block) -> tuple[Unit, ...]:
        """The layout of ``b`` as data (checked op by op)."""
        return record(self.layout, b)

    @property
    def owner(self) -> str:
        """Who registered the kind: its layout function's module and name."""
        return f"{self.layout.__module__}.{self.layout.__qualname__}"


BLOCK_KINDS: dict[str, BlockKind] = {}
_ON_CHANGE: list[Callable[[], None]] = []  # caches keyed by block (type name included) to clear on a change


def register_block_kind(kind: BlockKind) -> BlockKind:
    """Make ``kind`` a block type of structures, spaces, costs, estimates and latency ops.

    A name (or TinyNAS name) already taken is an error naming the kind that owns it."""
    for name in (kind.name, *kind.tinynas_names):
        for other in BLOCK_KINDS.values():
            if name in (other.name, *other.tinynas_names):
                raise KeyError(f"block type {name!r} is already registered by {other.owner} (kind {other.name!r})")
    BLOCK_KINDS[kind.name] = kind
    _changed()
    return kind


def unregister_block_kind(name: str) -> BlockKind:
    """Remove a registered kind (tests and plug-ins that registered one); returns it."""
    try:
        kind = BLOCK_KINDS.pop(name)
    except KeyError:
        raise KeyError(f"block type {name!r} is not registered (known: {', '.join(BLOCK_KINDS)})") from None
    _changed()
    return kind


def on_kinds_change(clear: Callable[[], None]) -> None:
    """Register a cache's ``clear``: derived per-block caches are dropped when a kind comes or goes."""
    _ON_CHANGE.append(clear)


def _changed() -> None:
    for clear in _ON_CHANGE:
        clear()


def block_kind(name: str) -> BlockKind | None:
    return BLOCK_KINDS.get(name)


def tinynas_classes() -> dict[str, str]:
    """TinyNAS class name -> block type, in registration order (each type's own name first)."""
    return {n: k.name for k in BLOCK_KINDS.values() for n in (k.name, *k.tinynas_names)}


# -- the built-in kinds --------------------------------------------------------------------------
def _stem_layout(b: Block, w: LayoutWriter) -> None:
    w.conv(b.in_channels, b.out_channels, b.kernel, b.stride)
    w.unit()


Shortcut = Literal["projection", "identity", "none"]


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """What distinguishes the bottleneck block types: the kxk conv and the shortcut rule (TinyNAS)."""

    depthwise: bool  # the kxk conv is depthwise (groups = btn)
    force_first_projection: bool  # the block's first unit always has a 1x1 conv+BN shortcut
    project_on_change: bool  # in != out: a projection shortcut (True) or no residual at all (False)

    def shortcut(self, cin: int, out: int, first: bool) -> Shortcut:
        """``projection``, ``identity`` or ``none`` for a unit ``cin -> out`` (``first``: unit 0)."""
        if first and self.force_first_projection:
            return "projection"
        if cin == out:
            return "identity"
        return "projection" if self.project_on_change else "none"

    def write_unit(self, w: LayoutWriter, cin: int, btn: int, out: int, k: int, s: int, first: bool,
                   repeat: int) -> None:
        """``cin -> btn`` 1x1, ``btn -> btn`` kxk at stride s, ``btn -> out`` 1x1 (no activation), the
        shortcut (2x2 average pool if strided, then a 1x1 conv+BN when it projects), the add, ReLU."""
        w.conv(cin, btn)
        w.conv(btn, btn, k, s, btn if self.depthwise else 1, "relu", True)
        w.conv(btn, out, act="none")
        sc = self.shortcut(cin, out, first)
        if sc != "none":
            w.shortcut()
            if s == 2:
                w.pool(cin)
            if sc == "projection":
                w.conv(cin, out, act="none")
        w.unit("relu", repeat)

    def layout(self, b: Block, w: LayoutWriter) -> None:
        """Unit 0 carries the stride and ``in``; units after it are all ``out -> out`` at stride 1."""
        btn = b.bottleneck or 0  # validated by Structure
        self.write_unit(w, b.in_channels, btn, b.out_channels, b.kernel, b.stride, True, 1)
        if b.layers > 1:
            self.write_unit(w, b.out_channels, btn, b.out_channels, b.kernel, 1, False, b.layers - 1)


# bottleneck block types (TinyNAS: force_resproj is True for the first ResK1KXK1 unit only; a ResK1DWK1
# unit with in != out and no forced projection has no residual)
K1KXK1 = Bottleneck(depthwise=False, force_first_projection=True, project_on_change=True)
K1DWK1 = Bottleneck(depthwise=True, force_first_projection=False, project_on_change=False)


def _k1kxk1_layout(b: Block, w: LayoutWriter) -> None:
    K1KXK1.layout(b, w)


def _k1dwk1_layout(b: Block, w: LayoutWriter) -> None:
    K1DWK1.layout(b, w)


def _s2d_layout(b: Block, w: LayoutWriter) -> None:
    """Space-to-depth x2 then 1x1 conv ``4*in -> out`` + BN + SiLU; ``layers - 1`` kxk conv units."""
    w.space_to_depth(b.in_channels)
    w.conv(4 * b.in_channels, b.out_channels, act="silu")
    w.unit()
    if b.layers > 1:
        out = b.out_channels
        w.conv(out, out, b.kernel, act="silu", same_width=True)
        w.unit(repeat=b.layers - 1)


for _kind in (
    BlockKind(
        "ConvKXBNRELU", _stem_layout, has_bottleneck=False, convs_per_unit=1, max_layers=1, stem=True,
        description="conv kxk + BN + ReLU (the stem)",
    ),
    BlockKind(
        "SuperResK1KXK1", _k1kxk1_layout, has_bottleneck=True, convs_per_unit=3,
        tinynas_names=("SuperResConvK1KXK1",),
        description="ResNet-like bottleneck stage: `layers` units of 1x1 -> kxk -> 1x1 with residual",
    ),
    BlockKind(
        "SuperResK1DWK1", _k1dwk1_layout, has_bottleneck=True, convs_per_unit=3,
        description="MobileNet-like inverted residual stage: 1x1 expand -> kxk depthwise -> 1x1",
    ),
    BlockKind(
        "S2D", _s2d_layout, has_bottleneck=False, convs_per_unit=1, fixed_stride=2,
        description="GiraffeDet space-to-depth x2 + 1x1 conv/BN/SiLU, then `layers`-1 kxk conv units",
    ),
):
    register_block_kind(_kind)
del _kind

BOTTLENECKS: dict[str, Bottleneck] = {"SuperResK1KXK1": K1KXK1, "SuperResK1DWK1": K1DWK1}  # for the torch stages

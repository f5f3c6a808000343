"""GiraffeDet's generalized FPN ("Giraffe neck") connectivity, as torch-free data.

Reference: Jiang et al., "GiraffeDet: A Heavy-Neck Paradigm for Object Detection", arXiv 2202.04256.

The connectivity rule (``gfpn_graph``), for depth ``d`` and consecutive levels ``lo..hi``:

* there are ``L = 2d - 1`` fusion layers with one node per level; even layers run top-down
  (coarsest level first), odd layers bottom-up (finest level first);
* node ``(l, i)`` concatenates, in this order: the backbone feature ``(-1, i)`` if ``l == 0``,
  else the "log2n" skip links ``(l - 2**k, i)`` for every ``k >= 0`` with ``l - 2**k >= 0``,
  oldest first; then the previous node of the same layer one level back along the flow
  (``(l, i + 1)`` top-down, ``(l, i - 1)`` bottom-up); then the "queen" diagonals
  ``(l - 1, i + 1)`` and ``(l - 1, i - 1)`` (layer ``-1`` being the backbone features).
  Out-of-range levels and repeated inputs (keeping the first) are dropped;
* finally one output node ``("out", i)`` per level takes only ``(L - 1, i)``.

Nodes are listed layer by layer, each layer in flow order, then the output nodes fine to coarse,
so the list is a valid evaluation order. The torch module is :mod:`zennas.mmdet.gfpn`; the analytic
costs are :mod:`zennas.detector.cost`. Both read this graph, so they describe the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from zennas.errors import ZenNASError

Key = tuple[int, int]  # (layer, level); layer -1 is the backbone feature of that level


class GFPNConfigError(ZenNASError, ValueError):
    """A bad GFPN / Giraffe neck argument; the message and ``field`` name the argument."""


@dataclass(frozen=True)
class GFPNNode:
    node: tuple[int | str, int]  # (layer, level) or ("out", level)
    inputs: tuple[Key, ...]  # in concatenation order


def check_depth_levels(depth: Any, levels: Any) -> tuple[int, ...]:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise GFPNConfigError(f"depth must be an int >= 1, got depth={depth!r}", field="depth")
    lv = tuple(levels)
    if (
        not lv
        or any(isinstance(x, bool) or not isinstance(x, int) for x in lv)
        or lv != tuple(range(lv[0], lv[0] + len(lv)))
    ):
        raise GFPNConfigError(
            f"levels must be consecutive ascending ints, got levels={levels!r}", field="levels"
        )
    return lv


def gfpn_graph(depth: int, levels: tuple[int, ...] = (3, 4, 5, 6, 7)) -> list[GFPNNode]:
    """The GFPN nodes for depth ``d`` (``2d - 1`` fusion layers) over ``levels``, in evaluation order."""
    return list(_graph(depth, check_depth_levels(depth, levels)))


@lru_cache(maxsize=256)
def _graph(depth: int, levels: tuple[int, ...]) -> tuple[GFPNNode, ...]:  # cached: the cost model reads it often
    lo, hi = levels[0], levels[-1]
    n_layers = 2 * depth - 1
    nodes: list[GFPNNode] = []
    for layer in range(n_layers):
        top_down = layer % 2 == 0
        back = 1 if top_down else -1  # the level that precedes i in this layer's flow
        for lvl in reversed(levels) if top_down else levels:
            cand: list[Key] = []
            if layer == 0:
                cand.append((-1, lvl))
            else:
                skips, k = [], 0
                while layer - 2**k >= 0:
                    skips.append((layer - 2**k, lvl))
                    k += 1
                cand.extend(sorted(skips))  # oldest first
            cand.append((layer, lvl + back))
            cand.extend([(layer - 1, lvl + 1), (layer - 1, lvl - 1)])
            inputs: list[Key] = []
            for key in cand:
                if lo <= key[1] <= hi and key not in inputs:
                    inputs.append(key)
            nodes.append(GFPNNode((layer, lvl), tuple(inputs)))
    nodes.extend(GFPNNode(("out", lvl), ((n_layers - 1, lvl),)) for lvl in levels)
    return tuple(nodes)


def graph_as_json(depth: int, levels: tuple[int, ...] = (3, 4, 5, 6, 7)) -> dict[str, Any]:
    """The graph in the shape of ``tests/data/gfpn_graph.json`` (one entry of its ``graphs``)."""
    nodes = gfpn_graph(depth, levels)
    return {
        "fusion_layers": 2 * depth - 1,
        "nodes": [{"node": list(n.node), "inputs": [list(k) for k in n.inputs]} for n in nodes],
    }

"""In-network corrections: what each table's op costs inside a whole network, relative to its table.

A table cell times its op alone, in a graph of its own; inside a network the same op costs less, and
by how much depends on the op: on the 2-core VM zennas is developed on, ONNX Runtime's own profiler
showed the convs of a detection-dw backbone at 0.45-0.75x their table times, differently per kind
and feature-map size (memory-bound ops alone pay for layout reorders to ONNX Runtime's blocked
``NCHWc`` format and back, and for their output leaving the session; a network keeps its tensors
blocked and in its arena). One scale for the whole network cannot follow that: the predictor held
for compute-bound backbones (detection-k1kxk1 at 480) and not for memory-bound ones.

So the build reads, for each calibration network, the in-network kernel time of every node from
ONNX Runtime's profiler (:meth:`zennas.latency.runtimes.Runner.node_times`), matches each conv node
to the op of the structure it runs (by its input size, channels, kernel, stride, depthwise or not,
and a fused residual sum; channels as the node sees them: its output padded to the blocked format's
width, its input too unless it reads plain NCHW, as the stem and convs on fewer channels do), and
records per table the median ratio of in-network time to table time (``OpTable.in_network``). A
table no calibration network exercised (and the pool and space-to-depth tables, which are not one
conv node) takes the median ratio over every matched op. The predictor multiplies each op's table
time by its table's ratio; the per-network fit runs on the corrected sums.

The profiler's own cost (a few microseconds per node) is in the node times; the fit's scale absorbs
its average. torch eager has no such pass here (its tables stay uncorrected, ``in_network = None``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from zennas.latency.ops import Op, TableKey, out_size

if TYPE_CHECKING:  # runtimes imports torch
    from zennas.latency.runtimes import NodeTime

LIMITS = (1e-3, 10.0)  # a ratio outside these is a mismatch, not a measurement: clipped (the profile's bounds)

# the blocked layouts a runtime may pad channels to (ONNX Runtime's NCHWc block: 8 with AVX2, 16 with
# AVX-512); 1 = unpadded. The block of one network is the one that matches most of its conv nodes.
BLOCKS = (1, 8, 16)
CONV_KINDS = ("stem", "pw", "kxk", "conv", "pw_add", "proj")


def _pad(c: int, block: int) -> int:
    return -(-c // block) * block


def _op_keys(op: Op, block: int) -> set[tuple[int, int, int, int, int, int, bool, bool]]:
    """The node keys ``op`` may run as: its input channels padded to the block, or as they are (the
    stem reads the image; a conv on fewer channels than the block reads plain NCHW), its output padded."""
    k = op.key
    cin, cout = op.channels
    rest = (_pad(cout, block), k.kernel, out_size(k.height, k.stride), k.depthwise, k.kind == "pw_add")
    return {(k.height, k.width, c, *rest) for c in (cin, _pad(cin, block))}


def _node_key(n: NodeTime) -> tuple[int, int, int, int, int, int, bool, bool] | None:
    if n.op_type != "Conv" or len(n.inputs) < 2 or not n.outputs:
        return None
    x, w, o = n.inputs[0], n.inputs[1], n.outputs[0]
    if len(x) != 4 or len(w) != 4 or len(o) != 4:
        return None
    depthwise = w[1] == 1 and x[1] > 1
    return (x[2], x[3], x[1], w[0], w[2], o[2], depthwise, len(n.inputs) > 3)  # a 4th input: the fused sum


def match(ops: Sequence[Op], nodes: Sequence[NodeTime]) -> list[tuple[Op, float]]:
    """(op, in-network ms) for each conv node of a network matched to one of its ops (each op at most
    once, the first unmatched one in order), with the channel block that matches the most nodes."""
    convs = [op for op in ops if op.key.kind in CONV_KINDS]
    best: list[tuple[Op, float]] = []
    for block in BLOCKS:
        keys = [_op_keys(op, block) for op in convs]
        free = [True] * len(convs)
        got = []
        for n in nodes:
            nk = _node_key(n)
            if nk is None:
                continue
            j = next((j for j, ks in enumerate(keys) if free[j] and nk in ks), None)
            if j is not None:
                free[j] = False
                got.append((convs[j], n.median_ms))
        if len(got) > len(best):
            best = got
    return best


def factors(pairs: Iterable[tuple[Op, float]], table_ms: Callable[[Op], float],
            keys: Iterable[TableKey]) -> dict[TableKey, float]:
    """Per table key, the median of in-network ms / table ms over its matched ops; keys with none
    take the median over all of them (1.0 when nothing matched at all)."""
    ratios: dict[TableKey, list[float]] = {}
    for op, ms in pairs:
        t = table_ms(op)
        if t > 0:
            ratios.setdefault(op.key, []).append(ms / t)
    every = [r for rs in ratios.values() for r in rs]
    default = statistics.median(every) if every else 1.0
    lo, hi = LIMITS
    return {k: min(max(statistics.median(ratios[k]) if k in ratios else default, lo), hi) for k in keys}

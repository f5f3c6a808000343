"""A search space whose start structure is large (thousands of blocks), for the storage tests: the
shipped MAE-DET space (detection-k1kxk1) with its start replaced by a chain of ``n`` stride-1
K1KXK1 blocks between its third and last stride-2 blocks."""

from __future__ import annotations

from typing import Any

from zennas.space import get_space


def large_space_doc(n: int) -> dict[str, Any]:
    doc = get_space("detection-k1kxk1").to_dict()
    blocks = [
        {"type": "ConvKXBNRELU", "in": 3, "out": 32, "stride": 2, "kernel": 3, "layers": 1},
        {"type": "SuperResK1KXK1", "in": 32, "out": 128, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 32},
        {"type": "SuperResK1KXK1", "in": 128, "out": 256, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 64},
        {"type": "SuperResK1KXK1", "in": 256, "out": 256, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 64},
    ]
    blocks += [{"type": "SuperResK1KXK1", "in": 256, "out": 256, "stride": 1, "kernel": 3, "layers": 1,
                "bottleneck": 64} for _ in range(n)]
    blocks.append({"type": "SuperResK1KXK1", "in": 256, "out": 512, "stride": 2, "kernel": 3, "layers": 1,
                   "bottleneck": 128})
    doc["name"] = f"large-{n}"
    doc["start"] = blocks
    doc["budgets"] = {**doc["budgets"], "flops": 1e16, "layers": 10 * len(blocks), "params": None,
                      "height": 64, "width": 64}
    return doc

"""Regenerate ``tests/data/reference_counts.json`` by running the reference's own code side by side.

The numbers in that file come from TinyNAS (alibaba/lightweight-neural-architecture-search), run
unmodified from a checkout *outside* this project; none of its code is part of zennas. This script
only builds each structure with TinyNAS's ``CnnNet`` and calls its counters:

- ``CnnNet(structure_info, no_create=False).get_flops(480)``, ``.get_model_size()``, ``.get_layers()``;
- ``sum(p.numel() for p in model.parameters())`` and every parameter's shape, in module order;
- ``ComputeMadnasScore(image_size=480, multi_block_ratio=[0, 0, 1, 1, 6])(model)`` and
  ``model.madnas_forward_pre_GAP(init_std=1, init_std_act=1)`` (the closed-form entropy);
- which shortcut each unit has (a ``ConvKXBN`` ``residual_proj``, an ``AvgPool2d``
  ``residual_downsample``, ``is_reslink = False``);
- for the ``walk_*`` structures, TinyNAS's own mutator (``Spacek1kxk1`` / ``Spacek1dwk1``) walks from
  a start with ``random`` and ``numpy.random`` seeded, rejecting children over a FLOPs budget by
  TinyNAS's counter; the first structure that has the wanted ``in == out`` block is kept.

Run (not part of the test suite; needs torch and numpy)::

    # /tmp/tinynas: a checkout of alibaba/lightweight-neural-architecture-search (outside the project)
    python scripts/reference_fixtures.py --reference /tmp/tinynas --out tests/data/reference_counts.json

TinyNAS imports ``modelscope.utils.registry`` for its registries; a 10-line stand-in is installed
in ``sys.modules`` so modelscope is not needed.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RES = 480
WEIGHTS = [0, 0, 1, 1, 6]
K, D = "SuperResK1KXK1", "SuperResK1DWK1"


def _stem(out: int) -> dict[str, Any]:
    return {"class": "ConvKXBNRELU", "in": 3, "out": out, "s": 2, "k": 3}


def _b(cls: str, cin: int, out: int, s: int, k: int, L: int, btn: int) -> dict[str, Any]:
    return {"class": cls, "in": cin, "out": out, "s": s, "k": k, "L": L, "btn": btn}


DW_START = [_stem(16), _b(D, 16, 24, 2, 3, 1, 48), _b(D, 24, 40, 2, 5, 1, 96), _b(D, 40, 80, 2, 3, 2, 240),
            _b(D, 80, 112, 1, 3, 1, 480), _b(D, 112, 160, 2, 5, 1, 672)]  # search_spaces/detection-dw.yaml
WINNER = [_stem(32), _b(K, 32, 128, 2, 5, 2, 40), _b(K, 128, 512, 2, 5, 7, 64), _b(K, 512, 1200, 2, 5, 7, 120),
          _b(K, 1200, 1200, 1, 5, 7, 120), _b(K, 1200, 2048, 2, 5, 7, 208)]


def structures() -> dict[str, dict[str, Any]]:
    search_start = json.loads((ROOT / "tests/data/search.json").read_text())["start_structure"]
    walk_k = "random walk of TinyNAS's mutator (space_k1kxk1: image_size 480, block_num 2, budget_layers 91) " \
             "from the MAE-DET search start, random.seed({s}) and numpy.random.seed({s}), children over 188e8 " \
             "FLOPs (TinyNAS's counter) rejected; the first structure with a stride-{st} block whose in == out"
    walk_d = "random walk of TinyNAS's mutator (space_k1dwk1: image_size 480, block_num 2, budget_layers 60) " \
             "from the detection-dw start, random.seed({s}) and numpy.random.seed({s}), children over 4e9 " \
             "FLOPs rejected; the first structure with a stride-{st} block whose in == out"
    return {
        "r50_like": {"structure": ast.literal_eval((ROOT / "examples/r50_like.txt").read_text()),
                     "how": "examples/r50_like.txt: ResNet-50's stage widths and depths in this space"},
        "maedet_s": {"structure": ast.literal_eval((ROOT / "examples/maedet_s.txt").read_text()),
                     "how": "examples/maedet_s.txt: the published MAE-DET-S backbone"},
        "search_start": {"structure": search_start, "how": "the MAE-DET search start (tests/data/search.json)"},
        "k1kxk1_in_eq_out": {
            "structure": [_stem(32), _b(K, 32, 64, 2, 3, 2, 32), _b(K, 64, 64, 2, 5, 2, 32),
                          _b(K, 64, 128, 2, 3, 1, 64), _b(K, 128, 128, 1, 3, 3, 64), _b(K, 128, 256, 2, 5, 2, 64)],
            "how": "hand-written: K1KXK1 blocks with in == out at stride 2 (block 2) and stride 1 (block 4)"},
        "k1dwk1_in_eq_out": {
            "structure": [_stem(16), _b(D, 16, 24, 2, 3, 1, 48), _b(D, 24, 24, 2, 5, 2, 72),
                          _b(D, 24, 40, 2, 3, 2, 120), _b(D, 40, 40, 1, 3, 2, 160), _b(D, 40, 80, 2, 5, 1, 240)],
            "how": "hand-written: K1DWK1 blocks with in == out at stride 2 (block 2) and stride 1 (block 4); "
                   "the first unit of every other block changes channels (no residual in TinyNAS)"},
        "walk_k1kxk1_s2_eq": {"walk": ("k1kxk1", search_start, 0, 2), "how": walk_k.format(s=0, st=2)},
        "walk_k1kxk1_s1_eq": {"walk": ("k1kxk1", search_start, 1, 1), "how": walk_k.format(s=1, st=1)},
        "walk_k1dwk1_s2_eq": {"walk": ("k1dwk1", DW_START, 0, 2), "how": walk_d.format(s=0, st=2)},
        "walk_k1dwk1_s1_eq": {"walk": ("k1dwk1", DW_START, 1, 1), "how": walk_d.format(s=1, st=1)},
        "maedet_search_winner_old_counts": {
            "structure": WINNER,
            "how": "the MAE-DET setting's search winner under zennas's earlier shortcut rule (commit 2e33c27: "
                   "entropy-analytic 2104.0756, shown as 18.73 GFLOPs / 26.83 M params / 91 layers; run_search "
                   "seed 0, 100k trials); block 4 (1200 -> 1200, stride 1) carries the projection TinyNAS forces"},
    }


def _install_registry_stand_in() -> None:
    class Registry:
        def __init__(self, name: str) -> None:
            self.name, self.modules = name, {}

        def register_module(self, module_name: str | None = None, **_: Any) -> Any:
            def deco(cls: Any) -> Any:
                self.modules[module_name or cls.__name__] = cls
                return cls
            return deco

    def build_from_cfg(cfg: Any, registry: Any, default_args: Any = None) -> Any:
        cfg = dict(cfg)
        return registry.modules[cfg.pop("type")](**cfg, **(default_args or {}))

    for name in ("modelscope", "modelscope.utils", "modelscope.utils.registry"):
        sys.modules[name] = types.ModuleType(name)
    reg = sys.modules["modelscope.utils.registry"]
    reg.Registry, reg.build_from_cfg = Registry, build_from_cfg  # type: ignore[attr-defined]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, type=Path, help="a checkout of TinyNAS")
    p.add_argument("--out", type=Path, default=ROOT / "tests/data/reference_counts.json")
    p.add_argument("--walk-steps", type=int, default=5000)
    p.add_argument("--commit", help="the checkout's commit, when it is not a git work tree")
    args = p.parse_args()
    _install_registry_stand_in()
    sys.path.insert(0, str(args.reference.resolve()))
    import numpy as np
    import torch
    from tinynas.models.blocks_cnn_2d.blocks_basic import ConvKXBN
    from tinynas.models.cnnnet import CnnNet
    from tinynas.scores.compute_madnas import ComputeMadnasScore
    from tinynas.spaces.space_k1dwk1 import Spacek1dwk1
    from tinynas.spaces.space_k1kxk1 import Spacek1kxk1

    commit = args.commit or subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip() or "unknown"

    def walk(kind: str, start: list[dict[str, Any]], seed: int, stride: int) -> tuple[int, list[dict[str, Any]]]:
        space = (Spacek1kxk1(image_size=RES, block_num=2, budget_layers=91) if kind == "k1kxk1"
                 else Spacek1dwk1(image_size=RES, block_num=2, budget_layers=60))
        budget = 188e8 if kind == "k1kxk1" else 4e9
        random.seed(seed)
        np.random.seed(seed)
        x = copy.deepcopy(start)
        for step in range(1, args.walk_steps + 1):
            y = space.mutate(x)
            if CnnNet(structure_info=copy.deepcopy(y), no_create=True).get_flops(RES) <= budget:
                x = y
                if any(b["s"] == stride and b["in"] == b["out"] for b in x[1:]):
                    return step, x
        raise SystemExit(f"no structure with a stride-{stride} in == out block in {args.walk_steps} steps")

    out: dict[str, Any] = {
        "format": "zennas reference counts v1",
        "provenance": {
            "repo": "alibaba/lightweight-neural-architecture-search", "commit": commit,
            "generator": "scripts/reference_fixtures.py (runs the reference's code outside zennas)",
            "resolution": RES,
            "fields": {
                "flops_480": "CnnNet(structure_info, no_create=False).get_flops(480): MACs + BN (2/elt) + ReLU (1/elt) "
                             "+ shortcut avg-pool (1/input elt) + projection add (1/elt)",
                "params": "CnnNet.get_model_size(): conv weights + BN gamma/beta",
                "layers": "CnnNet.get_layers(): main-path convs",
                "module_params": "sum(p.numel() for p in CnnNet(...).parameters())",
                "param_shapes": "[list(p.shape) for p in CnnNet(...).parameters()], in module order",
                "shortcuts": "units whose residual_proj is a ConvKXBN (projection), whose residual_downsample is an "
                             "AvgPool2d (avg_pool), whose is_reslink is False (none)",
                "entropy_analytic": "ComputeMadnasScore(image_size=480, multi_block_ratio=[0, 0, 1, 1, 6])(model): "
                                    "avg_nas_score and nas_score_list; block_log_std: "
                                    "model.madnas_forward_pre_GAP(init_std=1, init_std_act=1)",
            },
        },
        "structures": {},
    }
    for name, item in structures().items():
        how = item["how"]
        if "walk" in item:
            step, s = walk(*item["walk"])
            how += f" (step {step})"
        else:
            s = item["structure"]
        torch.manual_seed(0)
        model = CnnNet(structure_info=copy.deepcopy(s), no_create=False)
        info = ComputeMadnasScore(image_size=RES, multi_block_ratio=WEIGHTS)(model)
        shortcuts = {"projection": 0, "avg_pool": 0, "none": 0}
        for blk in model.block_list:
            for unit in getattr(blk, "block_list", []):
                shortcuts["projection"] += isinstance(getattr(unit, "residual_proj", None), ConvKXBN)
                shortcuts["avg_pool"] += isinstance(getattr(unit, "residual_downsample", None), torch.nn.AvgPool2d)
                shortcuts["none"] += getattr(unit, "is_reslink", True) is False
        out["structures"][name] = {
            "how": how,
            "structure": s,
            "flops_480": float(model.get_flops(RES)),
            "params": float(model.get_model_size()),
            "layers": int(model.get_layers()),
            "module_params": int(sum(p.numel() for p in model.parameters())),
            "shortcuts": shortcuts,
            "entropy_analytic": {
                "score": float(info["avg_nas_score"]),
                "stage_scores_weighted": [float(v) for v in info["nas_score_list"]],
                "block_log_std": [float(v) for v in model.madnas_forward_pre_GAP(init_std=1, init_std_act=1)],
            },
            "param_shapes": [list(p.shape) for p in model.parameters()],
        }
        r = out["structures"][name]
        print(f"{name}: {r['flops_480'] / 1e9:.4f} GFLOPs, {r['params'] / 1e6:.4f} M params, {r['layers']} layers, "
              f"entropy-analytic {r['entropy_analytic']['score']:.4f}, shortcuts {shortcuts}")
    args.out.write_text(_dumps(out) + "\n")


def _dumps(doc: Any) -> str:
    """JSON with one line per block and per parameter shape (readable diffs)."""
    inline: dict[str, str] = {}

    def leaf(x: Any) -> Any:
        if isinstance(x, dict) and all(not isinstance(v, (dict, list)) for v in x.values()) and "class" in x:
            key = f"@@{len(inline)}@@"
            inline[key] = json.dumps(x)
            return key
        if isinstance(x, list) and all(isinstance(v, (int, float)) for v in x):
            key = f"@@{len(inline)}@@"
            inline[key] = json.dumps(x)
            return key
        if isinstance(x, dict):
            return {k: leaf(v) for k, v in x.items()}
        if isinstance(x, list):
            return [leaf(v) for v in x]
        return x

    text = json.dumps(leaf(doc), indent=1)
    for key, val in inline.items():
        text = text.replace(f'"{key}"', val)
    return text

if __name__ == "__main__":
    main()

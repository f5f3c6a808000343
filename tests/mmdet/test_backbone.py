"""ZenNASBackbone: shapes and strides from data, Pretrained init, freezing, structure forms, registry."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import zennas.mmdet
from zennas.blocks.backbone import stages
from zennas.errors import FormatError, SpecError
from zennas.mmdet.backbone import ZenNASBackbone, config_blocks, to_structure
from zennas.space import get_space, space_names

MODELS = pytest.importorskip("mmdet.registry").MODELS
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TINY = [
    {"type": "ConvKXBNRELU", "in": 3, "out": 8, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "SuperResK1KXK1", "in": 8, "out": 16, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 8},
    {"type": "SuperResK1KXK1", "in": 16, "out": 24, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 8},
    {"type": "SuperResK1KXK1", "in": 24, "out": 32, "stride": 2, "kernel": 3, "layers": 2, "bottleneck": 16},
    {"type": "SuperResK1KXK1", "in": 32, "out": 48, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 16},
]


@pytest.mark.parametrize("space", space_names())
def test_shipped_space_start_shapes_and_strides(space: str) -> None:
    start = get_space(space).start
    m = MODELS.build(dict(type="ZenNASBackbone", structure=[b.to_dict() for b in start.blocks]))
    assert isinstance(m, ZenNASBackbone)
    st = stages(start)
    assert m.out_indices == (len(st) - 3, len(st) - 2, len(st) - 1)  # C3, C4, C5
    assert m.out_strides == (8, 16, 32)
    assert m.out_channels == tuple(st[i].channels for i in m.out_indices)
    assert isinstance(m.out_channels, tuple) and isinstance(m.out_strides, tuple)
    m.eval()
    with torch.no_grad():
        outs = m(torch.randn(2, 3, 128, 96))
    assert isinstance(outs, tuple) and len(outs) == 3
    for x, c, s in zip(outs, m.out_channels, m.out_strides, strict=True):
        assert tuple(x.shape) == (2, c, 128 // s, 96 // s)


def test_out_indices_c2_to_c5() -> None:
    m = ZenNASBackbone(TINY, out_indices=(1, 2, 3, 4))
    assert m.out_strides == (4, 8, 16, 32)
    assert m.out_channels == (16, 24, 32, 48)
    outs = m.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 16, 16), (24, 8, 8), (32, 4, 4), (48, 2, 2)]


def test_bad_out_indices_and_frozen_stages_name_the_field() -> None:
    with pytest.raises(SpecError) as e:
        ZenNASBackbone(TINY, out_indices=(3, 5))
    assert e.value.field == "out_indices"
    with pytest.raises(SpecError) as e:
        ZenNASBackbone(TINY, frozen_stages=5)
    assert e.value.field == "frozen_stages"


def _randomize(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)


def test_init_cfg_pretrained_round_trip(tmp_path: Path) -> None:
    src = ZenNASBackbone(TINY)
    _randomize(src, 1)
    ckpt = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), ckpt)

    dst = MODELS.build(dict(type="ZenNASBackbone", structure=TINY,
                            init_cfg=dict(type="Pretrained", checkpoint=str(ckpt))))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    dst.init_weights()
    after = dst.state_dict()
    assert after.keys() == src.state_dict().keys()
    for k, v in src.state_dict().items():
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(before[k], after[k]) for k in after)


def test_default_init_is_kaiming_and_keys_match_zennas_backbone() -> None:
    from zennas.blocks import build_backbone

    m = ZenNASBackbone(TINY)
    m.init_weights()
    plain = build_backbone(to_structure(TINY))
    assert m.state_dict().keys() == plain.state_dict().keys()  # a zennas state dict loads as is


def test_frozen_stages_freeze_params_and_bn() -> None:
    m = ZenNASBackbone(TINY, frozen_stages=1)  # stem (C1) and C2's block
    st = m.stages
    n_frozen = st[1].end_block + 1
    assert n_frozen == 2
    m.train()
    for i, block in enumerate(m.blocks):
        params = list(block.parameters())
        if i < n_frozen:
            assert all(not p.requires_grad for p in params)
            assert not block.training
        else:
            assert all(p.requires_grad for p in params)
            assert block.training
    frozen_bn = next(mod for mod in m.blocks[0].modules() if isinstance(mod, nn.BatchNorm2d))
    free_bn = next(mod for mod in m.blocks[2].modules() if isinstance(mod, nn.BatchNorm2d))
    frozen_mean, free_mean = frozen_bn.running_mean.clone(), free_bn.running_mean.clone()
    out = m(torch.randn(2, 3, 64, 64) * 3 + 1)
    sum(o.sum() for o in out).backward()
    assert torch.equal(frozen_bn.running_mean, frozen_mean)  # eval-mode BN: stats untouched
    assert not torch.equal(free_bn.running_mean, free_mean)
    assert all(p.grad is None for p in m.blocks[0].parameters())


def test_no_freeze_and_norm_eval() -> None:
    m = ZenNASBackbone(TINY, frozen_stages=-1, norm_eval=True).train()
    assert all(p.requires_grad for p in m.parameters())
    bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    assert m.blocks[0].training


def test_structure_forms(tmp_path: Path) -> None:
    ref = ZenNASBackbone(TINY)
    doc = tmp_path / "structure.json"
    doc.write_text(json.dumps({"format": "zennas.structure", "version": 1, "blocks": TINY}))
    for form in (str(doc), doc, {"blocks": TINY}, json.dumps(TINY), config_blocks(TINY),
                 to_structure(TINY), tuple(TINY)):
        m = MODELS.build(dict(type="ZenNASBackbone", structure=form))
        assert m.structure == ref.structure, form
    assert all("in" not in b and "in_channels" in b for b in config_blocks(TINY))


def test_structure_tinynas_file_and_zennas_string() -> None:
    m = ZenNASBackbone(str(EXAMPLES / "maedet_s.txt"))
    assert m.out_strides == (8, 16, 32) and m.out_channels == (272, 1024, 2048)
    text = "SuperConvK3BNRELU(3,8,2,1)SuperResK1K3K1(8,16,2,8,1)SuperResK1K3K1(16,24,2,8,1)" \
           "SuperResK1K3K1(24,32,2,16,1)SuperResK1K3K1(32,48,2,16,1)"
    assert ZenNASBackbone(text).out_channels == (24, 32, 48)


def test_missing_structure_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as e:
        ZenNASBackbone(str(tmp_path / "nope.json"))
    assert e.value.field == "structure"


def test_registered_and_reimport_is_fine() -> None:
    from zennas.mmdet.gfpn import GiraffeNeck

    assert MODELS.get("ZenNASBackbone") is ZenNASBackbone
    assert MODELS.get("GiraffeNeck") is GiraffeNeck
    importlib.reload(zennas.mmdet)  # re-running the registration does not fail
    assert MODELS.get("ZenNASBackbone").__name__ == "ZenNASBackbone"

    class ZenNASBackboneImpostor(nn.Module):
        pass

    ZenNASBackboneImpostor.__name__ = "ZenNASBackbone"
    with pytest.raises(KeyError):
        zennas.mmdet._register(ZenNASBackboneImpostor)


def test_import_zennas_does_not_import_mmdet() -> None:
    code = (
        "import sys, zennas, zennas.cli, zennas._cli_mmdet; "
        "zennas.cli._register_optional_commands(); "
        "bad = [m for m in ('mmdet', 'mmengine', 'mmcv', 'zennas.mmdet') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


REFERENCE_COUNTS = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "reference_counts.json").read_text())["structures"]


@pytest.mark.parametrize("name", ["k1kxk1_in_eq_out", "k1dwk1_in_eq_out", "maedet_search_winner_old_counts"])
def test_mmdet_backbone_and_export_build_the_reference_network(name: str) -> None:
    """The MMDetection backbone and the export module hold TinyNAS's parameter tensors, in its order
    (TinyNAS's CnnNet, tests/data/reference_counts.json), shortcut projections included."""
    from zennas.mmdet.export import build_export_module

    fx = REFERENCE_COUNTS[name]
    with torch.device("meta"):
        det = ZenNASBackbone(fx["structure"])
        exp = build_export_module(fx["structure"])
    for m in (det, exp):
        assert [list(p.shape) for p in m.parameters()] == fx["param_shapes"]

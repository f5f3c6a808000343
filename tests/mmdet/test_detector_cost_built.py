"""Analytic detector costs (zennas.detector.cost) against the mmdet models built from generated configs.

Every term is held against what the built module does on a real forward pass: convolution (and fc)
multiply-accumulates from ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC),
the element operations of the convention (norms 2/element, activations 1/element, max pooling k^2 per
output element, additions 1/element) from a dispatch-level counter, and parameters from the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from op_count import count, n_params
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zennas.detector import DetectorSettings, detector_costs
from zennas.detector.cost import backbone_conv_macs, faster_rcnn_head_cost
from zennas.mmdet.configs import make_config
from zennas.space import Block, Structure, get_space

mmengine_config = pytest.importorskip("mmengine.config")
MODELS = pytest.importorskip("mmdet.registry").MODELS

START = get_space("giraffe-s2d").start  # S2D chain, C1..C5 at strides 2..32
K1KXK1 = Structure((  # bottleneck blocks (projection shortcuts, stride-2 average pools), C2 = 4
    Block("ConvKXBNRELU", 3, 16, 2, 3),
    Block("SuperResK1KXK1", 16, 32, 2, 3, 1, 8),
    Block("SuperResK1KXK1", 32, 48, 2, 3, 2, 16),
    Block("SuperResK1KXK1", 48, 64, 2, 5, 1, 16),
    Block("SuperResK1KXK1", 64, 96, 2, 3, 1, 24),
))
CLASSES = ("cat", "dog", "cow")


@pytest.fixture(scope="module", autouse=True)
def _mmdet_modules() -> None:
    from mmdet.utils import register_all_modules

    register_all_modules()


def build(tmp_path: Path, structure: Structure, s: DetectorSettings) -> nn.Module:
    text = make_config(structure, detector=s.detector, neck=s.neck, gfpn_depth=s.gfpn_depth,
                       gfpn_width=s.gfpn_width, neck_channels=s.neck_channels, classes=CLASSES,
                       data_root=str(tmp_path / "data"))
    path = tmp_path / "config.py"
    path.write_text(text)
    model = MODELS.build(mmengine_config.Config.fromfile(str(path)).model)
    model.init_weights()
    return model.eval()


# (detector, neck, gfpn depth, gfpn width, neck channels, structure): widths chosen so that some GFPN
# output nodes are 1x1 conv + norm (inner 128 != 64) and some the identity (inner 64 == 64).
CASES = [
    ("gfl", "gfpn", 2, 0.5, 64, "s2d"),
    ("gfl", "gfpn", 3, 0.25, 64, "k1kxk1"),
    ("gfl", "gfpn", 7, 0.25, 32, "s2d"),
    ("gfl", "fpn", 2, 0.5, 64, "k1kxk1"),
    ("atss", "gfpn", 2, 0.5, 64, "k1kxk1"),
    ("atss", "gfpn", 3, 0.5, 32, "s2d"),
    ("atss", "gfpn", 7, 0.25, 64, "k1kxk1"),
    ("atss", "fpn", 2, 0.5, 64, "s2d"),
    ("retinanet", "gfpn", 2, 0.5, 48, "s2d"),
    ("retinanet", "gfpn", 3, 0.5, 64, "k1kxk1"),
    ("retinanet", "gfpn", 7, 0.25, 32, "s2d"),
    ("retinanet", "fpn", 2, 0.5, 64, "k1kxk1"),
]
SIZES = [(128, 128), (128, 256), (256, 128)]  # H x W, square and non-square (multiples of 128: P7 exact)
PARAMS = [(*case, *SIZES[i % len(SIZES)]) for i, case in enumerate(CASES)]  # every detector meets every size


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("detector", "neck", "depth", "width", "channels", "body", "h", "w"), PARAMS)
def test_every_term_matches_the_built_model(
    tmp_path: Path, detector: str, neck: str, depth: int, width: float, channels: int, body: str, h: int, w: int
) -> None:
    structure = START if body == "s2d" else K1KXK1
    s = DetectorSettings(detector=detector, neck=neck, gfpn_depth=depth, gfpn_width=width,
                         neck_channels=channels, num_classes=len(CLASSES))
    model = build(tmp_path, structure, s)
    c = detector_costs(structure, s, h, w)
    x = torch.randn(1, 3, h, w)

    b_macs, _, feats = count(model.backbone, x)
    assert c.backbone.conv_macs == b_macs
    assert c.backbone.params == n_params(model.backbone)

    n_macs, n_ops, outs = count(model.neck, feats)
    assert c.neck.conv_macs == n_macs
    assert c.neck.flops == pytest.approx(n_macs + n_ops, rel=1e-12)
    assert c.neck.params == n_params(model.neck)
    assert [tuple(o.shape[-2:]) for o in outs] == [(h // 2**lv, w // 2**lv) for lv in s.out_levels]

    h_macs, h_ops, _ = count(model.bbox_head, outs)
    assert c.head.conv_macs == h_macs
    assert c.head.flops == pytest.approx(h_macs + h_ops, rel=1e-12)
    assert c.head.params == n_params(model.bbox_head)

    # the whole detector: the parameters of the whole model, one forward of the raw network (not repeated
    # for the deep necks, to keep the test fast: the terms above are the same forward in parts)
    assert c.total.params == n_params(model)
    if depth <= 3:
        all_macs, _, _ = count(lambda t: model(t, mode="tensor"), x)
        assert c.total.conv_macs == pytest.approx(all_macs, rel=1e-12)
    assert c.total.flops == pytest.approx(c.backbone.flops + n_macs + n_ops + h_macs + h_ops, rel=1e-12)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("neck", ["gfpn", "fpn"])
def test_faster_rcnn_rpn_and_per_roi_head(tmp_path: Path, neck: str) -> None:
    s = DetectorSettings(detector="faster-rcnn", neck=neck, gfpn_depth=2, gfpn_width=0.5, neck_channels=64,
                         num_classes=len(CLASSES))
    model = build(tmp_path, START, s)
    h, w = 128, 256
    c = detector_costs(START, s, h, w, rois=7)
    x = torch.randn(1, 3, h, w)
    _, _, feats = count(model.backbone, x)
    n_macs, n_ops, outs = count(model.neck, feats)
    assert c.neck.conv_macs == n_macs and c.neck.flops == pytest.approx(n_macs + n_ops, rel=1e-12)
    assert c.neck.params == n_params(model.neck)
    assert [tuple(o.shape[-2:]) for o in outs] == [(h // 2**lv, w // 2**lv) for lv in s.out_levels]

    rpn_macs, rpn_ops, _ = count(model.rpn_head, outs)
    rois = torch.tensor([[0, 0.0, 0.0, 40.0, 60.0]] * 7)  # 7 RoIs of image 0 (batch index, x1, y1, x2, y2)
    roi_macs, roi_ops, _ = count(lambda f, r: model.roi_head._bbox_forward(f, r), outs[:4], rois)
    assert c.head.conv_macs == rpn_macs + roi_macs
    assert c.head.flops == pytest.approx(rpn_macs + rpn_ops + roi_macs + roi_ops, rel=1e-12)
    assert c.head.params == n_params(model.rpn_head) + n_params(model.roi_head)
    assert c.total.params == n_params(model)
    one = faster_rcnn_head_cost(channels=64, num_classes=3, levels=s.out_levels, height=h, width_px=w, rois=1)
    assert c.head.conv_macs - one.conv_macs == pytest.approx(6 * (roi_macs / 7), rel=1e-12)  # linear in RoIs


def test_backbone_conv_macs_of_a_depthwise_structure() -> None:
    dw = Structure((
        Block("ConvKXBNRELU", 3, 16, 2, 3),
        Block("SuperResK1DWK1", 16, 24, 2, 5, 2, 48),
        Block("SuperResK1DWK1", 24, 24, 1, 3, 1, 72),
    ))
    from zennas.blocks import build_backbone

    m = build_backbone(dw).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(1, 3, 64, 96))
    assert backbone_conv_macs(dw, 64, 96) == fc.get_total_flops() / 2

"""``zennas costs``: FLOPs, params and conv MACs of the whole detector around a structure.

Analytic (no model is built, no mmdet needed); the detector options and their defaults are those of
``zennas export-mmdet`` (:mod:`zennas._cli_detector_options`), so both describe the same network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from zennas._cli_detector_options import (
    D,
    DetectorOpt,
    FileGfpnDepthOpt,
    FileGfpnWidthOpt,
    FileNeckOpt,
    NeckChannelsOpt,
    NumClassesOpt,
)

DEFAULT_SCALE = (1333, 800)  # (width, height): export-mmdet's default --img-scale, the largest resized image


def register(app: typer.Typer) -> None:
    app.command(name="costs")(costs)


def costs(
    structure: Annotated[Path, typer.Argument(help="structure file: zennas JSON, TinyNAS list or ZenNAS string")],
    detector: DetectorOpt = D.detector,
    neck: FileNeckOpt = None,
    gfpn_depth: FileGfpnDepthOpt = None,
    gfpn_width: FileGfpnWidthOpt = None,
    num_classes: NumClassesOpt = None,
    neck_channels: NeckChannelsOpt = D.neck_channels,
    resolution: Annotated[int | None, typer.Option(help="square input size")] = None,
    height: Annotated[int | None, typer.Option(help=f"input height (default {DEFAULT_SCALE[1]})")] = None,
    width: Annotated[int | None, typer.Option(help=f"input width (default {DEFAULT_SCALE[0]})")] = None,
    rois: Annotated[int, typer.Option(help="faster-rcnn: RoIs per image the box head runs on")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """FLOPs (MACs + norm/activation ops), params and conv MACs of backbone, neck, head and total.

    The neck is the structure file's own when it carries one (as for export-mmdet)."""
    from zennas.detector import DetectorSettings, detector_costs
    from zennas.detector.settings import resolve_neck
    from zennas.space import load_structure

    s = load_structure(structure)
    neck, gfpn_depth, gfpn_width = resolve_neck(s.neck, neck=neck, gfpn_depth=gfpn_depth, gfpn_width=gfpn_width)

    default_h, default_w = (DEFAULT_SCALE[1], DEFAULT_SCALE[0]) if resolution is None else (resolution, resolution)
    h = default_h if height is None else height
    w = (default_w if height is None else h) if width is None else width
    settings = DetectorSettings(
        detector=detector, neck=neck, gfpn_depth=gfpn_depth, gfpn_width=float(gfpn_width),
        neck_channels=neck_channels, num_classes=D.num_classes if num_classes is None else num_classes,
    )
    if isinstance(rois, bool) or rois < 1:
        from zennas.errors import SpecError

        raise SpecError(f"rois must be an integer >= 1, got {rois!r}", field="rois")
    c = detector_costs(s, settings, h, w, rois=rois)
    out = c.to_dict()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    neck_desc = f"GFPN depth {gfpn_depth} width {gfpn_width}" if neck == "gfpn" else "FPN"
    typer.echo(f"{detector} + {neck_desc}, {settings.num_classes} classes, at {h}x{w} (H x W)")
    typer.echo("FLOPs = MACs + norm/activation element ops (GroupNorm counted like BN); conv MACs alone beside")
    for name in ("backbone", "neck", "head", "total"):
        t = out[name]
        assert isinstance(t, dict)
        typer.echo(
            f"  {name:<8} {t['flops'] / 1e9:10.3f} GFLOPs  {t['conv_macs'] / 1e9:10.3f} G conv MACs  "
            f"{t['params'] / 1e6:9.3f} M params"
        )

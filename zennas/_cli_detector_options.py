"""The detector options of the command line, defined once: ``export-mmdet``, ``costs`` and ``search``
take these, with the defaults of :class:`zennas.detector.DetectorSettings`, so they always describe
the same network."""

from __future__ import annotations

from typing import Annotated

import typer

from zennas.detector.settings import DEFAULT_DETECTOR

D = DEFAULT_DETECTOR  # the defaults, one place

DetectorOpt = Annotated[str, typer.Option("--detector", help="gfl | atss | retinanet | faster-rcnn")]
NeckOpt = Annotated[str, typer.Option("--neck", help="gfpn (GiraffeDet) | fpn")]
GfpnDepthOpt = Annotated[int, typer.Option("--gfpn-depth", help="GFPN depth d (2d - 1 fusion layers)")]
GfpnWidthOpt = Annotated[float, typer.Option("--gfpn-width", help="GFPN width (fusion nodes are int(256 * width) wide)")]
NeckChannelsOpt = Annotated[int, typer.Option("--neck-channels", help="neck output channels = head channels")]
NumClassesOpt = Annotated[
    int | None, typer.Option("--num-classes", help=f"number of classes (default: the class names' count, or {D.num_classes})")
]

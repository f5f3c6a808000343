"""The detector options of the command line, defined once: ``export-mmdet``, ``costs`` and ``search``
take these, with the defaults of :class:`zennas.detector.DetectorSettings`, so they always describe
the same network. (``search`` takes them as optional: given, or with ``--budget-scope detector``,
they describe the detector whose neck and head the budgets count.)"""

from __future__ import annotations

from typing import Annotated

import typer

from zennas.detector.settings import DEFAULT_DETECTOR

D = DEFAULT_DETECTOR  # the defaults, one place

_HELP = {
    "detector": "gfl | atss | retinanet | faster-rcnn",
    "neck": "gfpn (GiraffeDet) | fpn",
    "gfpn_depth": "GFPN depth d (2d - 1 fusion layers)",
    "gfpn_width": "GFPN width (fusion nodes are int(256 * width) wide)",
    "file_neck": f"(default: the structure file's neck, else {D.neck}; a value contradicting the file's is an error)",
    "neck_channels": "neck output channels = head channels",
    "num_classes": f"number of classes (default: the class names' count, or {D.num_classes})",
}

DetectorOpt = Annotated[str, typer.Option("--detector", help=_HELP["detector"])]
NeckChannelsOpt = Annotated[int, typer.Option("--neck-channels", help=_HELP["neck_channels"])]
NumClassesOpt = Annotated[int | None, typer.Option("--num-classes", help=_HELP["num_classes"])]

# the neck options of the commands that read a structure file (export-mmdet, costs): optional, since a
# co-search's structure file carries its neck (None: the file's neck, else DetectorSettings' default;
# zennas.detector.settings.resolve_neck is the rule)
FileNeckOpt = Annotated[str | None, typer.Option("--neck", help=f"{_HELP['neck']} {_HELP['file_neck']}")]
FileGfpnDepthOpt = Annotated[int | None, typer.Option(
    "--gfpn-depth", help=f"{_HELP['gfpn_depth']} (default: the structure file's neck, else {D.gfpn_depth})")]
FileGfpnWidthOpt = Annotated[float | None, typer.Option(
    "--gfpn-width", help=f"{_HELP['gfpn_width']} (default: the structure file's neck, else {D.gfpn_width})")]

# the same options, optional (None: DetectorSettings' default), for `search`
MaybeDetectorOpt = Annotated[str | None, typer.Option("--detector", help=_HELP["detector"])]
MaybeNeckOpt = Annotated[str | None, typer.Option("--neck", help=_HELP["neck"])]
MaybeGfpnDepthOpt = Annotated[int | None, typer.Option("--gfpn-depth", help=_HELP["gfpn_depth"])]
MaybeGfpnWidthOpt = Annotated[float | None, typer.Option("--gfpn-width", help=_HELP["gfpn_width"])]
MaybeNeckChannelsOpt = Annotated[int | None, typer.Option("--neck-channels", help=_HELP["neck_channels"])]
BudgetScopeOpt = Annotated[
    str, typer.Option("--budget-scope", help="what the FLOPs/params budgets count: backbone | detector (+ neck + head)")
]

"""``zennas export-onnx``, ``zennas export-mmdet`` and ``zennas train``: the MMDetection plug-in's commands.

mmdet, mmengine, onnx (and torch) are imported inside the commands, so ``zennas --help`` stays fast.
Bad input raises a :class:`zennas.errors.ZenNASError` subclass naming the field: exit code 2.
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
from zennas.errors import SpecError


def register(app: typer.Typer) -> None:
    app.command(name="export-onnx")(export_onnx)
    app.command(name="export-mmdet")(export_mmdet)
    app.command(
        name="train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    )(train)


def _int_list(text: str | None, field: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise SpecError(f"{field.replace('_', '-')} must be comma-separated integers, got {text!r}", field=field) from None


def _img_scale(text: str) -> tuple[int, int]:
    parts = _int_list(text.lower().replace("x", ","), "img_scale") or []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise SpecError(f"img-scale must be WIDTH,HEIGHT or one size, got {text!r}", field="img_scale")
    return parts[0], parts[1]


def export_onnx(
    structure: Annotated[Path, typer.Argument(
        help="structure file (the backbone: zennas JSON, TinyNAS list or ZenNAS string) or a generated .py "
             "config (the whole detector)")],
    out: Annotated[Path, typer.Option("--out", help="output file: .onnx, or .pt for TorchScript")],
    resolution: Annotated[int | None, typer.Option(help="square input size (default 480)")] = None,
    height: Annotated[int | None, typer.Option(help="input height (with --width) instead of --resolution")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="write TorchScript (torch.jit.trace) instead of ONNX")] = False,
    out_indices: Annotated[str | None, typer.Option(help="0-based stages to output, e.g. 1,2,3,4 (default: last three)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="trained weights: a backbone state dict or a detector checkpoint")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
    check: Annotated[bool, typer.Option("--check", help="a .py config: compare ONNX Runtime with PyTorch, print both latencies")] = False,
) -> None:
    """Export a backbone (structure file) or a whole detector (.py config) to ONNX, checked with onnx.checker.

    A backbone outputs C3..C5 by default (or TorchScript with .pt). A detector config exports backbone + neck +
    head, raw outputs (no NMS), input 1x3xHxW from the config's image scale padded to its pad_size_divisor."""
    if structure.suffix == ".py":
        _export_detector(structure, out, resolution, height, width, checkpoint, opset, check)
        return
    if check:
        raise SpecError("--check applies to a detector config (.py), not to a backbone structure", field="check")
    from zennas.mmdet.export import export_onnx as to_onnx
    from zennas.mmdet.export import export_torchscript

    h = height or resolution or 480
    w = width or resolution or h
    idx = _int_list(out_indices, "out_indices")
    if torchscript or out.suffix == ".pt":
        r = export_torchscript(structure, out, height=h, width=w, out_indices=idx, checkpoint=checkpoint)
    else:
        r = to_onnx(structure, out, height=h, width=w, out_indices=idx, checkpoint=checkpoint, opset=opset)
    outs = ", ".join(f"{n} {tuple(s)}" for n, s in zip(r.output_names, r.output_shapes, strict=True))
    typer.echo(f"wrote {r.format} {r.path}: input image {tuple(r.input_shape)} -> {outs}")


def _export_detector(config: Path, out: Path, resolution: int | None, height: int | None, width: int | None,
                     checkpoint: Path | None, opset: int, check: bool) -> None:
    from zennas.mmdet.detector_export import check_parity, export_detector_onnx

    if out.suffix != ".onnx":
        raise SpecError(f"out must be an .onnx file for a detector config, got {str(out)!r}", field="out")
    h = height if height is not None else resolution
    w = width if width is not None else (resolution if resolution is not None else height)
    r, raw, _ = export_detector_onnx(config, out, height=h, width=w, checkpoint=checkpoint, opset=opset)
    typer.echo(f"wrote onnx {r.path}: input image {r.input_shape} -> {len(r.output_names)} outputs "
               f"({', '.join(f'{n} {s}' for n, s in zip(r.output_names, r.output_shapes, strict=True))})")
    if not check:
        return
    rep = check_parity(r.path, raw, height=r.input_shape[2], width=r.input_shape[3])
    typer.echo(f"parity: max abs diff {rep.max_abs_diff:.3g}, {rep.relative:.3g} of the output scale "
               f"(worst {rep.worst_output}; tolerance {rep.tolerance:g}): {'ok' if rep.ok else 'FAILED'}")
    typer.echo(f"latency (median, 1 image): pytorch {rep.torch_ms:.1f} ms, onnxruntime {rep.onnx_ms:.1f} ms")
    if not rep.ok:
        raise typer.Exit(1)


def export_mmdet(
    structure: Annotated[Path, typer.Argument(help="structure file: zennas JSON, TinyNAS list or ZenNAS string")],
    detector: DetectorOpt = D.detector,
    neck: FileNeckOpt = None,
    gfpn_depth: FileGfpnDepthOpt = None,
    gfpn_width: FileGfpnWidthOpt = None,
    num_classes: NumClassesOpt = None,
    classes: Annotated[str | None, typer.Option(help="class names a,b,c (default: read from the train annotation file)")] = None,
    data_root: Annotated[str, typer.Option(help="dataset root in COCO layout")] = "data/coco/",
    train_ann: Annotated[str, typer.Option(help="train annotations, relative to --data-root")] = "annotations/instances_train2017.json",
    train_img: Annotated[str, typer.Option(help="train image folder, relative to --data-root")] = "train2017/",
    val_ann: Annotated[str, typer.Option(help="val annotations, relative to --data-root")] = "annotations/instances_val2017.json",
    val_img: Annotated[str, typer.Option(help="val image folder, relative to --data-root")] = "val2017/",
    max_epochs: Annotated[int | None, typer.Option(help="training epochs (default 12; from scratch wants more)")] = None,
    img_scale: Annotated[str, typer.Option(help="Resize scale WIDTH,HEIGHT (or one size)")] = "1333,800",
    batch_size: Annotated[int, typer.Option(help="images per GPU")] = 2,
    num_workers: Annotated[int, typer.Option(help="dataloader workers per GPU")] = 2,
    neck_channels: NeckChannelsOpt = D.neck_channels,
    lr: Annotated[float | None, typer.Option(help="SGD lr at a total batch of 16 (default: the base config's)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the config here (default: stdout)")] = None,
) -> None:
    """Write a complete MMDetection 3.x config for this backbone (trained from scratch).

    The neck is the structure file's own when it carries one (a neck co-search's result does); a
    --neck/--gfpn-depth/--gfpn-width that contradicts it is an error (exit 2), the same value is fine."""
    from zennas.mmdet.configs import make_config

    text = make_config(
        structure, detector=detector, neck=neck, gfpn_depth=gfpn_depth, gfpn_width=gfpn_width,
        num_classes=num_classes, classes=classes, data_root=data_root, train_ann=train_ann,
        train_img=train_img, val_ann=val_ann, val_img=val_img, max_epochs=max_epochs,
        img_scale=_img_scale(img_scale), batch_size=batch_size, num_workers=num_workers,
        neck_channels=neck_channels, lr=lr,
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}; train with: zennas train {out}")


def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="MMDetection config (e.g. from zennas export-mmdet)")],
    work_dir: Annotated[Path | None, typer.Option(help="where logs and checkpoints go (default work_dirs/<config name>)")] = None,
    max_iters: Annotated[int | None, typer.Option(help="train N iterations instead of the config's epochs (val + checkpoint at the end)")] = None,
    cfg_options: Annotated[list[str] | None, typer.Option("--cfg-options", help="override config entries: key=value (repeatable; more key=value may follow)")] = None,
    test: Annotated[bool, typer.Option("--test", help="run the test loop after training and print its COCO metrics")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the work dir's last checkpoint")] = False,
    load_from: Annotated[Path | None, typer.Option(help="start from this checkpoint's weights")] = None,
    amp: Annotated[bool, typer.Option("--amp", help="mixed precision (GPU)")] = False,
) -> None:
    """Train a detector config with mmengine's Runner on the GPU if there is one, else the CPU."""
    from zennas.mmdet.train import train as run

    options = list(cfg_options or [])
    for extra in ctx.args:  # mmdet style: --cfg-options a=1 b=2
        if "=" not in extra:
            raise SpecError(f"unexpected argument {extra!r} (cfg-options entries are key=value)", field="cfg_options")
        options.append(extra)
    result = run(config, work_dir=work_dir, max_iters=max_iters, cfg_options=options, test=test,
                 resume=resume, load_from=load_from, amp=amp)
    typer.echo(f"work dir: {result.work_dir}")
    if result.log_dir is not None:
        typer.echo(f"logs: {result.log_dir} (losses in {result.log_dir / 'vis_data' / 'scalars.json'})")
    if result.checkpoints:
        typer.echo("checkpoints: " + ", ".join(str(p) for p in result.checkpoints))
    else:
        typer.echo("checkpoints: none written")
    if result.last_checkpoint is not None:
        typer.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.test_metrics is not None:
        metrics = {k: (float(v) if isinstance(v, (int, float)) else str(v)) for k, v in result.test_metrics.items()}
        typer.echo("test metrics: " + json.dumps(metrics))

"""Write a complete MMDetection 3.x config for a searched backbone (``zennas export-mmdet``).

The config inherits mmdet's own config of the detector (``_base_ = 'mmdet::gfl/...'``), replaces the
backbone (``_delete_=True``) by ``ZenNASBackbone`` with the structure inlined, so the file is
self-contained, replaces the neck (GFPN or FPN) and wires every channel count and stride from the
backbone's declared outputs. Training is from scratch: searched backbones have no pretrained weights.

Levels: single-stage detectors (GFL, ATSS, RetinaNet) use P3-P7 from C3..C5; Faster R-CNN uses P2-P6
from C2..C5. The backbone's stages are picked by stride (C2 = 4, C3 = 8, C4 = 16, C5 = 32).
"""

from __future__ import annotations

import json
import keyword
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zennas.detector.settings import DEFAULT_DETECTOR, pad_divisor, resolve_neck
from zennas.detector.settings import levels as detector_levels
from zennas.errors import SpecError
from zennas.space.structure import Structure

COCO_LAYOUT = {
    "train_ann": "annotations/instances_train2017.json",
    "train_img": "train2017/",
    "val_ann": "annotations/instances_val2017.json",
    "val_img": "val2017/",
}


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    base: str  # mmdet config the generated one inherits (``mmdet::`` scope)
    two_stage: bool
    head_gn: bool  # its head uses GroupNorm(32): neck channels must be a multiple of 32
    fpn_extra: str  # FPN ``add_extra_convs`` of the base config
    lr: float  # base learning rate at a total batch of 16


DETECTORS: dict[str, DetectorSpec] = {
    "gfl": DetectorSpec("gfl", "gfl/gfl_r50_fpn_1x_coco.py", False, True, "on_output", 0.01),
    "atss": DetectorSpec("atss", "atss/atss_r50_fpn_1x_coco.py", False, True, "on_output", 0.01),
    "retinanet": DetectorSpec("retinanet", "retinanet/retinanet_r50_fpn_1x_coco.py", False, False, "on_input", 0.01),
    "faster-rcnn": DetectorSpec("faster-rcnn", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", True, False, "", 0.02),
}
NECKS = ("gfpn", "fpn")


def mmdet_config_dir() -> Path:
    """The configs shipped inside the installed mmdet (what ``mmdet::`` resolves to)."""
    import mmdet

    return Path(mmdet.__file__).resolve().parent / ".mim" / "configs"


# -- rendering -------------------------------------------------------------------------------
class Raw(str):
    """A Python expression written as is (a variable of the config, e.g. ``train_pipeline``)."""

    def __repr__(self) -> str:
        return str(self)


def _is_kw(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def render(obj: Any, indent: int = 0, width: int = 100) -> str:
    """``obj`` as Python source in mmdet's config style (``dict(a=1)``), wrapped at ``width``."""
    flat = _render_flat(obj)
    if len(flat) + indent <= width or not isinstance(obj, (Mapping, list, tuple)) or not obj:
        return flat
    pad = " " * (indent + 4)
    if isinstance(obj, Mapping):
        if all(_is_kw(k) for k in obj):
            items = [f"{pad}{k}={render(v, indent + 4, width)}" for k, v in obj.items()]
            return "dict(\n" + ",\n".join(items) + ",\n" + " " * indent + ")"
        items = [f"{pad}{k!r}: {render(v, indent + 4, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + ",\n" + " " * indent + "}"
    open_, close = ("[", "]") if isinstance(obj, list) else ("(", ")")
    items = [f"{pad}{render(v, indent + 4, width)}" for v in obj]
    return open_ + "\n" + ",\n".join(items) + ",\n" + " " * indent + close


def _render_flat(obj: Any) -> str:
    if isinstance(obj, Raw):
        return str(obj)
    if isinstance(obj, Mapping):
        if all(_is_kw(k) for k in obj):
            return "dict(" + ", ".join(f"{k}={_render_flat(v)}" for k, v in obj.items()) + ")"
        return "{" + ", ".join(f"{k!r}: {_render_flat(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(_render_flat(v) for v in obj) + "]"
    if isinstance(obj, tuple):
        inner = ", ".join(_render_flat(v) for v in obj)
        return f"({inner},)" if len(obj) == 1 else f"({inner})"
    return repr(obj)


# -- checks ----------------------------------------------------------------------------------
def _positive_int(value: Any, field: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{field.replace('_', '-')} must be an integer >= {minimum}, got {value!r}", field=field)
    return value


def _img_scale(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 32 for v in value)
    ):
        raise SpecError(f"img_scale must be (width, height) ints >= 32, got {value!r}", field="img_scale")
    return int(value[0]), int(value[1])


def read_classes(ann_file: str | Path) -> tuple[str, ...]:
    """Category names of a COCO annotation file, in the file's order (CocoDataset's label order)."""
    try:
        doc = json.loads(Path(ann_file).read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read the categories of {str(ann_file)!r}: {e}", field="train_ann") from e
    cats = doc.get("categories") if isinstance(doc, dict) else None
    if not isinstance(cats, list) or not cats or not all(isinstance(c, dict) and "name" in c for c in cats):
        raise SpecError(f"{ann_file}: no 'categories' with names in this COCO annotation file", field="train_ann")
    return tuple(str(c["name"]) for c in cats)


def _resolve_classes(
    classes: Sequence[str] | None, num_classes: int | None, train_ann_path: Path
) -> tuple[tuple[str, ...] | None, int]:
    """(class names or None for COCO's own 80, number of classes)."""
    if num_classes is not None:
        _positive_int(num_classes, "num_classes")
    if classes is not None:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        names = tuple(str(c) for c in classes)
        if not names or len(set(names)) != len(names):
            raise SpecError(f"classes must be distinct non-empty names, got {classes!r}", field="classes")
    elif train_ann_path.is_file():
        names = read_classes(train_ann_path)
    elif num_classes == 80:
        return None, 80  # COCO itself: CocoDataset's own class names
    else:
        raise SpecError(
            "classes: the class names are needed (CocoDataset keeps only annotations whose category name "
            f"is listed), but {str(train_ann_path)!r} does not exist to read them from; pass --classes "
            "a,b,c or point --data-root/--train-ann at the dataset",
            field="classes",
        )
    if num_classes is not None:
        if num_classes != len(names):
            raise SpecError(
                f"num-classes is {num_classes} but there are {len(names)} class names {list(names)}",
                field="num_classes",
            )
    return names, len(names)


def _pick_stages(structure: Structure, strides: Sequence[int]) -> list[int]:
    """0-based stage indices of the stages with these strides (the last such stage of each)."""
    from zennas.blocks.backbone import stages

    st = stages(structure)
    picked = []
    for want in strides:
        idx = [i for i, s in enumerate(st) if s.stride == want]
        if not idx:
            have = ", ".join(f"{s.name}/{s.stride}" for s in st)
            raise SpecError(
                f"structure: the detector needs backbone stages of stride {list(strides)} "
                f"but this structure's stages (name/stride) are {have}",
                field="structure",
            )
        picked.append(idx[-1])
    return picked


# -- the config --------------------------------------------------------------------------------
def make_config(
    structure: Any,
    *,
    detector: str = DEFAULT_DETECTOR.detector,
    neck: str | None = None,
    num_classes: int | None = None,
    classes: Sequence[str] | str | None = None,
    data_root: str | Path = "data/coco/",
    train_ann: str = COCO_LAYOUT["train_ann"],
    train_img: str = COCO_LAYOUT["train_img"],
    val_ann: str = COCO_LAYOUT["val_ann"],
    val_img: str = COCO_LAYOUT["val_img"],
    gfpn_depth: int | None = None,
    gfpn_width: float | None = None,
    neck_channels: int = DEFAULT_DETECTOR.neck_channels,
    max_epochs: int | None = None,
    img_scale: int | Sequence[int] = (1333, 800),
    batch_size: int = 2,
    num_workers: int = 2,
    lr: float | None = None,
) -> str:
    """The text of a complete MMDetection 3.x config (write it to ``config.py``).

    Args:
        structure: the backbone (list of block dicts, structure dict, :class:`Structure` or file path).
        detector: ``gfl`` | ``atss`` | ``retinanet`` | ``faster-rcnn``.
        neck: ``gfpn`` (GiraffeDet's neck; inputs padded to a multiple of 128) | ``fpn``. ``neck``,
            ``gfpn_depth`` and ``gfpn_width`` left None come from the structure's own neck (a neck
            co-search's structure file carries the chosen one), else the defaults (GFPN depth 7, width
            0.7); one given that contradicts the structure's neck is an error
            (:func:`zennas.detector.settings.resolve_neck`).
        num_classes / classes: the dataset's classes. Names are needed because CocoDataset keeps only
            categories it knows by name: without ``classes`` they are read from the training
            annotation file when it exists; ``num_classes=80`` alone means COCO itself.
        data_root, train_ann, train_img, val_ann, val_img: COCO layout (annotation files and image
            folders relative to ``data_root`` unless absolute).
        gfpn_depth, gfpn_width: GFPN depth ``d`` (``2d - 1`` fusion layers) and width (fusion nodes
            are ``int(256 * width)`` wide).
        neck_channels: the neck's output channels, the head's input and feature channels.
        max_epochs: training epochs (default: the base config's 12); the LR steps scale with it.
        img_scale: (width, height) of the Resize in the pipelines, or one int for a square.
        batch_size, num_workers: per-GPU batch and dataloader workers.
        lr: SGD learning rate at a total batch of 16 (``auto_scale_lr`` rescales it to the real one);
            default: the base config's.
    """
    from zennas.mmdet.backbone import config_blocks, to_structure

    if detector not in DETECTORS:
        raise SpecError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}", field="detector")
    s = to_structure(structure)
    neck, gfpn_depth, gfpn_width = resolve_neck(s.neck, neck=neck, gfpn_depth=gfpn_depth, gfpn_width=gfpn_width)
    if neck not in NECKS:
        raise SpecError(f"neck must be one of {', '.join(NECKS)}, got {neck!r}", field="neck")
    spec = DETECTORS[detector]
    base_file = mmdet_config_dir() / spec.base
    if not base_file.is_file():
        raise SpecError(f"the installed mmdet has no config {spec.base!r} to inherit", field="detector")
    if neck == "gfpn":
        _positive_int(gfpn_depth, "gfpn_depth")
        if isinstance(gfpn_width, bool) or not isinstance(gfpn_width, (int, float)) or int(256 * gfpn_width) < 1:
            raise SpecError(f"gfpn-width must be a number > 0, got {gfpn_width!r}", field="gfpn_width")
    _positive_int(neck_channels, "neck_channels")
    if spec.head_gn and neck_channels % 32:
        raise SpecError(
            f"neck-channels must be a multiple of 32 for {detector} (its head uses GroupNorm with 32 groups), "
            f"got {neck_channels}",
            field="neck_channels",
        )
    if max_epochs is not None:
        _positive_int(max_epochs, "max_epochs")
    _positive_int(batch_size, "batch_size")
    _positive_int(num_workers, "num_workers", minimum=0)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise SpecError(f"lr must be a number > 0, got {lr!r}", field="lr")
    scale = _img_scale(img_scale)
    root = str(data_root)
    if not root.endswith(("/", os.sep)):
        root += "/"
    names, n_classes = _resolve_classes(classes, num_classes, Path(root) / train_ann)

    # Levels from the detector: P3-P7 on C3..C5 (single-stage), P2-P6 on C2..C5 (Faster R-CNN).
    in_levels, out_levels = detector_levels(spec.two_stage)
    out_indices = _pick_stages(s, [2**lvl for lvl in in_levels])
    from zennas.blocks.backbone import stages

    st = stages(s)
    in_channels = [st[i].channels for i in out_indices]
    strides = [2**lvl for lvl in out_levels]
    pad = pad_divisor(neck)

    model: dict[str, Any] = {
        "data_preprocessor": dict(pad_size_divisor=pad),
        "backbone": dict(
            _delete_=True,
            type="ZenNASBackbone",
            out_indices=tuple(out_indices),
            frozen_stages=-1,
            norm_eval=False,
            init_cfg=None,
            structure=config_blocks(s),
        ),
    }
    if neck == "gfpn":
        model["neck"] = dict(
            _delete_=True,
            type="GiraffeNeck",
            in_channels=in_channels,
            out_channels=neck_channels,
            depth=gfpn_depth,
            width=float(gfpn_width),
            levels=out_levels,
            in_levels=in_levels,
            norm_cfg=dict(type="BN", requires_grad=True),
        )
    else:
        fpn: dict[str, Any] = dict(
            _delete_=True, type="FPN", in_channels=in_channels, out_channels=neck_channels, start_level=0,
        )
        if spec.fpn_extra:
            fpn["add_extra_convs"] = spec.fpn_extra
        fpn["num_outs"] = 5
        model["neck"] = fpn
    if spec.two_stage:
        model["rpn_head"] = dict(
            in_channels=neck_channels, feat_channels=neck_channels, anchor_generator=dict(strides=strides)
        )
        model["roi_head"] = dict(
            bbox_roi_extractor=dict(out_channels=neck_channels, featmap_strides=strides[:4]),
            bbox_head=dict(in_channels=neck_channels, num_classes=n_classes),
        )
    else:
        model["bbox_head"] = dict(
            num_classes=n_classes,
            in_channels=neck_channels,
            feat_channels=neck_channels,
            anchor_generator=dict(strides=strides),
        )

    epochs = max_epochs or 12
    base_lr = spec.lr if lr is None else float(lr)
    backbone_desc = ", ".join(f"{st[i].name} {st[i].channels}ch/s{st[i].stride}" for i in out_indices)
    neck_desc = (
        f"GFPN depth {gfpn_depth} width {gfpn_width} ({2 * gfpn_depth - 1} fusion layers)" if neck == "gfpn" else "FPN"
    )

    def assign(name: str, value: Any) -> str:
        return f"{name} = {render(value, 0)}\n"

    out: list[str] = [
        f"# {spec.name} + {neck_desc}\n",
        f"# on a zennas backbone of {len(s.blocks)} blocks (outputs {backbone_desc}).\n",
        "# Generated by `zennas export-mmdet`; train with `zennas train <this file>` (or mmdet's tools/train.py).\n",
        "#\n",
        "# Trained FROM SCRATCH: a searched backbone has no pretrained (ImageNet) weights, so there is no\n",
        "# `init_cfg=dict(type='Pretrained')`, nothing is frozen and BN is not kept in eval mode. Like MAE-DET\n",
        "# and GiraffeDet, expect to need a longer schedule than 1x (e.g. --max-epochs 36 or more); the heads\n",
        "# keep the base config's GroupNorm where it has one (GFL, ATSS), which trains well from scratch.\n",
        "\n",
        f"_base_ = 'mmdet::{spec.base}'\n",
        "custom_imports = dict(imports=['zennas.mmdet'], allow_failed_imports=False)\n",
        "\n",
        f"# Channels and strides come from the backbone's declared outputs; levels P{out_levels[0]}-P{out_levels[-1]}.\n",
    ]
    if neck == "gfpn":
        out.append("# GFPN halves every level by pooling, so inputs are padded to a multiple of 128.\n")
    out.append(
        "# backbone.init_cfg=None means Kaiming-initialised convs; to start from a checkpoint you trained, use\n"
        "# init_cfg=dict(type='Pretrained', checkpoint='epoch_N.pth', prefix='backbone.').\n"
        "# backbone.structure: the zennas JSON blocks, with in/out spelled in_channels/out_channels.\n"
    )
    out.append(assign("model", model))
    out.append("\n# -- data (COCO layout) --\n")
    out.append(f"data_root = {root!r}\n")
    if names is not None:
        out.append("# CocoDataset keeps only the annotations whose category name is listed here (label = position).\n")
        out.append(assign("metainfo", dict(classes=names)))
    backend = Raw("backend_args")
    out.append("backend_args = None\n")
    out.append(
        assign(
            "train_pipeline",
            [
                dict(type="LoadImageFromFile", backend_args=backend),
                dict(type="LoadAnnotations", with_bbox=True),
                dict(type="Resize", scale=scale, keep_ratio=True),
                dict(type="RandomFlip", prob=0.5),
                dict(type="PackDetInputs"),
            ],
        )
    )
    out.append(
        assign(
            "test_pipeline",
            [
                dict(type="LoadImageFromFile", backend_args=backend),
                dict(type="Resize", scale=scale, keep_ratio=True),
                dict(type="LoadAnnotations", with_bbox=True),
                dict(
                    type="PackDetInputs",
                    meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
                ),
            ],
        )
    )
    meta = {"metainfo": Raw("metainfo")} if names is not None else {}
    loader_common = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    out.append(
        assign(
            "train_dataloader",
            dict(
                batch_size=batch_size,
                **loader_common,
                dataset=dict(
                    data_root=Raw("data_root"),
                    ann_file=train_ann,
                    data_prefix=dict(img=train_img),
                    **meta,
                    pipeline=Raw("train_pipeline"),
                ),
            ),
        )
    )
    out.append(
        assign(
            "val_dataloader",
            dict(
                **loader_common,
                dataset=dict(
                    data_root=Raw("data_root"),
                    ann_file=val_ann,
                    data_prefix=dict(img=val_img),
                    **meta,
                    pipeline=Raw("test_pipeline"),
                ),
            ),
        )
    )
    out.append("test_dataloader = val_dataloader\n")
    val_ann_expr = repr(val_ann) if os.path.isabs(val_ann) else f"data_root + {val_ann!r}"
    out.append(f"val_evaluator = dict(ann_file={val_ann_expr})\n")
    out.append("test_evaluator = val_evaluator\n")

    m1, m2 = max(1, round(epochs * 8 / 12)), max(1, round(epochs * 11 / 12))
    milestones = sorted({min(m1, epochs), min(m2, epochs)})
    out.append("\n# -- schedule --\n")
    out.append(assign("train_cfg", dict(max_epochs=epochs, val_interval=1)))
    out.append(
        assign(
            "param_scheduler",
            [
                dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
                dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True, milestones=milestones, gamma=0.1),
            ],
        )
    )
    out.append("# lr is for a total batch of 16; auto_scale_lr rescales it to GPUs x batch_size.\n")
    out.append("# Gradient clipping keeps the first from-scratch iterations stable.\n")
    out.append(
        assign(
            "optim_wrapper",
            dict(
                optimizer=dict(type="SGD", lr=base_lr, momentum=0.9, weight_decay=0.0001),
                clip_grad=dict(max_norm=35, norm_type=2),
            ),
        )
    )
    out.append(assign("auto_scale_lr", dict(enable=True, base_batch_size=16)))
    out.append(assign("default_hooks", dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3))))
    return "".join(out)


def write_config(path: str | Path, structure: Any, **kwargs: Any) -> Path:
    """:func:`make_config` written to ``path``; returns the path."""
    p = Path(path)
    text = make_config(structure, **kwargs)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def levels_of(config_model: Mapping[str, Any]) -> int:
    """Number of feature levels the neck of a generated config's ``model`` produces."""
    neck = config_model["neck"]
    if neck["type"] == "GiraffeNeck":
        return len(neck["levels"])
    return int(neck["num_outs"])


__all__ = ["COCO_LAYOUT", "DETECTORS", "NECKS", "levels_of", "make_config", "mmdet_config_dir", "write_config"]

"""Train (and optionally test) a detector config with mmengine's Runner (``zennas train``).

It is mmdet's ``tools/train.py`` in a function: load the config, apply ``cfg_options``, pick the work
dir, run ``Runner.from_cfg(cfg).train()`` on whatever device there is, then ``runner.test()`` if asked.
``max_iters`` turns any config into a short iteration-based run (validation and a checkpoint at the
end), for smoke tests and quick looks.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zennas.errors import SpecError


@dataclass
class TrainResult:
    work_dir: Path
    checkpoints: list[Path]  # every *.pth in the work dir, oldest first
    last_checkpoint: Path | None  # what mmengine's ``last_checkpoint`` file points at
    log_dir: Path | None  # <work_dir>/<timestamp>, holding the log and vis_data/scalars.json
    test_metrics: dict[str, Any] | None = None  # runner.test()'s metrics, e.g. coco/bbox_mAP


@contextlib.contextmanager
def trusted_torch_load() -> Iterator[None]:
    """Make ``torch.load`` default to ``weights_only=False`` for the duration of a training run.

    torch >= 2.6 loads with ``weights_only=True`` by default, but mmengine 0.10.7 calls
    ``torch.load(path, map_location=...)`` (resume, ``load_from``, ``Pretrained`` init) on its own
    checkpoints, which pickle numpy arrays, ``HistoryBuffer`` and message-hub state, so they no longer
    load. Allow-listing every global such a checkpoint may hold (``torch.serialization.add_safe_globals``)
    is brittle: the set depends on the hooks, optimizer and numpy version. Instead, only inside
    ``zennas train`` and only for calls that do not choose ``weights_only`` themselves, we restore the
    pre-2.6 default; the checkpoints are the ones the user's own config names. ``torch.load`` is put
    back when the run ends (or fails).
    """
    import torch

    original = torch.load

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = original  # type: ignore[assignment]


def parse_cfg_options(options: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (values parsed like mmdet's ``--cfg-options``)."""
    if not options:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    from mmengine.config import DictAction

    out: dict[str, Any] = {}
    for opt in options:
        key, sep, value = str(opt).partition("=")
        if not sep or not key.strip():
            raise SpecError(f"cfg-options entries must be key=value, got {opt!r}", field="cfg_options")
        out[key.strip()] = DictAction._parse_iterable(value)
    return out


def _iter_schedule(cfg: Any, max_iters: int) -> None:
    """Switch ``cfg`` to ``max_iters`` iterations: val and checkpoint at the end, LR steps scaled."""
    n = max_iters
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=n, val_interval=n)
    warmup = max(1, min(500, n // 10))
    milestones = sorted({m for m in (round(n * 8 / 12), round(n * 11 / 12)) if warmup < m < n})
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=warmup),
        dict(type="MultiStepLR", by_epoch=False, begin=0, end=n, milestones=milestones or [n], gamma=0.1),
    ]
    hooks = cfg.get("default_hooks") or {}
    checkpoint = dict(hooks.get("checkpoint") or {"type": "CheckpointHook"})
    checkpoint.update(by_epoch=False, interval=n)
    interval = max(1, min(50, n // 20))
    logger = dict(hooks.get("logger") or {"type": "LoggerHook"})
    logger["interval"] = interval
    cfg.default_hooks = {**dict(hooks), "checkpoint": checkpoint, "logger": logger}
    # Losses are logged as the mean over the window: one logging interval, so the log follows the run.
    cfg.log_processor = dict(type="LogProcessor", window_size=interval, by_epoch=False)


def load_config(config: str | Path, *, work_dir: str | Path | None = None, max_iters: int | None = None,
                cfg_options: Sequence[str] | Mapping[str, Any] | None = None) -> Any:
    """The mmengine ``Config`` that :func:`train` runs (custom imports done, options applied)."""
    from mmengine.config import Config

    path = Path(config)
    if not path.is_file():
        raise SpecError(f"config file {str(path)!r} does not exist", field="config")
    if max_iters is not None and (isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1):
        raise SpecError(f"max-iters must be an integer >= 1, got {max_iters!r}", field="max_iters")
    try:
        cfg = Config.fromfile(str(path))
    except (SyntaxError, ImportError, KeyError, TypeError, ValueError) as e:
        raise SpecError(f"cannot load config {str(path)!r}: {type(e).__name__}: {e}", field="config") from e
    if max_iters is not None:
        _iter_schedule(cfg, max_iters)
    options = parse_cfg_options(cfg_options)  # last, so they win over max_iters' logging choices
    if options:
        cfg.merge_from_dict(options)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / path.stem)  # mmdet's tools/train.py default
    return cfg


def _checkpoints(work_dir: Path) -> tuple[list[Path], Path | None]:
    ckpts = sorted(work_dir.glob("*.pth"), key=lambda p: p.stat().st_mtime)
    last_file = work_dir / "last_checkpoint"
    last = None
    if last_file.is_file():
        text = last_file.read_text().strip()
        last = Path(text) if text else None
    elif ckpts:
        last = ckpts[-1]
    return ckpts, last


def train(
    config: str | Path,
    *,
    work_dir: str | Path | None = None,
    max_iters: int | None = None,
    cfg_options: Sequence[str] | Mapping[str, Any] | None = None,
    test: bool = False,
    resume: bool | str = False,
    load_from: str | Path | None = None,
    amp: bool = False,
) -> TrainResult:
    """Train ``config``; with ``test`` run the test loop afterwards (COCO metrics in the result).

    ``resume=True`` continues from the work dir's last checkpoint (``resume='path.pth'`` from that
    file); ``load_from`` starts from a checkpoint's weights; ``amp`` trains with mixed precision
    (``AmpOptimWrapper``, on GPU).
    """
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules(init_default_scope=False)
    cfg = load_config(config, work_dir=work_dir, max_iters=max_iters, cfg_options=cfg_options)
    if load_from is not None:
        cfg.load_from = str(load_from)
    if resume:
        cfg.resume = True
        if isinstance(resume, str):
            cfg.load_from = resume
    if amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    wd = Path(cfg.work_dir)
    with trusted_torch_load():
        runner = Runner.from_cfg(cfg)
        runner.train()
        test_metrics = None
        if test:
            test_metrics = dict(runner.test() or {})
    ckpts, last = _checkpoints(wd)
    log_dir = Path(runner.log_dir) if getattr(runner, "log_dir", None) else None
    result = TrainResult(wd, ckpts, last, log_dir, test_metrics)
    if test_metrics is not None:
        (wd / "test_metrics.json").write_text(json.dumps(_jsonable(test_metrics), indent=2) + "\n")
    return result


def _jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = str(v)
    return out


__all__ = ["TrainResult", "load_config", "parse_cfg_options", "train", "trusted_torch_load"]

"""Timing ops and whole backbones in a runtime: ``onnxruntime`` (CPU execution provider) or ``torch``
eager (CPU).

Both time the modules zennas builds: an op is the same ``ConvNormAct`` / unit piece the backbone is
made of, and a backbone is :func:`zennas.build_backbone`'s module. ``onnxruntime`` runs them through the
export ``zennas export-onnx`` writes (BN folded, same opset), with all graph optimizations (so the
activation, and the residual add of ``pw_add``, are fused as they are in the whole network);
``torch`` runs them in eval mode under ``inference_mode``. Denormals are flushed to zero in both, so
freshly initialised deep networks are not slowed by tiny activations that trained ones do not have.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zennas.blocks.base import ConvNormAct, make_act
from zennas.blocks.s2d import SpaceToDepthUnit
from zennas.errors import SpecError
from zennas.latency.ops import Op, out_size
from zennas.latency.profile import RESERVED_RUNTIMES, RUNTIMES
from zennas.space.structure import Structure


@dataclass(frozen=True, slots=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


@dataclass(frozen=True, slots=True)
class NodeTime:
    """One node of a runtime's graph as it ran inside a network (:meth:`Runner.node_times`)."""

    op_type: str  # e.g. Conv (ONNX Runtime's fused node), ReorderOutput, AveragePool
    inputs: tuple[tuple[int, ...], ...]  # the shapes of its inputs (data, weights, bias, a fused sum)
    outputs: tuple[tuple[int, ...], ...]
    median_ms: float


@dataclass(frozen=True, slots=True)
class TimingSettings:
    warmup: int = 2  # untimed calls first
    min_runs: int = 5  # timed calls, at least
    max_runs: int = 50  # timed calls, at most
    min_time_s: float = 0.1  # keep timing (up to max_runs) until this much time is spent
    clock: str = "wall"  # wall: elapsed time; cpu: this thread's CPU time (1 thread only; see CLOCKS)

    def __post_init__(self) -> None:
        for f in ("warmup", "min_runs", "max_runs"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if f == "warmup" else 1):
                raise SpecError(f"{f} must be an integer >= {0 if f == 'warmup' else 1}, got {v!r}", field=f)
        if self.max_runs < self.min_runs:
            raise SpecError(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})", field="max_runs")
        if not self.min_time_s >= 0:
            raise SpecError(f"min_time_s must be >= 0, got {self.min_time_s!r}", field="min_time_s")
        if self.clock not in CLOCKS:
            raise SpecError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}", field="clock")


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ``cpu`` times the calling thread's CPU time (``time.thread_time``): with one intra-op thread both
# runtimes compute on the calling thread, so it is the latency the op would have on an idle core,
# without the time spent waiting for one. For building and checking profiles on a shared, loaded
# machine; a deployment device is timed with ``wall``.
CLOCKS = ("wall", "cpu")


class Cancelled(Exception):
    """A timing stopped part-way because its ``cancel`` check said so (a measurement no longer wanted)."""


Cancel = Callable[[], bool] | None  # asked between the steps of a timing: True stops it (Cancelled)


def _check(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled("the measurement was cancelled")


Settled = Callable[[list[float]], bool] | None  # asked after each timed call: True ends the timing early


def time_calls(fn: Callable[[], object], t: TimingSettings, cancel: Cancel = None, settled: Settled = None) -> Timing:
    """Median, p10 and p90 of timed calls of ``fn`` (ms); ``cancel`` is asked before each call,
    ``settled`` (the times so far, ms) after each."""
    for _ in range(t.warmup):
        _check(cancel)
        fn()
    times: list[float] = []
    clock = time.thread_time if t.clock == "cpu" else time.perf_counter
    wall = time.perf_counter
    end = wall() + t.min_time_s
    while len(times) < t.max_runs and (len(times) < t.min_runs or wall() < end):
        _check(cancel)
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
        if settled is not None and settled(times):
            break
    return timing_of(times)


def timing_of(times: list[float]) -> Timing:
    """Median, p10 and p90 of timed calls (ms)."""
    return Timing(statistics.median(times), _percentile(times, 0.1), _percentile(times, 0.9), len(times))


def check_runtime(name: str) -> str:
    if name in RESERVED_RUNTIMES:
        raise SpecError(f"runtime {name!r} is reserved for other workers; this build supports "
                        f"{', '.join(RUNTIMES)}", field="runtime")
    if name not in RUNTIMES:
        raise SpecError(f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r}", field="runtime")
    if name == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ModuleNotFoundError as e:
            raise SpecError(f"runtime 'onnxruntime' needs the {e.name!r} package: pip install 'zennas[search]'",
                            field="runtime") from e
    return name


# -- the modules that are timed ---------------------------------------------------------------
def op_module(op: Op) -> tuple[Any, tuple[Any, ...], list[str]]:
    """(module in eval mode, example inputs at batch 1, input names) for one op."""
    k = op.key
    cin, cout = op.channels
    x = torch.randn(1, cin, k.height, k.width, generator=torch.Generator().manual_seed(0))
    m: nn.Module
    if k.kind in ("stem", "pw", "proj", "conv"):
        m = ConvNormAct(cin, cout, kernel=k.kernel, stride=k.stride, act=k.act)
    elif k.kind == "kxk":
        m = ConvNormAct(cin, cout, kernel=k.kernel, stride=k.stride, groups=cin if k.depthwise else 1, act=k.act)
    elif k.kind == "pool":
        m = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True)  # as the bottleneck shortcut
    elif k.kind == "s2d":
        m = SpaceToDepthUnit(cin, cout)
    elif k.kind == "pw_add":
        r = torch.randn(1, cout, out_size(k.height, k.stride), out_size(k.width, k.stride),
                        generator=torch.Generator().manual_seed(1))
        return ResidualTail(cin, cout, kernel=k.kernel, stride=k.stride, act=k.act).eval(), (x, r), ["x", "residual"]
    else:  # pragma: no cover - KINDS is closed
        raise SpecError(f"unknown op kind {k.kind!r}", field="kind")
    return m.eval(), (x,), ["x"]


class ResidualTail(nn.Module):
    """A residual unit's tail: its last conv (+ BN, no activation; a bottleneck's 1x1 conv3) + the
    shortcut's output, then the unit's activation (ReLU), written as
    :class:`zennas.blocks.bottleneck.BottleneckUnit` writes it."""

    def __init__(self, cin: int, cout: int, *, kernel: int = 1, stride: int = 1, act: str = "relu") -> None:
        super().__init__()
        self.conv3 = ConvNormAct(cin, cout, kernel=kernel, stride=stride, act="none")
        self.act = make_act(act)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.act(self.conv3(x) + residual)  # (B, cout, H, W)


def _batched(inputs: tuple[Any, ...], batch: int) -> tuple[Any, ...]:
    if batch == 1:
        return inputs
    return tuple(t.repeat(batch, *([1] * (t.dim() - 1))) for t in inputs)


@contextmanager
def _flush_denormal() -> Iterator[None]:
    """Denormals flushed to zero (torch has no getter for the mode; its default, off, is restored)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class Runner:
    """Times ops and backbones in one runtime with one thread count and batch."""

    def __init__(self, runtime: str, *, threads: int = 1, batch: int = 1, opset: int | None = None) -> None:
        self.runtime = check_runtime(runtime)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SpecError(f"threads must be a positive integer, got {threads!r}", field="threads")
        self.threads, self.batch = threads, batch
        from zennas.latency.onnx_export import DEFAULT_OPSET

        self.opset = (opset or DEFAULT_OPSET) if runtime == "onnxruntime" else None

    # -- versions -------------------------------------------------------------------------
    def version(self) -> str:
        if self.runtime == "onnxruntime":
            import onnxruntime

            return f"onnxruntime {onnxruntime.__version__}"
        return f"torch {torch.__version__}"

    # -- onnxruntime ------------------------------------------------------------------------
    def _session(self, model_bytes: bytes, profile_prefix: str | None = None) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        so.log_severity_level = 3
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

    def _onnx(self, module: Any, inputs: tuple[Any, ...], names: list[str], output_names: list[str],
              cancel: Cancel = None, profile_prefix: str | None = None) -> tuple[Any, dict[str, Any]]:
        """``module`` exported as ``zennas export-onnx`` writes it and its session made: (session, feeds
        of the batched ``inputs``)."""
        from zennas.latency.onnx_export import module_onnx_bytes
        from zennas.score._torch import torch_threads

        # the export traces one forward pass: with the timing's threads, so that measuring beside a
        # search (verify.Speculator) takes no more cores than the timing itself
        _check(cancel)
        with torch_threads(self.threads):
            data = module_onnx_bytes(module, tuple(i[:1] for i in inputs), input_names=names,
                                     output_names=output_names, opset=self.opset or 17)
        _check(cancel)
        sess = self._session(data, profile_prefix)
        return sess, {n: i.numpy() for n, i in zip(names, inputs, strict=True)}

    def _prepare(self, module: Any, inputs: tuple[Any, ...], names: list[str], output_names: list[str],
                 cancel: Cancel = None) -> Callable[[], object]:
        """One call of ``module`` on ``inputs`` in the runtime, ready to time (for onnxruntime: exported,
        its session made); call it inside :meth:`calling`."""
        inputs = _batched(inputs, self.batch)
        if self.runtime == "onnxruntime":
            sess, feeds = self._onnx(module, inputs, names, output_names, cancel)
            run = sess.run
            return lambda: run(None, feeds)
        return lambda: module(*inputs)

    @contextmanager
    def calling(self) -> Iterator[None]:
        """What every timed call runs inside: torch's threads, inference mode and flushed denormals
        (onnxruntime: its session's own settings, nothing more)."""
        if self.runtime == "onnxruntime":
            yield
            return
        from zennas.score._torch import torch_threads

        with torch_threads(self.threads), torch.inference_mode(), _flush_denormal():
            yield

    def _time_module(self, module: Any, inputs: tuple[Any, ...], names: list[str], t: TimingSettings,
                     output_names: list[str], cancel: Cancel = None, settled: Settled = None) -> Timing:
        call = self._prepare(module, inputs, names, output_names, cancel)
        with self.calling():
            return time_calls(call, t, cancel, settled)

    def time_op(self, op: Op, t: TimingSettings) -> Timing:
        module, inputs, names = op_module(op)
        return self._time_module(module, inputs, names, t, ["y"])

    def prepare_op(self, op: Op) -> Callable[[], object]:
        """One call of ``op`` alone, ready to time (:func:`zennas.latency.interleave.time_rounds`)."""
        module, inputs, names = op_module(op)
        return self._prepare(module, inputs, names, ["y"])

    def prepare_structure(self, s: Structure, height: int, width: int) -> Callable[[], object]:
        """One call of the whole backbone (as :meth:`time_structure` times it), ready to time."""
        return self._prepare(*self._structure_parts(s, height, width))

    def time_empty(self, t: TimingSettings) -> Timing:
        """One call that does (almost) nothing: the runtime's per-call cost, subtracted from each op."""
        x = torch.zeros(1, 8, 8, 8)
        return self._time_module(nn.Identity(), (x,), ["x"], t, ["y"])

    def time_structure(self, s: Structure, height: int, width: int, t: TimingSettings,
                       cancel: Cancel = None, settled: Settled = None) -> Timing:
        """The whole backbone (the module :func:`zennas.build_backbone` returns, default outputs C3..C5;
        for onnxruntime, its ``zennas export-onnx`` graph). ``cancel``: asked between the steps (the
        export, the session, each run); True stops the timing with :class:`Cancelled`. ``settled``:
        asked after each timed run with the times so far; True ends the timing there."""
        module, inputs, names, outputs = self._structure_parts(s, height, width)
        return self._time_module(module, inputs, names, t, outputs, cancel, settled)

    def node_times(self, s: Structure, height: int, width: int, runs: int = 12, warmup: int = 2) -> list[NodeTime]:
        """Each node of the backbone's optimized ONNX Runtime graph as it runs inside the network: its
        kernel time (median over ``runs`` profiled runs after ``warmup``, ms), from ONNX Runtime's own
        profiler (``SessionOptions.enable_profiling``; its JSON trace is read and removed)."""
        import json
        import os
        import tempfile

        if self.runtime != "onnxruntime":
            raise SpecError("per-node times need the onnxruntime runtime", field="runtime")
        module, inputs, names, outputs = self._structure_parts(s, height, width)
        with tempfile.TemporaryDirectory(prefix="zennas-ortprof-") as d:
            sess, feeds = self._onnx(module, _batched(inputs, self.batch), names, outputs,
                                     profile_prefix=os.path.join(d, "trace"))
            for _ in range(warmup + runs):
                sess.run(None, feeds)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        per: dict[str, list[float]] = {}
        info: dict[str, dict[str, Any]] = {}
        for e in events:
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
                per.setdefault(e["name"], []).append(float(e["dur"]) / 1e3)
                info[e["name"]] = e.get("args", {})
        out = []
        for n, ts in per.items():  # the trace's order: the first run's execution order
            a = info[n]
            shapes = tuple(tuple(next(iter(x.values()))) for x in a.get("input_type_shape", []))
            outs = tuple(tuple(next(iter(x.values()))) for x in a.get("output_type_shape", []))
            out.append(NodeTime(str(a.get("op_name", "")), shapes, outs, statistics.median(ts[warmup:] or ts)))
        return out

    def _structure_parts(self, s: Structure, height: int, width: int) -> tuple[Any, tuple[Any, ...], list[str], list[str]]:
        from zennas.blocks import build_backbone

        model = build_backbone(s).eval()
        names = [model.stages[i].name.lower() for i in model.out_stages]
        x = torch.randn(1, s.in_channels, height, width, generator=torch.Generator().manual_seed(0))
        return model, (x,), ["image"], names

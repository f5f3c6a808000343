"""One evaluation task as plain data, and the function that runs it.

Ray actors (``zennas_workers``) and the in-process backend both call :meth:`TaskRunner.run`, so the
two paths give identical results. Tasks and records are plain dicts: no ``nn.Module`` or Optuna
object ever crosses a process boundary.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import statistics
import time
from typing import Any

from zennas.space.structure import Structure


class TaskRunner:
    """Holds what is worth keeping between tasks: configured scorers and reusable input tensors."""

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads
        self._scorers: dict[str, Any] = {}
        self._inputs: dict[tuple[int, ...], Any] = {}
        self._runners: dict[tuple[Any, ...], Any] = {}
        self.cancelled: Any = None  # () -> bool, asked between a timing's steps (the measuring process sets it)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

    def _scorer(self, name: str, settings: dict[str, Any]) -> Any:
        import json

        from zennas.score import make_scorer

        key = name + json.dumps(settings, sort_keys=True)
        if key not in self._scorers:
            self._scorers[key] = make_scorer(name, **settings)
        return self._scorers[key]

    def latency_ms(self, s: Structure, lat: dict[str, Any], height: int, width: int) -> float:
        import torch

        from zennas.blocks import build_backbone

        shape = (int(lat.get("batch", 1)), s.in_channels, height, width)
        x = self._inputs.get(shape)
        if x is None:
            if len(self._inputs) >= 4:  # a search uses one shape; keep the cache from growing with others
                self._inputs.clear()
            x = self._inputs[shape] = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        model = build_backbone(s).eval()
        times: list[float] = []
        from zennas.score._torch import torch_threads

        with torch_threads(int(lat.get("threads", 1))), torch.inference_mode():
            for i in range(int(lat.get("warmup", 2)) + int(lat.get("runs", 10))):
                t0 = time.perf_counter()
                model(x)
                if i >= int(lat.get("warmup", 2)):
                    times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def profile_latency(self, s: Structure, lat: dict[str, Any], height: int, width: int) -> dict[str, Any]:
        """The whole backbone timed as ``zennas profile check`` times it (the profile's runtime, threads,
        batch), with the spread and this worker's fingerprint."""
        from zennas.latency.profile import local_fingerprint
        from zennas.latency.runtimes import Runner, TimingSettings

        key = (lat["runtime"], int(lat.get("threads", 1)), int(lat.get("batch", 1)), lat.get("opset"))
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = Runner(key[0], threads=key[1], batch=key[2], opset=key[3])
        from zennas.search.verify import verdict_settled

        runs = int(lat.get("runs", 10))
        budget = lat.get("settle_at_ms")
        t = runner.time_structure(s, height, width, TimingSettings(int(lat.get("warmup", 1)), runs, runs, 0.0,
                                                                   str(lat.get("clock", "wall"))), self.cancelled,
                                  None if budget is None else lambda times: verdict_settled(times, float(budget)))
        return {"latency_ms": t.median_ms, "latency_p10_ms": t.p10_ms, "latency_p90_ms": t.p90_ms,
                "latency_runs": t.runs,
                "fingerprint": local_fingerprint(runner.runtime, runner.version()).to_dict()}

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"number": task["number"], "state": "complete", "reason": None, "score": None,
                               "latency_ms": None}
        try:
            s = Structure.from_dict({"blocks": task["structure"]})
            lat = task.get("latency")
            if lat is not None and lat.get("runtime"):  # a profile's runtime (verifying a predicted search)
                from zennas.latency.runtimes import Cancelled

                try:
                    rec.update(self.profile_latency(s, lat, task["height"], task["width"]))
                except Cancelled:  # no longer wanted (the measuring process was told so): not a failure
                    rec["state"], rec["reason"] = "cancelled", "cancelled"
            elif lat is not None:
                rec["latency_ms"] = self.latency_ms(s, lat, task["height"], task["width"])
                budget = task.get("latency_budget_ms")
                if budget is not None and rec["latency_ms"] > budget:
                    rec["state"], rec["reason"] = "rejected", "latency_ms"
            if rec["state"] == "complete" and task.get("score"):
                r = self._scorer(task["score"], dict(task.get("score_settings") or {}))(s)
                rec["score"] = r.score
        except Exception as e:  # a failed evaluation is recorded, never fatal to the search
            rec["state"], rec["reason"] = "failed", f"{type(e).__name__}: {e}"[:200]
        rec["seconds"] = time.perf_counter() - t0
        return rec


class LocalBackend:
    """Evaluates tasks in this process, in order. The reference for the Ray backend's results."""

    name = "local"

    def __init__(self, *, threads: int | None = 1) -> None:
        # threads=1 matches the Ray actors bit for bit (conv results depend on torch's thread count)
        self.runner = TaskRunner(threads=threads)

    def parallelism(self, resource: str | None = None) -> int:
        """Tasks run at once: one, in this process."""
        return 1

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for t in tasks:
            rec = self.runner.run(t)
            rec["worker"], rec["attempts"] = "driver", 1
            out.append(rec)
        return out

    def close(self) -> None:
        pass


def _warm_exporter() -> None:
    import torch

    from zennas.latency.onnx_export import module_onnx_bytes
    from zennas.score._torch import torch_threads

    with torch.no_grad(), torch_threads(1):
        module_onnx_bytes(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()),
                          (torch.zeros(1, 3, 8, 8),), input_names=["x"], output_names=["y"])


def _warm_process_main(conn: Any, threads: int | None, cancel: Any) -> None:
    """The :class:`WarmProcess` child: import the runtimes first (while the search runs), then run
    the tasks it is sent, one at a time, until it is sent ``None`` or its pipe closes. A latency
    timing stops part-way when ``cancel`` (a shared integer the parent sets) holds its task's number."""
    import importlib

    runner = TaskRunner(threads=threads)
    number = [None]
    runner.cancelled = lambda: cancel.value == number[0]
    for name in ("torch", "onnxruntime", "zennas.blocks", "zennas.latency.runtimes", "zennas.latency.onnx_export"):
        with contextlib.suppress(ImportError):  # what this process is started early for; missing: at use
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # the exporter's first call sets itself up (~1.5 s): on a tiny module
        _warm_exporter()
    conn.send({"ready": True})
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        number[0] = task["number"]
        conn.send(runner.run(task))


_NO_CANCEL = -(1 << 62)  # WarmProcess.cancel(None): no trial has this number


class WarmProcess:
    """Evaluates tasks in one spawned process that is started, and imports torch and the runtimes,
    as soon as it is created: a latency-budgeted search creates it when it starts, so that those
    imports (seconds) overlap the search instead of delaying the verification at its end. Tasks run
    one at a time, while this process only waits for them, so the timing is not disturbed.
    ``close`` ends the process (it is a daemon: it also ends with this one)."""

    name = "warm-process"

    def __init__(self, *, threads: int | None = None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._cancel = ctx.Value("q", _NO_CANCEL)  # the trial number whose timing is to stop
        self._proc = ctx.Process(target=_warm_process_main, args=(child, threads, self._cancel), daemon=True,
                                 name="zennas-verifier")
        self._proc.start()
        child.close()
        self._ready = False

    def parallelism(self, resource: str | None = None) -> int:
        return 1

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for t in tasks:
            try:
                if not self._ready:
                    self._conn.recv()  # {"ready": True}
                    self._ready = True
                self._conn.send(t)
                rec = dict(self._conn.recv())
            except (EOFError, OSError) as e:  # the process died (e.g. out of memory): a failed evaluation
                rec = {"number": t["number"], "state": "failed", "score": None, "latency_ms": None,
                       "reason": f"the measuring process ended ({type(e).__name__}, exit code {self._proc.exitcode})"}
            rec["worker"], rec["attempts"] = "verifier", 1
            out.append(rec)
        return out

    def cancel(self, number: int | None) -> None:
        """Stop the latency timing of the task of trial ``number`` if it runs or is sent next (its
        record comes back ``cancelled``); None: stop none. It holds until changed: the caller resets
        it (None) before sending that trial's task again."""
        self._cancel.value = _NO_CANCEL if number is None else int(number)

    def close(self, *, wait: float = 5.0) -> None:
        """End the process: asked to, for up to ``wait`` seconds (it finishes the task it runs), then killed."""
        if wait > 0:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            self._proc.join(timeout=wait)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._conn.close()

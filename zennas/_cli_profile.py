"""``zennas profile build | check | show``: device latency profiles from the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

profile_app = typer.Typer(help="Device latency profiles: build on the target machine, check, show.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")


def _space(space: str) -> tuple[str, dict[str, Any] | None]:
    """A shipped space name, or a space YAML file (its document travels with the build)."""
    if space.endswith((".yaml", ".yml")) or os.path.sep in space:
        from zennas.space.space import load_space_file

        doc = load_space_file(space).to_dict()
        return doc["name"], doc
    return space, None


class _Bar:
    """A rich progress bar with ETA on a terminal; a line every few seconds otherwise."""

    def __init__(self, title: str, enabled: bool) -> None:
        self.title, self.enabled = title, enabled
        self.tty = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> _Bar:
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{self.title}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=1.0, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: float, total: float, info: str, elapsed: float | None = None) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, info=info)
            return
        import time

        now = time.monotonic()
        if now - self._last >= 5.0 or done >= total:
            self._last = now
            eta = ""
            if elapsed and done > 0:
                eta = f"  ETA {max(0.0, elapsed * (total - done) / done):.0f} s"
            print(f"[{self.title}] {100 * done / max(total, 1e-9):5.1f}%  {info}{eta}", file=sys.stderr)


@profile_app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", help="profile JSON to write (kept up to date while building)")],
    runtime: Annotated[str, typer.Option(help="onnxruntime | torch")] = "onnxruntime",
    threads: Annotated[int, typer.Option(help="intra-op threads of the runtime")] = 1,
    batch: Annotated[int, typer.Option(help="batch size")] = 1,
    resolution: Annotated[int | None, typer.Option(help="square network input size (default 480)")] = None,
    height: Annotated[int | None, typer.Option(help="input height (with --width) instead of --resolution")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    space: Annotated[str, typer.Option(help="shipped space name or a space YAML file")] = "detection-k1kxk1",
    grid_ratio: Annotated[float, typer.Option(help="ratio between neighbouring channel grid points")] = 2.0,
    plan_samples: Annotated[int, typer.Option(help="random-walk structures sizing the channel ranges")] = 2000,
    calibration: Annotated[int | None, typer.Option(help="whole networks timed (and profiled) to fit the per-network terms [default: 16]")] = None,
    max_flops: Annotated[float | None, typer.Option(help="FLOPs bound of the structures the profile covers (default: the space's budget)")] = None,
    op_flops_cap: Annotated[float | None, typer.Option(help="MACs above which a cell is estimated, not timed (default: max-flops / 4)")] = None,
    min_runs: Annotated[int, typer.Option(help="timed runs per cell, at least")] = 5,
    in_network: Annotated[bool, typer.Option("--in-network/--no-in-network", help="onnxruntime: per-table in-network ratios from its profiler (helped detection-dw, hurt giraffe-s2d: see BENCHMARKS.md; check both)")] = False,
    clock: Annotated[str, typer.Option(help="wall (elapsed time) | cpu (this thread's CPU time: a shared, loaded build machine; 1 thread)")] = "wall",
    seed: Annotated[int, typer.Option(help="seed of the sampled structures")] = 0,
    resource: Annotated[str | None, typer.Option(help="build on a Ray worker that holds this Ray resource label")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (with --resource; default $RAY_ADDRESS)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the partly built profile at --out")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the profile's summary as JSON")] = False,
) -> None:
    """Build a latency profile on the machine that will run the detector (this one, or a Ray node)."""
    from zennas.latency.build import BuildSpec, build_profile
    from zennas.latency.profile import load_profile
    from zennas.latency.runtimes import check_runtime

    check_runtime(runtime)
    h = height or resolution or 480
    w = width or resolution or h
    name, doc = _space(space)
    extra = {"resource": resource} if resource else {}
    spec = BuildSpec(runtime=runtime, threads=threads, batch=batch, height=h, width=w, space=name, space_doc=doc,
                     grid_ratio=grid_ratio, plan_samples=plan_samples, seed=seed,
                     calibration=BuildSpec.calibration if calibration is None else calibration,  # one default
                     in_network=in_network,
                     max_flops=max_flops, op_flops_cap=op_flops_cap, min_runs=min_runs, max_runs=max(50, min_runs),
                     clock=clock,
                     extra=extra)
    spec.resolve_space()  # a bad space fails here, before anything is timed
    previous = None
    if resume:
        if not out.is_file():
            raise typer.BadParameter(f"{out} does not exist: nothing to resume", param_hint="--out")
        previous = load_profile(out)
    elif out.exists():
        raise typer.BadParameter(f"{out} exists; pass --resume to continue it, or choose another path",
                                 param_hint="--out")
    if resource is not None or ray_address is not None:
        profile = _build_on_ray(spec, previous, out, resource, ray_address, as_json)
    else:
        with _Bar("profile", not as_json) as bar:
            def on_progress(ev: dict[str, Any]) -> None:
                bar.update(ev["done"], ev["total"], f"{ev['cells_done']}/{ev['cells']} cells  {ev['label']}",
                           ev["elapsed_s"])

            profile = build_profile(spec, resume=previous, save=lambda p: p.save(out), progress=on_progress)
    _print_summary(profile.summary(), as_json, out)


def _build_on_ray(spec: Any, previous: Any, out: Path, resource: str | None, address: str | None,
                  quiet: bool) -> Any:
    from zennas_workers.profiles import build_profile_on_ray  # the CLI is the composition root

    from zennas.latency.profile import profile_from_dict

    with _Bar("profile", not quiet) as bar:
        def on_progress(ev: dict[str, Any]) -> None:
            bar.update(ev["done"], ev["total"], f"{ev['cells_done']}/{ev['cells']} cells  {ev['label']}",
                       ev["elapsed_s"])

        def on_save(doc: dict[str, Any]) -> None:
            profile_from_dict(doc).save(out)

        doc = build_profile_on_ray(spec, previous.to_dict() if previous is not None else None, resource=resource,
                                   address=address, progress=on_progress, save=on_save)
    p = profile_from_dict(doc)
    p.save(out)
    return p


def _print_summary(s: dict[str, Any], as_json: bool, out: Path | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    where = f" -> {out}" if out is not None else ""
    typer.echo(f"profile{where}: {s['runtime']} ({s['fingerprint']['runtime_version']}), {s['threads']} thread(s), "
               f"{s['clock']} clock, "
               f"batch {s['batch']}, {s['precision']}, {s['resolution'][0]}x{s['resolution'][1]}, space {s['space']}"
               f"{'' if s['complete'] else '  [INCOMPLETE: resume the build]'}")
    typer.echo(f"  measured on: {s['fingerprint']['cpu']} ({s['fingerprint']['cores']} CPUs), "
               f"{s['fingerprint']['system']}")
    typer.echo(f"  {s['tables']} tables ({', '.join(f'{k} {v}' for k, v in sorted(s['tables_by_kind'].items()))}); "
               f"{s['cells']} cells: {s['measured']} measured, {s['estimated']} estimated by FLOPs")
    typer.echo("  feature maps: " + ", ".join(f"{h}x{w}" for h, w in s["feature_map_sizes"])
               + (f"; channels {s['channels'][0]}..{s['channels'][1]}" if s["channels"] else ""))
    if s["overhead"]:
        typer.echo(f"  network = {s['overhead']['scale']:.4f} x sum(ops) + {s['overhead']['per_op_ms'] * 1e3:.1f} us "
                   f"x ops + {s['overhead'].get('per_mb_ms') or 0.0:+.4f} ms x MB of op activations "
                   f"+ {s['overhead']['offset_ms']:.3f} ms "
                   f"(fitted on {len(s['overhead']['calibration'])} networks); empty call "
                   f"{s['call_overhead_ms'] * 1e3:.1f} us")
        o = s["overhead"]
        if o.get("loo_error") is not None and o.get("loo_error_mb") is not None:
            from zennas.latency.fit import MEMORY_TERM_GAIN

            kept = "kept" if o.get("per_mb_ms") else f"not kept: it did not cut it by {1 - MEMORY_TERM_GAIN:.0%}"
            typer.echo(f"  fit's leave-one-out error on those networks: {100 * o['loo_error']:.1f} % without the "
                       f"memory term, {100 * o['loo_error_mb']:.1f} % with it ({kept})")
    if s.get("in_network"):
        r = s["in_network"]
        typer.echo(f"  in-network / table time, from the runtime's profiler: {r['min']:.2f} .. {r['median']:.2f} "
                   f".. {r['max']:.2f} (min, median, max over {r['tables']} tables)")
    typer.echo(f"  built in {s['build_seconds']:.1f} s; {s['checksum'][:23]}...")


@profile_app.command("show")
def show(
    profile: Annotated[Path, typer.Argument(help="profile JSON")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Print what a profile covers."""
    from zennas.latency.profile import load_profile

    _print_summary(load_profile(profile).summary(), as_json)


@profile_app.command("check")
def check(
    profile: Annotated[Path, typer.Argument(help="profile JSON")],
    structure_files: Annotated[list[Path] | None, typer.Argument(help="structure files measured first, in order")] = None,
    structures: Annotated[int, typer.Option("--structures", help="structures sampled by random walks of the space's mutator")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the sampled structures")] = 0,
    runs: Annotated[int, typer.Option(help="timed runs per structure (median), in interleaved rounds")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Predicted vs measured latency of whole backbones in the profile's runtime."""
    from zennas.errors import SpaceError, SpecError
    from zennas.latency.check import check_profile
    from zennas.latency.predict import Predictor
    from zennas.latency.profile import load_profile
    from zennas.latency.sample import sample_structures
    from zennas.space.formats import load_structure
    from zennas.space.space import get_space

    if structures < 0:
        raise SpecError(f"--structures must be >= 0, got {structures}", field="structures")
    if runs < 1:
        raise SpecError(f"--runs must be >= 1, got {runs}", field="runs")
    p = load_profile(profile)
    Predictor(p)  # an incomplete profile fails here
    given = [load_structure(f) for f in structure_files or []]

    try:
        space = get_space(p.space)
    except SpaceError:
        space = None
    sampled: list[Any] = []
    if structures:
        if space is None:
            raise SpecError(f"the profile's space {p.space!r} is not a shipped space; give structure files and "
                            "--structures 0", field="structures")
        sampled = sample_structures(space, structures, seed=seed, height=p.height, width=p.width,
                                    max_flops=p.settings.get("max_flops"))
    start = [space.start] if not given and space is not None else []  # the start only when no file is given
    todo = [*given, *start, *sampled]
    with _Bar("check", not as_json) as bar:
        report = check_profile(p, todo, runs=runs,
                               progress=lambda i, n: bar.update(i, n, f"{i}/{n} structures"))
    d = report.to_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    typer.echo(f"{report.n} structures, {p.runtime} {p.threads} thread(s) batch {p.batch} at {p.height}x{p.width}")
    typer.echo(f"  within +-10%: {100 * report.within_10pct:.1f} %   MAPE: {100 * report.mape:.2f} %   "
               f"Kendall tau: {report.kendall_tau:.3f}")
    typer.echo(f"  measured / predicted: median {report.level:.3f}; within +-10% once predictions are scaled by it: "
               f"{100 * report.within_10pct_at_level:.1f} % (a machine whose speed moved since the build moves the first)")
    typer.echo("  worst:  #   predicted ms   measured ms   error")
    for i, r in report.worst():
        typer.echo(f"        {i:3d}   {r.predicted_ms:12.3f}  {r.measured_ms:12.3f}   {100 * r.error:+6.1f} %")

"""``zennas search``: run a search from the command line (embedded Ray or a cluster by address)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)


def _backend(spec: Any, workers: int | None, ray_address: str | None, local: bool) -> Any:
    """Forward-pass scores and latency go to Ray actors; closed-form scores stay in the driver."""
    from zennas.search.spec import ANALYTIC_SCORES

    budgets = spec.effective_budgets(spec.resolve_space())
    if spec.latency.profile is not None:  # predicted latency: a backend only to verify on a labelled Ray node
        needs = spec.score not in ANALYTIC_SCORES or spec.latency.resource is not None or ray_address is not None
    else:
        needs = spec.score not in ANALYTIC_SCORES or budgets.latency_ms is not None or (
            spec.sampler == "nsga2" and "latency" in spec.objectives)
    if not needs:
        return None
    if local:
        from zennas.search.task import LocalBackend

        return LocalBackend(threads=1)
    from zennas_workers import RayBackend, ray_init  # the CLI is the composition root

    ray_init(ray_address, num_cpus=workers)
    return RayBackend(num_workers=workers, threads=1, address=ray_address)


def search(
    space: Annotated[str, typer.Option(help="shipped space name (zennas spaces) or a space YAML file")] = "detection-k1kxk1",
    score: Annotated[str, typer.Option(help="entropy-analytic | entropy | zen | params | flops | grad-norm | synflow")] = "entropy-analytic",
    resolution: Annotated[int | None, typer.Option(help="square input size the budgets are counted at (multiple of 32)")] = None,
    height: Annotated[int | None, typer.Option(help="input height (instead of --resolution)")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    score_resolution: Annotated[int | None, typer.Option(help="resolution a forward-pass score runs at")] = None,
    budget_flops: Annotated[float | None, typer.Option(help="FLOPs budget (MACs + BN/act ops), e.g. 188e8")] = None,
    budget_params: Annotated[float | None, typer.Option(help="parameter budget")] = None,
    budget_layers: Annotated[int | None, typer.Option(help="layer budget (main-path convs)")] = None,
    budget_latency_ms: Annotated[float | None, typer.Option(help="latency budget in ms: predicted by --latency-profile, else measured on the workers")] = None,
    latency_profile: Annotated[Path | None, typer.Option(help="device latency profile (zennas profile build): predict each candidate's latency, verify the top-k on the device")] = None,
    verify_top_k: Annotated[int, typer.Option(help="with --latency-profile: top candidates measured on the device at the end")] = 8,
    latency_resource: Annotated[str | None, typer.Option(help="Ray resource label of the latency-measuring nodes")] = None,
    population: Annotated[int, typer.Option(help="population size")] = 256,
    iterations: Annotated[int, typer.Option(help="candidates to evaluate")] = 100_000,
    generation: Annotated[int, typer.Option(help="candidates per batch (asked, evaluated, told together)")] = 16,
    seed: Annotated[int, typer.Option(help="search seed")] = 0,
    sampler: Annotated[str, typer.Option(help="evolution | nsga2 | random")] = "evolution",
    objective: Annotated[list[str] | None, typer.Option(help="nsga2: objective(s) to minimize: flops | params | latency")] = None,
    start: Annotated[Path | None, typer.Option(help="warm-start structure file (any format)")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers (default: the CPUs Ray sees)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="existing Ray cluster (default: $RAY_ADDRESS, else embedded)")] = None,
    local: Annotated[bool, typer.Option(help="evaluate forward-pass scores in this process instead of Ray")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="SQLite file (or database URL) for checkpoints and history")] = None,
    search_id: Annotated[str, typer.Option(help="name of this search inside the checkpoint database")] = "cli",
    resume: Annotated[bool, typer.Option(help="continue the search from its checkpoint")] = False,
    out: Annotated[Path | None, typer.Option(help="write structure.json/.txt, search.json and trials.jsonl here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Search a backbone with the highest zero-shot score under your budgets."""
    import json

    import optuna

    from zennas.search import Budgets, LatencySpec, Search, SearchSpec, SearchStore
    from zennas.search.output import write_outputs
    from zennas.space.formats import load_structure
    from zennas.space.space import load_space_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    h = height or resolution or 480
    w = width or resolution or h
    space_doc = None
    if space.endswith((".yaml", ".yml")) or os.path.sep in space:
        space_doc = load_space_file(space).to_dict()
        space = space_doc["name"]
    settings: dict[str, Any] = {}
    if score_resolution is not None:
        settings["resolution"] = score_resolution
    spec = SearchSpec(
        space=space, space_doc=space_doc, score=score, score_settings=settings, height=h, width=w,
        budgets=Budgets(flops=budget_flops, params=budget_params, layers=budget_layers, latency_ms=budget_latency_ms),
        population=population, iterations=iterations, generation=generation, sampler=sampler,
        objectives=tuple(objective or ["flops"]), seed=seed,
        start=load_structure(start) if start is not None else None,
        latency=LatencySpec(resource=latency_resource, profile=str(latency_profile) if latency_profile else None,
                            verify_top_k=verify_top_k),
    )
    db = checkpoint if checkpoint is not None else (out / "search.db" if out is not None else None)
    store = SearchStore.open(db if db is not None else "sqlite://")  # in-memory SQLite without a path
    backend = _backend(spec, workers, ray_address, local)
    tty = sys.stderr.isatty() and not as_json

    def plain(ev: dict[str, Any]) -> None:
        best = ev["best_score"]
        print(f"[{ev['iteration']}/{ev['iterations']}] {ev['candidates_per_s']:.0f} cand/s  "
              f"best {best if best is None else round(best, 3)}  rejected {ev['rejected']}", file=sys.stderr)

    try:
        if tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("[bold]search"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False) as bar:
                task = bar.add_task("search", total=spec.iterations, info="")

                def on_progress(ev: dict[str, Any]) -> None:
                    best = ev["best_score"]
                    bar.update(task, completed=ev["iteration"],
                               info=f"{ev['candidates_per_s']:.0f} cand/s  best {best:.2f}  "
                                    f"rejected {ev['rejected']}" if best is not None else "")

                result = Search(spec, search_id=search_id, store=store, backend=backend,
                                progress=on_progress).run(resume=resume)
        else:
            result = Search(spec, search_id=search_id, store=store, backend=backend,
                            progress=None if as_json else plain, progress_interval=2.0).run(resume=resume)
    finally:
        if backend is not None:
            backend.close()
    if out is not None:
        write_outputs(result, out, store)
    summary = result.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    c = result.best_costs
    print(f"best score {result.best_score:.4f} ({spec.score}) after {result.n_trials} trials in {result.seconds:.2f} s")
    print(f"  FLOPs {c['flops'] / 1e9:.3f} G (MACs + BN/act ops) at {h}x{w}, params {c['params'] / 1e6:.3f} M, "
          f"layers {c['layers']}; evaluated {result.evaluated}, rejected {result.rejected}, failed {result.failed}")
    if result.latency is not None:
        _print_verification(result.latency)
    if out is not None:
        print(f"  wrote {out}/structure.json, structure.txt, search.json, trials.jsonl")


def _print_verification(lat: dict[str, Any]) -> None:
    p = lat["profile"]
    print(f"  latency predicted by {p['ref']} ({p['runtime']}, {p['threads']} thread(s), batch {p['batch']}); "
          f"top {len(lat['candidates'])} measured on the device in {lat['seconds']:.1f} s:")
    print("     #  trial      score  predicted ms  measured ms   error  budget")
    for c in lat["candidates"]:
        m = "-" if c["measured_ms"] is None else f"{c['measured_ms']:.3f}"
        e = "" if c["error"] is None else f"{100 * c['error']:+.1f}%"
        mark = " <- winner" if c["rank"] == lat["winner"] else ""
        print(f"    {c['rank']:2d} {c['number']:6d} {c['score']:10.3f} {c['predicted_ms']:13.3f} {m:>12} "
              f"{e:>7}  {'ok' if c['meets_budget'] else 'over'}{mark}")
    for w in lat["warnings"]:
        print(f"  warning: {w}")

"""``zennas search``: run a search from the command line (embedded Ray or a cluster by address)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from zennas._cli_detector_options import (
    BudgetScopeOpt,
    MaybeDetectorOpt,
    MaybeGfpnDepthOpt,
    MaybeGfpnWidthOpt,
    MaybeNeckChannelsOpt,
    MaybeNeckOpt,
    NumClassesOpt,
)


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)
    app.command(name="bound")(bound)


def bound(
    space: Annotated[str, typer.Option(help="shipped space name (zennas spaces) or a space YAML file")] = "detection-k1kxk1",
    budget_flops: Annotated[float | None, typer.Option(help="FLOPs budget (MACs + BN/act ops), e.g. 188e8")] = None,
    budget_params: Annotated[float | None, typer.Option(help="parameter budget")] = None,
    budget_layers: Annotated[int | None, typer.Option(help="layer budget (main-path convs)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square input size the FLOPs budget is counted at")] = None,
    height: Annotated[int | None, typer.Option(help="input height (instead of --resolution)")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    start: Annotated[Path | None, typer.Option(help="the search's start structure, if not the space's")] = None,
    sampler: Annotated[str, typer.Option(help="evolution (the mutation's reach) | nsga2 | random (the codec's)")] = "evolution",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """An upper bound on the best entropy-analytic score any structure of the space reaches under the
    budgets (Lagrangian relaxation + an exact programme over the chain of blocks), with the best
    feasible structure the programme found. Without budgets, the space's defaults."""
    import json

    from zennas.cost import check_size
    from zennas.errors import SpecError
    from zennas.search.bound import bound as compute_bound
    from zennas.search.spec import SAMPLERS
    from zennas.space.formats import load_structure
    from zennas.space.space import get_space, load_space_file

    sp = load_space_file(space) if space.endswith((".yaml", ".yml")) or os.path.sep in space else get_space(space)
    h = height or resolution or sp.budgets.height
    w = width or resolution or (h if (height or resolution) else sp.budgets.width)
    check_size(h, w)
    if sampler not in SAMPLERS:
        raise SpecError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}", field="sampler")
    for k, v in (("flops", budget_flops), ("params", budget_params), ("layers", budget_layers)):
        if v is not None and not v > 0:
            raise SpecError(f"budgets.{k} must be a positive number, got {v!r}", field=f"budgets.{k}")
    if budget_flops is None and budget_params is None and budget_layers is None:
        budget_flops, budget_params, budget_layers = sp.budgets.flops, sp.budgets.params, sp.budgets.layers
    given = {"flops": budget_flops, "params": budget_params, "layers": budget_layers}
    res = compute_bound(sp, start=load_structure(start) if start is not None else None,
                        budget_flops=budget_flops, budget_params=budget_params, budget_layers=budget_layers,
                        height=h, width=w, sampler=sampler)
    out = {"space": sp.name, "score": res.score, "bound": res.bound,
           "gap_pct": res.gap_pct(res.score) if res.score is not None else None,
           "budgets": {k: v for k, v in given.items() if v is not None}, "resolution": [h, w],
           **{k: v for k, v in res.to_dict().items() if k not in ("bound", "score")}}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    lim = ", ".join(f"{k} <= {v:g}" for k, v in out["budgets"].items())
    print(f"bound {res.bound:.4f} (entropy-analytic, space {sp.name}, {lim} at {h}x{w}; "
          f"{res.evaluations} solves, {res.seconds:.2f} s)")
    if res.structure is not None and res.score is not None:
        print(f"  best feasible structure the programme found: {res.score:.4f} ({out['gap_pct']:.3f} % below the "
              f"bound); FLOPs {(res.flops or 0) / 1e9:.3f} G, params {(res.params or 0) / 1e6:.3f} M, layers {res.layers}")
    print("  relaxation: " + "; ".join(res.relaxation))


def _backend(spec: Any, workers: int | None, ray_address: str | None, local: bool) -> Any:
    """Forward-pass scores and latency go to Ray actors; closed-form scores stay in the driver."""
    needs = spec.needs_backend(spec.effective_budgets(spec.resolve_space()))
    if spec.latency.profile is not None and ray_address is not None:
        needs = True  # predicted latency: the top candidates are verified on the given cluster
    if not needs:
        return None
    if local:
        from zennas.search.task import LocalBackend

        return LocalBackend(threads=1)
    from zennas_workers import RayBackend, ray_init  # the CLI is the composition root

    ray_init(ray_address, num_cpus=workers)
    return RayBackend(num_workers=workers, threads=1, address=ray_address)


def budgets_from_options(**given: str | None) -> Any:
    """``--budget-X`` values: a number sets the budget, ``none`` removes the space's default, and an
    option not given falls back to the space's default for that budget alone."""
    from zennas.errors import SpecError
    from zennas.search import Budgets

    values: dict[str, Any] = {}
    removed: list[str] = []
    for name, raw in given.items():
        if raw is None:
            continue
        option = f"budget_{name}"
        if raw.strip().lower() == "none":
            removed.append(name)
            continue
        try:
            value = float(raw)
        except ValueError:
            raise SpecError(f"--budget-{name.replace('_', '-')} must be a number or 'none', got {raw!r}",
                            field=option) from None
        if name == "layers":
            if not value.is_integer():
                raise SpecError(f"--budget-layers must be a whole number or 'none', got {raw!r}", field=option)
            values[name] = int(value)
        else:
            values[name] = value
    return Budgets(**values, removed=tuple(removed))


def search(
    space: Annotated[str, typer.Option(help="shipped space name (zennas spaces) or a space YAML file")] = "detection-k1kxk1",
    score: Annotated[str, typer.Option(help="a registered score (zennas scores): entropy-analytic, entropy, zen, ...")] = "entropy-analytic",
    resolution: Annotated[int | None, typer.Option(help="square input size the budgets are counted at (multiple of 32)")] = None,
    height: Annotated[int | None, typer.Option(help="input height (instead of --resolution)")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    score_resolution: Annotated[int | None, typer.Option(help="resolution a forward-pass score runs at")] = None,
    budget_flops: Annotated[str | None, typer.Option(help="FLOPs budget (MACs + BN/act ops), e.g. 188e8; 'none' removes the space's default")] = None,
    budget_params: Annotated[str | None, typer.Option(help="parameter budget; 'none' removes the space's default")] = None,
    budget_layers: Annotated[str | None, typer.Option(help="layer budget (main-path convs); 'none' removes the space's default")] = None,
    budget_latency_ms: Annotated[str | None, typer.Option(help="latency budget in ms: predicted by --latency-profile, else measured on the workers; 'none' removes the space's default")] = None,
    latency_profile: Annotated[Path | None, typer.Option(help="device latency profile (zennas profile build): predict each candidate's latency, verify the top-k on the device")] = None,
    verify_top_k: Annotated[int, typer.Option(help="with --latency-profile: top candidates measured on the device at the end")] = 8,
    verify: Annotated[str, typer.Option(help="with --latency-profile: until-met (stop once a candidate meets the budget: the same winner) | all (measure all top-k)")] = "until-met",
    speculate: Annotated[bool, typer.Option(help="with --latency-profile: measure the top candidates while the search runs, on a core it leaves idle")] = True,
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
    budget_scope: BudgetScopeOpt = "backbone",
    detector: MaybeDetectorOpt = None,
    neck: MaybeNeckOpt = None,
    gfpn_depth: MaybeGfpnDepthOpt = None,
    gfpn_width: MaybeGfpnWidthOpt = None,
    num_classes: NumClassesOpt = None,
    neck_channels: MaybeNeckChannelsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Search a backbone with the highest zero-shot score under your budgets."""
    import json
    from dataclasses import replace

    import optuna

    from zennas.detector import DetectorSettings
    from zennas.search import LatencySpec, Search, SearchSpec, SearchStore
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
    given: dict[str, Any] = {k: v for k, v in (("detector", detector), ("neck", neck), ("gfpn_depth", gfpn_depth),
                               ("gfpn_width", gfpn_width), ("num_classes", num_classes),
                               ("neck_channels", neck_channels)) if v is not None}
    det = DetectorSettings(**given) if given or budget_scope == "detector" else None
    spec = SearchSpec(
        space=space, space_doc=space_doc, score=score, score_settings=settings, height=h, width=w,
        budgets=replace(budgets_from_options(flops=budget_flops, params=budget_params, layers=budget_layers,
                                             latency_ms=budget_latency_ms), scope=budget_scope),
        detector=det,
        population=population, iterations=iterations, generation=generation, sampler=sampler,
        objectives=tuple(objective or ["flops"]), seed=seed,
        start=load_structure(start) if start is not None else None,
        latency=LatencySpec(resource=latency_resource, profile=str(latency_profile) if latency_profile else None,
                            verify_top_k=verify_top_k, verify=verify, speculate=speculate),
    )
    db = checkpoint if checkpoint is not None else (out / "search.db" if out is not None else None)
    # no database given: no trial history is kept (the search holds none in memory either)
    store = SearchStore.open(db) if db is not None else None
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
    if "detector" in c:
        d = c["detector"]
        ds = d["detector"]
        neck_desc = f"GFPN {ds['gfpn_depth']}/{ds['gfpn_width']}" if ds["neck"] == "gfpn" else "FPN"
        print(f"  detector {ds['detector']} + {neck_desc} ({c['budget_scope']} budget scope): total "
              f"{d['total']['flops'] / 1e9:.3f} GFLOPs = backbone "
              f"{d['backbone']['flops'] / 1e9:.3f} + neck {d['neck']['flops'] / 1e9:.3f} + head "
              f"{d['head']['flops'] / 1e9:.3f}; params {d['total']['params'] / 1e6:.3f} M")
    cert = result.certificate
    if cert is not None and cert.get("available"):
        src = " (the bound programme's structure beat the evolution's best: returned instead)" \
            if cert.get("best_from") else ""
        print(f"  bound {cert['bound']:.4f}: the best is {cert['gap_pct']:.3f} % below it{src}")
    elif cert is not None:
        print(f"  no bound: {cert['reason']}")
    if result.latency is not None:
        _print_verification(result.latency)
    if out is not None:
        print(f"  wrote {out}/structure.json, structure.txt, search.json, trials.jsonl")


def _print_verification(lat: dict[str, Any]) -> None:
    from zennas.search.verify import verdict

    p = lat["profile"]
    print(f"  latency predicted by {p['ref']} ({p['runtime']}, {p['threads']} thread(s), batch {p['batch']}); "
          f"{lat.get('measured', len(lat['candidates']))} of the top {len(lat['candidates'])} measured on the device "
          f"({lat.get('measured_during_search', 0)} while the search ran), {lat['seconds']:.1f} s after it:")
    print("     #  trial      score  predicted ms  measured ms   error  budget")
    for c in lat["candidates"]:
        m = "-" if c["measured_ms"] is None else f"{c['measured_ms']:.3f}"
        e = "" if c["error"] is None else f"{100 * c['error']:+.1f}%"
        mark = (" <- winner" if c["rank"] == lat["winner"] else "") + \
            ("; measured while the search ran" if c.get("speculative") else "")
        print(f"    {c['rank']:2d} {c['number']:6d} {c['score']:10.3f} {c['predicted_ms']:13.3f} {m:>12} "
              f"{e:>7}  {verdict(c)}{mark}")
    for w in lat["warnings"]:
        print(f"  warning: {w}")

"""The ``zennas`` command line: the composition root.

It is the only place that wires the library to the service (``zennas_api``) and the Ray workers
(``zennas_workers``), importing them lazily inside the commands that need them. Bad input exits with
code 2 and one line naming the field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from zennas.errors import ZenNASError

app = typer.Typer(
    name="zennas",
    help="Zero-shot NAS for object-detection backbones (ZenDet / MAE-DET, Zen-NAS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _load(path: Path) -> Any:
    from zennas.space import load_structure

    return load_structure(path)


@app.command()
def score(
    structure: Annotated[Path, typer.Argument(help="structure file: zennas JSON, TinyNAS list or ZenNAS string")],
    score: Annotated[str, typer.Option("--score", help="entropy | entropy-analytic | zen | params | flops | grad-norm | synflow")] = "entropy-analytic",
    resolution: Annotated[int | None, typer.Option(help="square input size for costs and budgets (default 480)")] = None,
    height: Annotated[int | None, typer.Option(help="input height (with --width) instead of --resolution")] = None,
    width: Annotated[int | None, typer.Option(help="input width")] = None,
    score_resolution: Annotated[int | None, typer.Option(help="resolution the forward-pass score runs at (default: the score's own)")] = None,
    batch: Annotated[int | None, typer.Option(help="forward-pass batch size")] = None,
    repeat: Annotated[int | None, typer.Option(help="forward-pass repeats (fresh init each)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the Gaussian init and inputs")] = 0,
    reference: Annotated[bool, typer.Option(help="entropy: the reference settings (480, batch 32, repeat 4)")] = False,
    bn_mode: Annotated[str | None, typer.Option(help="zen: 'batch' (paper) or 'running' (reference code)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Score one structure without training, with its FLOPs, params and layers."""
    from zennas.cost import costs, format_flops
    from zennas.score import make_scorer

    h = height or resolution or 480
    w = width or resolution or h
    settings: dict[str, Any] = {}
    if score in ("entropy", "zen", "grad-norm", "synflow"):
        if score_resolution is not None:
            settings["resolution"] = score_resolution
        if seed:
            settings["seed"] = seed
        if threads is not None:
            settings["threads"] = threads
        if batch is not None and score != "synflow":
            settings["batch"] = batch
        if repeat is not None and score in ("entropy", "zen"):
            settings["repeat"] = repeat
        if reference and score == "entropy":
            settings["reference"] = True
        if bn_mode is not None and score == "zen":
            settings["bn_mode"] = bn_mode
    elif score in ("params", "flops"):
        settings = {"height": h, "width": w}
    s = _load(structure)
    c = costs(s, h, w)
    result = make_scorer(score, **settings)(s)
    out = {
        "score": result.score,
        "score_type": result.name,
        "stage_scores": list(result.stage_scores),
        "stage_scores_weighted": list(result.stage_scores_weighted),
        "per_repeat": list(result.per_repeat),
        "flops": c.flops,
        "flops_unit": "MACs + BN/activation element ops",
        "params": c.params,
        "layers": c.layers,
        "resolution": [h, w],
        "score_resolution": list(result.resolution) if result.resolution else None,
        "settings": result.settings,
        "seconds": result.seconds,
    }
    if as_json:
        echo_json(out)
        return
    typer.echo(f"{result.name} score: {result.score:.4f}  ({result.seconds:.3f} s)")
    if result.stage_scores:
        typer.echo("stage scores (C1..Cn): " + ", ".join(f"{v:.3f}" for v in result.stage_scores))
    typer.echo(f"FLOPs at {h}x{w}: {format_flops(c.flops)}; params: {c.params / 1e6:.3f} M; layers: {c.layers}")


@app.command()
def spaces(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the shipped search spaces."""
    from zennas.cost import costs
    from zennas.space import get_space, space_names

    rows = []
    for name in space_names():
        sp = get_space(name)
        c = costs(sp.start, sp.budgets.height, sp.budgets.width)
        rows.append({"name": name, "description": sp.description, "blocks": len(sp.start),
                     "start_flops": c.flops, "start_layers": c.layers,
                     "budgets": {k: v for k, v in sp.to_dict()["budgets"].items() if v is not None}})
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['name']:<18} {r['description']}")


@app.command()
def convert(
    structure: Annotated[Path, typer.Argument(help="input structure, any supported format")],
    to: Annotated[str, typer.Option("--to", help="json | tinynas")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
) -> None:
    """Convert a structure between formats (zennas JSON, TinyNAS; ZenNAS strings are read-only)."""
    from zennas.space import dump_structure

    text = dump_structure(_load(structure), to)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


_REGISTERED = False


def _register_optional_commands() -> None:
    """More commands, each module registering its own (their heavy imports happen when they run)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import importlib

    for mod in ("zennas._cli_search", "zennas._cli_mmdet", "zennas._cli_service", "zennas._cli_report",
                "zennas._cli_profile"):
        try:
            importlib.import_module(mod).register(app)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a missing dependency inside the module is a real error
                raise
    _REGISTERED = True


def main(argv: list[str] | None = None) -> None:
    _register_optional_commands()
    try:
        app(args=argv, standalone_mode=True)
    except ZenNASError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

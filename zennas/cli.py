"""The ``zennas`` command line: the composition root.

It is the only place that wires the library to the service (``zennas_api``) and the Ray workers
(``zennas_workers``), importing them lazily inside the commands that need them. Every error a user
can cause is one line on stderr naming the field, no traceback: exit code 2 for bad input, 1 for a
runtime failure (a :class:`~zennas.errors.RunFailure`: an unreachable cluster, workers that do not
start). Anything else is a bug: one line too, with ``ZENNAS_TRACEBACK=1`` to see the traceback.
"""

from __future__ import annotations

import json
import os
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
    score: Annotated[str, typer.Option("--score", help="a registered score (zennas scores): entropy, entropy-analytic, zen, ...")] = "entropy-analytic",
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
    from zennas.score import score_kind

    h = height or resolution or 480
    w = width or resolution or h
    kind = score_kind(score)
    if kind.sized_by_input:
        settings: dict[str, Any] = {"height": h, "width": w}
    else:  # each option goes to the scores whose factory takes it (the registry says which)
        offered = {"resolution": score_resolution, "seed": seed or None, "threads": threads, "batch": batch,
                   "repeat": repeat, "reference": reference or None, "bn_mode": bn_mode}
        accepted = set(kind.settings())
        settings = {k: v for k, v in offered.items() if v is not None and k in accepted}
    s = _load(structure)
    c = costs(s, h, w)
    result = kind.build(**settings)(s)
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
def scores(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered zero-shot scores and what each needs (forward pass, settings)."""
    from zennas.score import score_kind, score_names

    rows = [score_kind(n).to_dict() for n in score_names()]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        where = "forward pass (workers)" if r["forward_pass"] else "closed form (driver)"
        typer.echo(f"{r['name']:<18} {where:<24} {r['description']}")


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

    for mod in ("zennas._cli_search", "zennas._cli_costs", "zennas._cli_mmdet", "zennas._cli_service", "zennas._cli_report",
                "zennas._cli_profile"):
        try:
            importlib.import_module(mod).register(app)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a missing dependency inside the module is a real error
                raise
    _REGISTERED = True


def error_line(e: ZenNASError) -> str:
    """``error: <field>: <message>`` (the field once), on one line."""
    msg = " ".join(e.message.split())
    return f"error: {e.field}: {msg}" if e.field and e.field not in msg else f"error: {msg}"


def main(argv: list[str] | None = None) -> None:
    _register_optional_commands()
    try:
        app(args=argv, standalone_mode=True)
    except ZenNASError as e:
        print(error_line(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        print(f"error: {e.filename or 'file'}: {e.strerror or e}", file=sys.stderr)  # a path the user gave
        sys.exit(2)
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("ZENNAS_TRACEBACK") == "1":
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: internal error {type(e).__name__}: {first} (ZENNAS_TRACEBACK=1 shows where)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

"""``zennas report``: a self-contained HTML report of a search directory or a service job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command(name="report")(report)


def _from_service(job_id: str, url: str | None, api_key: str | None,
                  max_trials: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None, str]:
    from zennas.client import Client

    base = url or os.environ.get("ZENNAS_URL", "http://127.0.0.1:8000")
    with Client(base, api_key or os.environ.get("ZENNAS_API_KEY")) as c:
        job = c.get(job_id)
        if job["state"] != "succeeded" or not job.get("result"):
            raise typer.BadParameter(f"search {job_id} is {job['state']}; a report needs a succeeded search",
                                     param_hint="SOURCE")
        summary = dict(job["result"])
        if (job.get("progress") or {}).get("population"):
            summary.setdefault("population", job["progress"]["population"])
        trials: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None and len(trials) < max_trials:
            r = c._check(c.http.get(f"/v1/searches/{job_id}/trials",
                                    params={"offset": offset, "limit": min(1000, max_trials - len(trials))}))
            page = r.json()
            trials += page.get("items", [])
            offset = page.get("next_offset")
    return summary, trials or None, f"zennas search {job_id}"


def report(
    source: Annotated[str, typer.Argument(help="a `zennas search --out DIR` directory (search.json + trials.jsonl), "
                                               "a search.json file, or a service job id (with --url/--api-key)")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write")] = Path("report.html"),
    url: Annotated[str | None, typer.Option("--url", help="service URL for a job id (default $ZENNAS_URL)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (default $ZENNAS_API_KEY)")] = None,
    max_trials: Annotated[int, typer.Option(help="read at most this many trials of a job's history")] = 200_000,
    title: Annotated[str | None, typer.Option(help="report title")] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded as PNG images) of a finished search."""
    import json

    from zennas.report import load_search_dir, write_report

    p = Path(source)
    if p.is_dir():
        if not (p / "search.json").exists():
            raise typer.BadParameter(f"{p} has no search.json (write one with `zennas search --out {p}`)",
                                     param_hint="SOURCE")
        summary, trials = load_search_dir(p)
        default_title = f"zennas search {p.name}"
    elif p.is_file():
        try:
            summary, trials = json.loads(p.read_text()), None
        except (OSError, json.JSONDecodeError) as e:
            raise typer.BadParameter(f"cannot read a search summary from {p}: {e}", param_hint="SOURCE") from e
        default_title = f"zennas search {p.stem}"
    else:
        import httpx

        try:
            summary, trials, default_title = _from_service(source, url, api_key, max_trials)
        except httpx.TransportError as e:
            typer.echo(f"error: {source} is not a directory or file here, and the service could not be reached "
                       f"to read it as a job ({type(e).__name__}: {e})", err=True)
            raise typer.Exit(2) from e
    path = write_report(out, summary, trials, title=title or default_title)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB"
               f"{f', {len(trials)} trials' if trials else ', no trial history'})")

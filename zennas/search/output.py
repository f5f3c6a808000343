"""What a finished search writes to ``--out DIR``: the chosen structure (JSON and TinyNAS format),
a ``search.json`` summary (spec, best score, costs, counts, timings, provenance) and the trial
history (``trials.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path

from zennas.search.driver import SearchResult
from zennas.search.store import SearchStore
from zennas.space.formats import dumps_tinynas


def write_outputs(result: SearchResult, out_dir: str | Path, store: SearchStore | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "structure.json").write_text(result.best_structure.to_json(indent=2) + "\n")
    (out / "structure.txt").write_text(dumps_tinynas(result.best_structure))
    (out / "search.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    if store is not None:
        with (out / "trials.jsonl").open("w") as f:
            offset, page = 0, 20_000
            while True:
                rows = store.trials(result.search_id, offset=offset, limit=page)
                for r in rows:
                    f.write(json.dumps(r) + "\n")
                if len(rows) < page:
                    break
                offset += page
    return out

"""Export a finished search as an Optuna study that optuna-dashboard opens.

Trials are written to a JournalStorage file (an append-only log, far faster than copying 100k
trials into an RDB through Optuna's RDBStorage), read from the store a page at a time. (Optuna's
JournalStorage replays the log it writes into memory, so the exporting process holds the study as
optuna-dashboard will; the search never does.) Each trial carries the structure's parameters (the
NSGA-II/random codec's encoding), its score, costs and budget verdict as user attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from zennas.errors import NotFoundError
from zennas.search.rows import decode
from zennas.search.sampler import StructureCodec
from zennas.search.spec import SearchSpec
from zennas.search.store import SearchStore


def export_optuna(store: SearchStore, search_id: str, path: str | Path, *, study_name: str | None = None) -> str:
    cp = store.load(search_id)
    if cp is None:
        raise NotFoundError(f"no search {search_id!r} in this store", field="search_id")
    spec = SearchSpec.from_dict(cp.spec)
    space = spec.resolve_space()
    codec = StructureCodec(space, budget_layers=spec.effective_budgets(space).layers)
    storage = JournalStorage(JournalFileBackend(str(path)))
    name = study_name or f"zennas-{search_id}"
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    study.set_user_attr("spec", json.dumps(cp.spec))
    offset, page = 0, 10_000
    while True:  # a page at a time: the search's history is never all in this process's memory at once
        rows = store.trials(search_id, offset=offset, limit=page)
        study.add_trials([_trial(row, codec) for row in rows])
        if len(rows) < page:
            break
        offset += page
    return name


def _trial(row: dict[str, Any], codec: StructureCodec) -> optuna.trial.FrozenTrial:
    s = decode(row["structure"])  # the store returns block rows
    params = codec.encode(s)
    dists = {k: v for k, v in codec.distributions.items() if k in params}
    ok = row["state"] == "complete"
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE if ok else (TrialState.PRUNED if row["state"] == "rejected" else TrialState.FAIL),
        value=row["score"] if ok else None,  # type: ignore[arg-type]
        params={k: v for k, v in params.items() if k in dists and _contains(dists[k], v)},
        distributions={k: d for k, d in dists.items() if _contains(d, params[k])},
        user_attrs={"number": row["number"], "flops": row["flops"], "params": row["params"],
                    "layers": row["layers"], "latency_ms": row["latency_ms"], "reason": row["reason"],
                    "worker": row["worker"], "structure": s.to_json()},
    )


def _contains(dist: optuna.distributions.BaseDistribution, value: object) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False

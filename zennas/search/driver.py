"""The search loop: propose a generation of candidates, evaluate them (budgets and closed-form scores
in the driver, forward-pass scores and latency on an evaluation backend such as Ray actors), tell the
results in trial-number order, stream the trial history to the store in batches, checkpoint, report
progress.

Every candidate is a trial, numbered from 0, recorded in the store (one row each, written with the
checkpoint that follows it); :func:`zennas.search.export.export_optuna` turns that record into an
Optuna study that optuna-dashboard opens. The evolution and random search run in the driver without
a per-trial Optuna call and hold no trial history in memory; NSGA-II is Optuna's own sampler, asked
and told through Optuna's public API.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import optuna
from optuna.trial import TrialState

from zennas.admission import CandidateCheck
from zennas.cost import costs
from zennas.detector.cost import DetectorTerm, detector_costs
from zennas.errors import SpecError
from zennas.score import make_scorer, score_kind
from zennas.search.evaluate import SCORE_AT, DetectorScope, Evaluation, WholeTerm, search_evaluator
from zennas.search.neck import NECK_SCORE, NeckCoSearch, make_neck_chooser
from zennas.search.population import Population
from zennas.search.provenance import provenance
from zennas.search.rows import WHOLE_BELOW, decode, encode
from zennas.search.sampler import Evolution, RandomStructures, StructureCodec, constraints_from_attrs
from zennas.search.spec import SearchSpec, check_feasible
from zennas.search.store import Checkpoint, SearchStore, TrialRow
from zennas.search.task import LocalBackend, WarmProcess
from zennas.search.verify import LatencyBudgetError, Speculator, TopK, refused_record, spare_core, verify
from zennas.space.mutation import Mutator
from zennas.space.structure import Block, Neck, Structure

log = logging.getLogger(__name__)
PROGRESS_SCHEMA = "zennas.progress/1"
ADMISSION_REASONS = ("memory", "compute", "size")  # rejections by the service's evaluation limits

_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


class EvaluationBackend(Protocol):
    name: str

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class TrialRecord(NamedTuple):
    """One trial, as the loop tells it and the store records it."""

    number: int
    structure: Structure
    evaluation: Evaluation  # costs (and the closed-form score's term), computed in the driver
    state: str  # complete | rejected | failed
    reason: str | None  # the budget that rejected it, or the error of a failed one
    score: float | None
    latency_ms: float | None = None
    worker: str | None = "driver"  # node/actor that evaluated it
    attempts: int = 0
    seconds: float = 0.0


@dataclass
class SearchResult:
    search_id: str
    spec: dict[str, Any]
    best_structure: Structure
    best_score: float
    best_costs: dict[str, Any]
    n_trials: int
    evaluated: int
    rejected: int
    failed: int
    seconds: float
    pareto_front: list[dict[str, Any]] = field(default_factory=list)
    best_curve: list[tuple[int, float]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None  # entropy-analytic: the optimality certificate (search/bound.py)
    latency: dict[str, Any] | None = None  # predicted mode: the profile, and the top-k predicted vs measured

    @property
    def bound(self) -> float | None:
        """No structure the search can reach under the budgets scores more (None: no certificate)."""
        return self.certificate.get("bound") if self.certificate else None

    @property
    def gap_pct(self) -> float | None:
        """How far the best structure is below :attr:`bound`, in percent."""
        return self.certificate.get("gap_pct") if self.certificate else None

    def summary(self) -> dict[str, Any]:
        return {
            "search_id": self.search_id,
            "spec": self.spec,
            "best": {"score": self.best_score, "structure": self.best_structure.to_dict(),
                     "stages": self.best_structure.stage_table(), "costs": self.best_costs},
            "bound": self.bound,
            "gap_pct": self.gap_pct,
            "certificate": self.certificate,
            "counts": {"trials": self.n_trials, "evaluated": self.evaluated, "rejected": self.rejected,
                       "failed": self.failed},
            "seconds": self.seconds,
            "timings": self.timings,
            "pareto_front": self.pareto_front,
            "best_curve": self.best_curve,
            "provenance": self.provenance,
            "latency": self.latency,
        }


def _non_dominated(points: list[dict[str, Any]], objectives: tuple[str, ...]) -> list[dict[str, Any]]:
    """Maximize score, minimize each objective."""
    def key(p: dict[str, Any]) -> tuple[float, ...]:
        return (-p["score"], *(p[o] for o in objectives))

    pts = sorted(points, key=key)
    front: list[dict[str, Any]] = []
    for p in pts:
        kp = key(p)
        if not any(all(a <= b for a, b in zip(key(q), kp, strict=True)) and key(q) != kp for q in front):
            if all(key(q) != kp for q in front):
                front.append(p)
    return front


@dataclass
class _Progress:
    """What a run carries from generation to generation (and, through checkpoints, across resumes)."""

    n_trials: int = 0  # trials told (the next trial's number)
    generation: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"evaluated": 0, "rejected": 0, "failed": 0})
    best: tuple[Structure, float] | None = None
    best_curve: list[tuple[int, float]] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds of earlier runs of this search
    timings: dict[str, float] = field(
        default_factory=lambda: {"ask": 0.0, "evaluate": 0.0, "tell": 0.0, "checkpoint": 0.0})
    pareto_points: list[dict[str, Any]] = field(default_factory=list)
    population: Population | None = None
    topk: TopK | None = None  # predicted latency: the candidates verified on the device at the end

    @classmethod
    def restore(cls, cp: Checkpoint) -> _Progress:
        st = cp.state
        p = cls(n_trials=cp.n_trials, generation=cp.generation, counts=dict(st["counts"]),
                best=(decode(st["best"][0]), st["best"][1]) if st.get("best") else None,
                best_curve=[tuple(x) for x in st.get("best_curve", [])],  # type: ignore[misc]
                elapsed_before=st.get("elapsed", 0.0), pareto_points=list(st.get("pareto_points", [])))
        p.timings.update(st.get("timings", {}))
        if st.get("topk") is not None:
            p.topk = TopK(int(cp.spec.get("latency", {}).get("verify_top_k", 8)), st["topk"])
        pop = st.get("population")
        if pop is not None:
            p.population = Population.restore(
                pop.get("size", cp.spec.get("population", 256)),  # no size: saved before warm-ups existed
                ((decode(s), sc, eid) for s, sc, eid in pop["members"]), pop["seq"],
                (decode(pop["best"][0]), pop["best"][1]) if pop["best"] else None)
        return p


class _NSGA2:
    """Optuna's NSGA-II over the codec's parameters, asked and told through Optuna's public API."""

    def __init__(self, study: optuna.Study, codec: StructureCodec) -> None:
        self.study, self.codec = study, codec
        self._asked: dict[int, optuna.Trial] = {}

    def propose(self, numbers: range) -> list[Structure]:
        out = []
        for n in numbers:
            t = self.study.ask(self.codec.distributions)
            self._asked[n] = t
            out.append(self.codec.decode(t.params))
        return out

    def tell(self, number: int, values: list[float] | None, violations: list[float], state: TrialState) -> None:
        t = self._asked.pop(number)
        if values is not None:
            t.set_user_attr("constraints", violations)
            if _HAS_SET_CONSTRAINT:
                for i, v in enumerate(violations):
                    t.set_constraint(f"c{i}", v)
        self.study.tell(t, values, state)


class _StoreWriter:
    """Writes (checkpoint, trial rows) batches to the store on one background thread, at most one batch
    in flight, so the search goes on while the database writes (sqlite3 and psycopg release the GIL).
    A failed write (a lost lease, a full disk) is raised on the next :meth:`submit` or :meth:`close`.
    An in-memory SQLite store is written in the caller's thread (its connections are per thread)."""

    def __init__(self, store: SearchStore) -> None:
        self.store = store
        url = store.engine.url
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        self._pool = None if in_memory else ThreadPoolExecutor(1, thread_name_prefix="zennas-store")
        self._pending: Future[None] | None = None

    def submit(self, cp: Checkpoint, rows: list[TrialRow]) -> None:
        self.wait()
        if self._pool is None:
            self.store.save_generation(cp, rows)
        else:
            self._pending = self._pool.submit(self.store.save_generation, cp, rows)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()


class Search:
    """One search run. Construct, then :meth:`run`. ``should_stop`` is polled between generations
    (cancel, SIGTERM drain): the search then checkpoints and returns early with ``stopped`` set.

    Without a ``store`` the trial history is not kept (only the result); with one, every trial is
    written to it in batches, with the checkpoint that follows them."""

    def __init__(self, spec: SearchSpec, *, search_id: str | None = None, store: SearchStore | None = None,
                 backend: EvaluationBackend | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, progress_interval: float = 0.5,
                 profile: Any = None) -> None:
        self.spec = spec
        self.space = check_feasible(spec)
        self.search_id = search_id or uuid.uuid4().hex[:16]
        self.store = store
        self.backend = backend
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.progress_interval = progress_interval  # seconds between progress events
        self.stopped = False
        self.budgets = spec.effective_budgets(self.space)
        self.start = spec.start_structure(self.space)
        self.driver_scored = not score_kind(spec.score).forward_pass
        # predicted mode: a latency profile (given, or loaded from spec.latency.profile) prices each
        # candidate in the driver, as a term of the evaluator; otherwise latency is measured on the backend
        self.profile, self.latency_term = latency_term(spec, self.space, self.start, self.budgets, profile)
        self.needs_latency = self.latency_term is None and (self.budgets.latency_ms is not None or (
            spec.sampler == "nsga2" and "latency" in spec.objectives))
        if (not self.driver_scored or self.needs_latency) and backend is None:
            raise SpecError(f"score {spec.score!r}{' with a latency budget' if self.needs_latency else ''} "
                            "needs an evaluation backend (Ray workers or the local backend)", field="score")
        # the whole detector: the neck co-search chooses each backbone's neck (its score, and in detector
        # scope its cost); otherwise detector scope adds the spec's neck and head to FLOPs and params
        self.neck = NeckCoSearch(make_neck_chooser(spec, self.space, self.start, self.budgets)) \
            if spec.score == NECK_SCORE else None
        det = spec.detector_settings()
        whole: list[WholeTerm] = []
        if self.neck is not None:
            whole.append(self.neck)
        elif det is not None:
            whole.append(DetectorScope(DetectorTerm(det, self.start, spec.height, spec.width)))
        self.evaluator = search_evaluator(
            self.start, spec.height, spec.width, score=spec.score, settings=dict(spec.score_settings),
            stage_weights=self.space.stage_weights, flops=self.budgets.flops, params=self.budgets.params,
            layers=self.budgets.layers, whole=whole, latency=self.latency_term,
            latency_ms=self.budgets.latency_ms if self.latency_term is not None else None)
        self._latency_at = self.evaluator.names.index("latency_ms") if self.latency_term is not None else None
        assert self.neck is None or self.evaluator.score_index == SCORE_AT
        # a closed-form score without a term of the evaluator (a score added with register_score) is
        # computed by its own scorer, in the driver
        self._plain_scorer = None
        if self.driver_scored and spec.score not in ("entropy-analytic", NECK_SCORE):  # validates their settings
            scorer = make_scorer(spec.score, **dict(spec.score_settings))
            if self.evaluator.score_index is None:
                self._plain_scorer = scorer
        self.mutator = Mutator(self.space, budget_layers=self.budgets.layers, height=spec.height, width=spec.width)
        self._rows: list[TrialRow] = []  # trial rows not yet written to the store
        self._block_json: dict[Block, str] = {}
        self._writer: _StoreWriter | None = None
        # the service's evaluation limits: a candidate whose forward pass would break them is rejected
        self._admit = CandidateCheck(spec, spec.limits) if spec.limits is not None else None
        self._verifier: WarmProcess | None = None  # predicted latency: measures the top-k (see run)
        self._speculator: Speculator | None = None  # ... starting while the search runs
        self._offered = -1  # the TopK version the speculator was last offered

    # -- the loop ----------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> SearchResult:
        t_start = time.perf_counter()
        cp = self.store.load(self.search_id) if (self.store and resume) else None
        if cp is not None and self.store is not None:
            self.store.discard_after(self.search_id, cp.n_trials)
        if cp is not None and cp.finished:
            return self._result(self._verify_latency(cp), t_start)
        run = _Progress.restore(cp) if cp is not None else _Progress()
        proposer = self._proposer(run, resumed=cp is not None)
        if self.latency_term is not None and run.topk is None:
            run.topk = TopK(self.spec.latency.verify_top_k)
            if run.population is not None and run.population.best is not None:  # the start, scored
                run.topk.offer(run.population.best[1], -1, run.population.best[0])
        self._writer = _StoreWriter(self.store) if self.store is not None else None
        # predicted latency without a backend: the measuring process starts now, so that its imports
        # overlap the search, and measures the top-k at the end
        self._verifier = WarmProcess(threads=None) if self.latency_term is not None and self.backend is None \
            else None
        self._speculator = self._speculate(run)
        try:
            try:
                cp = self._loop(run, proposer, t_start)
            finally:
                if self._writer is not None:
                    self._writer.close()  # the last batch is written before the result is read
            return self._result(self._verify_latency(cp), t_start)
        finally:
            if self._speculator is not None:  # a stopped or failed search: its measurements are not used
                if self._verifier is not None:
                    self._speculator.abandon()  # the measuring process ends now, with what it measures
                    self._verifier.close(wait=0.0)
                else:
                    self._speculator.finish()  # the backend is its owner's again once this returns
                self._speculator = None
            if self._verifier is not None:
                self._verifier.close()
                self._verifier = None

    def _speculate(self, run: _Progress) -> Speculator | None:
        """Predicted mode: a :class:`Speculator` that measures the top candidates while the search runs,
        when the measuring worker is otherwise idle: the search is scored in the driver, and the worker
        is a node of the device or the local measuring process on a core the search leaves free."""
        spec = self.spec
        if self.latency_term is None or self.profile is None or not spec.latency.speculate or not self.driver_scored:
            return None
        backend = self.backend or self._verifier
        if backend is None or isinstance(backend, LocalBackend):  # in this process: it would slow the search
            return None
        if self.backend is None and not spare_core(self.profile.threads):
            return None
        admit = self._admit
        sp = Speculator(backend, self.profile, self.budgets.latency_ms, runs=spec.latency.runs,
                        warmup=spec.latency.warmup, resource=spec.latency.resource, mode=spec.latency.verify,
                        refuse=(lambda s: admit(s, score=False, latency=True)) if admit is not None else None)
        if run.topk is not None and run.topk.items:
            sp.offer(run.topk.items)
            self._offered = run.topk.version
        return sp

    def _loop(self, run: _Progress, proposer: Any, t_start: float) -> Checkpoint:
        """Generations until the iterations are done or ``should_stop``; the last checkpoint."""
        spec = self.spec
        last_saved, last_report = run.n_trials, 0.0
        cp = None
        while run.n_trials < spec.iterations:
            numbers = range(run.n_trials, min(run.n_trials + spec.generation, spec.iterations))
            t0 = time.perf_counter()
            candidates = proposer.propose(numbers)
            t1 = time.perf_counter()
            records = self._evaluate(numbers, candidates)
            t2 = time.perf_counter()
            self._tell(run, proposer, records)
            if self._speculator is not None and run.topk is not None and run.topk.version != self._offered:
                self._speculator.offer(run.topk.items)
                self._offered = run.topk.version
            t3 = time.perf_counter()
            tm = run.timings  # before the checkpoint, which stores them
            tm["ask"] += t1 - t0
            tm["evaluate"] += t2 - t1
            tm["tell"] += t3 - t2
            elapsed = run.elapsed_before + (t3 - t_start)
            finished = run.n_trials >= spec.iterations
            stop_next = self.should_stop()
            due = run.n_trials - last_saved >= spec.checkpoint_every or finished or stop_next
            report = self.progress is not None and (due or t3 - last_report >= self.progress_interval)
            if due or report:
                cp = self._checkpoint(run, elapsed, finished)
                if due:
                    self._save(cp)
                    last_saved = run.n_trials
                if self.progress is not None and report:
                    self.progress(self._event(cp, run, elapsed))
                    last_report = t3
            tm["checkpoint"] += time.perf_counter() - t3  # stored with the next checkpoint
            if stop_next and not finished:
                self.stopped = True
                break
        if cp is None or cp.n_trials != run.n_trials:
            cp = self._checkpoint(run, run.elapsed_before + (time.perf_counter() - t_start),
                                  run.n_trials >= spec.iterations)
        else:  # the result reports every phase, the last checkpoint's time included
            cp.state["timings"] = dict(run.timings)
        return cp

    # -- the steps of one generation ------------------------------------------------------------
    def _proposer(self, run: _Progress, *, resumed: bool) -> Any:
        """What proposes the candidates: the evolution (seeding its population with the start
        structure), uniform random structures, or Optuna's NSGA-II (replaying a resumed history)."""
        spec = self.spec
        if spec.sampler == "evolution":
            if run.population is None:
                size0 = spec.warmup_size() or spec.population
                run.population = Population(size0)
                run.population.seed(self.start, self._score_start(), size0)
            fine_from = int(spec.iterations * (1 - spec.fine_phase)) if spec.fine_phase > 0 else None
            return Evolution(mutator=self.mutator, population=run.population, seed=spec.seed, fine_from=fine_from,
                             grow_at=spec.warmup_iterations if spec.warmup_size() else None,
                             full_size=spec.population)
        codec = StructureCodec(self.space, budget_layers=self.budgets.layers)
        if spec.sampler == "random":
            return RandomStructures(codec, seed=spec.seed)
        # Optuna 5 records constraints per trial (Trial.set_constraint); older ones need a func
        sampler = optuna.samplers.NSGAIISampler(
            population_size=max(2, spec.population), seed=spec.seed + run.n_trials,
            constraints_func=None if _HAS_SET_CONSTRAINT else constraints_from_attrs)
        directions: list[Any] = ["maximize"] + ["minimize"] * len(spec.objectives)
        study = optuna.create_study(directions=directions,
                                    sampler=sampler, study_name=f"zennas-{self.search_id}")
        if resumed:
            self._replay_history(study, codec)
        return _NSGA2(study, codec)

    def _evaluate(self, numbers: range, candidates: list[Structure]) -> list[TrialRecord]:
        """Budgets first (in the driver, from the cost terms); the closed-form score in the driver;
        forward-pass scores and latency of the candidates within budget on the backend."""
        evaluate = self.evaluator
        in_driver = self.driver_scored and not self.needs_latency
        records: list[TrialRecord] = []
        to_backend: list[int] = []
        lat_at = self._latency_at
        for number, s in zip(numbers, candidates, strict=True):
            e = evaluate(s)
            lat = e.totals[lat_at] if lat_at is not None else None  # the predicted latency
            reason = e.reason
            if reason is None and self._admit is not None and not in_driver:
                # the service's evaluation limits: a forward pass that would break them is not run
                reason = self._admit(s, score=not self.driver_scored, latency=self.needs_latency)
            if reason is not None:
                records.append(TrialRecord(number, s, e, "rejected", reason, None, lat))
            elif in_driver:
                records.append(TrialRecord(number, s, e, "complete", None, self._driver_score(e, s), lat, attempts=1))
            else:
                to_backend.append(len(records))
                records.append(TrialRecord(number, s, e, "complete", None, None, lat))
        if to_backend:
            assert self.backend is not None
            results = self.backend.evaluate([self._task(records[i].number, records[i].structure,
                                                        score=not self.driver_scored) for i in to_backend])
            for i, res in zip(to_backend, results, strict=True):
                r = records[i]
                score = None
                if res["state"] == "complete":
                    score = self._driver_score(r.evaluation, r.structure) if self.driver_scored else res["score"]
                records[i] = r._replace(state=res["state"], reason=res.get("reason"), score=score,
                                        latency_ms=r.latency_ms if lat_at is not None else res.get("latency_ms"),
                                        worker=res.get("worker"),
                                        attempts=int(res.get("attempts") or 0),
                                        seconds=float(res.get("seconds") or 0.0))
        return records

    def _tell(self, run: _Progress, proposer: Any, records: list[TrialRecord]) -> None:
        """In trial order: the proposer learns, the counts and the best move, the rows queue for the store."""
        nsga2 = isinstance(proposer, _NSGA2)
        counts = run.counts
        keep_rows = self.store is not None
        topk = run.topk
        for rec in records:
            complete = rec.state == "complete"
            if nsga2:
                self._tell_nsga2(run, proposer, rec)
            else:
                proposer.tell(rec.number, rec.structure, rec.score if complete else None)
            if complete:
                counts["evaluated"] += 1
                if run.best is None or rec.score > run.best[1]:  # type: ignore[operator]
                    run.best = (rec.structure, rec.score)  # type: ignore[assignment]
                    run.best_curve.append((rec.number + 1, rec.score))  # type: ignore[arg-type]
                if topk is not None:
                    topk.offer(rec.score, rec.number, rec.structure)  # type: ignore[arg-type]
            else:
                counts["rejected" if rec.state == "rejected" else "failed"] += 1
            if keep_rows:
                self._rows.append(self._row(rec))
        if nsga2:
            run.pareto_points = _non_dominated(run.pareto_points, self.spec.objectives)
        run.n_trials += len(records)
        run.generation += 1

    def _tell_nsga2(self, run: _Progress, proposer: _NSGA2, rec: TrialRecord) -> None:
        objectives = [self._objective(o, rec.evaluation, rec.latency_ms) for o in self.spec.objectives]
        violations = self._violations(rec.evaluation, rec.latency_ms)
        if rec.reason in ADMISSION_REASONS:  # over the service's evaluation limits: infeasible
            violations.append(1.0)
        if rec.state == "complete":
            proposer.tell(rec.number, [rec.score, *objectives], violations,  # type: ignore[list-item]
                          TrialState.COMPLETE)
            e = rec.evaluation
            run.pareto_points.append({"number": rec.number, "score": rec.score, "flops": e.flops,
                                      "params": e.params, "latency": rec.latency_ms or 0.0})
        elif rec.state == "rejected":  # not scored; NSGA-II ranks it below every feasible trial
            proposer.tell(rec.number, [-1e12, *objectives], violations, TrialState.COMPLETE)
        else:
            proposer.tell(rec.number, None, violations, TrialState.FAIL)

    def _row(self, rec: TrialRecord) -> TrialRow:
        """The store's row of a trial."""
        e = rec.evaluation
        return TrialRow(rec.number, rec.state, rec.reason, rec.score, e.flops, e.params, e.layers, rec.latency_ms,
                        self._structure_json(rec.structure) if len(rec.structure.blocks) < WHOLE_BELOW
                        else rec.structure,  # a large one: the store encodes it as a delta (zennas.search.rows)
                        rec.worker, rec.attempts, rec.seconds)

    def _structure_json(self, s: Structure) -> str:
        """The stored form of a small structure (zennas.search.rows: its block rows as JSON), from
        per-block pieces (json.dumps costs as much as a mutation)."""
        cache = self._block_json
        parts = list(map(cache.get, s.blocks))
        if None in parts:
            if len(cache) >= 1 << 14:
                cache.clear()  # bounded: a long search sees new blocks forever
            parts = [p if p is not None else cache.setdefault(b, json.dumps(b)) for p, b in zip(parts, s.blocks, strict=True)]
        return "[" + ", ".join(parts) + "]"  # type: ignore[arg-type]

    def _save(self, cp: Checkpoint) -> None:
        """The trials told since the last save and the checkpoint after them, in one transaction
        (written in the background; the next save or the end of the run waits for it)."""
        if self._writer is not None:
            self._writer.submit(cp, self._rows)
        self._rows = []

    # -- helpers ------------------------------------------------------------------------------
    def _driver_score(self, e: Evaluation, s: Structure) -> float:
        """A closed-form score: from the evaluator's score term, else from the score's own scorer."""
        if self._plain_scorer is not None:
            return float(self._plain_scorer(s).score)
        return self.evaluator.score(e)

    def _score_start(self) -> float:
        if self.driver_scored and not self.needs_latency:
            return self._driver_score(self.evaluator(self.start), self.start)
        assert self.backend is not None
        rec = self.backend.evaluate([self._task(-1, self.start, score=not self.driver_scored)])[0]
        if rec["state"] != "complete":
            raise SpecError(f"the start structure could not be evaluated: {rec['reason']}", field="start")
        return rec["score"] if not self.driver_scored else self._driver_score(self.evaluator(self.start), self.start)

    def _task(self, number: int, s: Structure, *, score: bool) -> dict[str, Any]:
        spec = self.spec
        return {"number": number, "structure": [b.to_dict() for b in s.blocks],
                "score": spec.score if score else None, "score_settings": dict(spec.score_settings),
                "height": spec.height, "width": spec.width,
                "latency": {"batch": spec.latency.batch, "runs": spec.latency.runs, "warmup": spec.latency.warmup,
                            "resource": spec.latency.resource, "threads": spec.latency.threads}
                if self.needs_latency else None,
                "latency_budget_ms": self.budgets.latency_ms}

    def _checkpoint(self, run: _Progress, elapsed: float, finished: bool) -> Checkpoint:
        state: dict[str, Any] = {
            "counts": dict(run.counts), "best": [encode(run.best[0]), run.best[1]] if run.best else None,
            "best_curve": list(run.best_curve), "elapsed": elapsed, "timings": dict(run.timings),
            "pareto_points": list(run.pareto_points),
        }
        if run.topk is not None:
            state["topk"] = run.topk.state()
        pop = run.population
        if pop is not None:
            ps = pop.state()
            state["population"] = {
                "members": [[encode(s), sc, eid] for s, sc, eid in ps["members"]],  # type: ignore[attr-defined]
                "seq": ps["seq"],
                "size": ps["size"],
                "best": [encode(pop.best[0]), pop.best[1]] if pop.best else None,
            }
        return Checkpoint(self.search_id, run.generation, run.n_trials, self.spec.to_dict(), state, finished)

    def _objective(self, name: str, e: Evaluation, latency_ms: float | None) -> float:
        if name == "latency":
            return float(latency_ms or 0.0)
        return float(getattr(e, name))

    def _violations(self, e: Evaluation | Sequence[float], latency_ms: float | None) -> list[float]:
        b = self.budgets
        have_all = (e.flops, e.params, e.layers) if isinstance(e, Evaluation) else tuple(e)
        out = [0.0]
        for name, have in zip(("flops", "params", "layers"), have_all, strict=True):
            limit = getattr(b, name)
            if limit is not None:
                out.append(have / limit - 1.0)
        if b.latency_ms is not None and latency_ms is not None:
            out.append(latency_ms / b.latency_ms - 1.0)
        return out

    def _replay_history(self, study: optuna.Study, codec: StructureCodec) -> None:
        """A resumed NSGA-II study gets the stored trials back, a page at a time."""
        assert self.store is not None
        offset, page = 0, 10_000
        while True:
            rows = self.store.trials(self.search_id, offset=offset, limit=page, states=("complete", "rejected"))
            trials = []
            for row in rows:
                s = decode(row["structure"])
                objectives = [float(row["latency_ms"] or 0.0) if o == "latency" else float(row[o])
                              for o in self.spec.objectives]
                first = row["score"] if row["state"] == "complete" else -1e12
                violations = self._violations((row["flops"], row["params"], row["layers"]), row["latency_ms"])
                trials.append(optuna.trial.create_trial(
                    params=codec.encode(s), distributions=codec.distributions, values=[first, *objectives],
                    user_attrs={"constraints": violations}, system_attrs={"constraints": violations}))
            study.add_trials(trials)
            if len(rows) < page:
                break
            offset += page

    def _event(self, cp: Checkpoint, run: _Progress, elapsed: float) -> dict[str, Any]:
        counts = cp.state["counts"]
        rate = cp.n_trials / elapsed if elapsed > 0 else 0.0
        remaining = self.spec.iterations - cp.n_trials
        scores = run.population.scores() if run.population is not None else []
        best = run.best
        return {
            "schema": PROGRESS_SCHEMA,
            "search_id": self.search_id,
            "generation": cp.generation,
            "iteration": cp.n_trials,
            "iterations": self.spec.iterations,
            "evaluated": counts["evaluated"],
            "rejected": counts["rejected"],
            "failed": counts["failed"],
            "candidates_per_s": rate,
            "elapsed_s": elapsed,
            "eta_s": remaining / rate if rate > 0 else None,
            "best_score": best[1] if best else None,
            "best_structure": best[0].to_dict() if best else None,
            "best_stages": best[0].stage_table() if best else None,
            "population": {"size": len(scores), "min": min(scores), "median": statistics.median(scores),
                           "max": max(scores), "mean": statistics.fmean(scores)} if scores else None,
            "pareto_front": cp.state.get("pareto_points") if self.spec.sampler == "nsga2" else None,
            "finished": cp.finished,
        }

    def _result(self, cp: Checkpoint, t_start: float) -> SearchResult:
        st = cp.state
        counts = st.get("counts", {"evaluated": 0, "rejected": 0, "failed": 0})
        if st.get("best"):
            best_s, best_score = decode(st["best"][0]), float(st["best"][1])
        else:
            best_s, best_score = self.start, float("nan")
        front = st.get("pareto_points", []) if self.spec.sampler == "nsga2" else []
        if front:
            chosen = max(front, key=lambda p: p["score"])
            best_score = chosen["score"]
            if self.store is not None:
                row = self.store.trials(self.search_id, offset=chosen["number"], limit=1)
                if row:
                    best_s = decode(row[0]["structure"])
        lat = st.get("latency")
        if lat is not None and lat.get("winner") is not None:  # predicted mode: the verified winner
            w = lat["candidates"][lat["winner"]]
            best_s, best_score = Structure.from_dict(w["structure"]), float(w["score"])
        cert = self._certificate(best_score) if cp.finished else None
        if cert and cert.get("better") and self.spec.sampler == "evolution" and self.budgets.latency_ms is None:
            # the bound programme's structure beats the evolution's best: return it, and say so
            cert["search_best_structure"] = best_s.to_dict()
            best_s, best_score = Structure.from_dict(cert["structure"]), cert["score"]
            cert["best_from"] = "bound programme"
        c = costs(best_s, self.spec.height, self.spec.width)
        best_costs: dict[str, Any] = {**c.to_dict(), "flops_unit": "MACs + BN/activation element ops"}
        det = self.spec.detector or self.spec.detector_settings()
        if self.neck is not None:  # the neck chosen for the best backbone, carried by the structure written out
            det = self.neck.choice(best_s, self.evaluator.block_totals(best_s)).settings
            best_costs["neck_choice"] = {"gfpn_depth": det.gfpn_depth, "gfpn_width": det.gfpn_width}
            best_s = best_s.with_neck(Neck(det.neck, det.gfpn_depth, det.gfpn_width))
        if det is not None:  # the whole detector's terms; budgets.scope says which ones the budgets counted
            best_costs["detector"] = detector_costs(best_s, det, self.spec.height, self.spec.width).to_dict()
            best_costs["budget_scope"] = self.spec.budgets.scope
        return SearchResult(
            search_id=self.search_id, spec=self.spec.to_dict(), best_structure=best_s, best_score=best_score,
            best_costs=best_costs,
            n_trials=cp.n_trials, evaluated=counts["evaluated"], rejected=counts["rejected"],
            failed=counts["failed"], seconds=st.get("elapsed", time.perf_counter() - t_start),
            pareto_front=front, best_curve=[tuple(x) for x in st.get("best_curve", [])],  # type: ignore[misc]
            provenance=provenance(), timings=st.get("timings", {}), certificate=cert, latency=lat,
        )

    def _verify_latency(self, cp: Checkpoint) -> Checkpoint:
        """Predicted mode, once the search has finished: measure the top-k on the device (see
        :mod:`zennas.search.verify`) and record it in the checkpoint; the summary's seconds include it."""
        st = cp.state
        done = st.get("latency")
        if done is not None and done.get("error"):  # verified before, and failed: fail again (resume)
            raise LatencyBudgetError(done["error"], field="budgets.latency_ms")
        if self.latency_term is None or self.profile is None or not cp.finished or done is not None:
            return cp
        t0 = time.perf_counter()
        spec, prof = self.spec, self.profile
        cands = []
        for score, number, rows in st.get("topk") or []:
            s = decode(rows)
            cands.append((number, score, s, self.latency_term.ms(s)))
        backend = self.backend or self._verifier
        if backend is None:  # a finished search resumed: nothing ran to overlap
            backend = LocalBackend(threads=None)  # the runner sets the profile's threads itself
        if self._admit is not None:  # the service's evaluation limits: a measurement that breaks them is not run
            admit = self._admit
            backend = _Admitted(backend, {n: admit(s, score=False, latency=True) for n, _, s, _ in cands})
        known: dict[int, dict[str, Any]] = {}
        during = 0.0
        if self._speculator is not None:  # what was measured while the search ran (waits for the one in progress)
            known, during = self._speculator.finish(), self._speculator.seconds
            self._speculator = None
        failure: LatencyBudgetError | None = None
        try:
            rec = verify(cands, prof, self.budgets.latency_ms, backend, runs=spec.latency.runs,
                         warmup=spec.latency.warmup, resource=spec.latency.resource, mode=spec.latency.verify,
                         known=known)
        except LatencyBudgetError as e:
            failure, rec = e, e.record  # type: ignore[attr-defined]
            rec["error"] = e.message
        secs = time.perf_counter() - t0
        rec["seconds"] = secs  # after the search: what the verification added to its wall time
        rec["seconds_during_search"] = during  # measuring while the search ran (on an otherwise idle worker)
        rec["profile"] = {"ref": spec.latency.profile, "checksum": prof.checksum, "runtime": prof.runtime,
                          "threads": prof.threads, "batch": prof.batch, "resolution": [prof.height, prof.width],
                          "fingerprint": prof.fingerprint.to_dict()}
        timings = dict(st.get("timings", {}))
        timings["verify"] = secs
        cp = replace(cp, state={**st, "latency": rec, "elapsed": st.get("elapsed", 0.0) + secs, "timings": timings})
        if self.store is not None:
            self.store.save_generation(cp, [])
        for w in rec["warnings"]:
            log.warning("%s", w)
        if failure is not None:
            raise failure
        return cp

    def _certificate(self, best_score: float) -> dict[str, Any] | None:
        """For the closed-form entropy score: the bound on what the space holds under the budgets."""
        if self.spec.score != "entropy-analytic":
            return None
        if self.budgets.scope == "detector":  # the programme counts the backbone alone: no valid certificate
            return {"available": False, "reason": "the bound counts the backbone alone; this search's budgets "
                    "count the whole detector (budgets.scope = detector)"}
        from zennas.search.bound import certificate

        weights = self.spec.score_settings.get("stage_weights", self.space.stage_weights)
        return certificate(self.space, self.start, budgets=self.budgets, height=self.spec.height,
                           width=self.spec.width, weights=weights, sampler=self.spec.sampler, best_score=best_score)


class _Admitted:
    """A backend that runs only the tasks the service's limits admit; the others come back rejected,
    naming the limit (``refused[n]``: the reason for the task of trial n, or None to run it). The
    verification hands it the candidates a wave at a time, hence by trial number."""

    def __init__(self, backend: EvaluationBackend, refused: dict[int, str | None]) -> None:
        self.backend, self.refused = backend, refused
        self.name = getattr(backend, "name", "backend")

    def parallelism(self, resource: str | None = None) -> int:
        f = getattr(self.backend, "parallelism", None)
        return int(f(resource)) if f is not None else 1

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        verdicts = [self.refused.get(t["number"]) for t in tasks]
        run = [t for t, r in zip(tasks, verdicts, strict=True) if r is None]
        done = iter(self.backend.evaluate(run) if run else [])
        return [next(done) if r is None else refused_record(t["number"], r) for t, r in zip(tasks, verdicts, strict=True)]

    def close(self) -> None:  # the wrapped backend is closed by its owner
        pass


def latency_term(spec: SearchSpec, space: Any, start: Structure, budgets: Any, profile: Any) -> tuple[Any, Any]:
    """(profile, LatencyTerm) of a predicted-latency search, or (None, None) without a profile.

    The one check of a profile against a search (its space, input size and batch, the checksum the
    search was submitted with, and a latency budget the space can meet by the prediction): the
    search runs it, and the service runs it at submission. ``profile`` None: loaded from the file
    ``spec.latency.profile`` names (the CLI; the service always passes the profile it pinned)."""
    if profile is None and spec.latency.profile is None:
        return None, None
    from zennas.latency.predict import LatencyTerm, Predictor
    from zennas.latency.profile import ProfileError, load_profile, require_fit, space_digest

    if profile is None:
        profile = load_profile(str(spec.latency.profile))
    want = spec.latency.profile_checksum
    if want is not None and profile.checksum != want:
        raise ProfileError(f"latency.profile {spec.latency.profile!r} is not the profile the search was submitted "
                           f"with (checksum {profile.checksum}, the search has {want})", field="latency.profile")
    require_fit(profile, space=space.name, digest=space_digest(space.to_dict()), height=spec.height,
                width=spec.width, batch=spec.latency.batch)
    term = LatencyTerm(Predictor(profile), start)
    limit = budgets.latency_ms
    if limit is not None:
        from zennas.search.spec import smallest_structure

        small, here = term.ms(smallest_structure(space)), term.ms(start)
        if small > limit:
            raise SpecError(f"budgets.latency_ms = {limit:g} cannot be met: even the smallest structure of space "
                            f"{space.name!r} is predicted at {small:.3f} ms by the profile", field="budgets.latency_ms")
        if here > limit:
            raise SpecError(f"budgets.latency_ms = {limit:g} is below the start structure's predicted "
                            f"{here:.3f} ms; give a smaller start structure (--start) or a larger budget",
                            field="budgets.latency_ms")
    return profile, term


def run_search(spec: SearchSpec, **kwargs: Any) -> SearchResult:
    """Run a search to completion (see :class:`Search` for the keyword arguments)."""
    resume = kwargs.pop("resume", False)
    return Search(spec, **kwargs).run(resume=resume)


def nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x

"""The search loop: ask a generation of candidates from Optuna, reject those over budget, score the
rest (closed-form scores in the driver, forward-pass scores and latency on an evaluation backend such
as Ray actors), tell the results in trial-number order, checkpoint, report progress."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from zennas.cost import costs
from zennas.errors import SpecError
from zennas.score import make_scorer
from zennas.search.evaluate import CostRecord, DriverEvaluator
from zennas.search.population import Population
from zennas.search.provenance import provenance
from zennas.search.sampler import EvolutionSampler, StructureCodec, constraints_from_attrs, trial_rng
from zennas.search.spec import ANALYTIC_SCORES, SearchSpec, check_feasible
from zennas.search.store import Checkpoint, SearchStore
from zennas.search.verify import LatencyBudgetError, TopK, verify
from zennas.space.mutation import Mutator
from zennas.space.structure import Block, Structure

log = logging.getLogger(__name__)
PROGRESS_SCHEMA = "zennas.progress/1"

try:  # Study.tell deep-copies the finished trial to return it: half of a trial's cost. Skip that.
    from optuna.study._tell import _tell_with_warning as _optuna_tell
except ImportError:  # pragma: no cover - a future Optuna moved it; fall back to the public API
    _optuna_tell = None  # type: ignore[assignment]


def _tell(study: optuna.Study, trial: optuna.Trial, values: list[float] | None, state: TrialState) -> None:
    if _optuna_tell is not None:
        _optuna_tell(study, trial, values, state, suppress_warning=True)
    else:  # pragma: no cover
        study.tell(trial, values, state)


_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def _constrain(trial: optuna.Trial, violations: list[float]) -> None:
    """Budget violations (<= 0 feasible) as NSGA-II constraints."""
    trial.set_user_attr("constraints", violations)
    if _HAS_SET_CONSTRAINT:
        for i, v in enumerate(violations):
            trial.set_constraint(f"c{i}", v)


class EvaluationBackend(Protocol):
    name: str

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def encode(s: Structure) -> list[list[Any]]:
    """Compact structure rows for history and checkpoints: [type, in, out, stride, kernel, layers, btn]."""
    return [[b.type, b.in_channels, b.out_channels, b.stride, b.kernel, b.layers, b.bottleneck] for b in s.blocks]


def decode(rows: list[list[Any]]) -> Structure:
    return Structure(tuple(Block(*r) for r in rows))


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
    latency: dict[str, Any] | None = None  # predicted mode: the profile, and the top-k predicted vs measured

    def summary(self) -> dict[str, Any]:
        return {
            "search_id": self.search_id,
            "spec": self.spec,
            "best": {"score": self.best_score, "structure": self.best_structure.to_dict(),
                     "costs": self.best_costs},
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


class Search:
    """One search run. Construct, then :meth:`run`. ``should_stop`` is polled between generations
    (cancel, SIGTERM drain): the search then checkpoints and returns early with ``stopped`` set."""

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
        self.driver_scored = spec.score in ANALYTIC_SCORES
        # predicted mode: a latency profile (given, or loaded from spec.latency.profile) prices each candidate
        self.profile, self.latency_term = _latency_term(spec, self.space, self.start, self.budgets, profile)
        self.needs_latency = self.latency_term is None and (self.budgets.latency_ms is not None or (
            spec.sampler == "nsga2" and "latency" in spec.objectives))
        if (not self.driver_scored or self.needs_latency) and backend is None:
            raise SpecError(f"score {spec.score!r}{' with a latency budget' if self.needs_latency else ''} "
                            "needs an evaluation backend (Ray workers or the local backend)", field="score")
        weights = spec.score_settings.get("stage_weights", self.space.stage_weights)
        self.evaluator = DriverEvaluator(self.start, spec.height, spec.width, self.budgets,
                                         weights if spec.score == "entropy-analytic" else None, self.latency_term)
        self._driver_scorer = make_scorer(spec.score, **dict(spec.score_settings)) if (
            self.driver_scored and spec.score != "entropy-analytic") else None
        self.mutator = Mutator(self.space, budget_layers=self.budgets.layers, height=spec.height, width=spec.width)

    # -- scoring helpers ---------------------------------------------------------------------
    def _driver_score(self, s: Structure) -> float:
        if self.spec.score == "entropy-analytic":
            return self.evaluator.analytic(s)
        assert self._driver_scorer is not None
        return float(self._driver_scorer(s).score)

    def _task(self, number: int, s: Structure, *, score: bool) -> dict[str, Any]:
        spec = self.spec
        return {"number": number, "structure": [b.to_dict() for b in s.blocks],
                "score": spec.score if score else None, "score_settings": dict(spec.score_settings),
                "height": spec.height, "width": spec.width,
                "latency": {"batch": spec.latency.batch, "runs": spec.latency.runs, "warmup": spec.latency.warmup,
                            "resource": spec.latency.resource, "threads": spec.latency.threads}
                if self.needs_latency else None,
                "latency_budget_ms": self.budgets.latency_ms}

    def _score_start(self) -> float:
        if self.driver_scored and not self.needs_latency:
            return self._driver_score(self.start)
        assert self.backend is not None
        rec = self.backend.evaluate([self._task(-1, self.start, score=not self.driver_scored)])[0]
        if rec["state"] != "complete":
            raise SpecError(f"the start structure could not be evaluated: {rec['reason']}", field="start")
        return rec["score"] if not self.driver_scored else self._driver_score(self.start)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> SearchResult:
        spec = self.spec
        t_start = time.perf_counter()
        cp = self.store.load(self.search_id) if (self.store and resume) else None
        state: dict[str, Any] = cp.state if cp else {}
        n_trials = cp.n_trials if cp else 0
        generation = cp.generation if cp else 0
        counts = state.get("counts", {"evaluated": 0, "rejected": 0, "failed": 0})
        best_curve: list[tuple[int, float]] = [tuple(x) for x in state.get("best_curve", [])]  # type: ignore[misc]
        elapsed_before = state.get("elapsed", 0.0)
        if cp is not None and self.store is not None:
            self.store.discard_after(self.search_id, n_trials)
        if cp is not None and cp.finished:
            return self._result(self._verify_latency(cp), t_start)

        directions: list[Any] = ["maximize"]
        codec: StructureCodec | None = None
        pareto_points: list[dict[str, Any]] = state.get("pareto_points", [])
        if spec.sampler == "evolution":
            if cp is not None:
                p = state["population"]
                pop = Population.restore(p.get("size", spec.population),  # no size: saved before warm-ups
                                         ((decode(s), sc, eid) for s, sc, eid in p["members"]),
                                         p["seq"], (decode(p["best"][0]), p["best"][1]) if p["best"] else None)
            else:
                size0 = spec.warmup_size() or spec.population
                pop = Population(size0)
                pop.seed(self.start, self._score_start(), size0)
            fine_from = int(spec.iterations * (1 - spec.fine_phase)) if spec.fine_phase > 0 else None
            sampler: optuna.samplers.BaseSampler = EvolutionSampler(
                mutator=self.mutator, population=pop, seed=spec.seed, number_offset=n_trials, fine_from=fine_from,
                grow_at=spec.warmup_iterations if spec.warmup_size() else None, full_size=spec.population)
        else:
            pop = None
            codec = StructureCodec(self.space, budget_layers=self.budgets.layers)
            if spec.sampler == "nsga2":
                directions += ["minimize"] * len(spec.objectives)
                # Optuna 5 records constraints per trial (Trial.set_constraint); older ones need a func
                sampler = optuna.samplers.NSGAIISampler(
                    population_size=max(2, spec.population), seed=spec.seed + n_trials,
                    constraints_func=None if _HAS_SET_CONSTRAINT else constraints_from_attrs)
            else:
                sampler = _PerTrialRandomSampler(seed=spec.seed, number_offset=n_trials)
        study = optuna.create_study(directions=directions, sampler=sampler,
                                    study_name=f"zennas-{self.search_id}")
        if codec is not None and cp is not None and spec.sampler == "nsga2":
            self._replay_history(study, codec)

        topk: TopK | None = None
        if self.latency_term is not None:  # predicted mode: the candidates verified on the device at the end
            topk = TopK(spec.latency.verify_top_k, state.get("topk"))
            if not topk.items and pop is not None:
                topk.offer(pop.items()[0][1], -1, encode(self.start))
        self._topk = topk
        best: tuple[Structure, float] | None = None
        if state.get("best"):
            best = (decode(state["best"][0]), state["best"][1])
        timings = dict(state.get("timings", {"ask": 0.0, "evaluate": 0.0, "tell": 0.0, "checkpoint": 0.0}))
        dists = codec.distributions if codec else None
        pending_rows: list[dict[str, Any]] = []
        last_saved = n_trials
        last_report = 0.0
        cp = None

        while n_trials < spec.iterations:
            g = min(spec.generation, spec.iterations - n_trials)
            t0 = time.perf_counter()
            trials = [study.ask(dists) for _ in range(g)]
            if isinstance(sampler, EvolutionSampler):
                cands = [sampler.candidate(t.number) for t in trials]
            else:
                assert codec is not None
                cands = [codec.decode(t.params) for t in trials]
            t1 = time.perf_counter()

            records: list[dict[str, Any]] = []
            to_backend: list[tuple[int, dict[str, Any]]] = []
            cost_list: list[CostRecord] = []
            for i, s in enumerate(cands):
                number = n_trials + i
                c = self.evaluator.costs(s)
                cost_list.append(c)
                reason = self.evaluator.violated(c)
                rec: dict[str, Any] = {"number": number, "state": "complete", "reason": reason, "score": None,
                                       "latency_ms": c.latency_ms, "worker": "driver", "attempts": 0,
                                       "seconds": 0.0}
                if reason is not None:
                    rec["state"] = "rejected"
                elif self.needs_latency or not self.driver_scored:
                    to_backend.append((i, self._task(number, s, score=not self.driver_scored)))
                else:
                    rec["score"] = self._driver_score(s)
                    rec["attempts"] = 1
                records.append(rec)
            if to_backend:
                assert self.backend is not None
                results = self.backend.evaluate([task for _, task in to_backend])
                for (i, _), res in zip(to_backend, results, strict=True):
                    records[i].update({k: res.get(k) for k in ("state", "reason", "latency_ms", "worker",
                                                               "attempts", "seconds")})
                    if res["state"] == "complete":
                        records[i]["score"] = res["score"] if not self.driver_scored else self._driver_score(cands[i])
            t2 = time.perf_counter()

            rows = []
            for t, s, c, rec in zip(trials, cands, cost_list, records, strict=True):
                if rec["state"] == "complete":
                    counts["evaluated"] += 1
                    values = [rec["score"]]
                    if spec.sampler == "nsga2":
                        values += [self._objective(o, c, rec) for o in spec.objectives]
                        _constrain(t, self._violations(c, rec))
                        pareto_points.append({"number": rec["number"], "score": rec["score"], "flops": c.flops,
                                              "params": c.params, "latency": rec["latency_ms"] or 0.0})
                    _tell(study, t, values, TrialState.COMPLETE)
                    if best is None or rec["score"] > best[1]:
                        best = (s, rec["score"])
                        best_curve.append((rec["number"] + 1, rec["score"]))
                    if topk is not None:
                        topk.offer(rec["score"], rec["number"], encode(s))
                elif rec["state"] == "rejected" and spec.sampler == "nsga2":
                    counts["rejected"] += 1  # not scored; NSGA-II ranks it below every feasible trial
                    _constrain(t, self._violations(c, rec))
                    _tell(study, t, [-1e12] + [self._objective(o, c, rec) for o in spec.objectives],
                          TrialState.COMPLETE)
                else:
                    counts["rejected" if rec["state"] == "rejected" else "failed"] += 1
                    _tell(study, t, None, TrialState.PRUNED if rec["state"] == "rejected" else TrialState.FAIL)
                rows.append({"number": rec["number"], "state": rec["state"], "reason": rec["reason"],
                             "score": rec["score"], "flops": c.flops, "params": c.params, "layers": c.layers,
                             "latency_ms": rec["latency_ms"], "structure": json.dumps(encode(s)),
                             "worker": rec["worker"], "attempts": rec["attempts"], "seconds": rec["seconds"]})
            if spec.sampler == "nsga2":
                pareto_points = _non_dominated(pareto_points, spec.objectives)
            n_trials += g
            generation += 1
            t3 = time.perf_counter()
            elapsed = elapsed_before + (t3 - t_start)
            finished = n_trials >= spec.iterations
            stop_next = self.should_stop()
            due = n_trials - last_saved >= spec.checkpoint_every or finished or stop_next
            report = self.progress is not None and (due or t3 - last_report >= self.progress_interval)
            pending_rows += rows
            if due or report:
                cp = self._checkpoint(generation, n_trials, counts, best, best_curve, elapsed, timings,
                                      pareto_points, pop, finished)
                if self.store is not None and due:
                    self.store.save_generation(cp, pending_rows)
                    pending_rows, last_saved = [], n_trials
                if report:
                    assert self.progress is not None
                    self.progress(self._event(cp, pop, best, elapsed))
                    last_report = t3
            t4 = time.perf_counter()
            timings["ask"] += t1 - t0
            timings["evaluate"] += t2 - t1
            timings["tell"] += t3 - t2
            timings["checkpoint"] += t4 - t3
            if stop_next and not finished:
                self.stopped = True
                break
        if cp is None or cp.n_trials != n_trials:
            cp = self._checkpoint(generation, n_trials, counts, best, best_curve,
                                  elapsed_before + (time.perf_counter() - t_start), timings, pareto_points, pop,
                                  n_trials >= spec.iterations)
        if cp is None:  # nothing ran (stopped before the first generation)
            cp = Checkpoint(self.search_id, generation, n_trials, spec.to_dict(), state, finished=False)
        return self._result(self._verify_latency(cp), t_start)

    # -- helpers ------------------------------------------------------------------------------
    def _checkpoint(self, generation: int, n_trials: int, counts: dict[str, int],
                    best: tuple[Structure, float] | None, best_curve: list[tuple[int, float]], elapsed: float,
                    timings: dict[str, float], pareto_points: list[dict[str, Any]], pop: Population | None,
                    finished: bool) -> Checkpoint:
        state: dict[str, Any] = {
            "counts": dict(counts), "best": [encode(best[0]), best[1]] if best else None,
            "best_curve": list(best_curve), "elapsed": elapsed, "timings": dict(timings),
            "pareto_points": list(pareto_points),
        }
        if getattr(self, "_topk", None) is not None:
            state["topk"] = self._topk.state()  # type: ignore[union-attr]
        if pop is not None:
            ps = pop.state()
            state["population"] = {
                "members": [[encode(s), sc, eid] for s, sc, eid in ps["members"]],  # type: ignore[attr-defined]
                "seq": ps["seq"],
                "size": ps["size"],
                "best": [encode(pop.best[0]), pop.best[1]] if pop.best else None,
            }
        return Checkpoint(self.search_id, generation, n_trials, self.spec.to_dict(), state, finished)

    def _objective(self, name: str, c: CostRecord, rec: dict[str, Any]) -> float:
        if name == "latency":
            return float(rec["latency_ms"] or 0.0)
        return float(getattr(c, name))

    def _violations(self, c: CostRecord, rec: dict[str, Any]) -> list[float]:
        b = self.budgets
        out = [0.0]
        for name, have in (("flops", c.flops), ("params", c.params), ("layers", c.layers)):
            limit = getattr(b, name)
            if limit is not None:
                out.append(have / limit - 1.0)
        if b.latency_ms is not None and rec.get("latency_ms") is not None:
            out.append(rec["latency_ms"] / b.latency_ms - 1.0)
        return out

    def _replay_history(self, study: optuna.Study, codec: StructureCodec) -> None:
        assert self.store is not None
        trials = []
        for row in self.store.trials(self.search_id):
            s = decode(json.loads(row["structure"]))
            c = CostRecord(row["flops"], row["params"], row["layers"])
            values = None
            if row["state"] == "complete":
                values = [row["score"]] + [self._objective(o, c, row) for o in self.spec.objectives]
            elif row["state"] == "rejected":
                values = [-1e12] + [self._objective(o, c, row) for o in self.spec.objectives]
            if values is None:
                continue
            trials.append(optuna.trial.create_trial(
                params=codec.encode(s), distributions=codec.distributions, values=values,
                user_attrs={"constraints": self._violations(c, row)},
                system_attrs={"constraints": self._violations(c, row)}))
        study.add_trials(trials)

    def _event(self, cp: Checkpoint, pop: Population | None, best: tuple[Structure, float] | None,
               elapsed: float) -> dict[str, Any]:
        counts = cp.state["counts"]
        rate = cp.n_trials / elapsed if elapsed > 0 else 0.0
        remaining = self.spec.iterations - cp.n_trials
        scores = pop.scores() if pop is not None else []
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
                    best_s = decode(json.loads(row[0]["structure"]))
        lat = st.get("latency")
        if lat is not None and lat.get("winner") is not None:  # predicted mode: the verified winner
            w = lat["candidates"][lat["winner"]]
            best_s, best_score = Structure.from_dict(w["structure"]), float(w["score"])
        c = costs(best_s, self.spec.height, self.spec.width)
        return SearchResult(
            search_id=self.search_id, spec=self.spec.to_dict(), best_structure=best_s, best_score=best_score,
            best_costs={**c.to_dict(), "flops_unit": "MACs + BN/activation element ops"},
            n_trials=cp.n_trials, evaluated=counts["evaluated"], rejected=counts["rejected"],
            failed=counts["failed"], seconds=st.get("elapsed", time.perf_counter() - t_start),
            pareto_front=front, best_curve=[tuple(x) for x in st.get("best_curve", [])],  # type: ignore[misc]
            provenance=provenance(), timings=st.get("timings", {}), latency=lat,
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
        backend = self.backend
        if backend is None:
            from zennas.search.task import LocalBackend

            backend = LocalBackend(threads=None)  # the runner sets the profile's threads itself
        failure: LatencyBudgetError | None = None
        try:
            rec = verify(cands, prof, self.budgets.latency_ms, backend, runs=spec.latency.runs,
                         warmup=spec.latency.warmup, resource=spec.latency.resource)
        except LatencyBudgetError as e:
            failure, rec = e, e.record  # type: ignore[attr-defined]
            rec["error"] = e.message
        secs = time.perf_counter() - t0
        rec["seconds"] = secs
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


class _PerTrialRandomSampler(optuna.samplers.BaseSampler):
    """Uniform random structures; trial n's draws come from (seed, n), so resume replays exactly."""

    def __init__(self, *, seed: int, number_offset: int = 0) -> None:
        self.seed, self.number_offset = seed, number_offset
        self._rngs: dict[int, Any] = {}

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, param_name: str, dist: Any) -> Any:
        rng = self._rngs.setdefault(trial.number, trial_rng(self.seed, self.number_offset + trial.number))
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return rng.choice(dist.choices)
        step = dist.step or 1
        return dist.low + step * rng.randrange((dist.high - dist.low) // step + 1)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._rngs.pop(trial.number, None)


def _latency_term(spec: SearchSpec, space: Any, start: Structure, budgets: Any, profile: Any) -> tuple[Any, Any]:
    """(profile, LatencyTerm) of a predicted-latency search, or (None, None) without a profile."""
    if profile is None and spec.latency.profile is None:
        return None, None
    from zennas.latency.predict import LatencyTerm, Predictor
    from zennas.latency.profile import load_profile, require_fit, space_digest

    if profile is None:
        profile = load_profile(str(spec.latency.profile))
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

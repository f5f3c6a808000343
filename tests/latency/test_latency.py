"""Device latency profiles, built for real in onnxruntime and torch on small grids at small input sizes."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

from torch import nn

from zennas.blocks import build_backbone
from zennas.latency import BuildSpec, Predictor, ProfileError, build_profile, load_profile
from zennas.latency.ops import Op, TableKey, block_ops, structure_ops
from zennas.latency.profile import loads_profile, profile_from_dict
from zennas.space.space import get_space
from zennas.space.structure import Block, Structure

# the module's profile is built for real (~200 cells, each an ONNX export and a session): slow on a
# loaded 2-core machine, so each test may take up to 10 minutes there
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ZENNAS = [sys.executable, "-m", "zennas.cli"]
RES = 64  # small input: every op is cheap

# a small build: few channel points (ratio 4), few samples, few runs
SMALL = dict(height=RES, width=RES, grid_ratio=4.0, plan_samples=40, calibration=3, warmup=1, min_runs=3,
             max_runs=3, min_time_s=0.0, network_runs=3, group_cells=4, in_network=True)


@pytest.fixture(scope="module")
def ort_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prof") / "ort.json"
    p = build_profile(BuildSpec(runtime="onnxruntime", **SMALL), save=lambda p: p.save(out))  # type: ignore[arg-type]
    assert p.complete and load_profile(out) == p
    return out


TINY = Structure((
    Block("ConvKXBNRELU", 3, 16, 2, 3, 1),
    Block("SuperResK1KXK1", 16, 32, 2, 3, 2, 16),
    Block("SuperResK1KXK1", 32, 32, 1, 5, 1, 8),
))


def test_ops_follow_the_builder() -> None:
    """Each conv the built module runs is one op, and each shortcut pool one pool op."""
    blocks = [*TINY.blocks, Block("SuperResK1DWK1", 16, 24, 2, 5, 3, 48), Block("S2D", 16, 32, 2, 3, 3)]
    for b in blocks:
        module = build_backbone(Structure((b,))) if b.type == "ConvKXBNRELU" else None
        if module is None:
            from zennas.blocks import get_block_builder

            module = get_block_builder(b.type)(b)
        convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
        pools = sum(isinstance(m, nn.AvgPool2d) for m in module.modules())
        ops = block_ops(b, 32, 32)
        assert sum(op.key.kind != "pool" for op in ops) == convs, b
        assert sum(op.key.kind == "pool" for op in ops) == pools, b


def test_repeated_units_are_counted_as_every_unit_run() -> None:
    """``block_unit_runs`` writes a run of identical units once with its count: expanded, it is the
    unit-by-unit list of every repetition (written out here from the layout), in execution order."""
    import random

    from zennas.latency.ops import _unit_ops, block_unit_runs
    from zennas.space.kinds import BLOCK_KINDS

    rng = random.Random(0)
    for _ in range(200):
        typ = rng.choice(["SuperResK1KXK1", "SuperResK1DWK1", "S2D"])
        cin, out = rng.choice([8, 16, 24, 64]), rng.choice([8, 16, 32, 64])
        b = Block(typ, cin, out, 2 if typ == "S2D" else rng.choice([1, 2]), rng.choice([3, 5]),
                  rng.randint(1, 6), None if typ == "S2D" else rng.choice([8, 16, 32]))
        h = w = rng.choice([16, 32, 64])
        every = []
        kind = BLOCK_KINDS[typ]
        for u in kind.units(b):
            for _ in range(u.repeat):
                ops, h, w = _unit_ops(b, u, h, w, kind.stem)
                every += ops
        h = w = every[0].key.height
        runs = block_unit_runs(b, h, w)
        assert len(runs) <= 3  # the first unit, then one run of the rest (S2D: its conv, then its refinements)
        expanded = [op for unit, n in runs for _ in range(n) for op in unit]
        assert expanded == every == block_ops(b, h, w), b


def test_hand_checked_decomposition_and_prediction(ort_profile: Path) -> None:
    """The prediction is the sum over ops of (scale * in-network ratio * (table term - empty call) +
    per-op cost), plus the offset, over the ops written out here by hand for TINY at 64x64."""
    p = load_profile(ort_profile)
    ops = [
        Op(TableKey("stem", 64, 64, 3, 2, False, "relu", 3), (16,)),
        # block 1, unit 0 (16 -> 32, stride 2, k3, btn 16): projection shortcut after a 2x2 pool
        Op(TableKey("pw", 32, 32, 1, 1, False, "relu"), (16, 16)),
        Op(TableKey("kxk", 32, 32, 3, 2, False, "relu"), (16,)),
        Op(TableKey("pool", 32, 32, 2, 2, False, "none"), (16,)),
        Op(TableKey("proj", 16, 16, 1, 1, False, "none"), (16, 32)),
        Op(TableKey("pw_add", 16, 16, 1, 1, False, "relu"), (16, 32)),
        # block 1, unit 1 (32 -> 32): identity shortcut
        Op(TableKey("pw", 16, 16, 1, 1, False, "relu"), (32, 16)),
        Op(TableKey("kxk", 16, 16, 3, 1, False, "relu"), (16,)),
        Op(TableKey("pw_add", 16, 16, 1, 1, False, "relu"), (16, 32)),
    ]
    got = structure_ops(TINY, 64, 64)
    first = got[:len(ops)]
    from zennas.latency.ops import unit_shortcut

    if unit_shortcut("SuperResK1KXK1", 32, 32, True) == "identity":  # before TinyNAS's forced projection
        assert first[:3] + first[4:] == ops[:3] + ops[4:] or first == ops
    else:
        assert first == ops
    table = {t.key: t for t in p.tables}
    o = p.overhead
    assert o is not None and o.per_mb_ms is not None  # the fit records its memory term (0 when not kept)

    def scaled_and_mb(op: Op) -> tuple[float, float]:
        assert op.key in table, op
        ratio = table[op.key].in_network  # the table's in-network ratio, read at build time
        assert ratio is not None and 0 < ratio <= 10
        t = o.scale * ratio * max(0.0, Predictor(p).table_ms(op) - p.call_overhead_ms)
        cin, cout = op.channels  # input and output maps in float32, MB: stride-2 ops halve the output side
        ho = -(-op.key.height // op.key.stride)
        return t, 4e-6 * (cin * op.key.height * op.key.width + cout * ho * ho)

    terms = [scaled_and_mb(op) for op in got]
    # the profile as built, and with a memory term strong enough that some ops hit the floor and others not
    strong = -0.75 * sorted(t / mb for t, mb in terms)[len(terms) // 2]
    for per_mb in (o.per_mb_ms, strong):
        q = dataclasses.replace(p, overhead=dataclasses.replace(o, per_mb_ms=per_mb))
        total = math.fsum(max(t + per_mb * mb, 0.25 * t) for t, mb in terms)  # never below a quarter of the op
        assert math.isclose(Predictor(q).predict(TINY), total + o.per_op_ms * len(got) + o.offset_ms, rel_tol=1e-12)
    floored = sum(t + strong * mb < 0.25 * t for t, mb in terms)
    assert 0 < floored < len(terms)


def test_the_network_fit_keeps_a_memory_term_of_either_sign_only_where_it_earns_its_place() -> None:
    import random

    from zennas.latency.fit import MEMORY_TERM_GAIN, fit_network

    rng = random.Random(0)
    nets = [(rng.uniform(8, 40), float(rng.randint(30, 90)), rng.uniform(10, 60)) for _ in range(16)]  # ops, n, MB
    # networks made from known terms, with a memory term: the fit gives them back exactly, and keeps it
    for per_mb in (-0.08, 0.03):
        rows = [(ops, n, 0.7 * ops + 0.01 * n + 0.5 + per_mb * mb, mb) for ops, n, mb in nets]
        fit = fit_network(rows)
        for g, want in zip((fit.scale, fit.per_op_ms, fit.offset_ms, fit.per_mb_ms), (0.7, 0.01, 0.5, per_mb),
                           strict=True):
            assert math.isclose(g, want, rel_tol=1e-6, abs_tol=1e-9), (fit, per_mb)
        assert fit.memory_term and fit.loo_error is not None and fit.loo_error_mb is not None
        assert fit.loo_error_mb < MEMORY_TERM_GAIN * fit.loo_error
    # networks with no memory effect, timed with 5 % noise: the term is not kept
    rows = [(ops, n, (0.7 * ops + 0.5) * rng.uniform(0.95, 1.05), mb) for ops, n, mb in nets]
    fit = fit_network(rows)
    assert not fit.memory_term and fit.per_mb_ms == 0.0
    assert fit.loo_error is not None and fit.loo_error_mb is not None
    assert fit.loo_error_mb >= MEMORY_TERM_GAIN * fit.loo_error
    # too few networks for a leave-one-out error to mean anything: never tried
    few = fit_network([(ops, n, 0.7 * ops - 0.08 * mb + 1.0, mb) for ops, n, mb in nets[:5]])
    assert few.per_mb_ms == 0.0 and few.loo_error is None


def test_a_profile_from_before_the_memory_term_loads_and_predicts_without_it(ort_profile: Path) -> None:
    p = load_profile(ort_profile)
    assert p.overhead is not None
    old = dataclasses.replace(p, overhead=dataclasses.replace(
        p.overhead, per_mb_ms=None, calibration=tuple(r[:3] for r in p.overhead.calibration)))
    doc = old.to_dict()
    assert "per_mb_ms" not in doc["overhead"]  # the document an earlier build wrote, checksum and all
    q = loads_profile(json.dumps(doc))
    pred, table = Predictor(q), {t.key: t for t in q.tables}
    o = q.overhead
    assert o is not None and o.per_mb_ms is None
    ops = structure_ops(TINY, RES, RES)
    total = math.fsum(o.scale * (table[op.key].in_network or 1.0) * max(0.0, pred.table_ms(op) - q.call_overhead_ms)
                      for op in ops)
    assert math.isclose(pred.predict(TINY), total + o.per_op_ms * len(ops) + o.offset_ms, rel_tol=1e-12)


def test_interpolation_is_exact_on_grid_points(ort_profile: Path) -> None:
    p = load_profile(ort_profile)
    pred = Predictor(p)
    for t in p.tables:
        for point, med in zip(t.cells(), t.median_ms, strict=True):
            assert math.isclose(pred.table_ms(Op(t.key, point)), med, rel_tol=1e-9), (t.key, point)
    # between grid points: between the neighbours (latency grows with channels here)
    t = next(t for t in p.tables if t.key.kind == "pw" and len(t.axes[0]) >= 2)
    a, b = t.axes[0][0], t.axes[0][1]
    mid = pred.table_ms(Op(t.key, ((a + b) // 2, t.axes[1][0])))
    lo, hi = sorted((t.median_ms[0], t.median_ms[len(t.axes[1])]))
    assert lo <= mid <= hi  # type: ignore[operator]


def test_outside_the_grid_the_edge_holds_below_and_scales_by_flops_above(ort_profile: Path) -> None:
    """No extrapolation of a table's curve: below an axis the first point's time, above it the last
    point's time times the op's FLOPs ratio; for every table of a real profile."""
    p = load_profile(ort_profile)
    pred = Predictor(p)
    for t in p.tables:
        first = tuple(a[0] for a in t.axes)
        last = tuple(a[-1] for a in t.axes)
        below = tuple(max(1, c // 4) for c in first)
        assert pred.table_ms(Op(t.key, below)) == pred.table_ms(Op(t.key, first)), t.key
        above = tuple(4 * c for c in last)
        ratio = Op(t.key, above).flops() / Op(t.key, last).flops()
        assert ratio > 1
        assert math.isclose(pred.table_ms(Op(t.key, above)), pred.table_ms(Op(t.key, last)) * ratio,
                            rel_tol=1e-12), t.key
        if len(t.axes) == 2:  # one axis below, the other above: the first held, the second scaled
            mixed = (below[0], above[1])
            edge = (first[0], last[1])
            want = pred.table_ms(Op(t.key, edge)) * Op(t.key, (first[0], above[1])).flops() / Op(t.key, edge).flops()
            assert math.isclose(pred.table_ms(Op(t.key, mixed)), want, rel_tol=1e-12), t.key


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_log_grid_equals_scipys_interpolator(dims: int) -> None:
    """The predictor's one-point interpolation is scipy's RegularGridInterpolator (linear in the logs,
    extrapolating outside the grid), inside, on and outside the grid, on random tables."""
    import random

    import numpy as np
    from scipy.interpolate import RegularGridInterpolator

    from zennas.latency.predict import LogGrid

    rng = random.Random(dims)
    axes = tuple(tuple(sorted(rng.sample(range(4, 2048), rng.randint(2, 6)))) for _ in range(dims))
    values = tuple(rng.uniform(0.01, 50.0) for _ in range(math.prod(len(a) for a in axes)))
    grid = LogGrid(axes, values)
    ref = RegularGridInterpolator(tuple(np.log(np.asarray(a, dtype=float)) for a in axes),
                                  np.log(np.asarray(values)).reshape([len(a) for a in axes]),
                                  method="linear", bounds_error=False, fill_value=None)
    points = [tuple(rng.choice(a) for a in axes) for _ in range(50)]  # on grid points
    points += [tuple(rng.randint(1, 4096) for _ in axes) for _ in range(300)]  # between and outside
    for pt in points:
        want = float(ref([[math.log(c) for c in pt]])[0])
        assert math.isclose(grid(pt), want, rel_tol=1e-12, abs_tol=1e-12), (pt, grid(pt), want)


def test_torch_profile_builds_and_predicts(tmp_path: Path) -> None:
    out = tmp_path / "torch.json"
    spec = BuildSpec(runtime="torch", space="giraffe-s2d", **SMALL)  # type: ignore[arg-type]
    p = build_profile(spec, save=lambda p: p.save(out))
    assert p.complete and p.runtime == "torch" and p.opset is None
    assert {t.key.kind for t in p.tables} == {"stem", "s2d", "kxk"}
    assert p.fingerprint.runtime_version.startswith("torch ")
    assert all(t.in_network is None for t in p.tables)  # asked for, but there is no torch profiler pass
    pred = Predictor(load_profile(out))
    assert pred.predict(get_space("giraffe-s2d").start) > 0


def test_resume_continues_a_partial_build(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    spec = BuildSpec(runtime="onnxruntime", space="giraffe-s2d", **SMALL)  # type: ignore[arg-type]

    class Stop(Exception):
        pass

    seen: list[int] = []

    def progress(ev: dict[str, object]) -> None:
        seen.append(int(ev["cells_done"]))  # type: ignore[call-overload]
        if len(seen) == 3:  # the first event, then two groups of 4 cells
            raise Stop

    with pytest.raises(Stop):
        build_profile(spec, save=lambda p: p.save(out), progress=progress, save_every_s=0.0)
    partial = load_profile(out)
    assert not partial.complete and 0 < partial.n_cells()[1] < partial.n_cells()[0]
    with pytest.raises(ProfileError) as e:
        Predictor(partial)
    assert e.value.field == "complete"
    measured = {(t.key, c): v for t in partial.tables for c, v in zip(t.cells(), t.median_ms, strict=True)
                if v is not None}
    done = build_profile(spec, resume=partial, save=lambda p: p.save(out))
    assert done.complete
    again = {(t.key, c): v for t in done.tables for c, v in zip(t.cells(), t.median_ms, strict=True)}
    assert all(again[k] == v for k, v in measured.items())  # the measured cells were kept, not re-timed
    # the rest was scaled to the level the first run's anchor set, not to a new one
    assert partial.settings["anchor_ms"] > 0 and done.settings["anchor_ms"] == partial.settings["anchor_ms"]
    with pytest.raises(ProfileError) as e:
        build_profile(dataclasses.replace(spec, batch=2), resume=partial)
    assert e.value.field == "batch"


def test_corrupted_or_edited_profile_is_refused(ort_profile: Path, tmp_path: Path) -> None:
    doc = json.loads(ort_profile.read_text())
    for f in ("p10_ms", "median_ms", "p90_ms"):
        doc["tables"][0][f][0] *= 0.5  # a hand edit that keeps the document valid
    with pytest.raises(ProfileError) as e:
        profile_from_dict(doc)
    assert e.value.field == "checksum"
    with pytest.raises(ProfileError) as e:
        loads_profile(ort_profile.read_text()[:-20])  # truncated
    assert e.value.field == "document"
    doc = json.loads(ort_profile.read_text())
    doc["tables"][0]["surprise"] = 1
    with pytest.raises(ProfileError) as e:
        profile_from_dict(doc)
    assert e.value.field == "tables[0].surprise"
    doc = json.loads(ort_profile.read_text())
    doc["runtime"] = "tensorrt"
    with pytest.raises(ProfileError) as e:
        profile_from_dict(doc, verify_checksum=False)
    assert e.value.field == "runtime" and "reserved" in e.value.message
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(ort_profile.read_text()), "threads": 2}))
    p = subprocess.run([*ZENNAS, "profile", "show", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "checksum" in p.stderr and "Traceback" not in p.stderr


def _spec(**kw: object) -> object:
    from zennas.search import LatencySpec, SearchSpec

    lat = kw.pop("latency", {})
    return SearchSpec(**{"height": RES, "width": RES, "population": 8, "iterations": 96, "generation": 16,
                         "warmup_iterations": 0, "seed": 0, **kw},  # type: ignore[arg-type]
                      latency=LatencySpec(**lat))  # type: ignore[arg-type]


@pytest.mark.parametrize("change,field", [({"space": "detection-dw"}, "latency.profile.space"),
                                          ({"height": 96, "width": 96}, "latency.profile.height"),
                                          ({"latency": {"batch": 2}}, "latency.profile.batch")])
def test_profile_for_another_search_is_refused(ort_profile: Path, change: dict[str, object], field: str) -> None:
    change = dict(change)
    from zennas.search import Search

    lat = {"profile": str(ort_profile), **change.pop("latency", {})}  # type: ignore[dict-item]
    spec = _spec(latency=lat, **change)
    with pytest.raises(ProfileError) as e:
        Search(spec)  # type: ignore[arg-type]
    assert e.value.field == field


def test_cli_refuses_a_profile_for_another_resolution(ort_profile: Path) -> None:
    p = subprocess.run([*ZENNAS, "search", "--resolution", "96", "--iterations", "16", "--population", "4",
                        "--latency-profile", str(ort_profile), "--budget-latency-ms", "100"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "latency.profile" in p.stderr and "height" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_cli_check_json(ort_profile: Path, tmp_path: Path) -> None:
    f = tmp_path / "tiny.json"
    f.write_text(TINY.to_json())
    p = subprocess.run([*ZENNAS, "profile", "check", str(ort_profile), str(f), "--structures", "3", "--seed", "1",
                        "--runs", "3", "--json"], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["n"] == 4 and len(d["rows"]) == 4  # the file first; no start (a file was given); 3 sampled
    assert Structure.from_dict(d["rows"][0]["structure"]) == TINY
    assert 0.0 <= d["within_10pct"] <= 1.0 and d["mape"] >= 0 and -1.0 <= d["kendall_tau"] <= 1.0
    ratios = sorted(r["measured_ms"] / r["predicted_ms"] for r in d["rows"])
    assert math.isclose(d["level"], (ratios[1] + ratios[2]) / 2)  # the median of 4
    at = sum(abs(r["predicted_ms"] * d["level"] / r["measured_ms"] - 1) <= 0.1 for r in d["rows"]) / 4
    assert d["within_10pct_at_level"] == at
    assert all(r["predicted_ms"] > 0 and r["measured_ms"] > 0 for r in d["rows"]), d["rows"]
    p = subprocess.run([*ZENNAS, "profile", "check", str(ort_profile), "--structures", "0", "--json"],
                       capture_output=True, text=True, timeout=120)
    d = json.loads(p.stdout)
    assert d["n"] == 1 and d["rows"][0]["structure"] == get_space("detection-k1kxk1").start.to_dict()
    p = subprocess.run([*ZENNAS, "profile", "check", str(ort_profile), "--structures", "-1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "structures" in p.stderr


def test_latency_budgeted_search_verifies_its_winner(ort_profile: Path) -> None:
    from zennas.search import Budgets, Search

    prof = load_profile(ort_profile)
    # the profile as loaded, but measured "elsewhere": the result warns that the worker differs. Its
    # op times are read 1.5x high (a conservative profile, re-scaled as data): the search's winner sits
    # at the predicted budget, and on a loaded 2-core machine the same backbone measures +-10 % from one
    # minute to the next, which would otherwise decide whether it meets the budget
    assert prof.overhead is not None
    moved = dataclasses.replace(prof, fingerprint=dataclasses.replace(prof.fingerprint, cpu="Another CPU"),
                                overhead=dataclasses.replace(prof.overhead, scale=1.5 * prof.overhead.scale))
    budget = 1.5 * Predictor(moved).predict(get_space("detection-k1kxk1").start)
    spec = _spec(budgets=Budgets(latency_ms=budget), latency={"profile": str(ort_profile), "verify_top_k": 3})
    result = Search(spec, profile=moved).run()  # type: ignore[arg-type]
    lat = result.latency
    assert lat is not None and lat["winner"] is not None
    assert 1 <= len(lat["candidates"]) <= 3
    w = lat["candidates"][lat["winner"]]
    assert w["measured_ms"] <= budget and w["predicted_ms"] <= budget
    assert Structure.from_dict(w["structure"]) == result.best_structure
    assert result.timings["verify"] > 0 and result.seconds >= result.timings["verify"]
    scores = [c["score"] for c in lat["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert result.summary()["latency"]["profile"]["checksum"] == moved.checksum
    assert any("differs" in w and "cpu" in w for w in lat["warnings"]), lat["warnings"]


def test_verification_stops_once_the_winner_is_known(ort_profile: Path) -> None:
    """``latency.verify = "until-met"`` measures in rank order, a wave at a time, and stops after the
    first wave holding a candidate that meets the budget: the same winner as measuring all k, fewer
    measurements; the unmeasured candidates are reported as skipped."""
    from zennas.search import Budgets, Search
    from zennas.search.task import LocalBackend
    from zennas.search.verify import verify

    prof = load_profile(ort_profile)
    # loose (timings on a loaded 2-core machine run 1.5x over the table): some candidate must meet it
    budget = 3.0 * Predictor(prof).predict(get_space("detection-k1kxk1").start)
    # (nothing measured while the search runs: the order of the measurements is what is checked)
    full = Search(_spec(budgets=Budgets(latency_ms=budget),
                        latency={"verify_top_k": 4, "verify": "all", "speculate": False}),
                  profile=prof).run()  # type: ignore[arg-type]
    lat_all = full.latency
    assert lat_all is not None and lat_all["measured"] == len(lat_all["candidates"]) >= 3
    assert not any(c["skipped"] for c in lat_all["candidates"])
    quick = Search(_spec(budgets=Budgets(latency_ms=budget),
                         latency={"verify_top_k": 4, "speculate": False}), profile=prof).run()  # type: ignore[arg-type]
    lat = quick.latency
    assert lat is not None and lat["verify"] == "until-met" and lat["winner"] is not None
    # the same search: the same top-k, in the same rank order
    assert [c["structure"] for c in lat["candidates"]] == [c["structure"] for c in lat_all["candidates"]]
    # measured up to the winner and no further; every better-ranked one measured and over the budget
    assert lat["measured"] == lat["winner"] + 1
    assert all(not c["skipped"] and not c["meets_budget"] for c in lat["candidates"][:lat["winner"]])
    assert all(c["skipped"] and c["measured_ms"] is None for c in lat["candidates"][lat["measured"]:])

    class TwoAtOnce(LocalBackend):  # a backend that measures two at once: waves of two
        def parallelism(self, resource: str | None = None) -> int:
            return 2

    cands = [(c["number"], c["score"], Structure.from_dict(c["structure"]), c["predicted_ms"])
             for c in lat_all["candidates"]]
    rec = verify(cands, prof, budget, TwoAtOnce(threads=None), runs=2, warmup=1, resource=None)
    assert rec["winner"] is not None
    assert rec["measured"] == min(len(cands), 2 * (rec["winner"] // 2 + 1))  # whole waves, up to the winner's
    from zennas.errors import SpecError

    with pytest.raises(SpecError) as bad:
        _spec(latency={"verify": "some"})
    assert bad.value.field == "latency.verify"


def test_the_measuring_process_starts_with_the_search_and_ends_with_it(ort_profile: Path) -> None:
    """Without a backend, the top-k are measured in a process spawned when the search starts (its
    imports overlap the search); it is gone when the search returns, and one that died is a failed
    measurement, not a crash."""
    import multiprocessing as mp

    from zennas.search import Budgets, Search
    from zennas.search.task import WarmProcess
    from zennas.search.verify import measure_task

    prof = load_profile(ort_profile)
    budget = 3.0 * Predictor(prof).predict(get_space("detection-k1kxk1").start)
    result = Search(_spec(budgets=Budgets(latency_ms=budget), latency={"verify_top_k": 2}), profile=prof).run()  # type: ignore[arg-type]
    lat = result.latency
    assert lat is not None and lat["candidates"][0]["worker"] == "verifier"
    assert not mp.active_children()
    w = WarmProcess()
    w._proc.kill()
    rec = w.evaluate([measure_task(prof, get_space("detection-k1kxk1").start, 7, runs=1, warmup=0, resource=None)])
    assert rec[0]["state"] == "failed" and "measuring process ended" in rec[0]["reason"] and rec[0]["number"] == 7
    w.close()
    assert not mp.active_children()


def test_search_fails_clearly_when_no_candidate_meets_the_budget_measured(ort_profile: Path) -> None:
    """A profile that under-predicts by 10x (a legitimately built profile, re-scaled as data) lets the
    search accept candidates the device then measures over budget."""
    from zennas.search import Budgets, Search, SearchStore
    from zennas.search.verify import LatencyBudgetError

    prof = load_profile(ort_profile)
    assert prof.overhead is not None
    low = dataclasses.replace(prof, overhead=dataclasses.replace(prof.overhead, scale=prof.overhead.scale / 10,
                                                                 per_op_ms=0.0, offset_ms=0.0,
                                                                 per_mb_ms=(prof.overhead.per_mb_ms or 0) / 10))
    budget = 1.2 * Predictor(low).predict(get_space("detection-k1kxk1").start)
    spec = _spec(budgets=Budgets(latency_ms=budget), latency={"verify_top_k": 2})
    store = SearchStore.open("sqlite://")
    with pytest.raises(LatencyBudgetError) as e:
        Search(spec, profile=low, store=store, search_id="s").run()  # type: ignore[arg-type]
    assert e.value.field == "budgets.latency_ms" and "closest is candidate" in e.value.message
    # the failed verification is recorded: resuming the finished search fails the same way, unmeasured
    with pytest.raises(LatencyBudgetError) as again:
        Search(spec, profile=low, store=store, search_id="s").run(resume=True)  # type: ignore[arg-type]
    assert again.value.message == e.value.message


def test_predicted_latency_is_an_evaluator_term_that_rejects_before_scoring(ort_profile: Path) -> None:
    """The one evaluation path: the profile's prediction is a per-block term of the search's
    evaluator (offset included), and a candidate over the budget is rejected by it, like FLOPs."""
    from zennas.search import Budgets, Search

    prof = load_profile(ort_profile)
    pred = Predictor(prof)
    space = get_space("detection-k1kxk1")
    start_ms = pred.predict(space.start)
    spec = _spec(budgets=Budgets(latency_ms=1.2 * start_ms), latency={"profile": str(ort_profile)})
    search = Search(spec, profile=prof)  # type: ignore[arg-type]
    ev = search.evaluator
    e = ev(space.start)
    assert ev.total(e, "latency_ms") == pytest.approx(start_ms, rel=1e-9) and e.reason is None
    wide = Structure(tuple(b._replace(out_channels=b.out_channels * 2, in_channels=b.in_channels * 2 if i else 3,
                                      bottleneck=b.bottleneck * 2 if b.bottleneck else None)
                           for i, b in enumerate(space.start.blocks)))
    e2 = ev(wide)
    assert ev.total(e2, "latency_ms") == pytest.approx(pred.predict(wide), rel=1e-9)
    assert ev.total(e2, "latency_ms") > 1.2 * start_ms and e2.reason == "latency_ms"
    assert not search.needs_latency and search.backend is None  # predicted in the driver: no backend


def test_a_profile_other_than_the_one_submitted_is_refused(ort_profile: Path) -> None:
    """The service pins the checksum of the profile a search was submitted with (latency.profile_checksum):
    a profile with another checksum is refused, the pinned one is used."""
    from zennas.errors import SpecError
    from zennas.search import Search

    p = load_profile(ort_profile)
    with pytest.raises(ProfileError) as e:
        Search(_spec(latency={"profile": "cpu1", "profile_checksum": "sha256:" + "0" * 64}), profile=p)  # type: ignore[arg-type]
    assert e.value.field == "latency.profile" and "submitted with" in e.value.message
    s = Search(_spec(latency={"profile": "cpu1", "profile_checksum": p.checksum}), profile=p)  # type: ignore[arg-type]
    assert s.profile is p
    with pytest.raises(SpecError) as e2:
        _spec(latency={"profile_checksum": p.checksum})  # a checksum without a profile
    assert e2.value.field == "latency.profile_checksum"


def test_the_verification_runs_no_measurement_over_the_services_limits(ort_profile: Path) -> None:
    """With the service's evaluation limits in the spec, a top candidate whose forward pass would break
    them is not measured (predicted mode runs no other forward pass the limits could refuse)."""
    import dataclasses as dc

    from zennas.admission import Limits
    from zennas.search import Budgets, Search
    from zennas.search.verify import LatencyBudgetError

    prof = load_profile(ort_profile)
    # no latency budget: every measured candidate "meets" it, so only the limits decide (not the timings)
    spec = _spec(budgets=Budgets(removed=("latency_ms",)), latency={"verify_top_k": 2})
    tiny = dc.replace(spec, limits=Limits(gmacs=1e-6))  # type: ignore[type-var]  # no candidate fits 1e3 MACs
    with pytest.raises(LatencyBudgetError) as e:
        Search(tiny, profile=prof).run()  # type: ignore[arg-type]
    assert "could not be measured" in e.value.message and "over this service's compute limit" in e.value.message
    quiet = dc.replace(spec, latency=dc.replace(spec.latency, speculate=False))  # type: ignore[attr-defined]
    result = Search(dc.replace(quiet, limits=Limits()), profile=prof).run()  # type: ignore[type-var,arg-type]
    lat = result.latency  # within the limits: measured (up to the winner; the rest not needed)
    assert lat is not None and lat["winner"] == 0
    assert lat["candidates"][0]["measured_ms"] and all(c["skipped"] for c in lat["candidates"][1:])


class _Counting:
    """A backend that counts what it is asked to measure (the local measuring process underneath)."""

    def __init__(self) -> None:
        from zennas.search.task import WarmProcess

        self.inner, self.asked = WarmProcess(), []  # type: ignore[var-annotated]
        self.name = "counting"

    def evaluate(self, tasks: list[dict[str, object]]) -> list[dict[str, object]]:
        self.asked += [t["number"] for t in tasks]
        return self.inner.evaluate(tasks)

    def close(self) -> None:
        self.inner.close()


def test_the_speculator_measures_the_top_in_rank_order_and_the_verification_reuses_it(ort_profile: Path) -> None:
    """While a search runs, the top candidates are measured best-ranked first, as the top changes;
    ``until-met`` stops at one that meets the budget; the verification at the end measures only what
    is missing, and the same winner comes out."""
    import time

    from zennas.latency.sample import sample_structures
    from zennas.search.rows import encode
    from zennas.search.verify import LatencyBudgetError, Speculator, verify

    prof = load_profile(ort_profile)
    pred = Predictor(prof)
    space = get_space("detection-k1kxk1")
    a, b, c = sample_structures(space, 3, seed=0, height=RES, width=RES)

    def items(*xs: tuple[int, Structure]) -> list[list[object]]:
        return [[10.0 - i, n, encode(s)] for i, (n, s) in enumerate(xs)]

    def measured(sp: Speculator, n: int) -> dict[int, dict[str, object]]:
        while len(sp.done) < n:  # the measurements land (bounded by the test's timeout), then it idles
            time.sleep(0.05)
        return sp.finish()

    backend = _Counting()
    try:
        sp = Speculator(backend, prof, None, runs=2, warmup=1, resource=None)  # no budget: every one meets it
        sp.offer(items((1, a), (2, b)))
        assert set(measured(sp, 1)) == {1}  # the best-ranked met the budget: rank 1 not needed
        sp = Speculator(backend, prof, None, runs=2, warmup=1, resource=None)
        sp.offer(items((3, c), (1, a), (2, b)))  # a new best: measured next
        known = measured(sp, 1)
        assert set(known) == {3} and backend.asked == [1, 3]
        cands = [(3, 10.0, c, pred.predict(c)), (1, 9.0, a, pred.predict(a)), (2, 8.0, b, pred.predict(b))]
        rec = verify(cands, prof, None, backend, runs=2, warmup=1, resource=None, known=known)
        assert backend.asked == [1, 3]  # nothing measured again
        assert rec["winner"] == 0 and rec["measured_during_search"] == 1 and rec["candidates"][0]["speculative"]
        assert [x["verdict"] for x in rec["candidates"]][1:] == ["not measured (a better-ranked candidate met the "
                                                                 "budget)"] * 2
        # a budget nobody meets: each is measured in rank order, and the verification has nothing left to do
        sp = Speculator(backend, prof, 1e-6, runs=2, warmup=1, resource=None)
        sp.offer(items((3, c), (1, a), (2, b)))
        known = measured(sp, 3)  # all three in rank order, then idle
        assert backend.asked == [1, 3, 3, 1, 2]
        with pytest.raises(LatencyBudgetError) as e:
            verify(cands, prof, 1e-6, backend, runs=2, warmup=1, resource=None, known=known)
        assert backend.asked == [1, 3, 3, 1, 2] and "closest is candidate" in e.value.message
    finally:
        backend.close()


def test_a_search_measures_while_it_runs_and_reports_it(ort_profile: Path) -> None:
    """A predicted search whose last generation the measuring process catches up with (the test's
    progress callback waits for it at the final event, as a search longer than one measurement
    would): its top candidates are measured while it runs, the verification reuses them and measures
    nothing more, and the winner is the best-ranked candidate that meets the budget with every
    better-ranked one measured and over it."""
    import multiprocessing as mp
    import time

    from zennas.search import Budgets, Search

    prof = load_profile(ort_profile)
    budget = 3.0 * Predictor(prof).predict(get_space("detection-k1kxk1").start)
    spec = _spec(budgets=Budgets(latency_ms=budget), latency={"verify_top_k": 3, "runs": 2, "warmup": 1})
    search: Search | None = None

    def catch_up(ev: dict[str, object]) -> None:
        sp = search._speculator if search is not None else None
        while ev.get("finished") and sp is not None and not sp.idle():
            time.sleep(0.05)

    search = Search(spec, profile=prof, progress=catch_up, progress_interval=1e9)  # type: ignore[arg-type]
    result = search.run()
    lat = result.latency
    assert lat is not None and lat["winner"] is not None
    w = lat["winner"]
    assert all(not c["skipped"] and not c["meets_budget"] for c in lat["candidates"][:w])
    assert lat["candidates"][w]["measured_ms"] <= budget
    # every candidate up to the winner was measured while the search ran: none after it
    assert all(c["speculative"] for c in lat["candidates"][:w + 1])
    assert lat["measured_during_search"] >= w + 1 and lat["seconds_during_search"] > 0
    assert lat["measured"] == sum(not c["skipped"] for c in lat["candidates"])
    assert lat["seconds"] < lat["seconds_during_search"]  # no measurement after the search
    assert not mp.active_children()
    # off: nothing measured before the search ends
    quiet = _spec(budgets=Budgets(latency_ms=budget), latency={"verify_top_k": 3, "speculate": False})
    lat2 = Search(quiet, profile=prof).run().latency  # type: ignore[arg-type]
    assert lat2 is not None and lat2["measured_during_search"] == 0
    assert not any(c["speculative"] for c in lat2["candidates"])
    from zennas.errors import SpecError

    with pytest.raises(SpecError) as bad:
        _spec(latency={"speculate": "yes"})
    assert bad.value.field == "latency.speculate"


def test_a_stopped_search_leaves_no_measuring_process(ort_profile: Path) -> None:
    import multiprocessing as mp

    from zennas.search import Budgets, Search

    prof = load_profile(ort_profile)
    budget = 3.0 * Predictor(prof).predict(get_space("detection-k1kxk1").start)
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > 3

    s = Search(_spec(budgets=Budgets(latency_ms=budget), iterations=10_000), profile=prof,  # type: ignore[arg-type]
               should_stop=stop)
    s.run()
    assert s.stopped and not mp.active_children()


def test_no_measuring_beside_the_search_without_a_spare_core() -> None:
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from zennas.search.verify import spare_core; print(spare_core(1), spare_core(0))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["False", "True"], p.stderr


def test_a_measurement_the_top_no_longer_needs_is_stopped_part_way(ort_profile: Path) -> None:
    """A new best while the measuring process times an older one: the older timing stops part-way
    (here 100,000 runs, minutes, would otherwise hold the process) and the new best is measured next."""
    import time

    from zennas.latency.sample import sample_structures
    from zennas.search.rows import encode
    from zennas.search.task import WarmProcess
    from zennas.search.verify import Speculator

    prof = load_profile(ort_profile)
    a, c = sample_structures(get_space("detection-k1kxk1"), 2, seed=1, height=RES, width=RES)
    backend = WarmProcess()
    sp = Speculator(backend, prof, None, runs=100_000, warmup=0, resource=None)
    try:
        sp.offer([[1.0, 1, encode(a)]])
        while sp._busy != 1:
            time.sleep(0.01)
        time.sleep(1.0)  # into a's timing (the process is ready once it has measured anything)
        sp.offer([[2.0, 2, encode(c)], [1.0, 1, encode(a)]])  # a new best ranks above the one in progress
        t0 = time.perf_counter()
        while sp._busy != 2:
            time.sleep(0.01)
        assert time.perf_counter() - t0 < 120  # a's 100,000 runs were not run out
        assert sp.measured == 0 and 1 not in sp.done  # stopped, not recorded: it would be measured again
    finally:
        sp.abandon()
        backend.close(wait=0.0)


def test_a_verification_timing_stops_once_its_verdict_is_settled(ort_profile: Path) -> None:
    """With a budget, the timing of a verified candidate ends after 3 runs all on one side of it
    instead of running all ``runs``; without one (or while runs straddle it) all are run."""
    from zennas.search.task import TaskRunner
    from zennas.search.verify import measure_task, verdict_settled

    prof = load_profile(ort_profile)
    s = get_space("detection-k1kxk1").start
    runner = TaskRunner(threads=None)
    far = runner.run(measure_task(prof, s, 0, runs=12, warmup=1, resource=None, budget_ms=1e9))
    assert far["state"] == "complete" and far["latency_runs"] == 3
    over = runner.run(measure_task(prof, s, 0, runs=12, warmup=1, resource=None, budget_ms=1e-9))
    assert over["latency_runs"] == 3
    full = runner.run(measure_task(prof, s, 0, runs=12, warmup=1, resource=None))
    assert full["latency_runs"] == 12
    assert not verdict_settled([1.0, 3.0, 1.0], 2.0) and not verdict_settled([1.0, 1.0], 2.0)
    assert verdict_settled([1.0, 1.5, 2.0], 2.0) and verdict_settled([2.5, 3.0, 2.1], 2.0)


def test_check_times_in_rounds_over_groups_in_order(ort_profile: Path) -> None:
    """``check_profile`` with a group cap so small that each structure is a group of its own: every
    structure is still measured, in the given order, the first (the anchor) at factor 1 and each
    other scaled by its group's anchor timing; the profile was built the same way (recorded)."""
    from zennas.latency.check import check_profile
    from zennas.latency.sample import sample_structures

    prof = load_profile(ort_profile)
    assert prof.settings["timing"] == "rounds" and prof.settings["anchor_ms"] > 0
    space = get_space("detection-k1kxk1")
    todo = [TINY, *sample_structures(space, 3, seed=2, height=RES, width=RES)]
    rep = check_profile(prof, todo, runs=3, group_bytes=1)
    assert [r.structure for r in rep.rows] == todo
    assert rep.rows[0].drift == 1.0 and all(r.drift > 0 for r in rep.rows)
    assert all(r.measured_ms > 0 and r.p10_ms <= r.measured_ms <= r.p90_ms for r in rep.rows)
    one = check_profile(prof, todo, runs=3)  # one group: nothing to correct
    assert all(r.drift == 1.0 for r in one.rows)


def test_in_network_node_times_match_every_conv_of_the_structure() -> None:
    """ONNX Runtime's profiler, read for real: each conv op of a structure (the stem, the units' convs,
    the projection, the tails with their fused residual sum) is matched to exactly one conv node of its
    optimized graph, with an in-network time; the ratios then come per table."""
    from zennas.latency.innetwork import CONV_KINDS, factors, match
    from zennas.latency.runtimes import Runner

    nodes = Runner("onnxruntime").node_times(TINY, RES, RES, runs=3)
    ops = structure_ops(TINY, RES, RES)
    convs = [op for op in ops if op.key.kind in CONV_KINDS]
    got = match(ops, nodes)
    assert sorted(map(repr, (op for op, _ in got))) == sorted(map(repr, convs))  # each once, none left over
    assert all(ms > 0 for _, ms in got)
    assert sum(n.op_type == "Conv" for n in nodes) == len(convs)
    import statistics

    keys = {op.key for op in ops}
    ratio = factors(got, lambda op: 1.0, keys)  # a table of 1 ms everywhere: the ratio is the node time
    per: dict[TableKey, list[float]] = {}
    for op, ms in got:
        per.setdefault(op.key, []).append(ms)
    every = statistics.median(ms for _, ms in got)
    for k in keys:  # the pool (no conv node) takes the median over every matched op
        assert math.isclose(ratio[k], statistics.median(per[k]) if k in per else every), k

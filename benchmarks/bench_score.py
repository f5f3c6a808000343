"""Score benchmarks: analytic pipeline throughput, forward-pass entropy, Zen-score.

    python benchmarks/bench_score.py            # everything (the reference-settings runs take ~1-2 min)
    python benchmarks/bench_score.py --quick    # skip the reference-settings forward passes

a. candidates/s of mutate -> budget check -> costs -> entropy-analytic with zennas (Mutator.mutate +
   the search's Evaluator: the code the search runs per candidate) against a naive plain-Python loop of the same steps (deepcopy'd dicts,
   reference-style mutation, a freshly validated Structure, zennas.cost.costs, the entropy-analytic
   scorer), one core, same run.
b. forward-pass ``entropy`` seconds per candidate at our defaults vs the reference settings
   (480x480, batch 32, repeat 4), score differences, batch-1 resolution table.
c. ``zen`` seconds per candidate (bn_mode running and batch) at 224 batch 16.

Times are the best of the stated repeats: the machine is shared and other processes may run.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of_cpu, header, load_structures, pct, section, table, verdict

from zennas.cost import block_cost, costs
from zennas.score import make_scorer
from zennas.score.analytic import _block_log_std
from zennas.search.evaluate import Evaluator, search_evaluator
from zennas.space.mutation import Mutator, smart_round
from zennas.space.space import MutationRules, get_space
from zennas.space.structure import Block, Structure

SPACE = "detection-k1kxk1"
BUDGET_FLOPS = 188e8
BUDGET_LAYERS = 91
RES = 480
POOL = 256  # parents are drawn from the last POOL accepted candidates
ISSUE_REF_BATCH1 = {480: 0.36, 224: 0.21}  # the reference code's own MAE-DET-S batch-1 seconds, 1 thread


def clear_caches() -> None:
    """Cold per-block caches, so every repeat does the same work (both pipelines share them)."""
    block_cost.cache_clear()
    _block_log_std.cache_clear()


# -- a. zennas pipeline ----------------------------------------------------------------------------
def _setup() -> tuple[Any, Mutator, Evaluator]:
    space = get_space(SPACE)
    mut = Mutator(space, budget_layers=BUDGET_LAYERS, height=RES, width=RES)
    ev = search_evaluator(space.start, RES, RES, score="entropy-analytic", settings={},
                          stage_weights=space.stage_weights, flops=BUDGET_FLOPS, layers=BUDGET_LAYERS)
    return space, mut, ev


def zennas_pipeline(n: int) -> dict[str, Any]:
    """What the search runs per candidate: ``Mutator.mutate`` (a Structure of Blocks, built without
    re-validation) and the search's ``Evaluator`` (costs, budget check and entropy-analytic in one pass)."""
    space, mut, ev = _setup()
    rng = random.Random(0)
    pool = [space.start]
    pos = 0
    accepted = 0
    best = -math.inf
    mutate, score = mut.mutate, ev.score
    for _ in range(n):
        child = mutate(pool[int(rng.random() * len(pool))], rng)
        e = ev(child)
        if e.reason is None:
            accepted += 1
            s = score(e)
            if s > best:
                best = s
            if len(pool) < POOL:
                pool.append(child)
            else:
                pool[pos] = child
                pos = (pos + 1) % POOL
    return {"accepted": accepted, "best": best}


def zennas_mutate_only(n: int) -> list[Structure]:
    space, mut, _ = _setup()
    rng = random.Random(0)
    pool = [space.start]
    out = []
    pos = 0
    mutate = mut.mutate
    for _ in range(n):
        child = mutate(pool[int(rng.random() * len(pool))], rng)
        out.append(child)
        if len(pool) < POOL:
            pool.append(child)
        else:
            pool[pos] = child
            pos = (pos + 1) % POOL
    return out


def zennas_evaluate_only(cands: list[Structure]) -> None:
    _, _, ev = _setup()
    for s in cands:
        ev(s)


# -- a. the naive baseline -------------------------------------------------------------------------
_CLASS = {"ConvKXBNRELU": "ConvKXBNRELU", "SuperResK1KXK1": "SuperResK1KXK1"}


def _to_dicts(s: Structure) -> list[dict[str, Any]]:
    out = []
    for b in s.blocks:
        d: dict[str, Any] = {"class": b.type, "in": b.in_channels, "out": b.out_channels, "s": b.stride,
                             "k": b.kernel}
        if b.type != "ConvKXBNRELU":
            d["L"], d["btn"] = b.layers, b.bottleneck
        out.append(d)
    return out


def _naive_layers(blocks: list[dict[str, Any]]) -> int:
    return sum(1 if b["class"] == "ConvKXBNRELU" else 3 * b["L"] for b in blocks)


def _naive_mutate_block(blocks: list[dict[str, Any]], idx: int, rng: random.Random, r: MutationRules,
                        budget_layers: int) -> None:
    """TinyNAS-style, in place on a dict: one field of block ``idx``."""
    b = blocks[idx]
    n = len(blocks)
    nxt = blocks[idx + 1] if idx + 1 < n else None
    if b["class"] == "ConvKXBNRELU":
        if nxt is None:
            return
        out = min(r.max_channels, smart_round(b["out"] * rng.choice(r.channel_multipliers), r.channel_round))
        b["out"] = min(r.stem_max_out or out, out, nxt["out"])
        return
    what = rng.choice(list(r.block_fields))
    if what == "out":
        out = min(r.max_channels, smart_round(b["out"] * rng.choice(r.channel_multipliers), r.channel_round))
        out = min(out, int(4 * b["in"]))
        out = max(out, b["in"])
        if nxt is not None:
            out = min(out, nxt["out"])
            floor = smart_round(nxt["out"] / 4, r.channel_round)
            out = max(out, floor)
        b["out"] = out
    elif what == "kernel":
        b["k"] = rng.choice([k for k in r.kernels if k != b["k"]])
    elif what == "bottleneck":
        btn = min(r.max_channels, smart_round(b["btn"] * rng.choice(r.channel_multipliers), r.channel_round))
        b["btn"] = min(b["out"], btn)
    elif what == "layers":
        choices = [max(1, b["L"] + d) for d in r.layer_deltas]
        choices = [c for c in choices if c != b["L"]]
        new = rng.choice(choices)
        cap = 3 if idx == 1 else max(1, budget_layers // 3 // (n - 2))
        b["L"] = min(cap, new)
    if b["btn"] < b["out"] / 10:
        b["btn"] = smart_round(b["out"] / 10, r.channel_round)


def naive_mutate(parent: list[dict[str, Any]], rng: random.Random, r: MutationRules,
                 budget_layers: int) -> list[dict[str, Any]]:
    struct = parent
    n = len(struct)
    for _ in range(r.rounds):
        new = struct
        for _try in range(n):
            new = copy.deepcopy(struct)
            idx = rng.randint(0, n - 1)  # any block (the reference's exclusive bound fixed)
            _naive_mutate_block(new, idx, rng, r, budget_layers)
            for i in range(1, n):  # re-chain
                new[i]["in"] = new[i - 1]["out"]
            res = float(RES)
            for b in new:  # shrink kernels too large for the feature map
                while b["k"] > 1 and b["k"] * r.kernel_shrink_ratio > res:
                    b["k"] -= 2
                res /= b["s"]
            if _naive_layers(new) <= budget_layers:
                break
        struct = new
    return struct


def naive_pipeline(n: int) -> dict[str, Any]:
    space = get_space(SPACE)
    rules = space.mutation
    scorer = make_scorer("entropy-analytic")
    rng = random.Random(0)
    pool = [_to_dicts(space.start)]
    pos = 0
    accepted = 0
    best = -math.inf
    for _ in range(n):
        parent = pool[rng.randrange(len(pool))]
        child = naive_mutate(parent, rng, rules, BUDGET_LAYERS)
        s = Structure(tuple(Block(_CLASS[d["class"]], d["in"], d["out"], d["s"], d["k"], d.get("L", 1),
                                  d.get("btn")) for d in child))  # validated
        c = costs(s, RES, RES)
        if c.layers > BUDGET_LAYERS or c.flops > BUDGET_FLOPS:
            continue
        score = scorer(s).score
        accepted += 1
        best = max(best, score)
        if len(pool) < POOL:
            pool.append(child)
        else:
            pool[pos] = child
            pos = (pos + 1) % POOL
    return {"accepted": accepted, "best": best}


def bench_analytic(args: argparse.Namespace) -> None:
    section("a. analytic pipeline throughput (mutate -> budget check -> costs -> entropy-analytic), 1 core")
    n_ours, n_base, reps = args.n_ours, args.n_naive, args.repeats

    def ours() -> dict[str, Any]:
        clear_caches()
        return zennas_pipeline(n_ours)

    def naive() -> dict[str, Any]:
        clear_caches()
        return naive_pipeline(n_base)

    def mut_only() -> list[Structure]:
        clear_caches()
        return zennas_mutate_only(n_ours)

    cands: list[Structure] = []

    def ev_only() -> None:
        clear_caches()
        zennas_evaluate_only(cands)

    # Interleaved (ours, naive, mutate-only, evaluate-only, ours, ...) so that every variant meets
    # the same load on a shared machine; the best repeat of each is kept (wall and CPU separately).
    walls: dict[str, list[float]] = {k: [] for k in ("ours", "naive", "mut", "ev")}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    res: dict[str, Any] = {}
    for _ in range(reps):
        for key, fn in (("ours", ours), ("naive", naive), ("mut", mut_only), ("ev", ev_only)):
            w, c, res[key], _ = best_of_cpu(fn, 1)
            walls[key].append(w)
            cpus[key].append(c)
            if key == "mut":
                cands = res[key]
    n = {"ours": n_ours, "naive": n_base, "mut": n_ours, "ev": n_ours}
    labels = {
        "ours": "zennas, the search's path (Mutator.mutate + Evaluator)",
        "naive": "naive (deepcopy dicts, ref-style mutate, Structure(), costs(), entropy-analytic scorer)",
        "mut": "  zennas: Mutator.mutate only",
        "ev": "  zennas: Evaluator only (costs, budget check, entropy-analytic)",
    }
    print(f"parents: uniform among the last {POOL} accepted candidates (start: detection-k1kxk1 start), "
          f"random.Random(0); per-block caches cleared before every repeat; best of {reps} interleaved repeats "
          "(all wall times listed, sorted)")
    rows = []
    for key in ("ours", "naive", "mut", "ev"):
        bw, bc = min(walls[key]), min(cpus[key])
        r = res[key] if key in ("ours", "naive") else None
        rows.append([labels[key], n[key], bw, " / ".join(f"{x:.2f}" for x in sorted(walls[key])), n[key] / bw,
                     bc, n[key] / bc, 1e6 * bc / n[key],
                     f"{r['accepted'] / n[key]:.1%}" if r else "", r["best"] if r else None])
    table(["pipeline", "candidates", "best wall s", "all wall s", "candidates/s (wall)", "best CPU s",
           "candidates/s (CPU)", "us/candidate (CPU)", "accepted", "best score"], rows)
    rw = (n_ours / min(walls["ours"])) / (n_base / min(walls["naive"]))
    rc = (n_ours / min(cpus["ours"])) / (n_base / min(cpus["naive"]))
    rate_w, rate_c = n_ours / min(walls["ours"]), n_ours / min(cpus["ours"])
    print(f"ratio zennas / naive: {rw:.1f}x (wall), {rc:.1f}x (CPU)")
    print(f"target >= 100,000 candidates/s: {verdict(rate_w >= 1e5)} by wall ({rate_w:,.0f}/s), "
          f"{verdict(rate_c >= 1e5)} by CPU time ({rate_c:,.0f}/s)")


# -- b. forward-pass entropy -----------------------------------------------------------------------
def _time_scorer(scorer: Any, s: Structure, reps: int) -> tuple[float, float, float]:
    """(best wall s, best CPU s, score) after one warm-up call."""
    bw, bc, r, _ = best_of_cpu(lambda: scorer(s), reps, warmup=1)
    return bw, bc, float(r.score)


def bench_entropy(args: argparse.Namespace) -> None:
    section("b. forward-pass entropy: our defaults vs the reference settings")
    fx = load_structures()
    reps = args.fw_repeats
    rows = []
    rt = args.ref_threads
    ref: dict[str, tuple[float, float, float]] = {}  # name -> (wall s, CPU s, score) at rt threads
    default: dict[tuple[str, int], tuple[float, float, float]] = {}
    for name, (s, _f) in fx.items():
        for th in (1, 2):
            default[(name, th)] = _time_scorer(make_scorer("entropy", threads=th), s, reps)
        if not args.quick:
            w, c, r, _ = best_of_cpu(lambda s=s: make_scorer("entropy", reference=True, threads=rt)(s), 1)
            ref[name] = (w, c, float(r.score))
    d = make_scorer("entropy")
    print(f"defaults: {d.height}x{d.width}, {d.padding} padding, batch {d.batch}, repeat {d.repeat}, "
          f"channels_last={d.channels_last}, "
          f"inference mode (best of {reps} after a warm-up call)")
    print("reference settings: 480x480, batch 32, repeat 4"
          + (f" -- run once per fixture on {rt} thread(s), compared with the default on as many" if not args.quick
               else " -- SKIPPED (--quick)"))
    print("CPU s of a 2-thread run is the sum over both threads")
    for name, (_s, f) in fx.items():
        ef = f["entropy_forward"]
        t1, c1, sc1 = default[(name, 1)]
        t2, c2, _sc2 = default[(name, 2)]
        row = [name, t1, c1, t2, c2, sc1, pct(sc1, ef["score"])]
        if name in ref:
            tr, cr, scr = ref[name]
            tx, cx, scx = default[(name, rt)]
            row += [tr, cr, scr, pct(scr, ef["score"]), pct(scx, scr), tr / tx, cr / cx]
        else:
            row += [None] * 7
        rs = ef["seconds_per_evaluation_reference_1_thread"]
        row += [rs, rs / t1, rs / c1]
        rows.append(row)
    table(["fixture", "default wall s (1 thr)", "default CPU s (1 thr)", "default wall s (2 thr)",
           "default CPU s (2 thr)", "default score", "% vs fixture ref mean", f"ref-settings wall s ({rt} thr)",
           f"ref-settings CPU s ({rt} thr)", "ref-settings score", "ref-settings % vs fixture",
           "default % vs ref-settings", f"speedup ref/default, wall ({rt} thr)",
           f"speedup ref/default, CPU ({rt} thr)",
           "reference code s (1 thr, fixture)", "speedup vs reference code, wall (1 thr)",
           "speedup vs reference code, CPU (1 thr)"], rows)
    for name in fx:
        ef = fx[name][1]["entropy_forward"]
        t1, c1, sc1 = default[(name, 1)]
        diff = abs(pct(sc1, ef["score"]))
        if name in ref:
            tr, cr, scr = ref[name]
            tx, cx, scx = default[(name, rt)]
            spw, spc, diff2 = tr / tx, cr / cx, abs(pct(scx, scr))
            print(f"{name}: same-run speedup {spw:.0f}x (wall) / {spc:.0f}x (CPU) at {diff2:.3f} % from the "
                  f"ref-settings score -> target >= 500x at <= 0.5 %: {verdict(max(spw, spc) >= 500 and diff2 <= 0.5)}")
        rs = ef["seconds_per_evaluation_reference_1_thread"]
        print(f"{name}: vs the reference code's recorded {rs:.1f} s (1 thread): {rs / t1:.0f}x (wall) / "
              f"{rs / c1:.0f}x (CPU) at {diff:.3f} % from its score -> target: "
              f"{verdict(rs / c1 >= 500 and diff <= 0.5)}"
              + (" (baseline = fixture's recorded seconds, --quick)" if args.quick else ""))

    print()
    print("batch 1, 1 thread, vs the reference code's batch-1 numbers for MAE-DET-S (issue: 0.36 s at 480, "
          f"0.21 s at 224); best of {reps}")
    rows = []
    for name, (s, _f) in fx.items():
        for res in (480, 224):
            t, c, _sc = _time_scorer(make_scorer("entropy", resolution=res, batch=1, repeat=1, threads=1,
                                                 padding="zeros"), s, reps)
            refs = ISSUE_REF_BATCH1.get(res) if name == "maedet_s" else None
            rows.append([name, res, t, c, refs, refs / t if refs else None, refs / c if refs else None])
    table(["fixture", "resolution (zero padding, as the reference)", "ours wall s", "ours CPU s", "reference code s", "reference/ours (wall)",
           "reference/ours (CPU)"], rows)

    print()
    print("resolution choice: batch 1, repeat 1, 1 thread (best of 3 timed calls after a warm-up); % from the "
          "reference mean (fixture entropy_forward.score)"
          + ("" if args.quick else " and from this run's ref-settings score"))
    rows = []
    for name, (s, f) in fx.items():
        ef = f["entropy_forward"]["score"]
        for pad, res in [("zeros", r) for r in (480, 320, 224, 160)] + [("circular", r) for r in (224, 160, 128, 96)]:
            t, c, sc = _time_scorer(make_scorer("entropy", resolution=res, batch=1, repeat=1, threads=1, padding=pad),
                                    s, 3)
            row = [name, pad, res, t, c, sc, pct(sc, ef)]
            row.append(pct(sc, ref[name][2]) if name in ref else None)
            rs = f["entropy_forward"]["seconds_per_evaluation_reference_1_thread"]
            row.append(rs / c)
            rows.append(row)
    table(["fixture", "padding", "resolution", "wall s", "CPU s", "score", "% vs fixture ref mean",
           "% vs ref-settings (this run)", "reference code s / CPU s"], rows)


# -- c. zen ----------------------------------------------------------------------------------------
def bench_zen(args: argparse.Namespace) -> None:
    section("c. Zen-score at 224x224, batch 16")
    fx = load_structures()
    rows = []
    for name, (s, f) in fx.items():
        mean = f["zen"]["mean"]
        for mode in ("running", "batch"):
            for th in (1, 2):
                t, c, sc = _time_scorer(make_scorer("zen", bn_mode=mode, threads=th), s, args.zen_repeats)
                rows.append([name, mode, th, t, c, sc, mean, pct(sc, mean)])
    print(f"best of {args.zen_repeats} after a warm-up call; the fixture mean is the reference (ZenNAS, BN in "
          "train mode, running_var): bn_mode=running reproduces it, bn_mode=batch is the paper's definition "
          "and sits above it by design; CPU s of a 2-thread run is the sum over both threads")
    table(["fixture", "bn_mode", "threads", "wall s", "CPU s", "score", "fixture mean", "% vs fixture mean"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="skip the reference-settings forward passes")
    p.add_argument("--only", choices=("a", "b", "c"), action="append", help="run only these sections")
    p.add_argument("--repeats", type=int, default=7, help="repeats of the analytic pipelines (best is kept)")
    p.add_argument("--ref-threads", type=int, default=1,
                   help="threads of the reference-settings runs (the default is timed on as many); 1 as the "
                        "reference code's recorded seconds, ~1-1.5 min per fixture")
    p.add_argument("--fw-repeats", type=int, default=5, help="repeats of each forward-pass timing")
    p.add_argument("--zen-repeats", type=int, default=3, help="repeats of each Zen-score timing")
    p.add_argument("--n-ours", type=int, default=100_000, help="candidates per zennas pipeline repeat")
    p.add_argument("--n-naive", type=int, default=20_000, help="candidates per naive pipeline repeat")
    args = p.parse_args()
    header("bench_score")
    only = set(args.only or ("a", "b", "c"))
    if "a" in only:
        bench_analytic(args)
    if "b" in only:
        bench_entropy(args)
    if "c" in only:
        bench_zen(args)


if __name__ == "__main__":
    main()

"""A device latency profile as data: a validated frozen dataclass and its versioned JSON document.

Document (``format: zennas.latency-profile``, ``version: 1``)::

    {"format": "zennas.latency-profile", "version": 1,
     "runtime": "onnxruntime", "threads": 1, "batch": 1, "precision": "fp32",
     "height": 480, "width": 480, "space": "detection-k1kxk1", "space_digest": "<sha256 of the space>",
     "opset": 17, "fingerprint": {...where it was measured...},
     "settings": {"grid_ratio": 2.0, "warmup": 2, "min_runs": 5, "max_runs": 50, "min_time_s": 0.1, ...},
     "call_overhead_ms": 0.004,
     "tables": [{"key": {"kind": "pw", "height": 120, ...}, "axes": [[8, 16, ...], [16, 32, ...]],
                 "median_ms": [...], "p10_ms": [...], "p90_ms": [...], "runs": [...],
                 "in_network": 0.62}, ...],          # optional (onnxruntime builds)
     "overhead": {"offset_ms": 1.2, "scale": 1.03, "per_op_ms": 0.002, "per_mb_ms": -0.06,  # optional
                  "calibration": [[ops_ms, n_ops, measured_ms, ops_mb], ...]},
     "complete": true, "build_seconds": 512.3, "created": "2026-...",
     "checksum": "sha256:<hex of the canonical JSON of everything else>"}

Table values are flattened in C order over the axes; ``runs`` is the number of timed runs of each
cell (0: not measured, estimated from its measured neighbours by FLOPs, see ``build``); a partly built
profile (``complete: false``, cells ``null``) can be resumed. The checksum makes a corrupted or
hand-edited profile fail to load: a profile is a measurement, not a document to tune by hand.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zennas.errors import ZenNASError
from zennas.latency.ops import ACTS, AXES, KINDS, TableKey

FORMAT = "zennas.latency-profile"
VERSION = 1
RUNTIMES = ("onnxruntime", "torch")  # built and measured here
RESERVED_RUNTIMES = ("openvino", "cuda", "tensorrt")  # names reserved for other workers
PRECISIONS = ("fp32",)
MAX_BYTES = 16 * 1024 * 1024  # a profile document larger than this is refused before it is parsed


class ProfileError(ZenNASError, ValueError):
    """A latency profile is malformed, corrupted, or does not fit the search it is used for."""


@dataclass(frozen=True)
class Fingerprint:
    """Where a profile was measured."""

    cpu: str  # CPU model name
    cores: int  # logical CPUs of the machine
    machine: str  # platform.machine()
    system: str  # OS and kernel
    runtime: str  # runtime name
    runtime_version: str  # e.g. onnxruntime 1.20.1
    libraries: Mapping[str, str] = field(default_factory=dict)  # torch, numpy, onnx, zennas versions

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "cores": self.cores, "machine": self.machine, "system": self.system,
                "runtime": self.runtime, "runtime_version": self.runtime_version,
                "libraries": dict(sorted(self.libraries.items()))}

    def differences(self, other: Fingerprint) -> list[str]:
        """Fields that differ (library versions named one by one)."""
        out = [f for f in ("cpu", "cores", "machine", "runtime", "runtime_version")
               if getattr(self, f) != getattr(other, f)]
        for lib in sorted(set(self.libraries) | set(other.libraries)):
            if self.libraries.get(lib) != other.libraries.get(lib):
                out.append(f"libraries.{lib}")
        return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def local_fingerprint(runtime: str, runtime_version: str) -> Fingerprint:
    from importlib import metadata

    import zennas

    libs = {"zennas": zennas.__version__}
    for p in ("torch", "numpy", "onnx", "onnxruntime"):
        try:
            libs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return Fingerprint(cpu=_cpu_model(), cores=os.cpu_count() or 1, machine=platform.machine(),
                       system=f"{platform.system()} {platform.release()}", runtime=runtime,
                       runtime_version=runtime_version, libraries=libs)


@dataclass(frozen=True)
class OpTable:
    """Measured latencies of one op over a grid of channel counts."""

    key: TableKey
    axes: tuple[tuple[int, ...], ...]  # grid points per channel axis (AXES[key.kind])
    median_ms: tuple[float | None, ...]  # per cell, C order; None: not measured yet
    p10_ms: tuple[float | None, ...]
    p90_ms: tuple[float | None, ...]
    runs: tuple[int, ...]  # timed runs per cell; 0 = estimated from neighbours (or not yet measured)
    # the op's in-network time over its table time, read from the runtime's profiler on the calibration
    # networks (zennas.latency.innetwork); None: not measured (torch; a profile built before it existed)
    in_network: float | None = None

    @property
    def size(self) -> int:
        return math.prod(len(a) for a in self.axes)

    def cells(self) -> list[tuple[int, ...]]:
        """Channel points of each cell, C order."""
        import itertools

        return list(itertools.product(*self.axes))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key.to_dict(), "axes": [list(a) for a in self.axes],
                "median_ms": list(self.median_ms), "p10_ms": list(self.p10_ms), "p90_ms": list(self.p90_ms),
                "runs": list(self.runs), **({} if self.in_network is None else {"in_network": self.in_network})}


@dataclass(frozen=True)
class Overhead:
    """The terms fitted at build time: ``network_ms = sum over ops of max(scale * op + per_mb_ms * op_mb,
    FLOOR * scale * op) + per_op_ms * n_ops + offset_ms`` (:mod:`zennas.latency.predict`)."""

    offset_ms: float  # fixed per-network overhead (graph entry/exit, allocations)
    scale: float  # ratio of in-network to isolated op time (cache effects, fused boundaries)
    per_op_ms: float = 0.0  # dispatch cost of each op inside a network (torch eager: Python module calls)
    # (sum of ops ms, ops, measured ms[, sum of ops' activation MB]) per network; older profiles have 3
    calibration: tuple[tuple[float, ...], ...] = ()
    # ms per MB of an op's input and output (either sign: an op alone pays for layout reorders and an
    # output copy a network does not); None in profiles built before it was fitted (read as 0)
    per_mb_ms: float | None = None
    # the fit's rms relative leave-one-out errors on the calibration networks, without and with the
    # memory term (:mod:`zennas.latency.fit` keeps the term by them); None where not computed
    loo_error: float | None = None
    loo_error_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        optional = {"per_mb_ms": self.per_mb_ms, "loo_error": self.loo_error, "loo_error_mb": self.loo_error_mb}
        return {"offset_ms": self.offset_ms, "scale": self.scale, "per_op_ms": self.per_op_ms,
                "calibration": [list(c) for c in self.calibration],
                **{k: v for k, v in optional.items() if v is not None}}


@dataclass(frozen=True)
class Profile:
    runtime: str  # onnxruntime | torch (openvino, cuda, tensorrt reserved)
    threads: int  # intra-op threads
    batch: int  # batch size
    precision: str  # fp32
    height: int  # network input size the tables were measured for
    width: int
    space: str  # search space name
    space_digest: str  # sha256 of the space document (a changed space is another space)
    opset: int | None  # ONNX opset of the export (onnxruntime), None for torch
    fingerprint: Fingerprint
    settings: Mapping[str, Any]  # build settings (grid ratio, runs, caps), recorded as given
    call_overhead_ms: float  # the runtime's cost of one empty call, subtracted from each op
    tables: tuple[OpTable, ...]
    overhead: Overhead | None  # None until the build's calibration ran
    complete: bool  # every table cell filled and the overhead fitted
    build_seconds: float = 0.0
    created: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    # -- views -------------------------------------------------------------------------------
    def table_map(self) -> dict[TableKey, OpTable]:
        return {t.key: t for t in self.tables}

    @property
    def clock(self) -> str:
        """How its times were taken: ``wall`` or ``cpu`` (see :mod:`zennas.latency.runtimes`)."""
        return str(self.settings.get("clock", "wall"))

    def n_cells(self) -> tuple[int, int, int]:
        """(cells, measured, estimated) over all tables."""
        total = sum(t.size for t in self.tables)
        measured = sum(1 for t in self.tables for r in t.runs if r > 0)
        filled = sum(1 for t in self.tables for v in t.median_ms if v is not None)
        return total, measured, filled - measured

    @property
    def checksum(self) -> str:
        return "sha256:" + hashlib.sha256(_canonical(self._body())).hexdigest()

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "runtime": self.runtime, "threads": self.threads,
            "batch": self.batch, "precision": self.precision, "height": self.height, "width": self.width,
            "space": self.space, "space_digest": self.space_digest, "opset": self.opset,
            "fingerprint": self.fingerprint.to_dict(), "settings": dict(self.settings),
            "call_overhead_ms": self.call_overhead_ms, "tables": [t.to_dict() for t in self.tables],
            "overhead": self.overhead.to_dict() if self.overhead is not None else None,
            "complete": self.complete, "build_seconds": self.build_seconds, "created": self.created,
        }

    def to_dict(self) -> dict[str, Any]:
        d = self._body()
        d["checksum"] = self.checksum
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=None, separators=(",", ":"), allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed over ``path``): a killed build never leaves half a file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a profile is an ordinary file
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def summary(self) -> dict[str, Any]:
        """What the profile covers (``zennas profile show``)."""
        total, measured, estimated = self.n_cells()
        kinds: dict[str, int] = {}
        for t in self.tables:
            kinds[t.key.kind] = kinds.get(t.key.kind, 0) + 1
        sizes = sorted({(t.key.height, t.key.width) for t in self.tables}, reverse=True)
        return {
            "runtime": self.runtime, "threads": self.threads, "batch": self.batch, "precision": self.precision,
            "clock": self.clock,
            "resolution": [self.height, self.width], "space": self.space, "opset": self.opset,
            "complete": self.complete, "tables": len(self.tables), "tables_by_kind": kinds,
            "feature_map_sizes": [list(s) for s in sizes], "cells": total, "measured": measured,
            "estimated": estimated,
            "channels": [min(min(a) for t in self.tables for a in t.axes),
                         max(max(a) for t in self.tables for a in t.axes)] if self.tables else None,
            "overhead": self.overhead.to_dict() if self.overhead else None,
            "in_network": _spread([t.in_network for t in self.tables if t.in_network is not None]),
            "call_overhead_ms": self.call_overhead_ms, "fingerprint": self.fingerprint.to_dict(),
            "settings": dict(self.settings), "build_seconds": self.build_seconds, "created": self.created,
            "checksum": self.checksum,
        }


def _spread(xs: list[float]) -> dict[str, float] | None:
    """min, median and max of the tables' in-network ratios (None: none recorded)."""
    if not xs:
        return None
    s = sorted(xs)
    return {"tables": len(s), "min": s[0], "median": s[len(s) // 2], "max": s[-1]}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# -- validation --------------------------------------------------------------------------------
def _bad(fld: str, msg: str) -> ProfileError:
    return ProfileError(f"profile {fld} {msg}", field=fld)


def _int(v: Any, fld: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _bad(fld, f"must be an integer >= {lo}, got {v!r}")
    return v


def _num(v: Any, fld: str, *, lo: float = 0.0, none: bool = False) -> float | None:
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
        raise _bad(fld, f"must be a finite number >= {lo:g}, got {v!r}")
    return float(v)


def _validate(p: Profile) -> None:
    if p.runtime not in RUNTIMES:
        extra = f" ({p.runtime!r} is reserved for other workers)" if p.runtime in RESERVED_RUNTIMES else ""
        raise _bad("runtime", f"must be one of {', '.join(RUNTIMES)}, got {p.runtime!r}{extra}")
    _int(p.threads, "threads")
    _int(p.batch, "batch")
    if p.precision not in PRECISIONS:
        raise _bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {p.precision!r}")
    _int(p.height, "height")
    _int(p.width, "width")
    if not isinstance(p.space, str) or not p.space:
        raise _bad("space", f"must be a space name, got {p.space!r}")
    if p.opset is not None:
        _int(p.opset, "opset", 7)
    _num(p.call_overhead_ms, "call_overhead_ms")
    seen: set[TableKey] = set()
    for i, t in enumerate(p.tables):
        where = f"tables[{i}]"
        k = t.key
        if k.kind not in KINDS:
            raise _bad(f"{where}.key.kind", f"must be one of {', '.join(KINDS)}, got {k.kind!r}")
        if k.act not in ACTS:
            raise _bad(f"{where}.key.act", f"must be one of {', '.join(ACTS)}, got {k.act!r}")
        for f in ("height", "width", "kernel", "stride"):
            _int(getattr(k, f), f"{where}.key.{f}")
        _int(k.cin, f"{where}.key.cin", 0)
        if k in seen:
            raise _bad(f"{where}.key", f"duplicates another table's key {k.label()!r}")
        seen.add(k)
        if len(t.axes) != len(AXES[k.kind]):
            raise _bad(f"{where}.axes", f"must have {len(AXES[k.kind])} axes for kind {k.kind!r}, got {len(t.axes)}")
        for j, a in enumerate(t.axes):
            if len(a) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in a) \
                    or any(b <= c for c, b in itertools.pairwise(a)):
                raise _bad(f"{where}.axes[{j}]", f"must be >= 2 strictly increasing positive integers, got {list(a)!r}")
        n = t.size
        for f in ("median_ms", "p10_ms", "p90_ms", "runs"):
            if len(getattr(t, f)) != n:
                raise _bad(f"{where}.{f}", f"must have {n} entries (the grid's cells), got {len(getattr(t, f))}")
        for c in range(n):
            vals = [_num(getattr(t, f)[c], f"{where}.{f}[{c}]", none=not p.complete)
                    for f in ("p10_ms", "median_ms", "p90_ms")]
            _int(t.runs[c], f"{where}.runs[{c}]", 0)
            if (vals[0] is None) != (vals[1] is None) or (vals[1] is None) != (vals[2] is None):
                raise _bad(f"{where}.median_ms[{c}]", "p10, median and p90 must be all given or all null")
            if vals[1] is not None and not (vals[0] <= vals[1] <= vals[2]):  # type: ignore[operator]
                raise _bad(f"{where}.median_ms[{c}]", f"must lie within [p10, p90], got {vals}")
        if t.in_network is not None:
            _num(t.in_network, f"{where}.in_network", lo=1e-3)
            if t.in_network > 10:
                raise _bad(f"{where}.in_network", f"must be <= 10 (an op's in-network time over its table time), "
                           f"got {t.in_network!r}")
    if p.overhead is not None:
        _num(p.overhead.offset_ms, "overhead.offset_ms", lo=-math.inf)
        _num(p.overhead.scale, "overhead.scale", lo=1e-6)
        _num(p.overhead.per_op_ms, "overhead.per_op_ms")
        _num(p.overhead.per_mb_ms, "overhead.per_mb_ms", lo=-math.inf, none=True)  # optional: older profiles
        _num(p.overhead.loo_error, "overhead.loo_error", none=True)
        _num(p.overhead.loo_error_mb, "overhead.loo_error_mb", none=True)
    if p.complete and p.overhead is None:
        raise _bad("overhead", "must be given in a complete profile")
    if p.complete and not p.tables:
        raise _bad("tables", "must not be empty in a complete profile")


# -- loading -----------------------------------------------------------------------------------
_TOP = ("format", "version", "runtime", "threads", "batch", "precision", "height", "width", "space", "space_digest",
        "opset", "fingerprint", "settings", "call_overhead_ms", "tables", "overhead", "complete", "build_seconds",
        "created", "checksum")


def _keys(raw: Any, known: tuple[str, ...], where: str, optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _bad(where or "document", f"must be an object, got {type(raw).__name__}")
    for k in raw:
        if k not in known and k not in optional:
            raise _bad(f"{where}.{k}" if where else str(k),
                       f"is not a known key (known: {', '.join(known + optional)})")
    for k in known:
        if k not in raw:
            raise _bad(f"{where}.{k}" if where else k, "is missing")
    return raw


def profile_from_dict(raw: Any, *, verify_checksum: bool = True) -> Profile:
    """Parse and validate a profile document; every error names the field."""
    d = _keys(raw, _TOP, "")
    if d["format"] != FORMAT:
        raise _bad("format", f"must be {FORMAT!r}, got {d['format']!r}")
    if d["version"] != VERSION:
        raise _bad("version", f"must be {VERSION} (this zennas reads version {VERSION}), got {d['version']!r}")
    fp = _keys(d["fingerprint"], ("cpu", "cores", "machine", "system", "runtime", "runtime_version", "libraries"),
               "fingerprint")
    if not isinstance(fp["libraries"], Mapping):
        raise _bad("fingerprint.libraries", "must be an object")
    try:
        tables = []
        for i, t in enumerate(d["tables"] if isinstance(d["tables"], list) else []):
            t = _keys(t, ("key", "axes", "median_ms", "p10_ms", "p90_ms", "runs"), f"tables[{i}]",
                      optional=("in_network",))
            k = _keys(t["key"], ("kind", "height", "width", "kernel", "stride", "depthwise", "act", "cin"),
                      f"tables[{i}].key")
            if not isinstance(k["depthwise"], bool):
                raise _bad(f"tables[{i}].key.depthwise", f"must be true or false, got {k['depthwise']!r}")
            for f in ("axes", "median_ms", "p10_ms", "p90_ms", "runs"):
                if not isinstance(t[f], list):
                    raise _bad(f"tables[{i}].{f}", "must be a list")
            if not all(isinstance(a, list) for a in t["axes"]):
                raise _bad(f"tables[{i}].axes", "must be a list of lists")
            tables.append(OpTable(TableKey(**k), tuple(tuple(a) for a in t["axes"]), tuple(t["median_ms"]),
                                  tuple(t["p10_ms"]), tuple(t["p90_ms"]), tuple(t["runs"]), t.get("in_network")))
        if not isinstance(d["tables"], list):
            raise _bad("tables", "must be a list")
        oh = None
        if d["overhead"] is not None:
            o = _keys(d["overhead"], ("offset_ms", "scale", "per_op_ms", "calibration"), "overhead",
                      optional=("per_mb_ms", "loo_error", "loo_error_mb"))
            if not isinstance(o["calibration"], list) or not all(
                    isinstance(c, list) and len(c) in (3, 4) for c in o["calibration"]):
                raise _bad("overhead.calibration", "must be a list of [ops_ms, n_ops, measured_ms, ops_mb] rows")
            oh = Overhead(o["offset_ms"], o["scale"], o["per_op_ms"], tuple(tuple(c) for c in o["calibration"]),
                          per_mb_ms=o.get("per_mb_ms"), loo_error=o.get("loo_error"),
                          loo_error_mb=o.get("loo_error_mb"))
        if not isinstance(d["settings"], Mapping):
            raise _bad("settings", "must be an object")
        if not isinstance(d["complete"], bool):
            raise _bad("complete", f"must be true or false, got {d['complete']!r}")
        p = Profile(
            runtime=d["runtime"], threads=d["threads"], batch=d["batch"], precision=d["precision"],
            height=d["height"], width=d["width"], space=d["space"], space_digest=str(d["space_digest"]),
            opset=d["opset"],
            fingerprint=Fingerprint(cpu=str(fp["cpu"]), cores=_int(fp["cores"], "fingerprint.cores"),
                                    machine=str(fp["machine"]), system=str(fp["system"]),
                                    runtime=str(fp["runtime"]), runtime_version=str(fp["runtime_version"]),
                                    libraries={str(a): str(b) for a, b in fp["libraries"].items()}),
            settings=dict(d["settings"]), call_overhead_ms=d["call_overhead_ms"], tables=tuple(tables),
            overhead=oh, complete=d["complete"], build_seconds=_num(d["build_seconds"], "build_seconds") or 0.0,
            created=str(d["created"]),
        )
    except TypeError as e:  # a value of the wrong shape inside a table
        raise _bad("tables", f"has a malformed entry: {e}") from e
    if verify_checksum and d["checksum"] != p.checksum:
        raise ProfileError(
            "profile checksum does not match its content: the file is corrupted or was edited by hand; "
            "rebuild it with `zennas profile build` (a profile is a measurement, not a document to tune)",
            field="checksum")
    return p


def loads_profile(text: str | bytes) -> Profile:
    if len(text) > MAX_BYTES:
        raise _bad("document", f"is {len(text)} bytes; the limit is {MAX_BYTES}")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile is not valid JSON: {e}", field="document") from e
    return profile_from_dict(raw)


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ProfileError(f"cannot read profile {str(p)!r}: {e.strerror}", field="profile") from e
    if size > MAX_BYTES:
        raise ProfileError(f"profile {str(p)!r} is {size} bytes; the limit is {MAX_BYTES}", field="profile")
    try:
        return loads_profile(p.read_bytes())
    except ProfileError as e:
        raise ProfileError(f"{p}: {e.message}", field=e.field) from e


def space_digest(space_doc: Mapping[str, Any]) -> str:
    """sha256 of a space document (its canonical JSON): two spaces with one name but other rules differ."""
    return hashlib.sha256(_canonical(space_doc)).hexdigest()


def require_fit(p: Profile, *, space: str, digest: str | None, height: int, width: int, batch: int,
                prefix: str = "latency.profile") -> None:
    """Refuse a profile built for another space, input size or batch than the search's (naming the field)."""
    for f, have, want in (("space", p.space, space), ("height", p.height, height), ("width", p.width, width),
                          ("batch", p.batch, batch)):
        if have != want:
            raise ProfileError(f"{prefix} was built for {f} = {have!r} but the search has {f} = {want!r}; "
                               f"build a profile for this search (zennas profile build --{f} ...)",
                               field=f"{prefix}.{f}")
    if digest is not None and p.space_digest != digest:
        raise ProfileError(f"{prefix} was built for another version of space {space!r} (its rules changed); "
                           "rebuild the profile", field=f"{prefix}.space")

"""The backbone bundle: a small registry of parts, each contributing files to the artifact zip.

Parts are called in registration order with the finished job and its search summary and return
``{relative path: bytes}``. The manifest (format version, zennas version, spec, seed, package
versions, checksums of every file) is written last. Other features add parts (the MMDetection config,
the HTML report) with :func:`register_part`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zennas.space.formats import dumps_tinynas, structure_from_obj

BUNDLE_FORMAT = "zennas.bundle/1"
Part = Callable[[dict[str, Any], dict[str, Any]], dict[str, bytes]]
_PARTS: dict[str, Part] = {}


def register_part(name: str, part: Part) -> None:
    if name in _PARTS:
        raise KeyError(f"bundle part {name!r} is already registered by {_PARTS[name].__module__}")
    _PARTS[name] = part


def _structure(job: dict[str, Any], summary: dict[str, Any]) -> dict[str, bytes]:
    s = structure_from_obj(summary["best"]["structure"])
    return {"structure.json": (s.to_json(indent=2) + "\n").encode(), "structure.txt": dumps_tinynas(s).encode()}


def _summary(job: dict[str, Any], summary: dict[str, Any]) -> dict[str, bytes]:
    return {"search.json": (json.dumps(summary, indent=2) + "\n").encode()}


def _mmdet_config(job: dict[str, Any], summary: dict[str, Any]) -> dict[str, bytes]:
    try:
        from zennas.mmdet.configs import make_config
    except ImportError:  # the mmdet extra is not installed: the bundle goes without a config
        return {}
    s = structure_from_obj(summary["best"]["structure"])
    # the detector the search budgeted (and, for a neck co-search, the neck it chose); else GFL + GFPN
    det = ((summary["best"].get("costs") or {}).get("detector") or {}).get("detector") or {}
    kw = {k: det[k] for k in ("detector", "neck", "gfpn_depth", "gfpn_width", "neck_channels") if k in det}
    text = make_config(s, num_classes=80, data_root="data/coco/", **kw)
    return {f"mmdet/{kw.get('detector', 'gfl')}_{kw.get('neck', 'gfpn')}_config.py": text.encode()}


register_part("structure", _structure)
register_part("summary", _summary)
register_part("mmdet-config", _mmdet_config)


def _report(job: dict[str, Any], summary: dict[str, Any]) -> dict[str, bytes]:
    try:
        import matplotlib  # noqa: F401

        from zennas.report import render_report
    except ImportError:  # the report extra (matplotlib) is not installed: the bundle goes without it
        return {}
    return {"report.html": render_report(summary, None, title=f"zennas search {job['id']}").encode()}


register_part("report", _report)


def write_bundle(directory: Path, job: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Write every part's files and the manifest into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for name, part in _PARTS.items():
        try:
            files.update(part(job, summary))
        except Exception as e:  # one broken optional part must not lose the others
            files[f"errors/{name}.txt"] = f"{type(e).__name__}: {e}\n".encode()
    for rel, data in files.items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    manifest = {
        "format": BUNDLE_FORMAT,
        "zennas_version": summary.get("provenance", {}).get("zennas"),
        "job_id": job["id"],
        "spec": summary.get("spec"),
        "seed": (summary.get("spec") or {}).get("seed"),
        "packages": summary.get("provenance", {}).get("packages"),
        "files": {rel: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for rel, data in sorted(files.items())},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def zip_bundle(directory: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(directory.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(directory).as_posix())
    return buf.getvalue()

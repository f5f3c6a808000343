"""The backbone bundle: a small registry of parts, each contributing files to the artifact zip.

Parts are called in registration order with the finished job and its search summary and return
``{relative path: bytes}``. The manifest (format version, zennas version, spec, seed, package
versions, checksums of every file) is written last. Other features add parts (the MMDetection config,
the HTML report) with :func:`register_part`.

On disk, a job's bundle is the directory ``<artifacts>/<id>/`` and its zip ``<artifacts>/<id>.zip``.
Both are written under a temporary name and renamed into place, so a reader never sees half a
bundle; both can be deleted at any time (``ZENNAS_ARTIFACT_TTL_SECONDS``) and are rebuilt from the
job's stored result on the next download. The zip is written to disk and sent from there in chunks,
never held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zennas.detector.settings import DEFAULT_DETECTOR, DetectorSettings, resolve_neck
from zennas.space.formats import dumps_tinynas, structure_from_obj
from zennas.space.structure import Structure

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
        text, name = config_text(summary)
    except ImportError:  # the mmdet extra is not installed: the bundle goes without a config
        return {}
    return {f"mmdet/{name}": text.encode()}


BUNDLE_CLASSES = 80  # the bundle's config is for COCO (its data_root is data/coco/)


def bundle_detector(summary: dict[str, Any]) -> tuple[Structure, dict[str, Any]]:
    """(the best structure, the :func:`zennas.mmdet.configs.make_config` detector arguments) of the
    bundle's config: the detector the search budgeted, with the neck the structure carries (a neck
    co-search's choice) or else the one the search budgeted; else GFL + GFPN. (A result stored before
    structures carried their neck has the co-search's choice in its costs only.)"""
    s = structure_from_obj(summary["best"]["structure"])
    det = ((summary["best"].get("costs") or {}).get("detector") or {}).get("detector") or {}
    keys = ("detector", "neck_channels") if s.neck is not None else \
        ("detector", "neck", "gfpn_depth", "gfpn_width", "neck_channels")
    return s, {k: det[k] for k in keys if k in det}


def bundle_detector_settings(summary: dict[str, Any]) -> tuple[Structure, DetectorSettings]:
    """The bundle config's detector as :class:`DetectorSettings` (what its analytic costs and the ONNX
    export's admission estimate read); the neck resolved by the config's own rule."""
    s, kw = bundle_detector(summary)
    neck, depth, width = resolve_neck(s.neck, neck=kw.get("neck"), gfpn_depth=kw.get("gfpn_depth"),
                                      gfpn_width=kw.get("gfpn_width"))
    return s, DetectorSettings(detector=kw.get("detector", DEFAULT_DETECTOR.detector), neck=neck, gfpn_depth=depth,
                               gfpn_width=float(width), num_classes=BUNDLE_CLASSES,
                               neck_channels=kw.get("neck_channels", DEFAULT_DETECTOR.neck_channels))


def config_text(summary: dict[str, Any]) -> tuple[str, str]:
    """(the bundle's MMDetection config, its file name under ``mmdet/``)."""
    from zennas.mmdet.configs import make_config

    s, kw = bundle_detector(summary)
    text = make_config(s, num_classes=BUNDLE_CLASSES, data_root="data/coco/", **kw)
    neck = s.neck.type if s.neck is not None else kw.get("neck", "gfpn")
    return text, f"{kw.get('detector', 'gfl')}_{neck}_config.py"


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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(directory: Path, job: dict[str, Any], summary: dict[str, Any], *,
                 extra: Mapping[str, Path] | None = None, manifest_extra: Mapping[str, Any] | None = None) -> Path:
    """Write every part's files and the manifest into ``directory`` (replacing what is there).

    ``extra``: more files, each moved in from a path (a large file is never read into memory);
    ``manifest_extra``: more top-level manifest entries (an option's record, e.g. ``onnx``)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        manifest_files: dict[str, dict[str, Any]] = {}
        for rel, src in (extra or {}).items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, p)
            manifest_files[rel] = {"sha256": _sha256_file(p), "bytes": p.stat().st_size}
        for name, part in _PARTS.items():
            try:
                files = part(job, summary)
            except Exception as e:  # one broken optional part must not lose the others
                files = {f"errors/{name}.txt": f"{type(e).__name__}: {e}\n".encode()}
            for rel, data in files.items():  # written as each part comes: parts are not all held at once
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                manifest_files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            del files
        manifest = {
            "format": BUNDLE_FORMAT,
            "zennas_version": summary.get("provenance", {}).get("zennas"),
            "job_id": job["id"],
            "spec": summary.get("spec"),
            "seed": (summary.get("spec") or {}).get("seed"),
            "packages": summary.get("provenance", {}).get("packages"),
            "files": dict(sorted(manifest_files.items())),
            **(manifest_extra or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _zip_path(directory).unlink(missing_ok=True)  # a zip of an older bundle
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.rename(tmp, directory)
        except OSError:  # another writer put the same bundle in place meanwhile: keep theirs
            if not (directory / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def ensure_bundle(directory: Path, job: dict[str, Any], summary: dict[str, Any]) -> Path:
    """The bundle directory, rebuilt from the summary when it is missing (expired or never written)."""
    if not (directory / "manifest.json").exists():
        write_bundle(directory, job, summary)
    return directory


def _zip_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".zip")


def zip_bundle(directory: Path) -> Path:
    """The bundle as a zip file beside its directory (built once, then reused); its path."""
    out = _zip_path(directory)
    if out.exists():
        return out
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(directory.rglob("*")):
                if p.is_file() and not p.name.startswith("."):  # dotfiles are the service's records
                    z.write(p, p.relative_to(directory).as_posix())  # copied in chunks, not read whole
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# A bundle option (``GET .../backbone?onnx=detector``) is a bundle of its own beside the plain one:
# directory ``<artifacts>/<id><VARIANTS[option]>/``, zip beside it. Its bytes count in the tenant's
# storage quota: charged once built, recorded in the directory's CHARGED file, released when it expires.
VARIANTS = {"onnx-detector": "+onnx-detector"}
CHARGED = ".charged"


def variant_dir(artifacts_dir: Path, job_id: str, option: str) -> Path:
    return artifacts_dir / f"{job_id}{VARIANTS[option]}"


def variant_job(name: str) -> str | None:
    """The job id of a variant bundle's directory name (None: not a variant's)."""
    for suffix in VARIANTS.values():
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def remove_artifacts(artifacts_dir: Path, job_id: str) -> None:
    for name in (job_id, *(job_id + suffix for suffix in VARIANTS.values())):
        shutil.rmtree(artifacts_dir / name, ignore_errors=True)
        (artifacts_dir / f"{name}.zip").unlink(missing_ok=True)


def charged_bytes(directory: Path) -> int:
    """What a variant bundle was charged to its tenant (0: nothing recorded)."""
    try:
        return int((directory / CHARGED).read_text())
    except (OSError, ValueError):
        return 0


def expire_artifacts(artifacts_dir: Path, ttl_seconds: float, now: float | None = None, *,
                     release: Callable[[str, int], None] | None = None) -> list[str]:
    """Delete bundles (directory and zip) written more than ``ttl_seconds`` ago, and temporary files
    left by a writer that died; returns the names removed. ``release(job_id, nbytes)`` is called for
    each variant bundle directory removed that was charged to its tenant's quota."""
    if not artifacts_dir.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - ttl_seconds
    stale_tmp = (time.time() if now is None else now) - 3600
    removed = []
    for p in artifacts_dir.iterdir():
        try:
            if p.name.endswith(".tmp"):
                old = p.stat().st_mtime < stale_tmp
            elif p.is_dir():
                m = p / "manifest.json"
                old = (m.stat().st_mtime if m.exists() else p.stat().st_mtime) < cutoff
            else:
                old = p.suffix == ".zip" and p.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old:
            if p.is_dir():
                job_id, nbytes = variant_job(p.name), charged_bytes(p)
                if release is not None and job_id is not None and nbytes:
                    release(job_id, nbytes)
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)

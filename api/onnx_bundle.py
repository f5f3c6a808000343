"""The bundle's ONNX option: ``GET /v1/searches/{id}/backbone?onnx=detector`` is the bundle plus the
whole detector (backbone + neck + head of the bundle's MMDetection config) exported to ONNX, raw head
outputs, no NMS (:mod:`zennas.mmdet.detector_export`), with its parity check against PyTorch.

The export takes seconds, so it is built once, on the first such download, into a bundle of its own
beside the plain one (:data:`zennas_api.bundle.VARIANTS`), zipped, and then served from disk like the
plain bundle until it expires. Before anything is built it is refused when the admission estimate
(:func:`zennas.admission.estimate_detector_export`) is over the service's evaluation limits (422
naming ``onnx``) or its files would take the tenant over its storage quota (429 naming ``storage``);
once built, its bytes are charged to the job's stored bytes and released when it expires.

The export runs in a child process (``python -m zennas.mmdet.detector_export``): torch and mmdet stay
out of the HTTP process, and a failing export cannot take it down.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from zennas_api.bundle import (
    CHARGED,
    bundle_detector_settings,
    config_text,
    variant_dir,
    write_bundle,
    zip_bundle,
)
from zennas_api.problems import Problem
from zennas_api.storage import charge_artifact, check_room

from zennas.admission import admit_detector_export, estimate_detector_export
from zennas.detector.settings import pad_divisor
from zennas.errors import SpecError

OPTION = "onnx-detector"
EXPORT_TIMEOUT_S = 600.0  # the child process's export + parity check, at most
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(job_id: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(job_id, threading.Lock())


def _input_size(summary: dict[str, Any]) -> tuple[int, int]:
    """The search's input size: what its budgets counted, and the size the ONNX graph is exported at
    (padded up to the config's pad divisor, as the data preprocessor pads such an image)."""
    spec = summary.get("spec") or {}
    h = int(spec.get("height") or 480)
    return h, int(spec.get("width") or h)


def _readme(record: dict[str, Any], config_name: str) -> bytes:
    p = record["parity"]
    outs = "\n".join(f"- `{o['name']}` {tuple(o['shape'])}" for o in record["outputs"])
    return (
        "# The whole detector as ONNX\n\n"
        f"`detector.onnx` is the network of `mmdet/{config_name}` (backbone + neck + head) with freshly "
        "initialized weights: raw head outputs, no pre-processing, no box decoding, no NMS. Train the config, "
        "then re-export with `zennas export-onnx CONFIG.py --checkpoint CKPT --out detector.onnx --check`.\n\n"
        f"Input `image` {tuple(record['input']['shape'])}: the normalized, padded image.\n\nOutputs:\n{outs}\n\n"
        f"Parity (onnxruntime vs PyTorch, one random input): max abs diff {p['max_abs_diff']:.3g}, "
        f"{p['relative']:.3g} of the output's scale (worst output {p['worst_output']}; tolerance "
        f"{p['tolerance']:g}): {'ok' if p['ok'] else 'FAILED'}.\n"
        f"Latency of one image on the service's CPU (median): PyTorch {record['latency_ms']['pytorch']:.1f} ms, "
        f"onnxruntime {record['latency_ms']['onnxruntime']:.1f} ms.\n"
    ).encode()


def ensure_onnx_bundle(artifacts_dir: Path, engine: Any, settings: Any, job: dict[str, Any],
                       summary: dict[str, Any]) -> Path:
    """The zip of the bundle with the whole detector's ONNX, built on first use (see the module docstring)."""
    directory = variant_dir(artifacts_dir, job["id"], OPTION)
    if (directory / "manifest.json").exists():
        return zip_bundle(directory)
    with _lock(job["id"]):
        if (directory / "manifest.json").exists():  # built by the request we waited for
            return zip_bundle(directory)
        structure, det = bundle_detector_settings(summary)
        if det.two_stage:
            raise SpecError(f"the search's detector is {det.detector}: a two-stage detector's RoI stage needs "
                            "proposals from post-processing, so it has no raw ONNX graph; download the plain "
                            "bundle and export the backbone", field="onnx")
        if importlib.util.find_spec("mmdet") is None or importlib.util.find_spec("onnxruntime") is None:
            raise Problem(501, "Not implemented", "this service has no mmdet extra (mmdet, onnx, onnxruntime): "
                          "it cannot export the detector", field="onnx")
        h, w = _input_size(summary)
        pad = pad_divisor(det.neck)  # estimated at the padded size the export runs at
        hp, wp = -(-h // pad) * pad, -(-w // pad) * pad
        est = estimate_detector_export(structure.with_neck(None), det, hp, wp)
        admit_detector_export(est, settings.limits)
        check_room(engine, job["tenant"], 2 * est.file_bytes, settings.max_storage_per_tenant,
                   "the whole detector's ONNX export (the file, and its copy in the zip)")
        text, config_name = config_text(summary)
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        # named like the bundle's temporary files, so that the expiry removes one a killed process left
        with tempfile.TemporaryDirectory(prefix=".onnx-", suffix=".tmp", dir=artifacts_dir) as tmp:
            config, out, record = Path(tmp) / config_name, Path(tmp) / "detector.onnx", Path(tmp) / "record.json"
            config.write_text(text)
            cmd = [sys.executable, "-m", "zennas.mmdet.detector_export", str(config), str(out), str(h), str(w),
                   str(record)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise Problem(500, "Export failed", f"the ONNX export took over {EXPORT_TIMEOUT_S:g} s",
                              field="onnx") from None
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit {r.returncode}"]
                raise Problem(500, "Export failed", f"the ONNX export failed: {tail[0][:500]}", field="onnx")
            rec = json.loads(record.read_text())
            readme = Path(tmp) / "README.md"
            readme.write_bytes(_readme(rec, config_name))
            write_bundle(directory, job, summary, extra={"onnx/detector.onnx": out, "onnx/README.md": readme},
                         manifest_extra={"onnx": {"file": "onnx/detector.onnx", "config": f"mmdet/{config_name}",
                                                  **rec}})
        z = zip_bundle(directory)
        nbytes = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) + z.stat().st_size
        charge_artifact(engine, job["id"], nbytes)
        (directory / CHARGED).write_text(str(nbytes))
        return z

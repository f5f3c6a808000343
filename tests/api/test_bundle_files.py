"""Bundles on disk: the zip is written to a file and copied in chunks (a 24 MB bundle never sits in
memory), writes are atomic, and the TTL expires bundle files (and writers' leftovers) by age."""

from __future__ import annotations

import os
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from zennas_api.bundle import expire_artifacts, remove_artifacts, write_bundle, zip_bundle

pytestmark = pytest.mark.timeout(120)


def test_zip_is_written_to_a_file_in_chunks(tmp_path: Path) -> None:
    d = tmp_path / "job1"
    d.mkdir()
    big = os.urandom(24 << 20)  # incompressible: deflate keeps it ~24 MB
    (d / "big.bin").write_bytes(big)
    (d / "manifest.json").write_text("{}")
    tracemalloc.start()
    try:
        path = zip_bundle(d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # the zip (24 MB) was never built in memory
    assert path == tmp_path / "job1.zip" and path.stat().st_size > 24 << 20
    with zipfile.ZipFile(path) as z:
        assert z.read("big.bin") == big and set(z.namelist()) == {"big.bin", "manifest.json"}
    assert zip_bundle(d) == path  # built once
    remove_artifacts(tmp_path, "job1")
    assert not d.exists() and not path.exists()


def test_write_bundle_replaces_atomically_and_expiry_goes_by_age(tmp_path: Path) -> None:
    summary = {"best": {"structure": {"blocks": [
        {"type": "ConvKXBNRELU", "in": 3, "out": 32, "stride": 2, "kernel": 3, "layers": 1}]}},
        "spec": {"seed": 1}, "provenance": {}}
    d = write_bundle(tmp_path / "a", {"id": "a"}, summary)
    assert (d / "manifest.json").exists() and (d / "structure.json").exists()
    zip_bundle(d)
    write_bundle(tmp_path / "a", {"id": "a"}, summary)  # a rewrite drops the old zip
    assert not (tmp_path / "a.zip").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary directory left
    write_bundle(tmp_path / "b", {"id": "b"}, summary)
    zip_bundle(tmp_path / "b")
    leftover = tmp_path / ".c.1234abcd.tmp"  # a writer that died
    leftover.mkdir()
    old = time.time() - 10 * 86400
    for p in (tmp_path / "a" / "manifest.json", tmp_path / "a", leftover):
        os.utime(p, (old, old))
    assert expire_artifacts(tmp_path, 86400) == [".c.1234abcd.tmp", "a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.zip"]
    assert expire_artifacts(tmp_path, 86400, now=time.time() + 2 * 86400) == ["b", "b.zip"]

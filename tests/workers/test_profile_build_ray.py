"""``zennas profile build --resource LABEL``: the build runs on a Ray node that holds the label, with
progress and resumable snapshots streamed back to the driver (a real embedded Ray node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
from zennas_workers.profiles import build_profile_on_ray

from zennas.errors import SpecError
from zennas.latency import BuildSpec, Predictor, profile_from_dict
from zennas.space import get_space

pytest.importorskip("scipy")
pytestmark = pytest.mark.timeout(240)

LABEL = "zennas_test_profiler"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    # address="local": a new embedded node, never a cluster another program left under /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, resources={LABEL: 1})
    yield
    ray.shutdown()


SPEC = BuildSpec(runtime="torch", space="giraffe-s2d", height=64, width=64, grid_ratio=4.0, plan_samples=10,
                 calibration=2, warmup=0, min_runs=1, max_runs=1, min_time_s=0.0, network_runs=1)


def test_build_on_a_labelled_node_streams_progress_and_snapshots() -> None:
    events: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []
    doc = build_profile_on_ray(SPEC, None, resource=LABEL, address=None, progress=events.append, save=snaps.append,
                               poll_s=0.05)
    p = profile_from_dict(doc)
    assert p.complete and p.space == "giraffe-s2d" and p.runtime == "torch"
    assert Predictor(p).predict(get_space("giraffe-s2d").start) > 0
    assert events and events[-1]["cells_done"] == events[-1]["cells"]
    assert snaps and all(profile_from_dict(s).space == "giraffe-s2d" for s in snaps)


def test_a_label_no_node_offers_is_refused() -> None:
    with pytest.raises(SpecError) as e:
        build_profile_on_ray(SPEC, None, resource="no_such_device", address=None)
    assert e.value.field == "resource"

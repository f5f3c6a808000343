"""Budgets fall back to the space's defaults one field at a time; ``none`` / an explicit ``null`` removes
one (issue 14 item 5). The space default used here is ``detection-k1kxk1``'s (FLOPs 188e8, layers 91,
search_spaces/detection-k1kxk1.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zennas.errors import SpecError
from zennas.search import Budgets, SearchSpec
from zennas.space.space import get_space

pytestmark = pytest.mark.timeout(120)

ZENNAS = [sys.executable, "-m", "zennas.cli"]


def effective(**budgets: object) -> Budgets:
    spec = SearchSpec(budgets=Budgets(**budgets))  # type: ignore[arg-type]
    return spec.effective_budgets(get_space("detection-k1kxk1"))


def test_each_budget_falls_back_to_the_space_default_alone() -> None:
    d = get_space("detection-k1kxk1").budgets
    assert d.flops == 188e8 and d.layers == 91  # the fixture's premise
    assert effective() == Budgets(flops=188e8, layers=91)
    # giving only FLOPs keeps the default layer budget (it used to drop it)
    assert effective(flops=1e10) == Budgets(flops=1e10, layers=91)
    assert effective(layers=60) == Budgets(flops=188e8, layers=60)
    assert effective(params=5e6) == Budgets(flops=188e8, params=5e6, layers=91)


def test_removed_budgets_have_no_default() -> None:
    assert effective(flops=1e10, removed=("layers",)) == Budgets(flops=1e10)
    assert effective(removed=("flops", "layers")) == Budgets()


def test_removed_is_validated() -> None:
    with pytest.raises(SpecError) as e:
        Budgets(removed=("speed",))
    assert e.value.field == "budgets.removed"
    with pytest.raises(SpecError) as e:
        Budgets(layers=3, removed=("layers",))
    assert e.value.field == "budgets.layers"


def test_spec_dict_round_trip_keeps_removed() -> None:
    spec = SearchSpec(budgets=Budgets(flops=1e10, removed=("layers",)))
    again = SearchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.budgets == spec.budgets
    assert again.effective_budgets(get_space("detection-k1kxk1")) == Budgets(flops=1e10)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZENNAS, *args], capture_output=True, text=True, timeout=100)


def test_cli_budget_options_per_field() -> None:
    common = ["search", "--population", "16", "--iterations", "400", "--seed", "1", "--json"]
    # a huge FLOPs budget alone: the space's layer budget (91) still binds
    p = run(*common, "--budget-flops", "1e12")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["spec"]["budgets"]["flops"] == 1e12 and s["spec"]["budgets"]["removed"] == []
    assert s["best"]["costs"]["layers"] <= 91
    # `none` removes it: the winner may now exceed 91 layers, and the spec records the removal
    p = run(*common, "--budget-flops", "1e12", "--budget-layers", "none", "--iterations", "1500")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["spec"]["budgets"]["removed"] == ["layers"]
    assert s["best"]["costs"]["layers"] > 91


def test_cli_bad_budget_value_exits_2_naming_the_option() -> None:
    p = run("search", "--budget-layers", "many")
    assert p.returncode == 2
    assert "budget-layers" in p.stderr and "Traceback" not in p.stderr
    p = run("search", "--budget-layers", "9.5")
    assert p.returncode == 2 and "budget-layers" in p.stderr

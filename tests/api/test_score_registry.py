"""A score added with ``register_score`` is searched, served (schemas, form) and listed with no other edit."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
import pytest
from pydantic import ValidationError
from zennas_api.schemas import ScoreRequest, SearchCreate

from zennas.score import ScoreResult, register_score, score_kind, score_names
from zennas.score import base as score_base
from zennas.search import Budgets, SearchSpec, run_search
from zennas.space.structure import Structure

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Width:
    """A toy closed-form score: log of the last block's width."""

    name: str = "test-width"
    forward_pass: bool = False

    def settings(self) -> dict[str, Any]:
        return {}

    def __call__(self, s: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        return ScoreResult(self.name, math.log(s.out_channels), seconds=time.perf_counter() - t0)


@pytest.fixture
def plugin() -> Iterator[str]:
    register_score("test-width", forward_pass=False, description="toy")(lambda: Width())
    try:
        yield "test-width"
    finally:
        score_base._KINDS.pop("test-width", None)  # leave the registry as it was


def test_a_registered_score_is_searched_served_and_listed(plugin: str) -> None:
    assert plugin in score_names() and score_kind(plugin).to_dict()["forward_pass"] is False
    with pytest.raises(KeyError, match="already registered"):
        register_score(plugin, forward_pass=False)(lambda: Width())
    # served: the request models accept it, and the schema the console's form is built from lists it
    assert SearchCreate(score=plugin).score == plugin and ScoreRequest(structure="x", score=plugin).score == plugin
    assert plugin in SearchCreate.model_json_schema()["properties"]["score"]["enum"]
    # searched: closed form, so in the driver
    r = run_search(SearchSpec(score=plugin, budgets=Budgets(flops=188e8, layers=91), population=8, iterations=64))
    assert r.best_score == math.log(r.best_structure.out_channels) and r.certificate is None


def test_unknown_scores_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as ei:
        SearchCreate(score="nope")
    assert ei.value.errors()[0]["loc"] == ("score",) and "unknown score 'nope'" in str(ei.value)
    assert "nope" not in SearchCreate.model_json_schema()["properties"]["score"]["enum"]

"""Request and response models (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator

from zennas.score import score_kind, score_names
from zennas.search.spec import BUDGET_RANGES, MAX_SEED


def _registered(name: str) -> str:
    score_kind(name)  # a SpecError naming the field: the problem handler makes it a 422
    return name


# a registered score: validated against the registry, listed in the OpenAPI schema as it stands when
# the schema is generated (so a score added with register_score shows in the console's form)
ScoreName = Annotated[str, AfterValidator(_registered),
                      Field(max_length=100, json_schema_extra=lambda s: s.update(enum=score_names()))]

_R = BUDGET_RANGES  # one place for the budgets' bounds: zennas.search.spec
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED, description="explicit seed (an integer)")]


class BudgetsIn(BaseModel):
    """A budget left out falls back to the space's default for that budget; ``null`` given explicitly
    removes it."""

    model_config = ConfigDict(extra="forbid")
    flops: float | None = Field(None, ge=_R["flops"][0], le=_R["flops"][1], allow_inf_nan=False,
                                description="FLOPs budget: MACs + BN/activation element ops at H x W")
    params: float | None = Field(None, ge=_R["params"][0], le=_R["params"][1], allow_inf_nan=False,
                                 description="parameter budget")
    layers: StrictInt | None = Field(None, ge=_R["layers"][0], le=_R["layers"][1], description="main-path conv layers")
    latency_ms: float | None = Field(None, ge=_R["latency_ms"][0], le=_R["latency_ms"][1], allow_inf_nan=False,
                                     description="median latency measured on the evaluating worker (ms)")
    scope: Literal["backbone", "detector"] = Field(
        "backbone", description="what flops/params count: the backbone, or the whole detector (+ neck + head)")


class DetectorIn(BaseModel):
    """The detector around the backbone (as ``zennas export-mmdet``); omitted fields take its defaults."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["gfl", "atss", "retinanet", "faster-rcnn"] | None = None
    neck: Literal["gfpn", "fpn"] | None = None
    depth: int | None = Field(None, ge=1, le=64, description="GFPN depth d (2d - 1 fusion layers)")
    width: float | None = Field(None, gt=0, le=16, description="GFPN width (nodes are int(256 * width) wide)")
    neck_channels: int | None = Field(None, ge=1, le=4096)
    num_classes: int | None = Field(None, ge=1, le=100_000)


class LatencyIn(BaseModel):
    """How latency is measured for a latency budget or objective (on the evaluating Ray worker), or
    predicted from one of your stored latency profiles (``profile``; the top candidates are then
    measured at the end)."""

    model_config = ConfigDict(extra="forbid")
    batch: int = Field(1, ge=1, le=256)
    runs: int = Field(10, ge=1, le=1000)
    warmup: int = Field(2, ge=0, le=100)
    resource: str | None = Field(None, max_length=100, description="Ray resource label of the target hardware's nodes")
    threads: int = Field(1, ge=1, le=256)
    profile: str | None = Field(None, max_length=200, description="the name of one of your stored latency profiles "
                                "(GET /v1/profiles): each candidate's latency is predicted from it")
    verify_top_k: int = Field(8, ge=1, le=64, description="with a profile: the distinct top candidates measured on "
                              "the device at the end (the result is the best whose measured latency meets the budget)")
    verify: str = Field(  # checked by the spec (zennas.search.spec.VERIFY_MODES): a 422 naming latency.verify
        "until-met", max_length=16, description="with a profile: measure the top candidates in rank order until one meets the "
                                 "budget (the same winner, fewer measurements), or all of them")
    speculate: bool = Field(True, description="with a profile: start measuring the top candidates while the search "
                            "runs, on the otherwise idle measuring worker (the verification reuses them)")


class SearchCreate(BaseModel):
    """A search job. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")
    space: str = Field("detection-k1kxk1", max_length=100, description="shipped space name (GET /v1/spaces)")
    space_doc: dict[str, Any] | None = Field(None, description="an inline space document instead of a name")
    score: ScoreName = "entropy-analytic"
    score_settings: dict[Annotated[str, Field(max_length=64)], Any] = Field(
        default_factory=dict, max_length=32,
        description="the score's settings (e.g. resolution, batch, stage_weights); each is checked by the score, "
                    "an unknown one is an error naming score_settings.<name>")
    resolution: int | None = Field(None, ge=32, le=4096, multiple_of=32, description="square input size (multiple of 32)")
    height: int | None = Field(None, ge=32, le=4096, multiple_of=32)
    width: int | None = Field(None, ge=32, le=4096, multiple_of=32)
    budgets: BudgetsIn = Field(default_factory=BudgetsIn)
    detector: DetectorIn | None = Field(None, description="the detector whose neck and head budgets.scope=detector counts")
    population: int = Field(256, ge=2, le=1_000_000)
    iterations: int = Field(10_000, ge=1, le=100_000_000)
    generation: int = Field(16, ge=1, le=100_000)
    latency: LatencyIn = Field(default_factory=LatencyIn)
    checkpoint_every: int = Field(4096, ge=1, le=10_000_000, description="checkpoint after this many trials")
    sampler: Literal["evolution", "nsga2", "random"] = "evolution"
    objectives: list[Literal["flops", "params", "latency"]] = Field(default_factory=lambda: ["flops"], max_length=3)
    seed: Seed = 0
    start: list[dict[str, Any]] | dict[str, Any] | str | None = Field(
        None, description="warm-start structure in any supported format (ours, TinyNAS, ZenNAS string)")


    @field_validator("score_settings")
    @classmethod
    def _plain_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        # values are checked by the score itself (zennas.search.spec.make_spec_scorer), which names the
        # setting; here only their shape: a number, a flag, a short string, or a short list of numbers
        for k, x in v.items():
            ok = (x is None or isinstance(x, (int, float, bool)) or (isinstance(x, str) and len(x) <= 100)
                  or (isinstance(x, list) and len(x) <= 64 and all(isinstance(e, (int, float)) for e in x)))
            if not ok:
                raise ValueError(f"score_settings.{k} must be a number, a flag, a string of at most 100 characters "
                                 "or a list of at most 64 numbers")
        return v


class Progress(BaseModel):
    """Versioned progress event (schema ``zennas.progress/1``), also streamed as SSE."""

    model_config = ConfigDict(extra="allow")
    schema_: str = Field("zennas.progress/1", alias="schema")
    iteration: int = 0
    iterations: int = 0
    evaluated: int = 0
    rejected: int = 0
    candidates_per_s: float = 0.0
    eta_s: float | None = None
    best_score: float | None = None
    best_structure: dict[str, Any] | None = None
    population: dict[str, float] | None = None
    pareto_front: list[dict[str, Any]] | None = None


class SearchPublic(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    spec: dict[str, Any]
    progress: dict[str, Any] | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    links: dict[str, str] = Field(default_factory=dict)


class SearchList(BaseModel):
    items: list[SearchPublic]
    next_cursor: str | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    structure: list[dict[str, Any]] | dict[str, Any] | str = Field(..., description="any supported format")
    score: ScoreName = "entropy-analytic"
    resolution: int | None = Field(None, ge=32, le=2048)
    height: int | None = Field(None, ge=32, le=2048)
    width: int | None = Field(None, ge=32, le=2048)
    score_resolution: int | None = Field(None, ge=32, le=1024)
    seed: Seed = 0


class ScoreResponse(BaseModel):
    score: float
    score_type: str
    stage_scores: list[float]
    stage_scores_weighted: list[float]
    flops: float
    flops_unit: str = "MACs + BN/activation element ops"
    params: float
    layers: int
    resolution: list[int]
    score_resolution: list[int] | None
    seconds: float


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str = Field(..., min_length=1, max_length=200)


class SessionResponse(BaseModel):
    tenant: str
    csrf_token: str

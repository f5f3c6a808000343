"""One ``Settings`` from the environment (``ZENNAS_*``), validated at start-up."""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import ByteSize, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zennas.admission import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZENNAS_", extra="ignore", env_parse_none_str="none")  # "none": unset

    database_url: str = "sqlite:///zennas-service/zennas.db"  # PostgreSQL: postgresql://user@host/db
    artifacts_dir: Path = Path("zennas-service/artifacts")
    host: str = "127.0.0.1"
    port: int = 8000
    dev_mode: bool = False  # no API keys; refuses to bind to a non-loopback address
    secret_key: str = Field(default_factory=lambda: secrets.token_hex(32))  # signs session cookies
    max_concurrent_searches: int = Field(default=1, ge=1)  # across all replicas sharing the database
    lease_seconds: float = Field(default=30.0, gt=0)  # a claimed job's lease; renewed by heartbeats
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)  # dispatcher's idle poll interval
    retention_days: float | None = None  # finished jobs older than this are deleted (None: keep)
    # bundle files (zip, report, config) older than this are deleted; a download rebuilds them from the
    # job's stored result (None: keep them)
    artifact_ttl_seconds: float | None = Field(default=7 * 86400.0, gt=0)
    max_body_bytes: int = 1_000_000
    max_page_bytes: int = Field(default=1 << 20, ge=4096)  # a /trials page stops once its JSON reaches this
    public_url: str | None = None  # absolute links start with this (e.g. https://nas.example.com); else relative
    metrics_token: str | None = None  # /metrics job figures need "Authorization: Bearer <token>"
    # per-tenant limits
    max_queued_per_tenant: int = 20
    max_running_per_tenant: int = 4
    max_population: int = 4096
    max_iterations: int = Field(default=1_000_000, ge=1)  # trials per search
    # bytes one tenant's searches may hold in the database (trial rows, bases, checkpoints): a search
    # whose estimate does not fit is refused at submission (429), one that outgrows it fails
    max_storage_per_tenant: int = Field(default=2 << 30, ge=1 << 20)
    max_resolution: int = 2048
    # admission control: what one forward-pass evaluation (POST /v1/score, a search's score or latency
    # run) may use, estimated before it runs (zennas.admission); sizes accept "2GiB", "512MB", bytes
    max_score_memory: ByteSize = Field(default=ByteSize(2 << 30), gt=0)  # peak memory of one evaluation
    max_score_gmacs: float = Field(default=200.0, gt=0)  # compute of one evaluation (1e9 MACs)
    max_blocks: int = Field(default=64, ge=1)  # blocks in a structure
    max_units: int = Field(default=512, ge=1)  # units in a structure (sum of layers)
    max_channels: int = Field(default=4096, ge=1)  # any in/out/bottleneck width (also space_doc max_channels)
    max_kernel: int = Field(default=15, ge=1)
    max_score_batch: int = Field(default=64, ge=1)  # batch of a forward-pass score or a latency run
    max_score_repeat: int = Field(default=16, ge=1)
    max_threads: int = Field(default=16, ge=1)  # torch threads a score or latency setting may ask for
    max_latency_runs: int = Field(default=100, ge=1)
    # what one search's sampler may hold for its trial history (NSGA-II keeps every trial: ~8 KiB each)
    max_history_memory: ByteSize = Field(default=ByteSize(1 << 30), gt=0)
    # POST /v1/score: forward passes run in worker processes, never in the HTTP process
    score_workers: int = Field(default=2, ge=1)  # worker processes (each runs one evaluation at a time)
    score_timeout_seconds: float = Field(default=60.0, gt=0)  # a slower evaluation is stopped (503)
    max_scoring_per_tenant: int = Field(default=2, ge=1)  # a tenant's evaluations at once (429 beyond)
    # address-space cap of a score worker: an allocation beyond it fails (503) instead of taking the
    # machine, should an estimate ever be wrong. Default: max_score_memory + 2 GiB (torch, threads).
    score_worker_memory: ByteSize | None = None
    # evaluation
    ray_address: str | None = None  # an existing Ray cluster; default: embedded Ray when needed
    ray_loopback: bool = True  # the embedded Ray listens on 127.0.0.1 only (False: on the machine's address)
    search_workers: int | None = None  # Ray evaluation actors per search (default: Ray's CPUs)
    replica_name: str | None = None  # owner id prefix in leases (default: host:pid)
    # supervision (`zennas serve`)
    run_dir: Path | None = None  # the dispatcher's records (pid, process group, heartbeat); default: artifacts_dir/../run
    dispatcher_stale_seconds: float = Field(default=15.0, gt=0)  # /readyz is 503 after this long without a beat
    restart_backoff_max: float = Field(default=30.0, gt=0)  # seconds between dispatcher restarts, at most

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.dev_mode:
            try:
                loopback = ipaddress.ip_address(self.host).is_loopback
            except ValueError:
                loopback = self.host == "localhost"
            if not loopback:
                raise ValueError(f"ZENNAS_DEV_MODE disables API keys; it refuses to bind to {self.host!r} "
                                 "(use 127.0.0.1, or turn dev mode off and create keys with `zennas keys create`)")
        if self.public_url is not None:
            self.public_url = self.public_url.rstrip("/")
            if not self.public_url.startswith(("http://", "https://")):
                raise ValueError(f"ZENNAS_PUBLIC_URL must start with http:// or https://, got {self.public_url!r}")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("ZENNAS_HEARTBEAT_SECONDS must be smaller than ZENNAS_LEASE_SECONDS")
        return self

    @property
    def limits(self) -> Limits:
        """The evaluation limits (zennas.admission) these settings give."""
        return Limits(memory_bytes=int(self.max_score_memory), gmacs=self.max_score_gmacs, blocks=self.max_blocks,
                      units=self.max_units, channels=self.max_channels, kernel=self.max_kernel,
                      resolution=self.max_resolution, batch=self.max_score_batch, repeat=self.max_score_repeat,
                      threads=self.max_threads, latency_runs=self.max_latency_runs,
                      history_bytes=int(self.max_history_memory))

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return url

    @property
    def runtime_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else self.artifacts_dir.parent / "run"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))


@lru_cache
def get_settings() -> Settings:
    return Settings()

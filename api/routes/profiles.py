"""``/v1/profiles``: device latency profiles as a per-tenant resource (upload, list, read).

A profile is the JSON document ``zennas profile build`` writes; it is validated strictly (schema,
checksum, complete) before it is stored, and it is only ever visible to the tenant that uploaded it
(another tenant's name is a 404, as if it did not exist).
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from zennas_api.deps import PrincipalDep
from zennas_api.problems import Problem

from zennas.errors import SpecError
from zennas.latency.profile import MAX_BYTES, Profile, ProfileError, profile_from_dict
from zennas.search.store import metadata

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

latency_profiles = sa.Table(
    "latency_profiles",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(80), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # Profile.summary(), JSON
    sa.Column("document", sa.Text, nullable=False),  # the profile document, JSON
    sa.Column("created_at", sa.Float, nullable=False),
)


class ProfileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the profile's name within your tenant: letters, digits, '.', '_', '-'",
                      max_length=64)
    profile: dict[str, Any] = Field(description="the document `zennas profile build` wrote")


class ProfilePublic(BaseModel):
    name: str
    checksum: str
    created_at: float
    summary: dict[str, Any]
    document: dict[str, Any] | None = None


class ProfileList(BaseModel):
    items: list[ProfilePublic]


def _engine(request: Request) -> sa.Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def _public(row: Any, with_document: bool = False) -> ProfilePublic:
    return ProfilePublic(name=row.name, checksum=row.checksum, created_at=row.created_at,
                         summary=json.loads(row.summary), document=json.loads(row.document) if with_document else None)


def validate_upload(body: ProfileCreate) -> Profile:
    if not NAME.match(body.name):
        raise Problem(422, "Invalid input", f"name must match {NAME.pattern}, got {body.name!r}", field="name")
    text = json.dumps(body.profile, separators=(",", ":"))
    if len(text) > MAX_BYTES:
        raise Problem(413, "Payload too large", f"the profile is {len(text)} bytes; the limit is {MAX_BYTES}",
                      field="profile")
    try:
        p = profile_from_dict(body.profile)
    except ProfileError as e:
        raise ProfileError(e.message, field=f"profile.{e.field}" if e.field else "profile") from e
    if not p.complete:
        raise ProfileError("the profile is not complete; finish it with `zennas profile build --resume`",
                           field="profile.complete")
    return p


@router.post("", status_code=201, response_model=ProfilePublic,
             responses={409: {"description": "a profile of that name exists"}, 422: {"description": "invalid"}})
def upload_profile(body: ProfileCreate, request: Request, principal: PrincipalDep) -> ProfilePublic:
    p = validate_upload(body)
    row = {"tenant": principal.tenant, "name": body.name, "checksum": p.checksum,
           "summary": json.dumps(p.summary()), "document": p.to_json(), "created_at": time.time()}
    try:
        with _engine(request).begin() as c:
            c.execute(latency_profiles.insert().values(**row))
    except sa.exc.IntegrityError:
        raise Problem(409, "Conflict", f"a profile named {body.name!r} exists; choose another name",
                      field="name") from None
    return ProfilePublic(name=body.name, checksum=p.checksum, created_at=float(row["created_at"]),  # type: ignore[arg-type]
                         summary=p.summary())


@router.get("", response_model=ProfileList)
def list_profiles(request: Request, principal: PrincipalDep) -> ProfileList:
    t = latency_profiles
    with _engine(request).connect() as c:
        rows = c.execute(sa.select(t.c.name, t.c.checksum, t.c.summary, t.c.created_at, t.c.document)
                         .where(t.c.tenant == principal.tenant).order_by(t.c.name)).all()
    return ProfileList(items=[_public(r) for r in rows])


def load_stored(engine: sa.Engine, tenant: str, name: str) -> Profile | None:
    """A tenant's stored profile by name (None when that tenant has none of that name)."""
    t = latency_profiles
    with engine.connect() as c:
        doc = c.execute(sa.select(t.c.document).where(t.c.tenant == tenant, t.c.name == name)).scalar()
    return None if doc is None else profile_from_dict(json.loads(doc))


def profile_for_search(engine: sa.Engine, tenant: str, name: str) -> Profile:
    """The stored profile a search of ``tenant`` names in ``latency.profile``. Only a name: the service
    never reads a file path. Another tenant's profile is as unknown as one that does not exist."""
    if not NAME.match(name):
        raise SpecError(f"latency.profile must be the name of one of your stored profiles (GET /v1/profiles; "
                        f"letters, digits, '.', '_', '-'), got {name!r}"[:300]
                        + "; the service reads no file paths: upload the profile (POST /v1/profiles)",
                        field="latency.profile")
    p = load_stored(engine, tenant, name)
    if p is None:
        raise SpecError(f"you have no latency profile named {name!r} (GET /v1/profiles lists yours; "
                        "upload one with POST /v1/profiles)", field="latency.profile")
    return p


@router.get("/{name}", response_model=ProfilePublic, responses={404: {"description": "not found"}})
def get_profile(name: str, request: Request, principal: PrincipalDep,
                document: Annotated[bool, Query(description="include the whole document")] = False) -> ProfilePublic:
    t = latency_profiles
    with _engine(request).connect() as c:
        row = c.execute(sa.select(t).where(t.c.tenant == principal.tenant, t.c.name == name)).first()
    if row is None:
        raise Problem(404, "Not found", f"no profile named {name!r}", field="name")
    return _public(row, document)

"""API keys (stored hashed), tenants, and browser sessions.

A key looks like ``zn_<id>_<secret>``; only sha256(secret) is stored. Requests send
``Authorization: Bearer <key>``. A browser exchanges a key for an HttpOnly, SameSite=Strict session
cookie (signed with ``ZENNAS_SECRET_KEY``); state-changing requests made with the cookie must echo
its CSRF token in ``X-CSRF-Token``. In development mode (loopback only) every request is tenant "dev".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from zennas_api.db import api_keys

SESSION_COOKIE = "zennas_session"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str | None
    via_cookie: bool = False
    csrf: str | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: Engine, tenant: str) -> str:
    if not tenant or len(tenant) > 64 or not all(c.isalnum() or c in "-_." for c in tenant):
        raise ValueError(f"tenant must be 1-64 letters, digits, '-', '_' or '.', got {tenant!r}")
    kid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    with engine.begin() as c:
        c.execute(api_keys.insert().values(id=kid, tenant=tenant, hash=_digest(secret), created_at=time.time()))
    return f"zn_{kid}_{secret}"


def list_keys(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(
            sa.select(api_keys.c.id, api_keys.c.tenant, api_keys.c.created_at, api_keys.c.revoked_at)
            .order_by(api_keys.c.created_at))]


def revoke_key(engine: Engine, kid: str) -> bool:
    with engine.begin() as c:
        return bool(c.execute(api_keys.update().where(api_keys.c.id == kid, api_keys.c.revoked_at.is_(None))
                              .values(revoked_at=time.time())).rowcount)


def verify_key(engine: Engine, key: str) -> Principal | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "zn":
        return None
    _, kid, secret = parts
    return _key_principal(engine, kid, secret)


# built once (every authenticated request runs it; SQLAlchemy caches the compiled form)
_BY_ID = sa.select(api_keys.c.tenant, api_keys.c.hash, api_keys.c.revoked_at).where(api_keys.c.id == sa.bindparam("id"))


def _key_principal(engine: Engine, kid: str, secret: str | None) -> Principal | None:
    with engine.connect() as c:
        row = c.execute(_BY_ID, {"id": kid}).first()
    if row is None or row.revoked_at is not None:
        return None
    if secret is not None and not hmac.compare_digest(row.hash, _digest(secret)):
        return None
    return Principal(row.tenant, kid)


def _sign(payload: bytes, secret_key: str) -> str:
    return hmac.new(secret_key.encode(), payload, hashlib.sha256).hexdigest()


def make_session(p: Principal, secret_key: str) -> tuple[str, str]:
    """A signed cookie value and its CSRF token."""
    csrf = secrets.token_urlsafe(16)
    payload = json.dumps({"t": p.tenant, "k": p.key_id, "c": csrf, "e": time.time() + SESSION_SECONDS}).encode()
    b = base64.urlsafe_b64encode(payload).decode()
    return f"{b}.{_sign(payload, secret_key)}", csrf


def read_session(engine: Engine | None, value: str, secret_key: str) -> Principal | None:
    try:
        b, sig = value.rsplit(".", 1)
        payload = base64.urlsafe_b64decode(b.encode())
    except (ValueError, TypeError):
        return None
    if not sig.isascii() or not hmac.compare_digest(sig, _sign(payload, secret_key)):  # str compare: ASCII only
        return None
    d = json.loads(payload)
    if d["e"] < time.time():
        return None
    if engine is not None and d["k"] is not None and _key_principal(engine, d["k"], None) is None:
        return None  # the key behind the session was revoked
    return Principal(d["t"], d["k"], via_cookie=True, csrf=d["c"])

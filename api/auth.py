"""API keys (stored hashed), tenants, and browser sessions.

A key looks like ``zn_<id>_<secret>``; only sha256(secret) is stored. Requests send
``Authorization: Bearer <key>``. A browser exchanges a key for an HttpOnly, SameSite=Strict session
cookie (signed with ``ZENNAS_SECRET_KEY``); state-changing requests made with the cookie must echo
its CSRF token in ``X-CSRF-Token``. Sessions are also kept server-side (table ``sessions``): the cookie
names its row, and signing out (or revoking the key behind it) ends it at once, wherever the cookie
went. In development mode (loopback only) every request is tenant "dev".
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
from zennas_api.db import api_keys, sessions

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


def make_session(p: Principal, secret_key: str, engine: Engine | None = None) -> tuple[str, str]:
    """A signed cookie value and its CSRF token; with ``engine``, the session's server-side row."""
    csrf = secrets.token_urlsafe(16)
    sid = secrets.token_urlsafe(24)
    now = time.time()
    if engine is not None:
        with engine.begin() as c:
            c.execute(sessions.delete().where(sessions.c.expires_at < now))  # keep the table small
            c.execute(sessions.insert().values(id=sid, tenant=p.tenant, key_id=p.key_id, created_at=now,
                                               expires_at=now + SESSION_SECONDS))
    payload = json.dumps({"t": p.tenant, "k": p.key_id, "c": csrf, "e": now + SESSION_SECONDS, "s": sid}).encode()
    b = base64.urlsafe_b64encode(payload).decode()
    return f"{b}.{_sign(payload, secret_key)}", csrf


def _session_claims(value: str, secret_key: str) -> dict[str, object] | None:
    """The claims of a cookie whose signature holds, else None (signature and expiry only)."""
    try:
        b, sig = value.rsplit(".", 1)
        payload = base64.urlsafe_b64decode(b.encode())
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(sig.encode(), _sign(payload, secret_key).encode()):  # bytes: any text compares
        return None
    try:
        d = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("e"), (int, float)) or d["e"] < time.time():
        return None
    return d


# built once (every cookie request runs it)
_SESSION_LIVE = sa.select(sessions.c.id).where(sessions.c.id == sa.bindparam("id"), sessions.c.revoked_at.is_(None),
                                               sessions.c.expires_at >= sa.bindparam("now"))


def read_session(engine: Engine | None, value: str, secret_key: str) -> Principal | None:
    d = _session_claims(value, secret_key)
    if d is None:
        return None
    if engine is not None:
        sid = d.get("s")
        if not isinstance(sid, str):
            return None  # a cookie from before server-side sessions: sign in again
        with engine.connect() as c:
            if c.execute(_SESSION_LIVE, {"id": sid, "now": time.time()}).first() is None:
                return None  # signed out (or expired)
        if d["k"] is not None and _key_principal(engine, str(d["k"]), None) is None:
            return None  # the key behind the session was revoked
    return Principal(str(d["t"]), d["k"], via_cookie=True, csrf=str(d["c"]))  # type: ignore[arg-type]


def revoke_session(engine: Engine, value: str, secret_key: str) -> bool:
    """Sign out: the cookie's session ends server-side, so a copy of the cookie no longer works."""
    d = _session_claims(value, secret_key)
    if d is None or not isinstance(d.get("s"), str):
        return False
    with engine.begin() as c:
        return bool(c.execute(sessions.update().where(sessions.c.id == d["s"], sessions.c.revoked_at.is_(None))
                              .values(revoked_at=time.time())).rowcount)

"""Administration: API keys and console users. Needs the ``admin`` scope; every change is
an audit entry naming the key that made it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from fiduciary.web import auth
from fiduciary.web.api.models import KeyCreatedOut, KeyCreateIn, KeyOut, UserCreateIn, UserOut
from fiduciary.web.auth import ApiKey
from fiduciary.web.deps import Caller, access

router = APIRouter(prefix="/admin", tags=["admin"])
Admin = Annotated[Caller, access("admin")]
KeyPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="The key's id (not the key).")]


def _key_out(k: ApiKey) -> KeyOut:
    return KeyOut(
        id=k.id,
        name=k.name,
        scopes=sorted(k.scopes),
        created_at=k.created_at,
        created_by=k.created_by,
        revoked_at=k.revoked_at,
        revoked_by=k.revoked_by,
    )


@router.post("/api-keys", status_code=201, response_model=KeyCreatedOut)
def create_key(body: KeyCreateIn, caller: Admin) -> KeyCreatedOut:
    """Create an API caller.key. The key is in this answer only: the server keeps its hash."""
    key_id, secret = auth.create_api_key(caller.web.fid, body.name, body.scopes, actor=caller.actor)
    return KeyCreatedOut(key_id=key_id, key=secret, name=body.name, scopes=sorted(set(body.scopes)))


@router.get("/api-keys", response_model=list[KeyOut])
def list_keys(caller: Admin) -> list[KeyOut]:
    """Every key, revoked ones too (they name actors in the audit trail); no secrets."""
    return [_key_out(k) for k in auth.list_api_keys(caller.web.fid)]


@router.delete("/api-keys/{key_id}", status_code=204, response_class=Response)
def revoke_key(key_id: KeyPath, caller: Admin) -> Response:
    """Revoke a key: it stops working at once in this process, within a second in others."""
    auth.revoke_api_key(caller.web.fid, key_id, actor=caller.actor)
    caller.web.keys.forget(key_id)
    return Response(status_code=204)


def _user_out(u: auth.ConsoleUser) -> UserOut:
    return UserOut(
        id=u.id,
        username=u.username,
        role=u.role,
        created_at=u.created_at,
        created_by=u.created_by,
        last_login_at=u.last_login_at,
        disabled_at=u.disabled_at,
    )


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: UserCreateIn, caller: Admin) -> UserOut:
    """Create a console user (argon2id password hash; roles viewer, operator, admin)."""
    return _user_out(
        auth.create_user(caller.web.fid, body.username, body.password, body.role, actor=caller.actor)
    )


@router.get("/users", response_model=list[UserOut])
def list_users(caller: Admin) -> list[UserOut]:
    return [_user_out(u) for u in auth.list_users(caller.web.fid)]

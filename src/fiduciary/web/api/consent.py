"""Consent: a person's choices, each an append-only ledger event with its LAW-8 proof.

Giving and withdrawing are the same call shape (LAW-8: withdrawing is as easy as giving).
Writes of concurrent requests are committed together (``fiduciary.web.batching``); each
answer waits for its own commit and carries the event id.

``POST /banner/choices`` is public (no API key): the consent banner (``/banner.js``) posts a
visitor's cookie choices there from the company's sites. Browsers may call it only from the
origins in the ``banner_origins`` setting (CORS, checked on the server too); it is
rate-limited per IP; it can change only the visitor subject the banner created (a signed
token names it). See ``fiduciary.web.center.banner``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from fiduciary.consent.ledger import EventKind, NewEvent
from fiduciary.web.api.models import (
    ChoiceIn,
    ConsentEventOut,
    ConsentStateOut,
    EventCreated,
    GiveIn,
    ObjectIn,
    ProofOut,
    RestrictIn,
    SaleOptOutIn,
    SettingIn,
    WithdrawIn,
)
from fiduciary.web.api.subjects import SubjectPath
from fiduciary.web.center.banner import BannerError, record_choices
from fiduciary.web.center.routes import AttemptLimiter, client_ip
from fiduciary.web.deps import GPC_HEADER, Caller, access, gpc, web_of
from fiduciary.web.problems import Kind, ProblemException

router = APIRouter(tags=["consent"])
Read = Annotated[Caller, access("consent:read")]
Write = Annotated[Caller, access("consent:write")]


def _event(
    caller: Caller,
    subject_id: str,
    kind: EventKind,
    scope: str,
    body: ChoiceIn,
    *,
    value: str | None = None,
    expires_at: datetime | None = None,
) -> NewEvent:
    return NewEvent(
        subject_id=subject_id,
        kind=kind,
        scope=scope,
        channel=body.channel,
        policy_version=caller.web.fid.policy.version,
        value=value,
        method=body.method,
        notice_text=body.notice_text,
        notice_hash=body.notice_hash,
        language=body.language,
        ip=body.ip,
        expires_at=expires_at,
        actor=caller.actor,
    )


# The choices, by the last segment of their path: the body each takes and the event it
# records. The fast path (``fiduciary.web.fastpath``) serves the same table.
CHOICES: Final[dict[str, tuple[type[ChoiceIn], Callable[[Caller, str, Any], NewEvent]]]] = {
    "give": (
        GiveIn,
        lambda c, sid, b: _event(c, sid, EventKind.consent_given, b.purpose, b, expires_at=b.expires_at),
    ),
    "withdraw": (WithdrawIn, lambda c, sid, b: _event(c, sid, EventKind.consent_withdrawn, b.purpose, b)),
    "object": (ObjectIn, lambda c, sid, b: _event(c, sid, EventKind.objection, b.purpose, b)),
    "restrict": (RestrictIn, lambda c, sid, b: _event(c, sid, EventKind.restriction, "*", b)),
    "opt-out-of-sale": (SaleOptOutIn, lambda c, sid, b: _event(c, sid, EventKind.sale_opt_out, "sale", b)),
    "settings": (SettingIn, lambda c, sid, b: _event(c, sid, EventKind.setting, b.name, b, value=b.value)),
}


async def record_choice(caller: Caller, subject_id: str, choice: str, body: ChoiceIn) -> EventCreated:
    """Record one of ``CHOICES``; answers once its event is committed."""
    event = CHOICES[choice][1](caller, subject_id, body)
    return EventCreated(event_id=await caller.web.record(event))


@router.post("/subjects/{subject_id}/consent/give", status_code=201, response_model=EventCreated)
async def give(subject_id: SubjectPath, body: GiveIn, caller: Write) -> EventCreated:
    """Consent given to a purpose, with the notice text shown (only its hash is kept)."""
    return await record_choice(caller, subject_id, "give", body)


@router.post("/subjects/{subject_id}/consent/withdraw", status_code=201, response_model=EventCreated)
async def withdraw(subject_id: SubjectPath, body: WithdrawIn, caller: Write) -> EventCreated:
    """Consent withdrawn (or an opt-out of an opt-out purpose); effective at once."""
    return await record_choice(caller, subject_id, "withdraw", body)


@router.post("/subjects/{subject_id}/consent/object", status_code=201, response_model=EventCreated)
async def object_(subject_id: SubjectPath, body: ObjectIn, caller: Write) -> EventCreated:
    """An objection (GDPR Art. 21, LAW-7) to one purpose open to it, or ``*`` to all."""
    return await record_choice(caller, subject_id, "object", body)


@router.post("/subjects/{subject_id}/consent/restrict", status_code=201, response_model=EventCreated)
async def restrict(subject_id: SubjectPath, body: RestrictIn, caller: Write) -> EventCreated:
    """Restriction of processing (GDPR Art. 18, LAW-4): only legal obligations go on."""
    return await record_choice(caller, subject_id, "restrict", body)


@router.post("/subjects/{subject_id}/consent/opt-out-of-sale", status_code=201, response_model=EventCreated)
async def opt_out_of_sale(subject_id: SubjectPath, body: SaleOptOutIn, caller: Write) -> EventCreated:
    """Opt-out of sale and sharing (CCPA, LAW-12)."""
    return await record_choice(caller, subject_id, "opt-out-of-sale", body)


@router.post("/subjects/{subject_id}/consent/settings", status_code=201, response_model=EventCreated)
async def set_setting(subject_id: SubjectPath, body: SettingIn, caller: Write) -> EventCreated:
    """A setting: ``visibility:<category>`` (an audience the policy offers, PLU-3,
    PLV-11), ``linked:<recipient>`` (PLU-7), or a purpose condition's setting."""
    return await record_choice(caller, subject_id, "settings", body)


@router.get("/subjects/{subject_id}/consent", response_model=ConsentStateOut, openapi_extra=GPC_HEADER)
async def state(subject_id: SubjectPath, caller: Read) -> ConsentStateOut:
    """The subject's choices now, and the purposes that may use its data (counting
    ``Sec-GPC: 1`` where it is an opt-out, without recording it: a read changes nothing)."""
    fid = caller.web.fid
    st = await caller.web.load_state(subject_id)
    applied = caller.gpc and caller.web.gpc_applies(st.jurisdiction)
    return ConsentStateOut(
        subject_id=subject_id,
        kind=st.kind,
        jurisdiction=st.jurisdiction,
        status=st.status,
        age_status=st.age_status,
        consents=dict(st.consents),
        objections=sorted(st.objections),
        restricted=st.restricted,
        sale_opt_out=st.sale_opt_out,
        recipient_opt_outs=sorted(st.recipient_opt_outs),
        settings=dict(st.settings),
        allowed_purposes=sorted(fid.decider.allowed_purposes(st, gpc=applied)),
        gpc=applied,
    )


@router.get("/subjects/{subject_id}/consent/events", response_model=list[ConsentEventOut])
def events(subject_id: SubjectPath, caller: Read) -> list[ConsentEventOut]:
    """Every consent event of the subject, oldest first (404 for an unknown subject)."""
    fid = caller.web.fid
    fid.vault.subject(subject_id)  # 404 rather than an empty list for an id never issued
    return [
        ConsentEventOut(
            id=e.id,
            kind=e.kind.value,
            scope=e.scope,
            value=e.value,
            at=e.at,
            policy_version=e.policy_version,
            notice_hash=e.notice_hash,
            language=e.language,
            method=e.method,
            channel=e.channel,
            ip=e.ip,
            expires_at=e.expires_at,
            actor=e.actor,
        )
        for e in fid.consent.events(subject_id)
    ]


@router.get("/consent/events/{event_id}/proof", response_model=ProofOut)
def proof(event_id: Annotated[int, Path(ge=1, le=2**62)], caller: Read) -> ProofOut:
    """What LAW-8 asks to prove about one event: who, when, what notice text (hash) and
    policy version, in which language, how, from roughly where, until when."""
    return ProofOut(**caller.web.fid.consent.proof(event_id))


# ------------------------------------------------------------------ the consent banner
# Posts per IP: a person clicks a handful of times; a script filling the ledger is stopped.
BANNER_POSTS_PER_IP: Final = 60
BANNER_WINDOW_SECONDS: Final = 600.0
_ORIGIN = Kind(
    403,
    "origin-not-allowed",
    "Origin not allowed",
    "Only the sites named in the banner_origins setting may post consent-banner choices.",
)


def _allowed_origin(request: Request) -> str | None:
    """The Origin to answer with CORS headers: one the settings list (or ``*`` there), or
    the server's own. None: no Origin, or one not allowed."""
    origin = request.headers.get("origin")
    if not origin:
        return None
    allowed = web_of(request).settings.banner_origins
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin == own or origin in allowed or "*" in allowed:
        return origin
    return None


def _cors_headers(request: Request) -> dict[str, str]:
    origin = _allowed_origin(request)
    if origin is None:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


class _CorsRoute(APIRoute):
    """Answers, errors included (422 of a malformed body, 429 ...), carry the CORS headers:
    otherwise a browser hides the problem from the banner's script."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await inner(request)
            except Exception as exc:
                on_error = next(
                    (
                        h
                        for cls in type(exc).__mro__
                        if (h := request.app.exception_handlers.get(cls)) is not None
                    ),
                    None,
                )
                if on_error is None:
                    raise
                response = await on_error(request, exc)
            response.headers.update(_cors_headers(request))
            return response

        return handler


public = APIRouter(tags=["consent banner"], route_class=_CorsRoute)


class BannerChoicesIn(BaseModel):
    """A visitor's choice in the consent banner."""

    model_config = ConfigDict(extra="forbid")

    visitor: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="The token of an earlier answer (the fid_visitor cookie); none for a first choice."
    )
    choices: dict[Annotated[str, StringConstraints(max_length=32)], bool] = Field(
        max_length=16, description="Cookie category -> allowed, for the categories the banner asks about."
    )
    region: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")] | None = None
    config: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None,
        description="The digest of the banner shown (its notice hash); checked against the one in force.",
    )
    gpc: bool = Field(False, description="navigator.globalPrivacyControl; the Sec-GPC header counts too.")


class BannerChoicesOut(BaseModel):
    visitor: str = Field(description="Keep it (the fid_visitor cookie) and send it with the next choice.")
    event_ids: list[int] = Field(description="The consent events recorded (none when nothing changed).")
    choices: dict[str, bool] = Field(description="As recorded: GPC turns off what sells or shares.")
    gpc: bool


def _banner_limiter(request: Request) -> AttemptLimiter:
    lim: AttemptLimiter | None = getattr(request.app.state, "banner_limiter", None)
    if lim is None:
        lim = AttemptLimiter(BANNER_POSTS_PER_IP, BANNER_WINDOW_SECONDS)
        request.app.state.banner_limiter = lim
    return lim


@public.post("/banner/choices", status_code=201, response_model=BannerChoicesOut, openapi_extra=GPC_HEADER)
async def banner_choices(request: Request, body: BannerChoicesIn) -> BannerChoicesOut:
    """Keep a consent-banner choice as proof (LAW-8): a ``cookies:<category>`` setting
    event per changed category on the visitor's subject (created at the first choice), and
    with GPC an opt-out of sale and sharing (LAW-12). No API key; browsers only from the
    ``banner_origins`` setting; rate-limited per IP."""
    if request.headers.get("origin") and _allowed_origin(request) is None:
        raise ProblemException(
            403, "this origin may not post banner choices (see the banner_origins setting)", kind=_ORIGIN
        )
    if not _banner_limiter(request).allow(request.client.host if request.client else "unknown"):
        raise ProblemException(
            429,
            "too many banner choices from this address; try again later",
            headers={"Retry-After": str(int(BANNER_WINDOW_SECONDS))},
        )
    web = web_of(request)
    try:
        done = await run_in_threadpool(
            record_choices,
            web,
            visitor=body.visitor,
            choices=body.choices,
            region=body.region,
            config=body.config,
            gpc=body.gpc or gpc(request),
            ip=client_ip(request),
        )
    except BannerError as exc:
        raise ProblemException(422, str(exc)) from None
    return BannerChoicesOut(
        visitor=done.visitor, event_ids=done.event_ids, choices=done.choices, gpc=done.gpc
    )


@public.options("/banner/choices", include_in_schema=False)
async def banner_preflight(request: Request) -> Response:
    """The CORS preflight of a browser's post (the headers come from the route class)."""
    return Response(status_code=204 if _allowed_origin(request) else 403)


router.include_router(public)

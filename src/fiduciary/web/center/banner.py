"""The consent banner for the company's own sites: ``/banner.js`` and ``/banner.css``.

On the company's pages::

    <script src="https://privacy.example.com/banner.js?region=US-CA" defer></script>
    <script type="text/plain" data-fiduciary-category="analytics" src="https://stats.example/s.js"></script>
    <iframe data-fiduciary-category="advertising" data-src="https://social.example/like"></iframe>

The script (no dependencies, no build step) carries the policy's cookie categories and
cookies, rendered here from the compiled policy. Tagged scripts, iframes and pixels stay
inert until their category is allowed (PLA-6: social buttons connect to nobody before
that); strictly necessary ones run at once. ``region`` (optional, an ISO code the site may
know) picks the jurisdiction's defaults: a category whose cookies all work by opt-out there
starts allowed; without a region every category that needs opt-in anywhere starts off.

Global Privacy Control (``navigator.globalPrivacyControl``, ``Sec-GPC: 1``) is honoured
wherever the visitor is (LAW-12 requires it in California; elsewhere it costs nothing): a
category whose cookies all carry ``gpc: opt_out`` is off and not asked about; in a category
where only some do, those stay off (a tag names its cookie with ``data-fiduciary-cookie``;
an untagged one in such a category stays off too).

Each choice is posted to ``POST /api/v1/banner/choices`` (``fiduciary.web.api.consent``),
which keeps it as proof (LAW-8): the visitor is a subject of the policy's visitor kind,
created at the first choice and named by a signed token the script keeps in a first-party
cookie (``fid_visitor``); the choice itself (``fid_consent``) is a first-party cookie too,
so the site never waits for the network to know it. ``record_choices`` is that endpoint's
work, kept here with the configuration it checks against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from fiduciary.consent.ledger import EventKind, NewEvent, UnknownSubject
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import ConsentMode, CookieCategory, GpcEffect
from fiduciary.policy.render import (
    COOKIE_CATEGORY_WORDS,
    _brand,
    _cookie_view,
    cookie_consent_modes,
    join_words,
)
from fiduciary.web.center.routes import _env
from fiduciary.web.deps import web_of
from fiduciary.web.state import WebState

router = APIRouter(include_in_schema=False, tags=["privacy center"])

API_PATH: Final = "/api/v1/banner/choices"
# How long the browser keeps a choice: 13 months, the longest European regulators accept
# before asking again.
KEEP_DAYS: Final = 395
_REGION = re.compile(r"[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?")
_VISITOR = re.compile(r"[A-Za-z0-9_.:-]{1,32}\.[A-Za-z0-9_-]{22}")
STRICTEST: Final = "*strictest*"
_SOURCE: Final = resources.files("fiduciary.web.center").joinpath("static/banner.js").read_text("utf-8")


class BannerError(ValueError):
    """A banner post that does not fit the policy; nothing was recorded."""


# --------------------------------------------------------------------- configuration
def region_key(cp: CompiledPolicy, region: str | None) -> str:
    """The jurisdiction whose defaults apply, or STRICTEST without a (valid) region."""
    if not region or not _REGION.fullmatch(region):
        return STRICTEST
    return cp.jurisdiction_for(region)


def banner_config(cp: CompiledPolicy, jurisdiction: str) -> dict[str, Any]:
    """What the script shows and enforces, for visitors under ``jurisdiction``
    (STRICTEST: opt-in wherever any jurisdiction asks for it)."""
    org = cp.policy.organization.name
    categories: list[dict[str, Any]] = []
    for cat in CookieCategory:
        cookies = cp.cookies_by_category.get(cat, ())
        if not cookies:
            continue
        title, intro = COOKIE_CATEGORY_WORDS[cat]
        required = cat == CookieCategory.strictly_necessary
        modes = [cookie_consent_modes(cp, c) for c in cookies]
        if jurisdiction == STRICTEST:
            starts_on = all(m != ConsentMode.opt_in for ms in modes for m in ms.values())
        else:
            starts_on = all(ms.get(jurisdiction, ms["*"]) != ConsentMode.opt_in for ms in modes)
        gpc_cookies = [c.name for c in cookies if c.gpc == GpcEffect.opt_out]
        views = [_cookie_view(cp, c) for c in cookies]
        categories.append(
            {
                "key": cat.value,
                "title": title,
                "description": intro,
                "required": required,
                "default": required or starts_on,
                "gpc": "all" if len(gpc_cookies) == len(cookies) else ("some" if gpc_cookies else "none"),
                "gpc_cookies": gpc_cookies,
                "cookies": [
                    {"name": v.name, "provider": v.provider, "lifetime": v.lifetime, "purpose": v.purpose}
                    for v in views
                ],
            }
        )
    optional = join_words([c["title"].lower() for c in categories if not c["required"]])
    text = {
        "title": f"Cookies on {org}",
        "intro": f"{org} uses strictly necessary cookies to make this site work. With your "
        f"permission we also use {optional} cookies. You can change your mind at any time "
        "with “Cookie settings”.",
        "notice": "Read our privacy notice",
        "gpc": "Your browser sends the Global Privacy Control signal: cookies that sell or "
        "share your information stay off, without asking.",
        "gpc_cookie": "Off: Global Privacy Control.",
        "accept": "Accept all",
        "reject": "Reject all",
        "choose": "Choose",
        "save": "Save my choices",
        "legend": "Choose which cookies we may use",
        "always": "Always on",
        "settings": "Cookie settings",
        "content": "This content",
        "blocked": "{name} is blocked until you allow {title} cookies: it connects your browser to "
        "another company.",
        "blocked_gpc": "{name} stays blocked: it connects your browser to another company, and your "
        "browser's Global Privacy Control signal says no.",
        "allow": "Allow {title} cookies",
        "cookies": "Cookies",
    }
    shown = {"categories": categories, "text": text}
    # What the visitor was shown, as the ledger's notice_hash of each choice (LAW-8).
    digest = hashlib.sha256(json.dumps(shown, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {
        **shown,
        "digest": digest,
        "region": "" if jurisdiction == STRICTEST else jurisdiction,
        "api": API_PATH,
        "css": "/banner.css",
        "notice": "/notice#cookies",
        "days": KEEP_DAYS,
    }


def config_for(request: Request, region: str | None) -> dict[str, Any]:
    """banner_config for the region's jurisdiction, cached per jurisdiction."""
    web = web_of(request)
    cache: dict[tuple[str, str], dict[str, Any]] = request.app.state.__dict__.setdefault("banner_configs", {})
    key = (web.fid.policy.digest, region_key(web.fid.policy, region))
    found = cache.get(key)
    if found is None:
        found = cache[key] = banner_config(web.fid.policy, key[1])
    return found


@router.get("/banner.js")
async def script(request: Request, region: Annotated[str, Query(max_length=8)] = "") -> Response:
    # Built once per jurisdiction and kept: every page view of the company's sites asks.
    config = config_for(request, region)
    scripts: dict[tuple[str, str], bytes] = request.app.state.__dict__.setdefault("banner_scripts", {})
    key = (config["digest"], config["region"])
    body = scripts.get(key)
    if body is None:
        data = json.dumps(config, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
        body = scripts[key] = _SOURCE.replace("__FIDUCIARY_CONFIG__", data).encode()
    return Response(
        body,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/banner.css")
def stylesheet(request: Request) -> Response:
    accent, tint = _brand(web_of(request).fid.policy.policy.organization.color)
    css = _env.get_template("banner.css").render(accent=accent, tint=tint)
    return Response(
        css,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# ------------------------------------------------------------------------- visitors
def _key(token_key: bytes) -> bytes:
    return hmac.new(token_key, b"fiduciary banner visitor", hashlib.sha256).digest()


def visitor_token(token_key: bytes, subject_id: str) -> str:
    """``<subject id>.<MAC>``: only the server can make one, so a post can change only the
    visitor subject the banner itself created, never a member's choices."""
    mac = hmac.new(_key(token_key), subject_id.encode(), hashlib.sha256).digest()[:16]
    return f"{subject_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def read_visitor_token(token_key: bytes, token: str) -> str | None:
    if not _VISITOR.fullmatch(token):
        return None
    subject_id = token.rsplit(".", 1)[0]
    return subject_id if hmac.compare_digest(visitor_token(token_key, subject_id), token) else None


def visitor_kind(cp: CompiledPolicy) -> str | None:
    """The subject kind a banner visitor is: ``visitor`` if the policy has it, else the
    first kind without an account; None if the policy has neither."""
    subjects = cp.policy.subjects
    if "visitor" in subjects:
        return "visitor"
    return next((k for k, s in subjects.items() if not s.account), None)


@dataclass(frozen=True)
class Recorded:
    visitor: str  # the token to keep
    event_ids: list[int]
    choices: dict[str, bool]  # as recorded (GPC applied)
    gpc: bool


def record_choices(
    web: WebState,
    *,
    visitor: str | None,
    choices: Mapping[str, bool],
    region: str | None,
    config: str | None,
    gpc: bool,
    ip: str | None,
) -> Recorded:
    """Keep a banner choice as ledger events of the visitor's subject: a setting
    ``cookies:<category>`` = granted|denied per category whose value changed, and, with
    GPC, an opt-out of sale and sharing (channel gpc_signal). BannerError for a choice that
    does not fit the banner shown (nothing recorded)."""
    fid = web.fid
    cp = fid.policy
    cfg = banner_config(cp, region_key(cp, region))
    if config is not None and config != cfg["digest"]:
        raise BannerError(
            "config: the banner this choice was made on is not the one in force (the policy "
            "changed); reload the page"
        )
    optional = {c["key"]: c for c in cfg["categories"] if not c["required"]}
    unknown = sorted(set(choices) - set(optional))
    if unknown:
        raise BannerError(
            f"choices: unknown cookie category {unknown[0]!r}; the banner asks about "
            f"{', '.join(sorted(optional)) or 'no category'}"
        )
    kind = visitor_kind(cp)
    if kind is None:
        raise BannerError("the policy declares no subject kind for visitors (a kind with account: false)")
    effective = {
        key: bool(choices[key]) and not (gpc and c["gpc"] == "all")
        for key, c in optional.items()
        if key in choices
    }
    subject_id = read_visitor_token(fid.keyring.token_key, visitor) if visitor else None
    state = None
    if subject_id is not None:
        try:
            state = fid.consent.state(subject_id, fid.versions)
        except UnknownSubject:
            state = None
        if state is not None and (state.kind != kind or state.status != "active"):
            state = None
    if state is None:
        jurisdiction = (
            cp.jurisdiction_for(region) if region and _REGION.fullmatch(region) else cp.default_jurisdiction
        )
        subject_id = fid.vault.create_subject(
            kind, jurisdiction, identities={}, policy_version=cp.version, actor="banner"
        )
        settings: Mapping[str, str] = {}
        opted_out = False
    else:
        settings, opted_out = state.settings, state.sale_opt_out
    assert subject_id is not None
    proof: dict[str, Any] = {
        "policy_version": cp.version,
        "notice_hash": cfg["digest"],
        "language": "en",
        "ip": ip,
        "actor": "banner",
    }
    events = [
        NewEvent(
            subject_id=subject_id,
            kind=EventKind.setting,
            scope=f"cookies:{key}",
            value="granted" if on else "denied",
            channel="web_form",
            method="cookie_banner",
            **proof,
        )
        for key, on in effective.items()
        if settings.get(f"cookies:{key}") != ("granted" if on else "denied")
    ]
    if gpc and not opted_out:
        events.append(
            NewEvent(
                subject_id=subject_id,
                kind=EventKind.sale_opt_out,
                scope="sale",
                channel="gpc_signal",
                **proof,
            )
        )
    ids = fid.consent.record_many(events) if events else []
    web.forget(subject_id)
    return Recorded(visitor_token(fid.keyring.token_key, subject_id), ids, effective, gpc)


__all__ = [
    "API_PATH",
    "BannerError",
    "Recorded",
    "banner_config",
    "read_visitor_token",
    "record_choices",
    "router",
    "visitor_kind",
    "visitor_token",
]

"""The privacy center's preferences pages: a signed-in person's own choices.

- ``/preferences``: signed out, a form for the email address; signed in, the person's
  choices in the sections the loaded policy declares: marketing messages per channel,
  cookies by category, do-not-sell/share (LAW-12), sharing with recipients the person can
  refuse (PUT-11), linked services (PLU-7), who sees what (PLU-3, PLV-11), and other uses
  that follow the person's consent;
- ``/preferences/sign-in`` -> ``/preferences/code`` (the code mailed to the address the
  vault's blind index matched, ``signin.py``) -> a session bound to that subject;
  ``/preferences/sign-out`` ends it;
- ``/preferences/changes``: a material change of the policy the person has not accepted
  (PUT-3): what changed, from the diff, and a button that calls ``accept_policy``.

A person sees and changes only their own choices: the subject comes from the session row,
never from the form. Every change is a consent-ledger event with its proof (LAW-8): the
hash of the notice in force, the policy version, ``method=web_form``, ``channel=
privacy_center``, the IP truncated by the ledger. ``Sec-GPC: 1`` is honoured on every
request where the person's jurisdiction gives it effect (LAW-12): it is recorded as an
opt-out of sale and sharing, shown, and the switches it decides are locked.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fiduciary.consent.ledger import EventKind, NewEvent, UnknownSubject, notice_digest
from fiduciary.decide import SubjectState
from fiduciary.mail import Letter, MailError
from fiduciary.policy.compile import CompiledPolicy, CompiledPurpose, CompiledRecipient
from fiduciary.policy.model import ConsentMode, CookieCategory, GpcEffect
from fiduciary.policy.render import (
    AUDIENCE_WORDS,
    COOKIE_CATEGORY_WORDS,
    category_name,
    cookie_consent_modes,
    format_date,
    join_words,
    provider_name,
)
from fiduciary.vault.normalize import IdentityError
from fiduciary.web.center import signin
from fiduciary.web.center.routes import (
    AttemptLimiter,
    _check_csrf,
    _notice,
    _save,
    client_ip,
    limiter_of,
    page,
    session_of,
)
from fiduciary.web.deps import gpc, web_of
from fiduciary.web.state import WebState

router = APIRouter(include_in_schema=False, tags=["privacy center"])

PREFIX: Final = "/preferences"
# Sign-ins started per IP: a few people behind one address, not a mail cannon.
SIGN_INS_PER_IP: Final = 10
SIGN_IN_WINDOW_SECONDS: Final = 900.0
_ID = re.compile(r"[0-9a-f]{32}")
_TRUE = frozenset(("true", "yes", "on", "1"))

CHANNEL_WORDS: Final[dict[str, str]] = {
    "email": "email",
    "in_app": "in the app",
    "sms": "text message",
    "phone": "phone",
    "post": "post",
    "postal_mail": "post",
    "push": "push notification",
}
AUDIENCE_CHOICES: Final[dict[str, str]] = {
    "self": "Only me",
    "members": "Signed-in members",
    "other_users": "Other users",
    "public": "Everyone",
}
GPC_LOCK: Final = "Off: your browser sends the Global Privacy Control signal."

# (event kind, scope, value): what changing a choice appends to the ledger.
Move = tuple[EventKind, str, str | None]


# --------------------------------------------------------------------------- choices
@dataclass(frozen=True)
class Option:
    value: str
    label: str


@dataclass
class Item:
    """One choice on the page. ``changes(new)`` lists the events that move it to ``new``."""

    field: str  # the form field's name
    label: str
    hint: str
    kind: Literal["toggle", "radio", "unlink"]
    value: str  # "on"/"off", an audience, or "linked"/"unlinked"
    changes: Callable[[str], list[Move]]
    options: tuple[Option, ...] = ()
    locked: str | None = None  # why it cannot be changed here

    @property
    def id(self) -> str:
        return "f-" + re.sub(r"[^A-Za-z0-9]+", "-", self.field)


@dataclass
class Group:
    title: str | None
    items: list[Item]
    note: str | None = None


@dataclass
class Section:
    key: str
    title: str
    intro: str
    groups: list[Group]
    note: str | None = None
    save: str = "Save my choices"  # the button's words; "": changed by its items' buttons

    def items(self) -> list[Item]:
        return [i for g in self.groups for i in g.items]

    @property
    def changeable(self) -> bool:
        return any(not i.locked for i in self.items())


def _applies(p: CompiledPurpose, st: SubjectState) -> bool:
    """A purpose the person has a say in: declared for their kind and jurisdiction, not
    essential, and with a consent mode (opt-in or opt-out) where they live."""
    if p.subjects and st.kind not in p.subjects:
        return False
    if p.source.jurisdictions and st.jurisdiction not in p.source.jurisdictions:
        return False
    return not p.essential and p.consent_mode(st.jurisdiction) != ConsentMode.notice_only


def _purpose_item(p: CompiledPurpose, st: SubjectState, label: str | None = None) -> Item:
    mode = p.consent_mode(st.jurisdiction)
    consent = st.consents.get(p.key)
    on = consent == "given" if mode == ConsentMode.opt_in else consent != "withdrawn"
    objectable = p.objection or p.direct_marketing
    locked = None
    if objectable and p.key in st.objections:
        on = False
    elif objectable and "*" in st.objections:
        on = False
        locked = "Off: you objected to all such uses. Make an “object” request to change that."

    def changes(new: str) -> list[Move]:
        if new == "on":
            moves: list[Move] = [(EventKind.consent_given, p.key, None)]
            if p.key in st.objections:
                moves.append((EventKind.objection_withdrawn, p.key, None))
            return moves
        return [(EventKind.consent_withdrawn, p.key, None)]

    return Item(
        f"purpose:{p.key}",
        label or p.name,
        p.source.description or "",
        "toggle",
        "on" if on else "off",
        changes,
        locked=locked,
    )


def _linked_recipients(cp: CompiledPolicy) -> list[CompiledRecipient]:
    return [r for r in cp.recipients.values() if r.source.condition == "linked_account"]


def _relevant(cp: CompiledPolicy, r: CompiledRecipient, st: SubjectState) -> bool:
    """A recipient that can receive this person's data: one of its purposes is declared
    for their kind (or it names no purpose)."""
    if not r.purposes:
        return True
    for key in r.purposes:
        p = cp.purposes.get(key)
        if p is not None and (not p.subjects or st.kind in p.subjects):
            return True
    return False


def _marketing(cp: CompiledPolicy, st: SubjectState) -> Section | None:
    by_channels: dict[tuple[str, ...], list[Item]] = {}
    for p in cp.purposes.values():
        if p.direct_marketing and p.source.channels and _applies(p, st):
            by_channels.setdefault(tuple(p.source.channels), []).append(_purpose_item(p, st))
    if not by_channels:
        return None
    groups = [
        Group("By " + join_words(CHANNEL_WORDS.get(c, c.replace("_", " ")) for c in channels), items)
        for channels, items in by_channels.items()
    ]
    return Section(
        "marketing",
        "Marketing messages",
        "Choose which promotional messages we may send you. Service, security and legal "
        "messages are not marketing: we send those while you have an account.",
        groups,
        save="Save my marketing choices",
    )


def _cookies(cp: CompiledPolicy, st: SubjectState, gpc_on: bool) -> Section | None:
    items: list[Item] = []
    for cat in CookieCategory:
        cookies = cp.cookies_by_category.get(cat, ())
        if not cookies:
            continue
        title, intro = COOKIE_CATEGORY_WORDS[cat]
        names = "; ".join(f"{c.name}: {provider_name(cp, c.provider)}" for c in cookies)
        # A provider's name may end in a full stop ("Intercom, Inc."): one stop, not two.
        hint = f"{intro} Cookies and similar technologies: {names.rstrip('.')}."
        name = f"cookies:{cat.value}"
        if cat == CookieCategory.strictly_necessary:
            items.append(Item(name, title, hint, "toggle", "on", lambda _n: [], locked="Always on."))
            continue
        chosen = st.settings.get(name)
        if chosen in ("granted", "denied"):
            on = chosen == "granted"
        else:
            on = all(cookie_consent_modes(cp, c).get(st.jurisdiction) != ConsentMode.opt_in for c in cookies)
        gpc_cookies = [c.name for c in cookies if c.gpc == GpcEffect.opt_out]
        locked = None
        if gpc_on and len(gpc_cookies) == len(cookies):
            on, locked = False, GPC_LOCK
        elif gpc_on and gpc_cookies:
            hint += f" With Global Privacy Control, {join_words(gpc_cookies)} stay off."

        def changes(new: str, name: str = name) -> list[Move]:
            return [(EventKind.setting, name, "granted" if new == "on" else "denied")]

        items.append(Item(name, title, hint, "toggle", "on" if on else "off", changes, locked=locked))
    if not items:
        return None
    return Section(
        "cookies",
        "Cookies",
        "Which cookies and similar technologies we may use when you visit our sites. Your "
        "choices here are recorded with your account; the cookie banner on each site and "
        "your browser's settings decide for that browser.",
        [Group(None, items)],
        save="Save my cookie choices",
    )


def _sale(cp: CompiledPolicy, st: SubjectState, gpc_on: bool) -> Section | None:
    sold = [p for p in cp.purposes.values() if p.sale and (not p.subjects or st.kind in p.subjects)]
    recipients = [r for r in cp.recipients.values() if r.source.sale or r.source.share]
    if not sold and not recipients:
        return None
    covered = join_words([p.name for p in sold] + [f"what we give {r.source.name}" for r in recipients])
    locked = "On: your browser sends the Global Privacy Control signal." if gpc_on else None

    def changes(new: str) -> list[Move]:
        kind = EventKind.sale_opt_out if new == "on" else EventKind.sale_opt_in
        return [(kind, "sale", None)]

    item = Item(
        "sale",
        "Do not sell or share my personal information",
        f"This covers: {covered}.",
        "toggle",
        "on" if st.sale_opt_out or gpc_on else "off",
        changes,
        locked=locked,
    )
    return Section(
        "sale",
        "Do not sell or share",
        "You can stop us selling your personal information, or sharing it for advertising "
        "based on your activity on other sites. It takes effect at once.",
        [Group(None, [item])],
        save="Save my choice",
    )


def _sharing(cp: CompiledPolicy, st: SubjectState, gpc_on: bool) -> Section | None:
    items = []
    for r in cp.recipients.values():
        if not r.source.opt_out or r.source.condition == "linked_account" or not _relevant(cp, r, st):
            continue

        def changes(new: str, key: str = r.key) -> list[Move]:
            kind = EventKind.recipient_opt_in if new == "on" else EventKind.recipient_opt_out
            return [(kind, key, None)]

        on = r.key not in st.recipient_opt_outs
        locked = None
        if (r.source.sale or r.source.share) and (gpc_on or st.sale_opt_out):
            # Whatever this switch says, the opt-out of sale and sharing stops the flow.
            on, locked = False, GPC_LOCK if gpc_on else "Off: you opted out of sale and sharing."
        items.append(
            Item(
                f"recipient:{r.key}",
                f"Share with {r.source.name}",
                r.source.description or "",
                "toggle",
                "on" if on else "off",
                changes,
                locked=locked,
            )
        )
    if not items:
        return None
    return Section(
        "sharing",
        "Sharing with other companies",
        "Companies you can stop us sharing your information with.",
        [Group(None, items)],
        save="Save my sharing choices",
    )


def _linked(cp: CompiledPolicy, st: SubjectState) -> Section | None:
    recipients = [r for r in _linked_recipients(cp) if _relevant(cp, r, st)]
    if not recipients:
        return None
    linked = {r.key for r in recipients if st.settings.get(f"linked:{r.key}", "").lower() in _TRUE}
    items = []
    for r in recipients:

        def changes(new: str, r: CompiledRecipient = r) -> list[Move]:
            if new != "unlinked":
                return []
            moves: list[Move] = [(EventKind.setting, f"linked:{r.key}", "false")]
            # The consent that let the link send data ends with it, unless another service
            # still linked relies on the same purpose.
            others = {k for o in recipients if o.key != r.key and o.key in linked for k in o.purposes}
            for key in sorted(r.purposes - others):
                p = cp.purposes.get(key)
                if p is not None and st.consents.get(key) == "given" and _applies(p, st):
                    moves.append((EventKind.consent_withdrawn, key, None))
            return moves

        is_linked = r.key in linked
        hint = r.source.description or ""
        items.append(
            Item(
                f"linked:{r.key}",
                r.source.name,
                hint,
                "unlink",
                "linked" if is_linked else "unlinked",
                changes,
                locked=None if is_linked else "Not linked. You link services from your account.",
            )
        )
    return Section(
        "linked",
        "Linked services",
        "Services you linked to your account receive the data their description names, and "
        "only while they are linked. Unlinking stops the flow at once.",
        [Group(None, items)],
        save="",
    )


def _visibility(cp: CompiledPolicy, st: SubjectState) -> Section | None:
    groups = []
    for vis in cp.policy.visibility:
        items = []
        for cat in vis.categories:
            name = f"visibility:{cat}"
            chosen = st.settings.get(name)
            value = chosen if chosen in vis.audiences else vis.default
            options = tuple(Option(a, AUDIENCE_CHOICES.get(a, a)) for a in vis.audiences)
            label = category_name(cp, cat)
            if not vis.settable:
                who = AUDIENCE_WORDS.get(value, value)
                items.append(
                    Item(
                        name,
                        label,
                        "",
                        "radio",
                        value,
                        lambda _n: [],
                        options,
                        locked=f"Always visible to {who}.",
                    )
                )
                continue

            def changes(new: str, name: str = name) -> list[Move]:
                return [(EventKind.setting, name, new)]

            items.append(Item(name, label, "", "radio", value, changes, options))
        note = "Shown in search results when visible to everyone:" if vis.searchable else None
        groups.append(Group(None, items, note))
    if not groups:
        return None
    return Section(
        "visibility",
        "Who can see your information",
        "Choose who can see each kind of information on your profile and posts. We enforce "
        "it every time someone else looks.",
        groups,
        save="Save who can see my information",
    )


def _other(cp: CompiledPolicy, st: SubjectState) -> Section | None:
    linked_purposes = {k for r in _linked_recipients(cp) for k in r.purposes}
    items = [
        _purpose_item(p, st)
        for p in cp.purposes.values()
        if _applies(p, st)
        and not (p.direct_marketing and p.source.channels)
        and not p.sale
        and p.key not in linked_purposes
    ]
    if not items:
        return None
    return Section(
        "other",
        "Other uses of your data",
        "Uses that need your consent, or that you can refuse.",
        [Group(None, items)],
        save="Save my choices on these uses",
    )


def sections(cp: CompiledPolicy, st: SubjectState, *, gpc_on: bool, account: bool) -> list[Section]:
    """The sections the policy declares, for this person. ``gpc_on``: the request carries
    GPC and it has effect in their jurisdiction. ``account``: their kind has an account
    (visibility and linked services are account settings)."""
    found = [
        _marketing(cp, st),
        _cookies(cp, st, gpc_on),
        _sale(cp, st, gpc_on),
        _sharing(cp, st, gpc_on),
        _linked(cp, st) if account else None,
        _visibility(cp, st) if account else None,
        _other(cp, st),
    ]
    return [s for s in found if s is not None]


def moves_for(section: Section, form: Mapping[str, Any]) -> tuple[list[Move], dict[str, str]]:
    """The events a submitted section form asks for, and errors by field (then no event)."""
    moves: list[Move] = []
    errors: dict[str, str] = {}
    for item in section.items():
        if item.locked:
            continue
        if item.kind == "toggle":
            new = "on" if form.get(item.field) == "on" else "off"
        elif item.kind == "radio":
            new = str(form.get(item.field, item.value))
            if new not in {o.value for o in item.options}:
                errors[item.field] = f"Choose one of the options for “{item.label}”."
                continue
        else:
            new = "unlinked" if form.get("unlink") == item.field else item.value
        if new != item.value:
            moves.extend(item.changes(new))
    return ([] if errors else moves), errors


# --------------------------------------------------------------------- policy changes
@dataclass(frozen=True)
class PendingView:
    """A purpose waiting for the person's acceptance (PUT-3), in words for people."""

    name: str
    version: str
    effective: str
    changes: tuple[str, ...]


def pending_views(web: WebState, sid: str) -> list[PendingView]:
    """``Fiduciary.pending_changes``: the purposes whose material change the person has not
    accepted, when the policy asks for acceptance, with the diff's words for each change
    (category keys replaced by their names)."""
    cp = web.fid.policy
    keys = sorted((c for c in cp.categories if "." in c), key=len, reverse=True)  # finer first

    def words(text: str) -> str:
        for key in keys:
            if key in text:
                text = text.replace(key, category_name(cp, key))
        return text

    return [
        PendingView(p.name, p.version, format_date(p.effective), tuple(words(c) for c in p.changes))
        for p in web.fid.pending_changes(sid).purposes
    ]


# ------------------------------------------------------------------------- helpers
def _ip(request: Request) -> str | None:
    return client_ip(request)


def _notice_hash(request: Request, web: WebState) -> str:
    """SHA-256 of the notice in force, as the center serves it: the text a choice refers to."""
    cached: tuple[int, str] | None = getattr(request.app.state, "center_notice_hash", None)
    if cached is None or cached[0] != web.fid.version_seq:
        html = _notice(web, web.fid.version_seq)
        assert html is not None
        cached = (web.fid.version_seq, notice_digest(html))
        request.app.state.center_notice_hash = cached
    return cached[1]


def _starts(request: Request) -> AttemptLimiter:
    lim: AttemptLimiter | None = getattr(request.app.state, "center_sign_in_limiter", None)
    if lim is None:
        lim = AttemptLimiter(SIGN_INS_PER_IP, SIGN_IN_WINDOW_SECONDS)
        request.app.state.center_sign_in_limiter = lim
    return lim


def signed_in(request: Request) -> str | None:
    """The subject of this browser's live session, or None (a dead session is dropped)."""
    s = session_of(request)
    if not s.sign_in or not _ID.fullmatch(s.sign_in):
        return None
    sid = signin.session_subject(web_of(request).fid.data, s.sign_in)
    if sid is None:
        s.sign_in, s.changed = None, True
    return sid


def _events(request: Request, web: WebState, sid: str, moves: list[Move], *, channel: str) -> list[int]:
    """Append the moves as ledger events with their proof, in one transaction."""
    if not moves:
        return []
    proof: dict[str, Any] = {
        "channel": channel,
        "method": "signal" if channel == "gpc_signal" else "web_form",
        "policy_version": web.fid.policy.version,
        "notice_hash": _notice_hash(request, web),
        "language": "en",
        "ip": _ip(request),
        "actor": "subject",
    }
    events = [
        NewEvent(subject_id=sid, kind=k, scope=scope, value=value, **proof) for k, scope, value in moves
    ]
    ids = web.fid.consent.record_many(events)
    web.forget(sid)
    return ids


def _state(request: Request, web: WebState, sid: str) -> SubjectState | None:
    """The person's state, with GPC honoured first (LAW-12): recorded once, then it holds."""
    try:
        st = web.fid.consent.state(sid, web.fid.versions)
    except UnknownSubject:
        return None
    if st.status != "active":
        return None
    if gpc(request) and web.gpc_applies(st.jurisdiction) and not st.sale_opt_out:
        _events(request, web, sid, [(EventKind.sale_opt_out, "sale", None)], channel="gpc_signal")
        st = web.fid.consent.state(sid, web.fid.versions)
    return st


def _has_account(web: WebState, st: SubjectState) -> bool:
    kind = web.fid.policy.policy.subjects.get(st.kind)
    return kind is None or kind.account


def _sign_out(request: Request) -> None:
    s = session_of(request)
    if s.sign_in:
        signin.end(web_of(request).fid.data, s.sign_in)
    s.sign_in, s.pending, s.changed = None, None, True


def _sign_in_page(request: Request, *, status: int = 200, email: str = "", error: str = "") -> Response:
    return page(request, "sign_in.html", status=status, title="Your preferences", email=email, error=error)


def _too_many(request: Request) -> Response:
    return page(
        request,
        "error.html",
        status=429,
        title="Too many attempts",
        message="Too many attempts came from your network. Wait 15 minutes and try again.",
    )


# --------------------------------------------------------------------------- pages
def _render(request: Request, web: WebState, sid: str, st: SubjectState, **extra: Any) -> Response:
    gpc_on = gpc(request) and web.gpc_applies(st.jurisdiction)
    secs = sections(web.fid.policy, st, gpc_on=gpc_on, account=_has_account(web, st))
    kind = web.fid.policy.policy.subjects.get(st.kind)
    saved = request.query_params.get("saved", "")
    count = request.query_params.get("n", "")
    return page(
        request,
        "preferences.html",
        status=extra.pop("status", 200),
        title="Your preferences",
        sections=secs,
        kind_name=kind.name if kind else st.kind,
        jurisdiction=web.fid.policy.jurisdictions[st.jurisdiction].name
        if st.jurisdiction in web.fid.policy.jurisdictions
        else st.jurisdiction,
        gpc_on=gpc_on,
        pending=[p.name for p in pending_views(web, sid)],
        saved=saved if saved in {s.key for s in secs} | {"changes"} else "",
        count=int(count) if count.isdigit() else None,
        errors=extra.pop("errors", {}),
        **extra,
    )


@router.get(PREFIX, response_class=HTMLResponse)
def preferences(request: Request) -> Response:
    web = web_of(request)
    sid = signed_in(request)
    if sid is None:
        return _sign_in_page(request)
    st = _state(request, web, sid)
    if st is None:
        _sign_out(request)
        return _sign_in_page(request)
    return _render(request, web, sid, st)


@router.post(PREFIX, response_class=HTMLResponse)
async def save(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_save_choices, request, form)


def _save_choices(request: Request, form: FormData) -> Response:
    refused = _check_csrf(request, str(form.get("csrf", "")))
    if refused is not None:
        return refused
    web = web_of(request)
    sid = signed_in(request)
    if sid is None:
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    st = _state(request, web, sid)
    if st is None:
        _sign_out(request)
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    gpc_on = gpc(request) and web.gpc_applies(st.jurisdiction)
    key = str(form.get("section", ""))
    secs = sections(web.fid.policy, st, gpc_on=gpc_on, account=_has_account(web, st))
    section = next((s for s in secs if s.key == key), None)
    if section is None:
        return page(
            request,
            "error.html",
            status=400,
            title="Nothing was saved",
            message="The form named no section of your preferences. Go back, reload the page and try again.",
        )
    moves, errors = moves_for(section, form)
    if errors:
        return _render(request, web, sid, st, status=422, errors=errors)
    ids = _events(request, web, sid, moves, channel="privacy_center")
    return _save(request, RedirectResponse(f"{PREFIX}?saved={key}&n={len(ids)}#{key}", status_code=303))


@router.post(PREFIX + "/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request, csrf: Annotated[str, Form()] = "", email: Annotated[str, Form()] = ""
) -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    web = web_of(request)
    email = email.strip()
    if not email or len(email) > 254 or "@" not in email:
        return _sign_in_page(
            request, status=422, email=email, error="Enter your email address, like name@example.com."
        )
    if not _starts(request).allow(request.client.host if request.client else "unknown"):
        return _too_many(request)
    try:
        sid = web.fid.find("email", email)
    except IdentityError as exc:
        return _sign_in_page(
            request, status=422, email=email, error=f"This email address is not valid: {exc.problem}."
        )
    started = signin.start(web.fid.data, signin.derive_key(web.fid.keyring.token_key), sid)
    if started.code is not None and web.mailer is not None:
        minutes = int(signin.CODE_TTL.total_seconds() // 60)
        org = web.fid.policy.policy.organization.name
        letter = Letter(
            subject=f"Your sign-in code: {started.code}",
            text=(
                f"Your code to sign in to the {org} privacy center is:\n\n    {started.code}\n\n"
                f"Enter it on the page where you asked for it. It works once, for {minutes} minutes.\n\n"
                "If you did not ask for it, ignore this message: nobody can sign in without the code.\n"
                f"\n-- \n{org} privacy team\n"
            ),
        )
        try:
            web.mailer.send(email, letter.subject, letter.text, sender=web.desk.sender)
        except MailError:
            return page(
                request,
                "error.html",
                status=502,
                title="We could not send the code",
                message="Our mail server did not accept the message. Try again in a few minutes.",
            )
    if sid is not None:
        web.fid.audit.append(
            None,
            actor="subject",
            action="center.sign_in",
            subject_id=sid,
            result="throttled" if started.throttled else "code_sent",
            detail=None,
        )
    s = session_of(request)
    s.pending, s.changed = started.id, True
    return _save(request, RedirectResponse(PREFIX + "/code", status_code=303))


@router.get(PREFIX + "/code", response_class=HTMLResponse)
def code_form(request: Request) -> Response:
    if not session_of(request).pending:
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    return page(request, "sign_in_code.html", title="Check your email", error="")


@router.post(PREFIX + "/code", response_class=HTMLResponse)
def enter_code(
    request: Request, csrf: Annotated[str, Form()] = "", code: Annotated[str, Form()] = ""
) -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    s = session_of(request)
    if not s.pending or not _ID.fullmatch(s.pending):
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    if not limiter_of(request).allow(request.client.host if request.client else "unknown"):
        return _too_many(request)
    web = web_of(request)
    try:
        sid = signin.verify(web.fid.data, signin.derive_key(web.fid.keyring.token_key), s.pending, code)
    except signin.SignInError as exc:
        return page(request, "sign_in_code.html", status=422, title="Check your email", error=str(exc))
    web.fid.audit.append(
        None, actor="subject", action="center.signed_in", subject_id=sid, result="ok", detail=None
    )
    # A new CSRF token with the new privilege: a token seen before signing in opens nothing.
    s.sign_in, s.pending, s.csrf, s.changed = s.pending, None, secrets.token_urlsafe(24), True
    return _save(request, RedirectResponse(PREFIX, status_code=303))


@router.post(PREFIX + "/sign-out", response_class=HTMLResponse)
def sign_out(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    _sign_out(request)
    return page(
        request,
        "error.html",
        title="You are signed out",
        message="Your preferences are saved. You can close this page.",
    )


@router.get(PREFIX + "/changes", response_class=HTMLResponse)
def changes_page(request: Request) -> Response:
    web = web_of(request)
    sid = signed_in(request)
    if sid is None:
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    st = _state(request, web, sid)
    if st is None:
        _sign_out(request)
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    pending = pending_views(web, sid)
    versions = {p.version for p in pending}
    cp = web.fid.policy
    return page(
        request,
        "changes.html",
        title="Changes to our privacy notice",
        pending=pending,
        names=[p.name for p in pending],
        changelog=[e for e in cp.policy.changelog if e.version in versions],
        effective=format_date(cp.effective),
    )


@router.post(PREFIX + "/changes", response_class=HTMLResponse)
def accept_changes(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    web = web_of(request)
    sid = signed_in(request)
    if sid is None:
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    st = _state(request, web, sid)
    if st is None:
        _sign_out(request)
        return _save(request, RedirectResponse(PREFIX, status_code=303))
    n = 0
    if web.fid.pending_changes(sid):
        web.fid.accept_policy(
            sid,
            "*",
            channel="privacy_center",
            method="web_form",
            notice_hash=_notice_hash(request, web),
            language="en",
            ip=_ip(request),
            actor="subject",
        )
        web.forget(sid)
        n = 1
    return _save(request, RedirectResponse(f"{PREFIX}?saved=changes&n={n}", status_code=303))


__all__ = ["PREFIX", "Item", "Section", "moves_for", "pending_views", "router", "sections", "signed_in"]

"""The breach register (LAW-10, GDPR Art. 33 and 34): every personal-data breach, its
72-hour clock, the people and data it affects, and drafted notices.

    b = fid.breaches.detect("Backup bucket readable", "A storage bucket holding ... was public.",
                            categories=["user.contact.email"], subject_ids=ids)
    fid.breaches.assess(b.id, risk="high", consequences="...", measures="...")
    letter = fid.breaches.authority_notice(b.id)   # the text for the supervisory authority
    fid.breaches.notify_authority(b.id, reference="AP-2026-0042")  # the portal's reference
    fid.breaches.notify_subjects(b.id, mailer)     # mails everyone affected, in batches
    fid.breaches.close(b.id)

Each step is an event in ``breach_events`` (append-only: detected, assessed,
notified_authority, notified_subjects, closed); the ``breaches`` row is the derived view,
rewritten in the same transaction. Every breach is registered, whatever its risk (Art.
33(5)); the authority is due a notification within the policy's ``breaches.
authority_within`` of detection (72 hours) unless the breach is unlikely to result in a
risk, and a later notification must say why it is late (Art. 33(1)). People are told when
the policy's ``notify_subjects`` says so (``high_risk``: when the risk to them is high,
Art. 34). The notices are drafted from the policy's organization (controller, DPO or
privacy contact, supervisory authority) and the breach's facts, in the words Art. 33(3)
and 34(2) ask for. The register holds no personal data in clear: its texts are checked.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import Connection, func, insert, select, update

from fiduciary.audit import find_personal_data
from fiduciary.mail import Letter, Mailer
from fiduciary.notices import Delivery, deliver, enqueue_select, insert_rows
from fiduciary.policy.period import Period
from fiduciary.policy.taxonomy import is_within, suggest
from fiduciary.store import tables as T

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary
    from fiduciary.policy.model import Contact

__all__ = [
    "DEFAULT_AUTHORITY_WITHIN",
    "NOTICE_PURPOSE",
    "RISKS",
    "Breach",
    "BreachError",
    "BreachEvent",
    "BreachInputError",
    "BreachRegister",
    "UnknownBreach",
]

Risk = Literal["unlikely", "risk", "high"]
# GDPR's three levels: unlikely to result in a risk (register only), a risk (tell the
# authority), a high risk (tell the people too).
RISKS: Final = ("unlikely", "risk", "high")
UNASSESSED: Final = "unassessed"
OPEN, CLOSED = "open", "closed"
DEFAULT_AUTHORITY_WITHIN: Final = Period.parse("72 hours")
NOTICE_PURPOSE: Final = "breach_notice"
CHUNK: Final = 5000
_TEXT_LIMITS: Final = {"title": 200, "reference": 128}
_FREE_TEXT: Final = frozenset({"reference", "delay_reason", "summary"})  # kept out of the audit log
_LONG: Final = 5000
RISK_WORDS: Final = {
    UNASSESSED: "not yet assessed",
    "unlikely": "unlikely to result in a risk to people",
    "risk": "likely to result in a risk to people",
    "high": "likely to result in a high risk to people",
}


class BreachError(ValueError):
    """Bad input or a step the breach's state does not allow; nothing changed."""


class BreachInputError(BreachError):
    """Bad input (a text, a number, a category, a subject ...); nothing changed."""


class UnknownBreach(BreachError, LookupError):
    pass


@dataclass(frozen=True, slots=True)
class BreachEvent:
    id: int
    kind: str
    at: datetime
    actor: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Breach:
    """A breach as the register holds it now, with its events."""

    id: str
    title: str
    nature: str
    detected_at: datetime
    occurred_at: datetime | None
    authority_due_at: datetime
    categories: tuple[str, ...]
    subjects_estimate: int | None
    records_estimate: int | None
    subjects: int  # people linked to it in the register
    risk: str
    consequences: str | None
    measures: str | None
    advice: str | None
    status: str
    authority_notified_at: datetime | None
    subjects_notified_at: datetime | None
    closed_at: datetime | None
    created_by: str
    subjects_rule: str  # the policy's notify_subjects: high_risk | always | never
    events: tuple[BreachEvent, ...] = field(default_factory=tuple)

    @property
    def authority_notice_required(self) -> bool:
        """Art. 33(1): unless the breach is unlikely to result in a risk."""
        return self.risk != "unlikely"

    @property
    def subject_notice_required(self) -> bool:
        """As the policy's ``breaches.notify_subjects`` says (Art. 34: a high risk)."""
        if self.subjects_rule == "never":
            return False
        if self.subjects_rule == "always":
            return self.risk not in (UNASSESSED, "unlikely")
        return self.risk == "high"

    def overdue(self, now: datetime | None = None) -> bool:
        """The authority should have been told by now and was not."""
        at = _aware(now, "now") if now is not None else datetime.now(UTC)
        return (
            self.authority_notice_required
            and self.authority_notified_at is None
            and at > self.authority_due_at
        )

    def time_left(self, now: datetime | None = None) -> timedelta:
        """Until the authority is due a notification (negative: overdue)."""
        at = _aware(now, "now") if now is not None else datetime.now(UTC)
        return self.authority_due_at - at

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        left = self.time_left(now)
        return {
            "id": self.id,
            "title": self.title,
            "nature": self.nature,
            "detected_at": self.detected_at.isoformat(),
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "authority_due_at": self.authority_due_at.isoformat(),
            "hours_left": round(left.total_seconds() / 3600, 2),
            "overdue": self.overdue(now),
            "categories": list(self.categories),
            "subjects_estimate": self.subjects_estimate,
            "records_estimate": self.records_estimate,
            "subjects": self.subjects,
            "risk": self.risk,
            "consequences": self.consequences,
            "measures": self.measures,
            "advice": self.advice,
            "status": self.status,
            "authority_notice_required": self.authority_notice_required,
            "subject_notice_required": self.subject_notice_required,
            "authority_notified_at": _iso(self.authority_notified_at),
            "subjects_notified_at": _iso(self.subjects_notified_at),
            "closed_at": _iso(self.closed_at),
            "created_by": self.created_by,
            "events": [
                {"id": e.id, "kind": e.kind, "at": e.at.isoformat(), "actor": e.actor, "detail": e.detail}
                for e in self.events
            ],
        }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise BreachInputError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise BreachInputError(f"{what} must be timezone-aware (got {value.isoformat()})")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BreachInputError(f"{what} {value.isoformat()} is out of range") from None


def _text(
    value: object, what: str, limit: int = _LONG, *, required: bool = False, prose: bool = True
) -> str | None:
    if value is None:
        if required:
            raise BreachInputError(f"{what} is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BreachInputError(f"{what} must be 1-{limit} characters of text")
    # Prose is checked for addresses and numbers; an identifier (an authority's reference
    # such as "AP-2026-0042") is not prose and would look like a phone number.
    found = find_personal_data(value) if prose else None
    if found:
        raise BreachInputError(
            f"{what} looks like it holds {found}: describe the breach without anyone's personal data"
        )
    return value.strip()


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise BreachInputError(f"{what} must be a whole number of at least 0")
    return value


def _when(d: datetime) -> str:
    return f"{d:%d %B %Y, %H:%M} UTC".lstrip("0")


def _contact_lines(c: Contact) -> list[str]:
    return [v for v in (c.name, c.address, c.email, c.phone, c.url) if v]


class BreachRegister:
    """The register of one Fiduciary (``fid.breaches``)."""

    def __init__(self, fid: Fiduciary) -> None:
        self.fid = fid
        self.cp = fid.policy
        rules = fid.policy.policy.breaches
        self.within = rules.authority_within if rules is not None else DEFAULT_AUTHORITY_WITHIN
        self.subjects_rule = rules.notify_subjects if rules is not None else "high_risk"

    # ------------------------------------------------------------------ checks
    def _categories(self, categories: object) -> tuple[str, ...]:
        if isinstance(categories, str) or not isinstance(categories, Iterable):
            raise BreachInputError("categories must be a list of category keys")
        cats = tuple(dict.fromkeys(categories))
        for c in cats:
            if not isinstance(c, str) or not (
                c in self.cp.categories or any(is_within(c, k) for k in self.cp.declared_categories)
            ):
                found = suggest(str(c), list(self.cp.categories))
                hint = f" (did you mean {found[0]!r}?)" if found else ""
                raise BreachInputError(f"unknown category {c!r}{hint}")
        return cats

    def _subjects(self, conn: Connection, subject_ids: object) -> list[str]:
        if isinstance(subject_ids, str) or not isinstance(subject_ids, Iterable):
            raise BreachInputError("subject_ids must be a list of subject ids")
        ids = list(dict.fromkeys(subject_ids))
        s = T.subjects.c
        for i in range(0, len(ids), CHUNK):
            part = ids[i : i + CHUNK]
            if not all(isinstance(x, str) for x in part):
                raise BreachInputError("subject_ids: each is a subject id (text)")
            known = set(conn.execute(select(s.id).where(s.id.in_(part))).scalars())
            missing = [x for x in part if x not in known]
            if missing:
                shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                raise BreachInputError(f"unknown subject(s): {shown}")
        return ids

    def _link(self, conn: Connection, breach_id: str, ids: Sequence[str]) -> int:
        """Link subjects not linked yet; one SELECT and one INSERT per 5,000."""
        bs = T.breach_subjects.c
        added = 0
        for i in range(0, len(ids), CHUNK):
            part = ids[i : i + CHUNK]
            have = set(
                conn.execute(
                    select(bs.subject_id).where(bs.breach_id == breach_id, bs.subject_id.in_(part))
                ).scalars()
            )
            rows = [(breach_id, x) for x in part if x not in have]
            insert_rows(conn, T.breach_subjects, ("breach_id", "subject_id"), rows)
            added += len(rows)
        return added

    def _event(
        self, conn: Connection, breach_id: str, kind: str, at: datetime, actor: str, detail: dict[str, Any]
    ) -> None:
        text = json.dumps(detail, sort_keys=True)
        conn.execute(
            insert(T.breach_events).values(breach_id=breach_id, kind=kind, at=at, actor=actor, detail=text)
        )
        # The audit entry binds the ledger row by its digest; free text (a description, an
        # authority's reference, reasons for a delay) stays in the register, since the audit
        # log refuses anything that looks like personal data and "AP-2026-0042" can.
        facts = {k: v for k, v in detail.items() if k not in _FREE_TEXT}
        facts["event_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        self.fid.audit.append(
            conn, actor=actor, action=f"breach.{kind}", result="ok", detail={"breach_id": breach_id, **facts}
        )

    def _open(self, breach_id: str) -> Breach:
        b = self.get(breach_id)
        if b.status == CLOSED:
            raise BreachError(f"breach {breach_id} is closed")
        return b

    @staticmethod
    def _actor(actor: object) -> str:
        if not isinstance(actor, str) or not 0 < len(actor) <= 128:
            raise BreachInputError("actor must be 1-128 characters")
        return actor

    # ------------------------------------------------------------------ steps
    def detect(
        self,
        title: str,
        nature: str,
        *,
        detected_at: datetime | None = None,
        occurred_at: datetime | None = None,
        categories: Iterable[str] = (),
        subject_ids: Iterable[str] = (),
        subjects_estimate: int | None = None,
        records_estimate: int | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Breach:
        """Register a breach the moment it is known: the clock starts at ``detected_at``
        (default now), when the controller became aware of it."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        t = _text(title, "title", _TEXT_LIMITS["title"], required=True)
        n = _text(nature, "nature", required=True)
        detected = _aware(detected_at, "detected_at") if detected_at is not None else moment
        occurred = _aware(occurred_at, "occurred_at") if occurred_at is not None else None
        if detected > moment + timedelta(minutes=5):
            raise BreachInputError("detected_at is in the future")
        if occurred is not None and occurred > detected:
            raise BreachInputError("occurred_at is after detected_at: a breach is detected once it happened")
        cats = self._categories(categories)
        se = _count(subjects_estimate, "subjects_estimate")
        re_ = _count(records_estimate, "records_estimate")
        who = self._actor(actor)
        due = self.within.add_to(detected)
        assert isinstance(due, datetime)
        breach_id = secrets.token_hex(8)
        with self.fid.data.begin() as conn:
            ids = self._subjects(conn, subject_ids)
            conn.execute(
                insert(T.breaches).values(
                    id=breach_id,
                    title=t,
                    nature=n,
                    detected_at=detected,
                    occurred_at=occurred,
                    authority_due_at=due,
                    categories=json.dumps(list(cats)),
                    subjects_estimate=se if se is not None else (len(ids) or None),
                    records_estimate=re_,
                    risk=UNASSESSED,
                    status=OPEN,
                    created_by=who,
                )
            )
            linked = self._link(conn, breach_id, ids)
            self._event(
                conn,
                breach_id,
                "detected",
                moment,
                who,
                {"detected_at": detected.isoformat(), "subjects": linked, "categories": list(cats)},
            )
        return self.get(breach_id)

    def assess(
        self,
        breach_id: str,
        *,
        risk: Risk,
        consequences: str | None = None,
        measures: str | None = None,
        advice: str | None = None,
        categories: Iterable[str] = (),
        subject_ids: Iterable[str] = (),
        subjects_estimate: int | None = None,
        records_estimate: int | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Breach:
        """The risk to people (``unlikely``, ``risk``, ``high``), the likely consequences,
        the measures taken or proposed, advice for the people; more categories and people
        as they come to light. Assessing again replaces the assessment (a new event)."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        if risk not in RISKS:
            raise BreachInputError(f"risk {risk!r}: one of {', '.join(RISKS)}")
        cons = _text(consequences, "consequences")
        meas = _text(measures, "measures")
        adv = _text(advice, "advice")
        more = self._categories(categories)
        se = _count(subjects_estimate, "subjects_estimate")
        re_ = _count(records_estimate, "records_estimate")
        who = self._actor(actor)
        b = self._open(breach_id)
        cats = tuple(dict.fromkeys((*b.categories, *more)))
        with self.fid.data.begin() as conn:
            ids = self._subjects(conn, subject_ids)
            linked = self._link(conn, breach_id, ids)
            total = self._linked(conn, breach_id)
            values: dict[str, Any] = {
                "risk": risk,
                "consequences": cons if cons is not None else b.consequences,
                "measures": meas if meas is not None else b.measures,
                "advice": adv if adv is not None else b.advice,
                "categories": json.dumps(list(cats)),
            }
            if se is not None:
                values["subjects_estimate"] = se
            elif total and (b.subjects_estimate or 0) < total:
                values["subjects_estimate"] = total
            if re_ is not None:
                values["records_estimate"] = re_
            conn.execute(update(T.breaches).where(T.breaches.c.id == breach_id).values(**values))
            self._event(
                conn,
                breach_id,
                "assessed",
                moment,
                who,
                {"risk": risk, "subjects_added": linked, "categories": list(cats)},
            )
        return self.get(breach_id)

    def notify_authority(
        self,
        breach_id: str,
        *,
        at: datetime | None = None,
        reference: str | None = None,
        delay_reason: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Breach:
        """Record that the authority was notified (``at``, default now), e.g. with the
        reference its portal gave. Later than due, the reasons for the delay are required
        (Art. 33(1)). A further notification (Art. 33(4): in phases) is recorded too."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        when = _aware(at, "at") if at is not None else moment
        ref = _text(reference, "reference", _TEXT_LIMITS["reference"], prose=False)
        why = _text(delay_reason, "delay_reason")
        who = self._actor(actor)
        b = self._open(breach_id)
        late = when > b.authority_due_at and b.authority_notified_at is None
        if late and why is None:
            raise BreachInputError(
                f"the authority was due a notification by {b.authority_due_at.isoformat()}: a later "
                "notification must give the reasons for the delay (GDPR Art. 33(1)); pass delay_reason"
            )
        phase = 1 + sum(1 for e in b.events if e.kind == "notified_authority")
        with self.fid.data.begin() as conn:
            if b.authority_notified_at is None:
                conn.execute(
                    update(T.breaches).where(T.breaches.c.id == breach_id).values(authority_notified_at=when)
                )
            detail: dict[str, Any] = {"at": when.isoformat(), "phase": phase, "late": late}
            if ref:
                detail["reference"] = ref
            if why:
                detail["delay_reason"] = why
            self._event(conn, breach_id, "notified_authority", moment, who, detail)
        return self.get(breach_id)

    def notify_subjects(
        self,
        breach_id: str,
        mailer: Mailer,
        *,
        force: bool = False,
        actor: str = "system",
        batch_size: int = 500,
        now: datetime | None = None,
    ) -> Delivery:
        """Mail the subject notice to every person linked to the breach, in batches (a run
        that stops is resumed by calling again). Refused before an assessment says the
        consequences and measures (Art. 34(2)), and when the policy does not ask for it
        (``notify_subjects`` and the risk) unless ``force``."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        who = self._actor(actor)
        b = self._open(breach_id)
        if b.risk == UNASSESSED or not b.consequences or not b.measures:
            raise BreachError(
                f"breach {breach_id}: assess it first, with the likely consequences and the measures "
                "taken: the notice must tell people both (GDPR Art. 34(2))"
            )
        if not b.subject_notice_required and not force:
            raise BreachError(
                f"breach {breach_id}: people need not be told (risk {b.risk!r}, policy "
                f"notify_subjects: {self.subjects_rule}); pass force=True to tell them anyway"
            )
        topic = self.topic(breach_id)
        bs = T.breach_subjects.c
        with self.fid.data.begin() as conn:
            queued = enqueue_select(
                conn, topic, select(bs.subject_id).where(bs.breach_id == breach_id), moment
            )
        result = deliver(
            self.fid,
            mailer,
            topic,
            self.subject_notice(breach_id),
            purpose=NOTICE_PURPOSE,
            actor=who,
            batch_size=batch_size,
        )
        if not (queued or result.sent or result.no_address or result.failed):
            return result  # everyone was told before: nothing to record
        with self.fid.data.begin() as conn:
            if b.subjects_notified_at is None and result.sent:
                conn.execute(
                    update(T.breaches).where(T.breaches.c.id == breach_id).values(subjects_notified_at=moment)
                )
            self._event(
                conn, breach_id, "notified_subjects", moment, who, {"queued": queued, **result.to_dict()}
            )
        return result

    def close(
        self,
        breach_id: str,
        *,
        summary: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Breach:
        """Close the breach: it stays in the register, with its events (Art. 33(5))."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        text = _text(summary, "summary")
        who = self._actor(actor)
        b = self._open(breach_id)
        if b.risk == UNASSESSED:
            raise BreachError(
                f"breach {breach_id}: assess it before closing it (the register keeps the risk)"
            )
        if b.authority_notice_required and b.authority_notified_at is None:
            raise BreachError(
                f"breach {breach_id}: the authority was not notified; record the notification "
                "(or assess the breach as unlikely to result in a risk) before closing it"
            )
        with self.fid.data.begin() as conn:
            conn.execute(
                update(T.breaches).where(T.breaches.c.id == breach_id).values(status=CLOSED, closed_at=moment)
            )
            self._event(conn, breach_id, "closed", moment, who, {"summary": text} if text else {})
        return self.get(breach_id)

    @staticmethod
    def topic(breach_id: str) -> str:
        return f"breach:{breach_id}"

    # ------------------------------------------------------------------ notices
    def _authorities(self, breach_id: str) -> list[str]:
        rules = self.cp.policy.breaches
        if rules is not None and rules.authority:
            return [rules.authority]
        bs, s = T.breach_subjects.c, T.subjects.c
        with self.fid.data.connect() as conn:
            where = list(
                conn.execute(
                    select(s.jurisdiction)
                    .select_from(T.breach_subjects.join(T.subjects, s.id == bs.subject_id))
                    .where(bs.breach_id == breach_id)
                    .distinct()
                ).scalars()
            )
        keys = [j for j in self.cp.jurisdictions if j in where] or list(self.cp.jurisdictions)
        out: list[str] = []
        for j in keys:
            sa = self.cp.jurisdictions[j].supervisory_authority
            if sa is not None:
                line = ", ".join(_contact_lines(sa))
                if line not in out:
                    out.append(line)
        return out

    def authority_notice(self, breach_id: str, *, now: datetime | None = None) -> Letter:
        """The notification for the supervisory authority (Art. 33(3)): the nature of the
        breach with the categories and approximate numbers of people and records, the
        contact point, the likely consequences, the measures; why it is late, if it is."""
        from fiduciary.policy.render import category_name

        b = self.get(breach_id)
        org = self.cp.policy.organization
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        controller = org.legal_name or org.name
        contact = org.dpo or org.contact
        lines = [
            "To: " + "; ".join(self._authorities(breach_id) or ["the competent supervisory authority"]),
            "",
        ]
        lines += [f"Notification of a personal data breach (GDPR Article 33) — {controller}", ""]
        reach = [
            v
            for v in (org.controller.address, org.controller.email, org.controller.phone, org.controller.url)
            if v
        ]
        lines += ["Controller: " + ", ".join([controller, *reach])]
        label = "Data protection officer" if org.dpo is not None else "Contact point"
        lines += [f"{label}: " + ", ".join(_contact_lines(contact)), f"Our reference: breach {b.id}", ""]
        cats = ", ".join(category_name(self.cp, c) for c in b.categories) or "being established"
        people = f"about {b.subjects_estimate:,}" if b.subjects_estimate is not None else "being established"
        records = f"about {b.records_estimate:,}" if b.records_estimate is not None else "being established"
        lines += [
            "1. Nature of the breach",
            f"   {b.title}. {b.nature}",
            f"   Became aware: {_when(b.detected_at)}."
            + (
                f" Occurred: {_when(b.occurred_at)}."
                if b.occurred_at
                else " When it occurred: being established."
            ),
            f"   Categories of personal data concerned: {cats}.",
            f"   Approximate number of people concerned: {people}.",
            f"   Approximate number of records concerned: {records}.",
            f"   Our assessment: {RISK_WORDS[b.risk]}.",
            "2. Likely consequences",
            f"   {b.consequences or 'Being assessed; we will tell you as soon as we know.'}",
            "3. Measures taken or proposed, including to mitigate possible adverse effects",
            f"   {b.measures or 'Being decided; we will tell you as soon as we know.'}",
        ]
        if b.subject_notice_required:
            lines.append(f"   We are telling the people concerned ({b.subjects:,} identified so far).")
        if moment > b.authority_due_at and b.authority_notified_at is None:
            lines += ["4. Reasons for the delay", "   [State why this notification comes after 72 hours.]"]
        if b.risk == UNASSESSED or not b.consequences or not b.measures:
            lines += [
                "",
                "This notification is made in phases (GDPR Article 33(4)): further information "
                "follows without undue delay.",
            ]
        lines += ["", "-- ", f"{controller}"]
        return Letter(
            subject=f"Personal data breach notification: {controller}, breach {b.id}",
            text="\n".join(lines) + "\n",
        )

    def subject_notice(self, breach_id: str) -> Letter:
        """What each person is told (Art. 34(2)): in plain words, what happened, what data,
        what it may mean for them, what was done, what they can do, whom to ask."""
        from fiduciary.policy.render import category_name

        b = self.get(breach_id)
        org = self.cp.policy.organization
        contact = org.dpo or org.contact
        cats = ", ".join(category_name(self.cp, c) for c in b.categories)
        lines = [
            f"We are writing to tell you about a security incident at {org.name} that affects "
            "personal data we hold about you.",
            "",
            f"What happened: {b.nature}",
            f"When: we found out on {b.detected_at:%d %B %Y}.".replace(" 0", " ", 1),
        ]
        if cats:
            lines.append(f"What data was involved: {cats}.")
        lines += [
            f"What this may mean for you: {b.consequences or 'we are still finding out.'}",
            f"What we have done: {b.measures or 'we are still deciding.'}",
        ]
        if b.advice:
            lines.append(f"What you can do: {b.advice}")
        who = "our data protection officer" if org.dpo is not None else "us"
        lines += ["", f"If you have questions, contact {who}: " + ", ".join(_contact_lines(contact)) + "."]
        lines += ["", "-- ", f"{org.name}"]
        return Letter(
            subject=f"{org.name}: a security incident affecting your data", text="\n".join(lines) + "\n"
        )

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _linked(conn: Connection, breach_id: str) -> int:
        bs = T.breach_subjects.c
        return int(conn.execute(select(func.count()).where(bs.breach_id == breach_id)).scalar_one())

    def _load(self, conn: Connection, rows: Sequence[Any]) -> list[Breach]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        ev, bs = T.breach_events.c, T.breach_subjects.c
        events: dict[str, list[BreachEvent]] = {}
        for e in conn.execute(select(T.breach_events).where(ev.breach_id.in_(ids)).order_by(ev.id)):
            events.setdefault(e.breach_id, []).append(
                BreachEvent(
                    int(e.id), e.kind, _utc(e.at) or e.at, e.actor, json.loads(e.detail) if e.detail else None
                )
            )
        linked: dict[str, int] = dict(
            conn.execute(
                select(bs.breach_id, func.count()).where(bs.breach_id.in_(ids)).group_by(bs.breach_id)
            ).all()
        )
        out = []
        for r in rows:
            out.append(
                Breach(
                    id=r.id,
                    title=r.title,
                    nature=r.nature,
                    detected_at=_utc(r.detected_at) or r.detected_at,
                    occurred_at=_utc(r.occurred_at),
                    authority_due_at=_utc(r.authority_due_at) or r.authority_due_at,
                    categories=tuple(json.loads(r.categories)),
                    subjects_estimate=r.subjects_estimate,
                    records_estimate=r.records_estimate,
                    subjects=int(linked.get(r.id, 0)),
                    risk=r.risk,
                    consequences=r.consequences,
                    measures=r.measures,
                    advice=r.advice,
                    status=r.status,
                    authority_notified_at=_utc(r.authority_notified_at),
                    subjects_notified_at=_utc(r.subjects_notified_at),
                    closed_at=_utc(r.closed_at),
                    created_by=r.created_by,
                    subjects_rule=self.subjects_rule,
                    events=tuple(events.get(r.id, ())),
                )
            )
        return out

    def get(self, breach_id: str) -> Breach:
        if not isinstance(breach_id, str):
            raise UnknownBreach(f"no breach with id {breach_id!r}")
        with self.fid.data.connect() as conn:
            found = self._load(
                conn, conn.execute(select(T.breaches).where(T.breaches.c.id == breach_id)).all()
            )
        if not found:
            raise UnknownBreach(f"no breach with id {breach_id!r}")
        return found[0]

    def query(self, *, status: str | None = None, limit: int = 100) -> list[Breach]:
        """Breaches, the most recently detected first."""
        if status is not None and status not in (OPEN, CLOSED):
            raise BreachInputError(f"status {status!r}: open or closed")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise BreachInputError(f"limit must be 1-10000, got {limit!r}")
        c = T.breaches.c
        stmt = select(T.breaches).order_by(c.detected_at.desc(), c.id).limit(limit)
        if status is not None:
            stmt = stmt.where(c.status == status)
        with self.fid.data.connect() as conn:
            return self._load(conn, conn.execute(stmt).all())

    def overdue(self, now: datetime | None = None) -> list[Breach]:
        """Open breaches whose authority notification is late (LAW-10's 72 hours)."""
        return [b for b in self.query(status=OPEN, limit=10_000) if b.overdue(now)]

    def of_subject(self, subject_id: str) -> list[str]:
        """The ids of the breaches a subject is linked to."""
        bs = T.breach_subjects.c
        with self.fid.data.connect() as conn:
            return list(conn.execute(select(bs.breach_id).where(bs.subject_id == subject_id)).scalars())

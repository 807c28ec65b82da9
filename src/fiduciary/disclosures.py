"""The disclosure ledger: every release of personal data to a recipient, append-only.

    d = fid.disclosures.record("paypal", "payments", ["user.financial.paypal_email"], [sid])
    d = fid.disclosures.record("authorities", "legal_duties", ["user.contact.email"], [sid],
                               legal_demand=True, gag="court_order", reference="Case 17/2026")

A disclosure says who received (a recipient of the policy), what (categories), why
(purpose and legal ground), when, and about whom (the subjects; their number is the count).
Before anything is written each subject goes through the decision engine for that
purpose, categories and recipient: a recipient not declared for them, a person who opted
out of the sale or of this recipient, withdrew consent or restricted processing ... refuses
the whole disclosure (``DisclosureRefused``), and nothing is recorded. A recipient declared
aggregate-only (``form: aggregate``) receives no individual data at all (PUT-8, PLV-5,
PLO-6): it gets statistics through ``fiduciary.aggregates``, recorded here as ``aggregate``.

Legal demands (PLU-9) carry a gag (``law``, ``court_order``, ``emergency``) or none, and the
decision whether the people are told, from the recipient's ``notify_subject``:
``unless_prohibited`` (the default) tells them unless gagged, ``always`` tells them unless
gagged too (a gag is the law's), ``never`` does not. When they are to be told, a notice is
queued for each in the same transaction (``tell`` mails them). A gag lifted later is an
event (``lift_gag``); the current decision is derived from the events.

The ledger feeds the access report's disclosures and recipients (``for_subject``: a
disclosure the person may not be told of stays out of it), Shine the Light answers
(``shine_the_light``, PLV-13) and the transparency report (``transparency_report``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import Connection, and_, func, insert, select

from fiduciary.audit import find_personal_data
from fiduciary.decide import Reason
from fiduciary.mail import Letter, Mailer
from fiduciary.notices import Delivery, deliver, enqueue, insert_rows
from fiduciary.policy.model import Basis, DataForm
from fiduciary.policy.taxonomy import is_within, suggest
from fiduciary.store import tables as T

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary

__all__ = [
    "GAGS",
    "KINDS",
    "NOTICE_PURPOSE",
    "Disclosure",
    "DisclosureError",
    "DisclosureEvent",
    "DisclosureLedger",
    "DisclosureRefused",
    "TransparencyReport",
    "UnknownDisclosure",
]

Gag = Literal["law", "court_order", "emergency"]
GAGS: Final = ("law", "court_order", "emergency")
KINDS: Final = ("routine", "legal_demand", "aggregate")
NOT_APPLICABLE, TELL, WITHHELD = "not_applicable", "tell", "withheld"
NOTICE_PURPOSE: Final = "legal_demand_notice"
GAG_WORDS: Final = {"law": "the law", "court_order": "a court order", "emergency": "an emergency"}
# How far in the future a disclosure time may lie (clock skew between machines).
FUTURE_SLACK: Final = timedelta(minutes=5)
CHUNK: Final = 5000
_SUBJECT = re.compile(r"[A-Za-z0-9_.:-]{1,32}")


class DisclosureError(ValueError):
    """Bad input for the ledger: says what and where. Nothing was recorded."""


class DisclosureRefused(DisclosureError):
    """The policy does not allow this disclosure (for some of the subjects): ``refused``
    maps each refused subject to the decision engine's reason. Nothing was recorded."""

    def __init__(self, message: str, refused: Mapping[str, Reason] | None = None) -> None:
        super().__init__(message)
        self.refused: dict[str, Reason] = dict(refused or {})


class UnknownDisclosure(DisclosureError, LookupError):
    pass


@dataclass(frozen=True, slots=True)
class DisclosureEvent:
    id: int
    kind: str  # gag_lifted | told
    at: datetime
    actor: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Disclosure:
    """One recorded disclosure, with its current notification decision."""

    id: int
    at: datetime
    recorded_at: datetime
    kind: str  # routine | legal_demand | aggregate
    recipient: str
    purpose: str
    basis: str
    categories: tuple[str, ...]
    form: str
    subjects: int
    gag: str | None
    notify: str  # now: not_applicable | tell | withheld
    notify_reason: str | None
    reference: str | None
    actor: str
    detail: dict[str, Any] | None
    told_at: datetime | None = None
    events: tuple[DisclosureEvent, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "kind": self.kind,
            "recipient": self.recipient,
            "purpose": self.purpose,
            "basis": self.basis,
            "categories": list(self.categories),
            "form": self.form,
            "subjects": self.subjects,
            "gag": self.gag,
            "notify": self.notify,
            "notify_reason": self.notify_reason,
            "reference": self.reference,
            "actor": self.actor,
            "detail": self.detail,
            "told_at": self.told_at.isoformat() if self.told_at else None,
            "events": [
                {"id": e.id, "kind": e.kind, "at": e.at.isoformat(), "actor": e.actor, "detail": e.detail}
                for e in self.events
            ],
        }


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise DisclosureError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise DisclosureError(f"{what} must be timezone-aware (got {value.isoformat()})")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise DisclosureError(f"{what} {value.isoformat()} is out of range") from None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    found = suggest(word, list(choices))
    return f" (did you mean {found[0]!r}?)" if found else ""


def _clean_text(value: object, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise DisclosureError(f"{what} must be 1-{limit} characters of text")
    found = find_personal_data(value)
    if found:
        raise DisclosureError(
            f"{what} looks like it holds {found}: the ledger keeps no personal data in clear"
        )
    return value.strip()


def _clean_detail(detail: object) -> dict[str, Any] | None:
    if detail is None:
        return None
    if not isinstance(detail, Mapping):
        raise DisclosureError(f"detail must be a mapping, got {type(detail).__name__}")
    try:
        text = json.dumps(dict(detail), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DisclosureError(f"detail is not plain JSON data ({exc})") from None
    found = find_personal_data(text)
    if found:
        raise DisclosureError(
            f"detail looks like it holds {found}: the ledger keeps no personal data in clear"
        )
    out: dict[str, Any] = json.loads(text)
    return out


def _reason_counts(refused: Mapping[str, Reason], total: int) -> str:
    by: dict[Reason, list[str]] = {}
    for sid, r in refused.items():
        by.setdefault(r, []).append(sid)
    parts = []
    for r, ids in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0].value)):
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        parts.append(f"{r.value} for {len(ids)} ({shown})")
    return f"{len(refused)} of {total} subject(s) refused: " + "; ".join(parts)


class DisclosureLedger:
    """Record and read disclosures for one Fiduciary (``fid.disclosures``)."""

    def __init__(self, fid: Fiduciary) -> None:
        self.fid = fid
        self.cp = fid.policy

    # ------------------------------------------------------------------ checks
    def _recipient(self, key: object) -> Any:
        if not isinstance(key, str) or key not in self.cp.recipients:
            raise DisclosureError(
                f"unknown recipient {key!r}{_did_you_mean(str(key), self.cp.recipients)}; "
                "a disclosure goes to a recipient the policy declares"
            )
        return self.cp.recipients[key]

    def _purpose(self, key: object) -> Any:
        if not isinstance(key, str) or key not in self.cp.purposes:
            raise DisclosureError(f"unknown purpose {key!r}{_did_you_mean(str(key), self.cp.purposes)}")
        return self.cp.purposes[key]

    def _categories(self, categories: object) -> tuple[str, ...]:
        if isinstance(categories, str) or not isinstance(categories, Iterable):
            raise DisclosureError("categories must be a list of category keys")
        cats = tuple(dict.fromkeys(categories))
        if not cats:
            raise DisclosureError("categories: name at least one category of data disclosed")
        for c in cats:
            if not isinstance(c, str) or not (
                c in self.cp.categories or any(is_within(c, k) for k in self.cp.declared_categories)
            ):
                raise DisclosureError(f"unknown category {c!r}{_did_you_mean(str(c), self.cp.categories)}")
        return cats

    def _basis(self, basis: object, purpose: Any) -> str:
        if basis is None:
            return str(purpose.basis.value)
        try:
            return Basis(str(basis)).value
        except ValueError:
            raise DisclosureError(
                f"basis {basis!r} is not a legal basis; one of {', '.join(b.value for b in Basis)}"
            ) from None

    def _subject_ids(self, subject_ids: object) -> list[str]:
        if isinstance(subject_ids, str) or not isinstance(subject_ids, Iterable):
            raise DisclosureError("subject_ids must be a list of subject ids")
        ids = list(dict.fromkeys(subject_ids))
        for i, sid in enumerate(ids):
            if not isinstance(sid, str) or not _SUBJECT.fullmatch(sid):
                raise DisclosureError(f"subject_ids[{i}]: a subject id is 1-32 letters, digits or _.:-")
        return ids

    @staticmethod
    def notify_decision(recipient: Any, legal_demand: bool, gag: str | None) -> tuple[str, str | None]:
        """Whether the people are told of this disclosure (PLU-9), and why."""
        if not legal_demand:
            return NOT_APPLICABLE, None
        mode = recipient.source.notify_subject or "unless_prohibited"
        if mode == "never":
            return WITHHELD, "the policy says people are not told of demands from this recipient"
        if gag is not None:
            return WITHHELD, f"{GAG_WORDS[gag]} forbids telling the person"
        return TELL, None

    # ------------------------------------------------------------------ writing
    def check(
        self,
        recipient: str,
        purpose: str,
        categories: Iterable[str],
        subject_ids: Iterable[str],
    ) -> dict[str, Reason]:
        """The subjects this disclosure is refused for, with the reason; empty when every
        one may be disclosed. Decides with two SELECTs per 5,000 subjects."""
        rec = self._recipient(recipient)
        self._purpose(purpose)
        cats = self._categories(categories)
        ids = self._subject_ids(subject_ids)
        if rec.source.form in (DataForm.aggregate, DataForm.anonymized):
            return dict.fromkeys(ids, Reason.aggregate_only)
        states = self.fid.consent.states(ids, self.fid.versions)
        unknown = [s for s in ids if s not in states]
        if unknown:
            shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
            raise DisclosureError(f"unknown subject(s): {shown} ({len(unknown)} of {len(ids)})")
        decide = self.fid.decider.decide
        refused: dict[str, Reason] = {}
        for sid in ids:
            d = decide(states[sid], purpose, cats, recipient)
            if not d.ok:
                refused[sid] = d.reason or next(iter(d.refused.values()))
        return refused

    def record(
        self,
        recipient: str,
        purpose: str,
        categories: Iterable[str],
        subject_ids: Iterable[str],
        *,
        basis: str | None = None,
        at: datetime | None = None,
        legal_demand: bool = False,
        gag: Gag | None = None,
        reference: str | None = None,
        detail: Mapping[str, Any] | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Disclosure:
        """Record that data of these subjects went to ``recipient`` (see the module text).

        ``basis`` is the legal ground (default: the purpose's basis); ``at`` when the data
        went out (default: now). A legal demand names its ``gag`` (or None) and may carry a
        ``reference`` (the demand's number; no personal data). Raises DisclosureError for
        bad input and DisclosureRefused when the policy does not allow it; then nothing is
        recorded."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        rec = self._recipient(recipient)
        p = self._purpose(purpose)
        cats = self._categories(categories)
        ids = self._subject_ids(subject_ids)
        if not ids:
            raise DisclosureError("subject_ids: name the people whose data was disclosed")
        legal_ground = self._basis(basis, p)
        when = _aware(at, "at") if at is not None else moment
        if when > moment + FUTURE_SLACK:
            raise DisclosureError(f"at {when.isoformat()} is in the future: record disclosures made")
        if not isinstance(actor, str) or not 0 < len(actor) <= 128:
            raise DisclosureError("actor must be 1-128 characters")
        ref = _clean_text(reference, "reference", 128)
        extra = _clean_detail(detail)
        src = rec.source
        if src.form in (DataForm.aggregate, DataForm.anonymized):
            raise DisclosureRefused(
                f"recipient {recipient!r} is declared aggregate-only (form: {src.form.value}): it may "
                "receive aggregate statistics only, never individual data (PUT-8); export them "
                "with fiduciary.aggregates",
                dict.fromkeys(ids, Reason.aggregate_only),
            )
        if not isinstance(legal_demand, bool):
            raise DisclosureError("legal_demand must be true or false")
        if src.condition == "legal_demand" and not legal_demand:
            raise DisclosureError(
                f"recipient {recipient!r} receives data only on a legal demand: record it with "
                "legal_demand=True (and the gag, if one forbids telling the person)"
            )
        if legal_demand and src.condition != "legal_demand":
            raise DisclosureError(
                f"recipient {recipient!r} is not declared for legal demands (its condition is "
                f"{src.condition or 'always'!r}); the policy names the recipient of legal demands "
                "with condition: legal_demand"
            )
        if gag is not None and (not legal_demand or gag not in GAGS):
            raise DisclosureError(
                f"gag {gag!r}: a legal demand's gag is one of {', '.join(GAGS)}"
                if legal_demand
                else "gag: only a legal demand carries a gag"
            )
        refused = self.check(recipient, purpose, cats, ids)
        if refused:
            raise DisclosureRefused(
                f"disclosure to {recipient!r} for {purpose!r} refused: "
                + _reason_counts(refused, len(ids))
                + "; nothing was recorded",
                refused,
            )
        notify, why = self.notify_decision(rec, legal_demand, gag)
        kind = "legal_demand" if legal_demand else "routine"
        stored = dict(extra or {})
        if why:
            stored["notify_reason"] = why
        row = {
            "at": when,
            "recorded_at": moment,
            "kind": kind,
            "recipient": recipient,
            "purpose": purpose,
            "basis": legal_ground,
            "categories": json.dumps(list(cats)),
            "form": src.form.value,
            "subjects": len(ids),
            "gag": gag,
            "notify": notify,
            "reference": ref,
            "actor": actor,
            "detail": json.dumps(stored) if stored else None,
        }
        with self.fid.data.begin() as conn:
            did = self._insert(conn, row, ids)
            if notify == TELL:
                enqueue(conn, self.topic(did), ids, moment)
            self.fid.audit.append(
                conn,
                actor=actor,
                action="disclosure.record",
                purpose=purpose,
                result=kind,
                detail={
                    "disclosure_id": did,
                    "recipient": recipient,
                    "categories": list(cats),
                    "subjects": len(ids),
                    "notify": notify,
                },
            )
        return self.get(did)

    def _insert(self, conn: Connection, row: Mapping[str, Any], ids: Sequence[str]) -> int:
        d = T.disclosures
        did = int(conn.execute(insert(d).returning(d.c.id), dict(row)).scalar_one())
        insert_rows(conn, T.disclosure_subjects, ("disclosure_id", "subject_id"), [(did, s) for s in ids])
        return did

    def record_aggregate(
        self,
        conn: Connection,
        *,
        recipient: str,
        purpose: str,
        categories: Sequence[str],
        people: int,
        detail: Mapping[str, Any],
        at: datetime,
        actor: str,
    ) -> int:
        """An aggregate export (``fiduciary.aggregates``), in the caller's transaction: no
        subjects are linked; ``people`` is how many the released groups cover."""
        rec = self._recipient(recipient)
        p = self._purpose(purpose)
        return self._insert(
            conn,
            {
                "at": at,
                "recorded_at": at,
                "kind": "aggregate",
                "recipient": recipient,
                "purpose": purpose,
                "basis": p.basis.value,
                "categories": json.dumps(list(categories)),
                "form": rec.source.form.value,
                "subjects": people,
                "gag": None,
                "notify": NOT_APPLICABLE,
                "reference": None,
                "actor": actor,
                "detail": json.dumps(dict(detail)),
            },
            (),
        )

    @staticmethod
    def topic(disclosure_id: int) -> str:
        return f"disclosure:{disclosure_id}"

    def _event(
        self, conn: Connection, disclosure_id: int, kind: str, at: datetime, actor: str, detail: Any
    ) -> None:
        conn.execute(
            insert(T.disclosure_events).values(
                disclosure_id=disclosure_id,
                kind=kind,
                at=at,
                actor=actor,
                detail=json.dumps(detail) if detail is not None else None,
            )
        )

    def lift_gag(
        self, disclosure_id: int, *, actor: str = "system", now: datetime | None = None
    ) -> Disclosure:
        """The gag on a legal demand no longer holds: the people are now told (queued),
        unless the policy says they never are (PLU-9)."""
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        d = self.get(disclosure_id)
        if d.kind != "legal_demand" or d.gag is None:
            raise DisclosureError(f"disclosure {disclosure_id} is not a gagged legal demand")
        if any(e.kind == "gag_lifted" for e in d.events):
            raise DisclosureError(f"disclosure {disclosure_id}: the gag was lifted already")
        rec = self.cp.recipients.get(d.recipient)
        never = rec is not None and rec.source.notify_subject == "never"
        notify = WITHHELD if never else TELL
        with self.fid.data.begin() as conn:
            self._event(conn, disclosure_id, "gag_lifted", moment, actor, {"notify": notify})
            if notify == TELL:
                ids = conn.execute(
                    select(T.disclosure_subjects.c.subject_id).where(
                        T.disclosure_subjects.c.disclosure_id == disclosure_id
                    )
                ).scalars()
                enqueue(conn, self.topic(disclosure_id), list(ids), moment)
            self.fid.audit.append(
                conn,
                actor=actor,
                action="disclosure.gag_lifted",
                purpose=d.purpose,
                result=notify,
                detail={"disclosure_id": disclosure_id},
            )
        return self.get(disclosure_id)

    def letter(self, d: Disclosure) -> Letter:
        """What a person is told of a legal demand (PLU-9)."""
        from fiduciary.policy.render import category_name, purpose_name

        cp = self.cp
        org = cp.policy.organization
        rec = cp.recipients.get(d.recipient)
        who = rec.source.name if rec is not None else d.recipient
        ref = f" (its reference: {d.reference})" if d.reference else ""
        cats = ", ".join(category_name(cp, c) for c in d.categories)
        lines = [
            f"On {d.at:%d %B %Y} we received a legal demand from {who}{ref} that required us "
            "to disclose data about you.".replace(" 0", " ", 1),
            "",
            f"We disclosed: {cats}.",
            f"Purpose: {purpose_name(cp, d.purpose) if d.purpose in cp.purposes else d.purpose}.",
            "",
            "We are telling you so that you can seek advice or challenge the demand if you wish.",
        ]
        contact = org.contact.email or org.contact.url or org.contact.address
        if contact:
            lines += ["", f"Questions: {contact}"]
        lines += ["", "-- ", f"{org.name} privacy team"]
        return Letter(
            subject=f"{org.name}: a legal demand concerning your data", text="\n".join(lines) + "\n"
        )

    def tell(
        self,
        disclosure_id: int,
        mailer: Mailer,
        *,
        actor: str = "system",
        batch_size: int = 500,
        now: datetime | None = None,
    ) -> Delivery:
        """Mail the people a legal demand concerned, when they are to be told (PLU-9)."""
        d = self.get(disclosure_id)
        if d.notify != TELL:
            raise DisclosureError(
                f"disclosure {disclosure_id}: the people are not to be told ({d.notify}"
                + (f": {d.notify_reason}" if d.notify_reason else "")
                + ")"
            )
        result = deliver(
            self.fid,
            mailer,
            self.topic(disclosure_id),
            self.letter(d),
            purpose=NOTICE_PURPOSE,
            actor=actor,
            batch_size=batch_size,
        )
        moment = _aware(now, "now") if now is not None else datetime.now(UTC)
        with self.fid.data.begin() as conn:
            self._event(conn, disclosure_id, "told", moment, actor, result.to_dict())
        return result

    # ------------------------------------------------------------------ reading
    def _load(self, conn: Connection, rows: Sequence[Any]) -> list[Disclosure]:
        if not rows:
            return []
        ev = T.disclosure_events.c
        events: dict[int, list[DisclosureEvent]] = {}
        ids = [int(r.id) for r in rows]
        for i in range(0, len(ids), CHUNK):
            for e in conn.execute(
                select(T.disclosure_events).where(ev.disclosure_id.in_(ids[i : i + CHUNK])).order_by(ev.id)
            ):
                events.setdefault(int(e.disclosure_id), []).append(
                    DisclosureEvent(
                        int(e.id), e.kind, _utc(e.at), e.actor, json.loads(e.detail) if e.detail else None
                    )
                )
        return [self._disclosure(r, events.get(int(r.id), [])) for r in rows]

    @staticmethod
    def _disclosure(r: Any, events: list[DisclosureEvent]) -> Disclosure:
        detail = json.loads(r.detail) if r.detail else None
        notify, why = str(r.notify), (detail or {}).get("notify_reason")
        told = None
        for e in events:
            if e.kind == "gag_lifted" and e.detail:
                notify = str(e.detail.get("notify", notify))
                why = None if notify == TELL else "the policy says people are not told of these demands"
            elif e.kind == "told":
                told = e.at
        return Disclosure(
            id=int(r.id),
            at=_utc(r.at),
            recorded_at=_utc(r.recorded_at),
            kind=r.kind,
            recipient=r.recipient,
            purpose=r.purpose,
            basis=r.basis,
            categories=tuple(json.loads(r.categories)),
            form=r.form,
            subjects=int(r.subjects),
            gag=r.gag,
            notify=notify,
            notify_reason=why,
            reference=r.reference,
            actor=r.actor,
            detail=detail,
            told_at=told,
            events=tuple(events),
        )

    def get(self, disclosure_id: int) -> Disclosure:
        if not isinstance(disclosure_id, int) or isinstance(disclosure_id, bool):
            raise UnknownDisclosure(f"no disclosure with id {disclosure_id!r}")
        with self.fid.data.connect() as conn:
            rows = conn.execute(select(T.disclosures).where(T.disclosures.c.id == disclosure_id)).all()
            found = self._load(conn, rows)
        if not found:
            raise UnknownDisclosure(f"no disclosure with id {disclosure_id}")
        return found[0]

    def query(
        self,
        *,
        recipient: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> list[Disclosure]:
        """Disclosures matching every filter, oldest first; page with ``after_id``."""
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise DisclosureError(f"limit must be 1-10000, got {limit!r}")
        if kind is not None and kind not in KINDS:
            raise DisclosureError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        c = T.disclosures.c
        stmt = select(T.disclosures).order_by(c.id).limit(limit)
        if recipient is not None:
            stmt = stmt.where(c.recipient == recipient)
        if kind is not None:
            stmt = stmt.where(c.kind == kind)
        if since is not None:
            stmt = stmt.where(c.at >= self._stored(_aware(since, "since")))
        if until is not None:
            stmt = stmt.where(c.at < self._stored(_aware(until, "until")))
        if after_id is not None:
            stmt = stmt.where(c.id > after_id)
        with self.fid.data.connect() as conn:
            return self._load(conn, conn.execute(stmt).all())

    def _stored(self, at: datetime) -> datetime:
        # SQLite keeps times as naive UTC text: compare like with like.
        return at.replace(tzinfo=None) if self.fid.data.dialect.name == "sqlite" else at

    def of_subject(self, subject_id: str) -> list[Disclosure]:
        """Every disclosure that concerned the subject, oldest first, gagged ones included
        (for the privacy team; ``for_subject`` is what the person sees)."""
        c, s = T.disclosures.c, T.disclosure_subjects.c
        stmt = (
            select(T.disclosures)
            .join(T.disclosure_subjects, s.disclosure_id == c.id)
            .where(s.subject_id == subject_id)
            .order_by(c.at, c.id)
        )
        with self.fid.data.connect() as conn:
            return self._load(conn, conn.execute(stmt).all())

    def for_subject(self, subject_id: str) -> list[dict[str, Any]]:
        """The subject's disclosures as the access report shows them (``disclosures`` of
        ``build_access_package``): a legal demand the person may not be told of is left out
        (PLU-9)."""
        out = []
        for d in self.of_subject(subject_id):
            if d.notify == WITHHELD:
                continue
            rec = self.cp.recipients.get(d.recipient)
            words = "Legal demand" + (f" (reference {d.reference})" if d.reference else "")
            out.append(
                {
                    "id": d.id,
                    "recipient": d.recipient,
                    "recipient_name": rec.source.name if rec is not None else d.recipient,
                    "at": d.at.isoformat(),
                    "categories": list(d.categories),
                    "purpose": d.purpose,
                    "basis": d.basis,
                    "kind": d.kind,
                    "detail": words if d.kind == "legal_demand" else None,
                }
            )
        return out

    def shine_the_light(self, subject_id: str, *, received: datetime) -> list[dict[str, Any]]:
        """The subject's disclosures to recipients that use them for their own direct
        marketing, or buy them (PLV-13, Cal. Civ. Code 1798.83), from the start of the
        calendar year before ``received`` until ``received``."""
        start = datetime(_utc(received).year - 1, 1, 1, tzinfo=UTC)
        out = []
        for d in self.for_subject(subject_id):
            rec = self.cp.recipients.get(str(d["recipient"]))
            if rec is None or not (rec.source.direct_marketing or rec.source.sale):
                continue
            at = datetime.fromisoformat(str(d["at"]))
            if start <= at <= _utc(received):
                out.append(d)
        return out

    def transparency_report(self, *, since: datetime, until: datetime) -> TransparencyReport:
        """What was disclosed to whom in [since, until): per recipient, the number of
        disclosures, of people, the categories; legal demands with gags and who was told;
        aggregate exports. Counts only: it is meant to be published."""
        from fiduciary.policy.render import category_name

        start, end = _aware(since, "since"), _aware(until, "until")
        if end <= start:
            raise DisclosureError("until must be after since")
        c, s = T.disclosures.c, T.disclosure_subjects.c
        where = and_(c.at >= self._stored(start), c.at < self._stored(end))
        with self.fid.data.connect() as conn:
            totals = conn.execute(
                select(c.recipient, c.kind, func.count(), func.sum(c.subjects))
                .where(where)
                .group_by(c.recipient, c.kind)
            ).all()
            distinct: dict[str, int] = dict(
                conn.execute(
                    select(c.recipient, func.count(func.distinct(s.subject_id)))
                    .select_from(T.disclosures.join(T.disclosure_subjects, s.disclosure_id == c.id))
                    .where(where)
                    .group_by(c.recipient)
                ).all()
            )
            people = int(
                conn.execute(
                    select(func.count(func.distinct(s.subject_id)))
                    .select_from(T.disclosures.join(T.disclosure_subjects, s.disclosure_id == c.id))
                    .where(where)
                ).scalar_one()
            )
            cats: dict[str, set[str]] = {}
            for rk, cj in conn.execute(select(c.recipient, c.categories).where(where).distinct()):
                cats.setdefault(rk, set()).update(json.loads(cj))
            demands = self._load(
                conn, conn.execute(select(T.disclosures).where(where, c.kind == "legal_demand")).all()
            )
        by: dict[str, dict[str, Any]] = {}
        for rk, kind, n, subjects in totals:
            rec = self.cp.recipients.get(rk)
            entry = by.setdefault(
                rk,
                {
                    "recipient": rk,
                    "name": rec.source.name if rec is not None else rk,
                    "role": rec.source.role.value if rec is not None else None,
                    "disclosures": 0,
                    "people_total": 0,
                    "people": int(distinct.get(rk, 0)),
                    "by_kind": {},
                    "categories": sorted(cats.get(rk, ())),
                    "category_names": [category_name(self.cp, k) for k in sorted(cats.get(rk, ()))],
                },
            )
            entry["disclosures"] += int(n)
            entry["people_total"] += int(subjects or 0)
            entry["by_kind"][kind] = int(n)
        legal = {
            "demands": len(demands),
            "people": sum(d.subjects for d in demands),
            "gagged": sum(1 for d in demands if d.gag is not None),
            "told": sum(1 for d in demands if d.notify == TELL),
            "withheld": sum(1 for d in demands if d.notify == WITHHELD),
            "gags": {g: sum(1 for d in demands if d.gag == g) for g in GAGS},
        }
        return TransparencyReport(
            organization=self.cp.policy.organization.name,
            since=start,
            until=end,
            disclosures=sum(int(n) for _, _, n, _ in totals),
            people=people,
            recipients=tuple(sorted(by.values(), key=lambda e: (-e["disclosures"], e["recipient"]))),
            legal_demands=legal,
        )


@dataclass(frozen=True)
class TransparencyReport:
    """Disclosures in a period, in counts (no subject, no reference): fit to publish."""

    organization: str
    since: datetime
    until: datetime
    disclosures: int
    people: int  # distinct people whose individual data was disclosed
    recipients: tuple[dict[str, Any], ...]
    legal_demands: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "disclosures": self.disclosures,
            "people": self.people,
            "recipients": [dict(r) for r in self.recipients],
            "legal_demands": dict(self.legal_demands),
        }

    def to_markdown(self) -> str:
        last = (self.until - timedelta(microseconds=1)).date()
        span = f"{self.since.date().isoformat()} to {last.isoformat()}"
        lines = [
            f"# {self.organization}: transparency report",
            "",
            f"Period: {span}. {self.disclosures} disclosure(s) of data to recipients; "
            f"{self.people} distinct people's individual data disclosed.",
            "",
            "| Recipient | Role | Disclosures | People | Data |",
            "|---|---|---:|---:|---|",
        ]
        for r in self.recipients:
            lines.append(
                f"| {r['name']} | {r['role'] or ''} | {r['disclosures']} | "
                f"{r['people'] if r['people'] else r['people_total']} | {', '.join(r['category_names'])} |"
            )
        ld = self.legal_demands
        lines += [
            "",
            "## Legal demands",
            "",
            f"{ld['demands']} legal demand(s) answered, concerning {ld['people']} people. "
            f"The people concerned were told of {ld['told']}; of {ld['withheld']} they may not be told "
            f"({ld['gagged']} under a gag: {ld['gags']['law']} by law, {ld['gags']['court_order']} "
            f"by court order, {ld['gags']['emergency']} in an emergency).",
            "",
        ]
        return "\n".join(lines)

"""Publishing a new version of the policy, and the acceptance it may need (PUT-3).

Opening a Fiduciary on a changed policy.yaml stores the version and the purposes the diff
(``policy/diff.py``) finds materially changed (``Fiduciary._publish_policy``); from then on,
under ``changes: {material: opt_in}``, the decision engine refuses those purposes
(``needs_acceptance``) for subjects whose data predates the version until they accept.

``publish`` is the announcement that goes with it:

- records the publication (``policy_publications``: who, when, what was material), once
  per version: publishing again changes nothing;
- queues a notice to each person concerned: not erased, data collected under an earlier
  version, of a kind (and jurisdiction) a materially changed purpose applies to; everyone
  whose data predates the version when a material change names no purpose (fewer rights,
  say). One INSERT ... SELECT, whatever the number of people. Mail is sent when the policy
  announces changes by ``email``, or when it asks for acceptance (opt_in): a person cannot
  accept what they were never told;
- audits it (``policy.publish``).

``send_notices`` then mails the queue in batches (``fiduciary.notices``), and
``pending_changes`` tells the privacy center what a person has yet to accept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, false, insert, or_, select

from fiduciary.mail import Letter, Mailer
from fiduciary.notices import Delivery, deliver, enqueue_select
from fiduciary.policy.diff import PolicyDiff
from fiduciary.store import tables as T

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary

__all__ = [
    "NOTICE_PURPOSE",
    "PendingChanges",
    "PendingPurpose",
    "Publication",
    "PublishError",
    "notice_letter",
    "pending_changes",
    "publish",
    "send_notices",
    "topic",
]

# Recorded as the purpose of reading each address in the audit trail.
NOTICE_PURPOSE = "policy_change_notice"


class PublishError(ValueError):
    """The publication cannot be made as asked; nothing changed."""


@dataclass(frozen=True)
class Publication:
    """A published version and its announcement."""

    version: str
    version_seq: int
    effective: date
    previous: str | None
    previous_seq: int | None
    material_purposes: tuple[str, ...]
    diff: PolicyDiff | None
    acceptance_needed: bool  # material changes wait for each person's acceptance
    email: bool  # the people concerned are told by mail
    notices: int  # queued for this version, in all
    queued: int  # queued by this call (0 when it was published before)
    new: bool  # this call announced it (False: it had been published before)
    at: datetime
    actor: str

    @property
    def material(self) -> bool:
        return self.diff is not None and self.diff.material

    @property
    def topic(self) -> str:
        return topic(self.version_seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "version_seq": self.version_seq,
            "effective": self.effective.isoformat(),
            "previous": self.previous,
            "previous_seq": self.previous_seq,
            "material": self.material,
            "material_purposes": list(self.material_purposes),
            "acceptance_needed": self.acceptance_needed,
            "email": self.email,
            "notices": self.notices,
            "queued": self.queued,
            "new": self.new,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "changes": [c.to_dict() for c in self.diff] if self.diff is not None else [],
        }


def topic(version_seq: int) -> str:
    return f"policy:{version_seq}"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _concerned(fid: Fiduciary, version_seq: int, material: tuple[str, ...]) -> ColumnElement[bool]:
    """Subjects a material change of this version concerns: not erased, data collected
    under an earlier version, and (when the change names purposes) of a kind and
    jurisdiction one of those purposes applies to."""
    s = T.subjects.c
    newer = [label for label, seq in fid.versions.items() if seq >= version_seq]
    where: list[ColumnElement[bool]] = [s.status != "erased", s.policy_version.not_in(newer)]
    scopes: list[ColumnElement[bool]] = []
    everyone = not material  # a material change that names no purpose concerns everyone
    for key in material:
        p = fid.policy.purposes.get(key)
        if p is None:  # removed again since: nobody's data is used for it any more
            continue
        cond: list[ColumnElement[bool]] = []
        if p.subjects:
            cond.append(s.kind.in_(sorted(p.subjects)))
        if p.source.jurisdictions:
            cond.append(s.jurisdiction.in_(sorted(p.source.jurisdictions)))
        if not cond:
            everyone = True
        else:
            scopes.append(and_(*cond))
    if not everyone:
        where.append(or_(*scopes) if scopes else false())
    return and_(*where)


def publish(
    fid: Fiduciary,
    *,
    email: bool | None = None,
    actor: str = "system",
    now: datetime | None = None,
) -> Publication:
    """Announce the version ``fid`` runs (it was stored when ``fid`` was opened).

    ``email``: tell the people concerned by mail; default: when the policy's
    ``changes.announce`` lists ``email`` or its material changes need acceptance. Notices
    are queued here and sent by ``send_notices``. Publishing a version again returns its
    publication and queues nothing.
    """
    if not isinstance(actor, str) or not 0 < len(actor) <= 128:
        raise PublishError("actor must be 1-128 characters")
    at = _utc(now) if now is not None else datetime.now(UTC)
    seq = fid.version_seq
    pv, pp = T.policy_versions.c, T.policy_publications.c
    changes = fid.policy.policy.changes
    # Before the transaction: on SQLite a second connection would wait for its write lock.
    diff = fid.policy_diff(seq)
    with fid.data.begin() as conn:
        row = conn.execute(select(pv.material_purposes).where(pv.id == seq)).one()
        material = tuple(json.loads(row.material_purposes))
        prev = conn.execute(
            select(pv.id, pv.version).where(pv.id < seq).order_by(pv.id.desc()).limit(1)
        ).first()
        is_material = diff is not None and diff.material
        acceptance = is_material and changes.material == "opt_in" and bool(material)
        mail = email if email is not None else ("email" in changes.announce or acceptance)
        done = conn.execute(select(T.policy_publications).where(pp.version_id == seq)).mappings().first()
        if done is not None:
            return Publication(
                version=fid.policy.version,
                version_seq=seq,
                effective=fid.policy.effective,
                previous=prev.version if prev else None,
                previous_seq=int(prev.id) if prev else None,
                material_purposes=material,
                diff=diff,
                acceptance_needed=acceptance,
                email=bool(done["notices"]) or (mail and is_material and prev is not None),
                notices=int(done["notices"]),
                queued=0,
                new=False,
                at=_utc(done["at"]),
                actor=str(done["actor"]),
            )
        queued = 0
        if mail and is_material:
            who = select(T.subjects.c.id).where(_concerned(fid, seq, material))
            queued = enqueue_select(conn, topic(seq), who, at)
        conn.execute(
            insert(T.policy_publications).values(
                version_id=seq,
                at=at,
                actor=actor,
                previous_id=int(prev.id) if prev else None,
                material_purposes=json.dumps(list(material)),
                notices=queued,
            )
        )
        fid.audit.append(
            conn,
            actor=actor,
            action="policy.publish",
            result="material" if is_material else "minor" if diff is not None else "first",
            detail={
                "version": fid.policy.version,
                "version_seq": seq,
                "previous": prev.version if prev else None,
                "material_purposes": list(material),
                "acceptance_needed": acceptance,
                "notices": queued,
            },
        )
    return Publication(
        version=fid.policy.version,
        version_seq=seq,
        effective=fid.policy.effective,
        previous=prev.version if prev else None,
        previous_seq=int(prev.id) if prev else None,
        material_purposes=material,
        diff=diff,
        acceptance_needed=acceptance,
        email=mail and is_material,
        notices=queued,
        queued=queued,
        new=True,
        at=at,
        actor=actor,
    )


def notice_letter(fid: Fiduciary, publication: Publication, *, center_url: str | None = None) -> Letter:
    """The mail telling a person of the new version: what changed materially and, under
    opt_in, that the changed uses wait for their acceptance (and where to give it)."""
    from fiduciary.policy.render import purpose_name

    cp = fid.policy
    org = cp.policy.organization
    lines = [
        f"We have published a new version of our privacy notice (version {publication.version}, "
        f"in force from {publication.effective:%d %B %Y}).".replace(" 0", " "),
        "",
    ]
    changes = publication.diff.material_changes if publication.diff is not None else ()
    if changes:
        lines.append("What changes for data we already hold about you:")
        lines += [f"  - {c.summary}" for c in changes]
        lines.append("")
    if publication.acceptance_needed:
        names = [purpose_name(cp, p) for p in publication.material_purposes if p in cp.purposes]
        lines.append(
            "We will not use the data we already hold about you in these new ways unless you "
            "agree. Until then nothing changes for: " + "; ".join(names) + "."
        )
        lines.append(
            f"Review the changes and tell us your choice: {center_url}"
            if center_url
            else "You can review the changes and tell us your choice in our privacy center."
        )
    elif center_url:
        lines.append(f"Read the new version: {center_url}")
    contact = org.contact.email or org.contact.url or org.contact.address
    if contact:
        lines += ["", f"Questions: {contact}"]
    lines += ["", "-- ", f"{org.name} privacy team"]
    return Letter(subject=f"{org.name}: changes to our privacy notice", text="\n".join(lines) + "\n")


def send_notices(
    fid: Fiduciary,
    mailer: Mailer,
    publication: Publication,
    *,
    center_url: str | None = None,
    actor: str = "system",
    batch_size: int = 500,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Delivery:
    """Mail the queued notices of a publication (see ``fiduciary.notices.deliver``)."""
    letter = notice_letter(fid, publication, center_url=center_url)
    return deliver(
        fid,
        mailer,
        publication.topic,
        letter,
        purpose=NOTICE_PURPOSE,
        actor=actor,
        batch_size=batch_size,
        limit=limit,
        progress=progress,
    )


# --------------------------------------------------------------------------- acceptance


@dataclass(frozen=True)
class PendingPurpose:
    """One purpose whose material change the subject has yet to accept."""

    purpose: str
    name: str
    description: str | None
    version: str  # the version that changed it
    version_seq: int
    effective: date
    changes: tuple[str, ...]  # the diff's words for what changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "version_seq": self.version_seq,
            "effective": self.effective.isoformat(),
            "changes": list(self.changes),
        }


@dataclass(frozen=True)
class PendingChanges:
    """What the privacy center asks a subject to accept: ``accept_policy(subject_id)``
    (or one purpose at a time) records the acceptance of the version in force."""

    subject_id: str
    version: str  # in force now; accepting accepts up to it
    version_seq: int
    purposes: tuple[PendingPurpose, ...]
    text: str  # the changes in words, version by version

    def __bool__(self) -> bool:
        return bool(self.purposes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "version": self.version,
            "version_seq": self.version_seq,
            "purposes": [p.to_dict() for p in self.purposes],
            "text": self.text,
        }


def pending_changes(fid: Fiduciary, subject_id: str) -> PendingChanges:
    """The purposes the decision engine refuses the subject's earlier data for until they
    accept (``Reason.needs_acceptance``), with the words of each change. Empty when the
    policy applies material changes after notice, or nothing is pending."""
    from fiduciary.policy.render import purpose_name

    cp = fid.policy
    decider = fid.decider
    state = fid.state(subject_id)
    found: list[PendingPurpose] = []
    if decider.acceptance_needed and state.status != "erased":
        pv = T.policy_versions.c
        with fid.data.connect() as conn:
            meta = {
                int(r.id): (str(r.version), date.fromisoformat(r.effective))
                for r in conn.execute(select(pv.id, pv.version, pv.effective))
            }
        for key, changed in sorted(decider.material.items(), key=lambda kv: (kv[1], kv[0])):
            p = cp.purposes.get(key)
            if p is None or p.essential:
                continue
            if p.subjects and state.kind not in p.subjects:
                continue
            if p.source.jurisdictions and state.jurisdiction not in p.source.jurisdictions:
                continue
            if state.data_since >= changed:
                continue
            if max(state.accepted.get(key, 0), state.accepted.get("*", 0)) >= changed:
                continue
            diff = fid.policy_diff(changed)
            words = tuple(c.summary for c in diff.material_changes if key in c.purposes) if diff else ()
            version, effective = meta[changed]
            found.append(
                PendingPurpose(
                    purpose=key,
                    name=purpose_name(cp, key),
                    description=p.source.description,
                    version=version,
                    version_seq=changed,
                    effective=effective,
                    changes=words,
                )
            )
    lines: list[str] = []
    for pp in found:
        lines.append(
            f"{pp.name} (changed in version {pp.version}, in force from {pp.effective.isoformat()}):"
        )
        lines += [f"  - {w}" for w in pp.changes] or ["  - a material change of this use"]
    return PendingChanges(
        subject_id=subject_id,
        version=cp.version,
        version_seq=fid.version_seq,
        purposes=tuple(found),
        text="\n".join(lines) + ("\n" if lines else ""),
    )

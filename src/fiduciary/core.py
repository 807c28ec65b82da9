"""The library's front door: ``Fiduciary.open(policy_path, database_url=...)``.

One object ties the rooms together for a running service: the compiled policy, the vault,
the consent ledger, the decision engine and the audit log. Every read goes through a
decision and leaves an audit entry; every change of a person's choices is a ledger event.
The web and the CLI call these methods; nothing here knows about HTTP or terminals.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, insert, select

from fiduciary.audit import AuditLog
from fiduciary.config import Settings
from fiduciary.consent.ledger import ConsentLedger
from fiduciary.decide import Audience, Decider, Decision, SubjectState
from fiduciary.policy import CompiledPolicy, LoadedPolicy, compile_policy, load_policy
from fiduciary.policy.model import GpcEffect
from fiduciary.store import make_engine, tables, upgrade
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.vault import StoredValue, Vault

if TYPE_CHECKING:
    from fiduciary.breaches import BreachRegister
    from fiduciary.disclosures import DisclosureLedger
    from fiduciary.policy.diff import PolicyDiff
    from fiduciary.publish import PendingChanges, Publication


class UnderAge(Exception):
    """Sign-up refused: the person is below the policy's minimum age (PUT-2). Nothing about
    them has been stored."""

    def __init__(self, age: int, minimum: int, jurisdiction: str) -> None:
        super().__init__(
            f"sign-up refused: age {age} is below the minimum age {minimum} in {jurisdiction}; "
            "nothing was stored"
        )
        self.age, self.minimum, self.jurisdiction = age, minimum, jurisdiction


@dataclass(frozen=True)
class ReadResult:
    """What a purpose may see of a subject now: the allowed values and the decision."""

    values: Mapping[str, StoredValue]
    decision: Decision


def age_on(birth_date: date, today: date) -> int:
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


class Fiduciary:
    """A running Fiduciary over one policy and one pair of stores."""

    def __init__(
        self,
        loaded: LoadedPolicy,
        data: Engine,
        keys: Engine,
        keyring: Keyring,
        *,
        checkpoint_every: int = 1000,
        state_ttl: float = 1.0,
    ) -> None:
        self.loaded = loaded
        self.policy: CompiledPolicy = compile_policy(loaded)
        self.data = data
        self.keys = keys
        self.keyring = keyring
        self.audit = AuditLog(data, keyring, checkpoint_every=checkpoint_every)
        self.version_seq, material = self._publish_policy()
        self.versions = self._versions()
        self.decider = Decider(self.policy, material=material)
        self.vault = Vault(data, keys, keyring, self.policy, audit=self.audit)
        self.consent = ConsentLedger(data, self.policy, audit=self.audit)
        # Subject states are cached briefly: a repeated decision is a dict lookup. This
        # process drops a state when it changes the subject; other processes see a change
        # within state_ttl seconds.
        self._states: dict[str, tuple[float, SubjectState]] = {}
        self._state_ttl = state_ttl
        self._lock = threading.Lock()
        self._diffs: dict[int, PolicyDiff | None] = {}

    # -- opening
    @classmethod
    def open(
        cls,
        policy_path: str | Path,
        *,
        database_url: str | None = None,
        keys_database_url: str | None = None,
        keyring: Keyring | str | Path | None = None,
        data_dir: str | Path | None = None,
        settings: Settings | None = None,
    ) -> Fiduciary:
        """Open (and migrate) the stores for the policy at ``policy_path``.

        Defaults come from FIDUCIARY_* settings: SQLite files and a keyring file in the data
        directory, created on first use.
        """
        s = settings or Settings()
        if data_dir is not None:
            s = s.model_copy(update={"data_dir": Path(data_dir)})
        data = make_engine(database_url or s.resolved_database_url())
        keys = make_engine(keys_database_url or s.resolved_keys_database_url(), secure_delete=True)
        upgrade(data, "data")
        upgrade(keys, "keys")
        if isinstance(keyring, Keyring):
            ring = keyring
        elif keyring is not None:
            ring = Keyring.load(Path(keyring))
        elif s.keyring:
            ring = Keyring.from_json(s.keyring, "FIDUCIARY_KEYRING")
        else:
            ring = Keyring.load_or_create(s.resolved_keyring_file())
        return cls(load_policy(policy_path), data, keys, ring, checkpoint_every=s.checkpoint_every)

    def close(self) -> None:
        self.data.dispose()
        self.keys.dispose()

    def __enter__(self) -> Fiduciary:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- policy versions (PUT-3)
    def _publish_policy(self) -> tuple[int, dict[str, int]]:
        """Record this policy version; returns its sequence number and, per purpose, the
        sequence number of the version that last changed it materially."""
        from fiduciary.policy import load_policy_text
        from fiduciary.policy.diff import diff_policies

        pv = tables.policy_versions
        with self.data.begin() as conn:
            rows = conn.execute(select(pv).order_by(pv.c.id)).mappings().all()
            current = next((r for r in rows if r["digest"] == self.loaded.digest), None)
            if current is None:
                material: list[str] = []
                if rows:
                    previous = compile_policy(load_policy_text(rows[-1]["text"], "<published>"))
                    material = sorted(diff_policies(previous, self.policy).affected_purposes())
                conn.execute(
                    insert(pv).values(
                        version=self.policy.version,
                        digest=self.loaded.digest,
                        effective=self.policy.effective.isoformat(),
                        published_at=datetime.now(UTC),
                        text=self.loaded.text,
                        material_purposes=json.dumps(material),
                    )
                )
                rows = conn.execute(select(pv).order_by(pv.c.id)).mappings().all()
                current = rows[-1]
        changed: dict[str, int] = {}
        for r in rows:
            if r["id"] > current["id"]:
                break
            for purpose in json.loads(r["material_purposes"]):
                changed[purpose] = r["id"]
        return int(current["id"]), changed

    def _versions(self) -> dict[str, int]:
        pv = tables.policy_versions
        with self.data.connect() as conn:
            rows = conn.execute(select(pv.c.version, func.min(pv.c.id)).group_by(pv.c.version)).all()
        return {str(v): int(i) for v, i in rows}

    def policy_diff(self, version_seq: int) -> PolicyDiff | None:
        """What published version ``version_seq`` changed against the one before it (None
        for the first version). Computed once per version and kept."""
        if version_seq not in self._diffs:
            from fiduciary.policy import load_policy_text
            from fiduciary.policy.diff import diff_policies

            pv = tables.policy_versions
            with self.data.connect() as conn:
                rows = conn.execute(
                    select(pv.c.id, pv.c.text).where(pv.c.id <= version_seq).order_by(pv.c.id.desc()).limit(2)
                ).all()
            if not rows or rows[0].id != version_seq:
                raise LookupError(f"no published policy version with id {version_seq}")
            diff = None
            if len(rows) == 2:
                old, new = (compile_policy(load_policy_text(r.text, f"<version {r.id}>")) for r in rows[::-1])
                diff = diff_policies(old, new)
            self._diffs[version_seq] = diff
        return self._diffs[version_seq]

    def publish(self, **kw: Any) -> Publication:
        """Announce the version in force (PUT-3): see ``fiduciary.publish.publish``."""
        from fiduciary.publish import publish

        return publish(self, **kw)

    def pending_changes(self, subject_id: str) -> PendingChanges:
        """The material changes the subject has yet to accept, by purpose, with the words of
        each change (PUT-3): what the privacy center shows before ``accept_policy``."""
        from fiduciary.publish import pending_changes

        return pending_changes(self, subject_id)

    # -- ledgers and registers
    @cached_property
    def disclosures(self) -> DisclosureLedger:
        """Every release of data to a recipient (PLU-9, PLV-13, PUT-8)."""
        from fiduciary.disclosures import DisclosureLedger

        return DisclosureLedger(self)

    @cached_property
    def breaches(self) -> BreachRegister:
        """The breach register (LAW-10)."""
        from fiduciary.breaches import BreachRegister

        return BreachRegister(self)

    # -- subjects
    def sign_up(
        self,
        kind: str,
        *,
        identities: Mapping[str, str],
        attributes: Mapping[str, Any] | None = None,
        activity: str | None = None,
        region: str | None = None,
        birth_date: date | None = None,
        age: int | None = None,
        consents: Iterable[str] = (),
        channel: str = "web_form",
        notice_text: str | None = None,
        language: str | None = None,
        ip: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> str:
        """Create a subject through the age gate; give the consents ticked at sign-up.

        Below the policy's minimum age for the person's jurisdiction the sign-up is refused
        with UnderAge and nothing about the person is stored (PUT-2).
        """
        now = now or datetime.now(UTC)
        jurisdiction = self.policy.jurisdiction_for(region)
        minimum = self.policy.min_age(jurisdiction)
        if birth_date is not None:
            age = age_on(birth_date, now.date())
        age_status = "unknown"
        if age is not None:
            if minimum is not None and age < minimum:
                self.audit.append(None, actor=actor, action="sign_up", result="refused_under_age")
                raise UnderAge(age, minimum, jurisdiction)
            age_status = "adult" if minimum is None or age >= minimum else "under_age"
        subject_id = self.vault.create_subject(
            kind,
            jurisdiction,
            identities=dict(identities),
            attributes=dict(attributes or {}),
            activity=activity,
            policy_version=self.policy.version,
            age_status=age_status,
            actor=actor,
            now=now,
        )
        for purpose in consents:
            self.consent.give(
                subject_id,
                purpose,
                channel=channel,
                policy_version=self.policy.version,
                notice_text=notice_text,
                language=language,
                ip=ip,
                actor=actor,
                now=now,
            )
        return subject_id

    def find(self, kind: str, value: str) -> str | None:
        """The subject with this identity (email, phone_number, user_id ...), if any."""
        return self.vault.find(kind, value)

    def state(self, subject_id: str) -> SubjectState:
        now = time.monotonic()
        hit = self._states.get(subject_id)
        if hit is not None and now - hit[0] < self._state_ttl:
            return hit[1]
        state = self.consent.state(subject_id, self.versions)
        with self._lock:
            self._states[subject_id] = (now, state)
        return state

    def forget_state(self, subject_id: str) -> None:
        with self._lock:
            self._states.pop(subject_id, None)

    # -- the question
    def _gpc_applies(self, state: SubjectState, gpc: bool) -> bool:
        if not gpc:
            return False
        j = self.policy.jurisdictions.get(state.jurisdiction)
        return j is not None and j.gpc == GpcEffect.opt_out

    def decide(
        self,
        subject_id: str,
        purpose: str,
        categories: Iterable[str] | None = None,
        recipient: str | None = None,
        *,
        audience: Audience | None = None,
        gpc: bool = False,
        actor: str = "system",
        audit: bool = True,
    ) -> Decision:
        """May ``purpose`` use these categories of the subject now (for ``recipient``)?

        ``gpc``: the request carried Sec-GPC: 1. Where the subject's jurisdiction treats GPC
        as an opt-out of sale and sharing (LAW-12) it counts on this very request, and is
        recorded in the ledger for the next ones.
        """
        state = self.state(subject_id)
        effective_gpc = self._gpc_applies(state, gpc)
        if effective_gpc and not state.sale_opt_out:
            self.consent.opt_out_of_sale(
                subject_id, channel="gpc_signal", policy_version=self.policy.version, actor=actor
            )
            self.forget_state(subject_id)
        decision = self.decider.decide(
            state, purpose, categories, recipient, audience=audience, gpc=effective_gpc
        )
        if audit:
            self.audit.append(None, **decision_entry(actor, subject_id, decision, recipient, audience))
        return decision

    def read(
        self,
        subject_id: str,
        purpose: str,
        categories: Iterable[str] | None = None,
        *,
        recipient: str | None = None,
        audience: Audience | None = None,
        gpc: bool = False,
        actor: str = "system",
    ) -> ReadResult:
        """The values ``purpose`` may use now; refused categories are absent and explained
        in the decision. The read is audited with its purpose."""
        decision = self.decide(
            subject_id, purpose, categories, recipient, audience=audience, gpc=gpc, actor=actor, audit=False
        )
        self.audit.append(None, **decision_entry(actor, subject_id, decision, recipient, audience))
        values: Mapping[str, StoredValue] = {}
        if decision.allowed:
            # The vault audits the read itself, with its purpose, in the read's transaction.
            values = self.vault.read(subject_id, sorted(decision.allowed), purpose=purpose, actor=actor)
        return ReadResult(values, decision)

    # -- choices (each is a ledger event; the cached state is dropped)
    def give_consent(self, subject_id: str, purpose: str, **kw: Any) -> int:
        return self._record("give", subject_id, purpose, **kw)

    def withdraw_consent(self, subject_id: str, purpose: str, **kw: Any) -> int:
        return self._record("withdraw", subject_id, purpose, **kw)

    def object(self, subject_id: str, purpose: str = "*", **kw: Any) -> int:
        return self._record("object", subject_id, purpose, **kw)

    def restrict(self, subject_id: str, **kw: Any) -> int:
        kw.setdefault("channel", "api")
        kw.setdefault("policy_version", self.policy.version)
        event = self.consent.restrict(subject_id, **kw)
        self.forget_state(subject_id)
        return event

    def opt_out_of_sale(self, subject_id: str, **kw: Any) -> int:
        kw.setdefault("channel", "api")
        kw.setdefault("policy_version", self.policy.version)
        event = self.consent.opt_out_of_sale(subject_id, **kw)
        self.forget_state(subject_id)
        return event

    def set_setting(self, subject_id: str, name: str, value: str, **kw: Any) -> int:
        kw.setdefault("channel", "account_settings")
        kw.setdefault("policy_version", self.policy.version)
        event = self.consent.set_setting(subject_id, name, value, **kw)
        self.forget_state(subject_id)
        return event

    def accept_policy(self, subject_id: str, scope: str = "*", **kw: Any) -> int:
        """The person accepts the current version's material changes (PUT-3)."""
        kw.setdefault("channel", "privacy_center")
        kw.setdefault("policy_version", self.policy.version)
        event = self.consent.accept_version(subject_id, scope, self.version_seq, **kw)
        self.forget_state(subject_id)
        return event

    def _record(self, verb: str, subject_id: str, purpose: str, **kw: Any) -> int:
        kw.setdefault("channel", "api")
        kw.setdefault("policy_version", self.policy.version)
        method = getattr(self.consent, verb)
        event = int(method(subject_id, purpose, **kw))
        self.forget_state(subject_id)
        return event

    # -- erasure
    def erase(self, subject_id: str, *, actor: str = "system") -> None:
        """Crypto-shred the subject: its data key is destroyed, so every copy of its data,
        backups included, is unreadable; its rows are deleted."""
        self.vault.erase(subject_id, actor=actor)
        self.forget_state(subject_id)


def decision_entry(
    actor: str, subject_id: str, decision: Decision, recipient: str | None, audience: str | None
) -> dict[str, Any]:
    """The audit entry of a decision (``AuditLog.append`` keywords), wherever it is made."""
    return {
        "actor": actor,
        "action": "decide",
        "purpose": decision.purpose,
        "subject_id": subject_id,
        "result": _result(decision),
        "detail": _decision_detail(decision, recipient, audience),
    }


def _result(decision: Decision) -> str:
    if decision.ok:
        return "allowed"
    return "partial" if decision.allowed else "refused"


def _decision_detail(decision: Decision, recipient: str | None, audience: str | None) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "reason": decision.reason.value if decision.reason else None,
        "allowed": sorted(decision.allowed),
        "refused": {c: r.value for c, r in sorted(decision.refused.items())},
    }
    if recipient:
        detail["recipient"] = recipient
    if audience:
        detail["audience"] = audience
    return detail

"""What changed between two versions of a policy, and which changes are material.

A material change is one a person could not have expected from the version they were
given: a new use of data already collected, a new recipient, new data collected, data
kept longer, a weaker legal basis or consent, fewer or slower rights (PUT-3, PLO-17).
Under ``changes: {material: opt_in}`` such a change applies to data collected before it
only once the person accepts it, so every change names the purposes and categories it
affects: the acceptance logic marks exactly those purposes for subjects whose data
predates the new version.

Everything else (wording, contacts, removed purposes or recipients, shorter retention,
stronger bases, new cookies that ask first, the changelog) is reported as not material.
The diff reads two CompiledPolicies only; it never re-reads YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from fiduciary.policy.compile import CompiledPolicy, CompiledPurpose, CompiledRecipient
from fiduciary.policy.model import (
    BASIS_STRENGTH,
    ConsentMode,
    Cookie,
    CookieCategory,
    DataForm,
    Jurisdiction,
    RetentionAction,
    RetentionRule,
    Right,
    Trigger,
)
from fiduciary.policy.period import Period
from fiduciary.policy.taxonomy import is_within, related

# ---------------------------------------------------------------- orderings ("weaker" = right)

# How much choice the person keeps: moving right is weaker.
_CONSENT_RANK: dict[ConsentMode, int] = {
    ConsentMode.opt_in: 0,
    ConsentMode.opt_out: 1,
    ConsentMode.notice_only: 2,
}
# How identifying the data is in use: moving right exposes the person more.
_FORM_RANK: dict[DataForm, int] = {
    DataForm.aggregate: 0,
    DataForm.anonymized: 1,
    DataForm.pseudonymized: 2,
    DataForm.identified: 3,
}
# When the retention clock starts: moving right keeps data longer for the same period.
_TRIGGER_RANK: dict[Trigger, int] = {
    Trigger.session_end: 0,
    Trigger.collected: 1,
    Trigger.transaction: 1,
    Trigger.purpose_fulfilled: 2,
    Trigger.last_activity: 3,
    Trigger.account_closed: 4,
}
_TRIGGER_TEXT: dict[Trigger, str] = {
    Trigger.session_end: "the end of the session",
    Trigger.collected: "collection",
    Trigger.transaction: "the transaction",
    Trigger.purpose_fulfilled: "the purpose is fulfilled",
    Trigger.last_activity: "the last activity",
    Trigger.account_closed: "the account is closed",
}
_VISIBILITY_RANK = {"self": 0, "members": 1, "other_users": 2, "public": 3}
_NOTIFY_RANK = {"always": 0, "high_risk": 1, "never": 2}
# Recipient conditions other than "always" limit when data goes out; None means always.
_ALWAYS = (None, "always")
# Retention actions that remove the data entirely; anything else keeps some of it.
_REMOVING = (RetentionAction.delete, RetentionAction.crypto_shred)

# Sections in the order a reader meets them in policy.yaml; changes are sorted by it.
_SECTIONS = (
    "version",
    "organization",
    "changes",
    "jurisdictions",
    "subjects",
    "categories",
    "purposes",
    "recipients",
    "retention",
    "backups",
    "exemptions",
    "children",
    "cookies",
    "visibility",
    "activities",
    "screening",
    "security",
    "breaches",
    "datastores",
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Change:
    """One difference between two versions of the policy."""

    kind: str  # stable, e.g. "purpose.basis_weaker"; tools match on it
    material: bool
    subject: str  # where in the policy, e.g. "purposes.ads"
    summary: str  # one sentence for people
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)
    purposes: tuple[str, ...] = ()  # purpose keys whose use of earlier data this touches
    categories: tuple[str, ...] = ()  # category keys this touches

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "material": self.material,
            "subject": self.subject,
            "summary": self.summary,
            "details": dict(self.details),
            "purposes": list(self.purposes),
            "categories": list(self.categories),
        }


@dataclass(frozen=True)
class PolicyDiff:
    """The changes from ``old_version`` to ``new_version``, in a fixed order.

    Behaves as a read-only sequence of Change.
    """

    old_version: str
    new_version: str
    old_digest: str
    new_digest: str
    changes: tuple[Change, ...]

    @property
    def material(self) -> bool:
        return any(c.material for c in self.changes)

    @property
    def material_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.material)

    def affected_purposes(self, *, material_only: bool = True) -> frozenset[str]:
        """Purposes that may not use earlier data before acceptance (when material)."""
        return frozenset(
            p for c in self.changes if c.material or not material_only for p in c.purposes
        )

    def affected_categories(self, *, material_only: bool = True) -> frozenset[str]:
        return frozenset(
            k for c in self.changes if c.material or not material_only for k in c.categories
        )

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    @overload
    def __getitem__(self, index: int) -> Change: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Change, ...]: ...
    def __getitem__(self, index: int | slice) -> Change | tuple[Change, ...]:
        return self.changes[index]

    def __bool__(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "material": self.material,
            "affected_purposes": sorted(self.affected_purposes()),
            "affected_categories": sorted(self.affected_categories()),
            "changes": [c.to_dict() for c in self.changes],
        }

    def to_text(self) -> str:
        n_mat = len(self.material_changes)
        head = f"Policy {self.old_version} -> {self.new_version}: "
        if not self.changes:
            return head + "no changes.\n"
        lines = [head + f"{len(self.changes)} change(s), {n_mat} material."]
        for c in self.changes:
            mark = "MATERIAL" if c.material else "minor   "
            lines.append(f"  {mark}  {c.subject}: {c.summary}")
            affects = []
            if c.purposes:
                affects.append("purposes " + ", ".join(c.purposes))
            if c.categories:
                affects.append("categories " + ", ".join(c.categories))
            if affects:
                lines.append("            affects " + "; ".join(affects))
        if n_mat:
            lines.append(
                "Material changes apply to data collected earlier only as the policy's "
                "'changes' block says (opt-in or notice)."
            )
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the differ


def diff_policies(old: CompiledPolicy, new: CompiledPolicy) -> PolicyDiff:
    """Compare two compiled policies; the result lists every change, material or not."""
    d = _Differ(old, new)
    d.run()
    order = {s: i for i, s in enumerate(_SECTIONS)}
    changes = sorted(
        d.changes,
        key=lambda c: (order.get(c.subject.split(".", 1)[0], len(order)), c.subject, c.kind, c.summary),
    )
    return PolicyDiff(old.version, new.version, old.digest, new.digest, tuple(changes))


def _days(p: Period | None) -> float:
    return p.approx_days() if p is not None else 0.0


def _longer(a: Period | None, b: Period | None) -> bool:
    """Is ``b`` longer than ``a``? A period that appears counts as longer than none."""
    if b is None:
        return False
    if a is None:
        return True
    return b.approx_days() > a.approx_days()


def _period_text(p: Period | None) -> str | None:
    return str(p) if p is not None else None


def _retention_text(rule: RetentionRule) -> str:
    when = _TRIGGER_TEXT[rule.trigger]
    return f"{rule.period} after {when}" if rule.period is not None else f"until {when}"


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", by_alias=True) if dump else obj


def _changed_fields(a: Any, b: Any) -> list[str]:
    da, db = _dump(a), _dump(b)
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


class _Differ:
    def __init__(self, old: CompiledPolicy, new: CompiledPolicy) -> None:
        self.old = old
        self.new = new
        self.changes: list[Change] = []

    def add(
        self,
        kind: str,
        material: bool,
        subject: str,
        summary: str,
        *,
        purposes: Iterable[str] = (),
        categories: Iterable[str] = (),
        **details: Any,
    ) -> None:
        self.changes.append(
            Change(
                kind,
                material,
                subject,
                summary,
                details,
                tuple(sorted(set(purposes))),
                tuple(sorted(set(categories))),
            )
        )

    # -- helpers over the new policy
    def purposes_using(self, categories: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for c in categories:
            out |= self.new.purposes_by_category.get(c, frozenset())
        return out

    def collected_before(self, category: str) -> bool:
        """Was data of this category (or a broader or narrower one) collected before?"""
        return any(related(category, c) for c in self.old.categories)

    def run(self) -> None:
        self.version()
        self.organization()
        self.change_rules()
        self.jurisdictions()
        self.minimum_ages()
        self.subjects()
        self.categories()
        self.purposes()
        self.recipients()
        self.retention()
        self.backups()
        self.exemptions()
        self.children()
        self.cookies()
        self.visibility()
        self.simple_sections()
        self.security()
        self.breaches()
        self.datastores()

    # -- version and organization
    def version(self) -> None:
        o, n = self.old.policy, self.new.policy
        fields = sorted(
            name
            for name, a, b in (
                ("version", o.version, n.version),
                ("effective", o.effective, n.effective),
                ("changelog", _dump_list(o.changelog), _dump_list(n.changelog)),
            )
            if a != b
        )
        if fields:
            summary = (
                f"Version {o.version} (effective {o.effective}) -> {n.version} "
                f"(effective {n.effective})."
                if fields != ["changelog"]
                else "The changelog was edited."
            )
            self.add("version.changed", False, "version", summary, fields=fields)

    def organization(self) -> None:
        o, n = self.old.policy.organization, self.new.policy.organization
        added = sorted({c.upper() for c in n.storage} - {c.upper() for c in o.storage})
        if added:
            self.add(
                "organization.storage_added",
                True,
                "organization.storage",
                f"Personal data is now also stored in {', '.join(added)}.",
                categories=self.new.categories,
                countries=added,
            )
        rest = [f for f in _changed_fields(o, n) if f != "storage" or not added]
        if rest:
            self.add(
                "organization.changed",
                False,
                "organization",
                "Organization details changed: " + ", ".join(rest) + ".",
                fields=rest,
            )

    def change_rules(self) -> None:
        o, n = self.old.policy.changes, self.new.policy.changes
        if o.material == "opt_in" and n.material == "notice":
            self.add(
                "changes.opt_in_removed",
                True,
                "changes.material",
                "Material changes will now apply after notice, without asking for acceptance.",
            )
        if o.archive and not n.archive:
            self.add(
                "changes.archive_removed",
                True,
                "changes.archive",
                "Earlier versions of the policy will no longer stay public.",
            )
        rest = [
            f
            for f in _changed_fields(o, n)
            if not (f == "material" and o.material == "opt_in") and not (f == "archive" and o.archive)
        ]
        if rest:
            self.add(
                "changes.changed",
                False,
                "changes",
                "How changes are announced changed: " + ", ".join(rest) + ".",
                fields=rest,
            )

    # -- jurisdictions and rights
    def jurisdictions(self) -> None:
        o, n = self.old.policy.jurisdictions, self.new.policy.jurisdictions
        for key in sorted(set(o) - set(n)):
            self.add(
                "jurisdiction.removed",
                True,
                f"jurisdictions.{key}",
                f"The rights under {o[key].name} are no longer offered.",
                rights=sorted(str(r) for r in o[key].rights),
            )
        for key in sorted(set(n) - set(o)):
            self.add(
                "jurisdiction.added",
                False,
                f"jurisdictions.{key}",
                f"New jurisdiction: {n[key].name}.",
            )
        for key in sorted(set(o) & set(n)):
            self.jurisdiction(key, o[key], n[key])

    def jurisdiction(self, key: str, o: Jurisdiction, n: Jurisdiction) -> None:
        base = f"jurisdictions.{key}"
        handled = {"rights", "minimum_age"}
        for rt in sorted(set(o.rights) - set(n.rights)):
            self.add(
                "right.removed",
                True,
                f"{base}.rights.{rt}",
                f"The right '{rt}' is no longer offered under {n.name}.",
                right=str(rt),
            )
        for rt in sorted(set(n.rights) - set(o.rights)):
            self.add(
                "right.added",
                False,
                f"{base}.rights.{rt}",
                f"New right '{rt}' under {n.name}.",
                right=str(rt),
            )
        for rt in sorted(set(o.rights) & set(n.rights)):
            self.right(f"{base}.rights.{rt}", str(rt), n.name, o.rights[rt], n.rights[rt])

        removed_regions = sorted(set(o.regions) - set(n.regions))
        if removed_regions:
            handled.add("regions")
            self.add(
                "jurisdiction.regions_removed",
                True,
                f"{base}.regions",
                f"{n.name} no longer covers {', '.join(removed_regions)}.",
                regions=removed_regions,
            )
        if _longer(o.acknowledge, n.acknowledge) and o.acknowledge is not None:
            handled.add("acknowledge")
            self.add(
                "jurisdiction.acknowledge_longer",
                True,
                f"{base}.acknowledge",
                f"Requests under {n.name} are acknowledged within {n.acknowledge} "
                f"instead of {o.acknowledge}.",
                old=_period_text(o.acknowledge),
                new=_period_text(n.acknowledge),
            )
        if o.acknowledge is not None and n.acknowledge is None:
            handled.add("acknowledge")
            self.add(
                "jurisdiction.acknowledge_removed",
                True,
                f"{base}.acknowledge",
                f"Requests under {n.name} are no longer acknowledged within a set time.",
                old=_period_text(o.acknowledge),
            )
        if o.gpc != n.gpc and n.gpc == "none":
            handled.add("gpc")
            self.add(
                "jurisdiction.gpc_ignored",
                True,
                f"{base}.gpc",
                f"A Global Privacy Control signal is no longer honoured under {n.name}.",
            )
        if o.non_discrimination and not n.non_discrimination:
            handled.add("non_discrimination")
            self.add(
                "jurisdiction.non_discrimination_removed",
                True,
                f"{base}.non_discrimination",
                f"The promise not to discriminate against people who use their rights "
                f"under {n.name} is withdrawn.",
            )
        rest = [f for f in _changed_fields(o, n) if f not in handled]
        if rest:
            self.add(
                "jurisdiction.changed",
                False,
                base,
                f"{n.name} changed: " + ", ".join(rest) + ".",
                fields=rest,
            )

    def right(self, subject: str, rt: str, where: str, o: Right, n: Right) -> None:
        handled = set()
        if n.deadline.approx_days() > o.deadline.approx_days():
            handled.add("deadline")
            self.add(
                "right.deadline_longer",
                True,
                subject,
                f"'{rt}' requests under {where} are answered within {n.deadline} "
                f"instead of {o.deadline}.",
                old=str(o.deadline),
                new=str(n.deadline),
            )
        if _longer(o.extension, n.extension):
            handled.add("extension")
            self.add(
                "right.extension_longer",
                True,
                subject,
                f"The deadline for '{rt}' under {where} may now be extended by {n.extension}"
                + (f" instead of {o.extension}." if o.extension else "."),
                old=_period_text(o.extension),
                new=_period_text(n.extension),
            )
        if o.free and not n.free:
            handled.add("free")
            self.add("right.not_free", True, subject, f"'{rt}' requests under {where} may cost a fee.")
        lost = sorted(set(o.channels) - set(n.channels))
        if lost:
            handled.add("channels")
            self.add(
                "right.channels_removed",
                True,
                subject,
                f"'{rt}' requests under {where} can no longer be made by {', '.join(lost)}.",
                channels=[str(c) for c in lost],
            )
        rest = [f for f in _changed_fields(o, n) if f not in handled]
        if rest:
            self.add(
                "right.changed",
                False,
                subject,
                f"'{rt}' under {where} changed: " + ", ".join(rest) + ".",
                fields=rest,
            )

    def minimum_ages(self) -> None:
        o, n = self.old.minimum_age, self.new.minimum_age
        for key in sorted(set(o) | set(n)):
            a, b = o.get(key), n.get(key)
            if a == b:
                continue
            subject = "children.minimum_age" if key == "*" else f"jurisdictions.{key}.minimum_age"
            lowered = a is not None and (b is None or b < a)
            where = "everywhere else" if key == "*" else key
            if lowered:
                text = "no minimum age" if b is None else str(b)
                summary = f"Minimum age {where} lowered from {a} to {text}."
            elif a is None:
                summary = f"Minimum age {where} set to {b}."
            else:
                summary = f"Minimum age {where} raised from {a} to {b}."
            self.add(
                "minimum_age.lowered" if lowered else "minimum_age.raised",
                lowered,
                subject,
                summary,
                jurisdiction=key,
                old=a,
                new=b,
            )

    # -- subjects and categories
    def subjects(self) -> None:
        o, n = self.old.policy.subjects, self.new.policy.subjects
        for key in sorted(set(o) ^ set(n)):
            added = key in n
            self.add(
                "subject.added" if added else "subject.removed",
                False,
                f"subjects.{key}",
                f"Kind of subject {(n if added else o)[key].name!r} "
                + ("added." if added else "removed."),
            )
        for key in sorted(set(o) & set(n)):
            fields = _changed_fields(o[key], n[key])
            if fields:
                self.add(
                    "subject.changed",
                    False,
                    f"subjects.{key}",
                    f"Kind of subject {n[key].name!r} changed: " + ", ".join(fields) + ".",
                    fields=fields,
                )

    def categories(self) -> None:
        o, n = self.old, self.new
        for c in sorted(n.categories - o.categories):
            # A narrower key under data already collected names it more precisely; it is
            # not new data (user.content.private -> user.content.private.file).
            refines = any(is_within(c, oc) for oc in o.categories)
            users = self.purposes_using([c])
            if refines:
                self.add(
                    "category.refined",
                    False,
                    f"categories.{c}",
                    f"{c} now named on its own (it was covered by a broader category).",
                    categories=[c],
                )
            else:
                self.add(
                    "category.added",
                    True,
                    f"categories.{c}",
                    f"New data collected: {c}.",
                    purposes=users,
                    categories=[c],
                )
        for c in sorted(o.categories - n.categories):
            self.add(
                "category.removed",
                False,
                f"categories.{c}",
                f"{c} is no longer collected.",
                categories=[c],
            )
        op, np_ = o.policy, n.policy
        for c in sorted(set(op.categories) & set(np_.categories)):
            a, b = op.category_info(c), np_.category_info(c)
            weaker = []
            if a.sensitive and not b.sensitive:
                weaker.append("no longer treated as sensitive")
            if a.personal and not b.personal:
                weaker.append("no longer treated as personal data")
            if a.protection in ("encrypted", "hashed") and b.protection != a.protection:
                weaker.append(f"no longer {a.protection} at rest")
            if weaker:
                self.add(
                    "category.protection_weakened",
                    True,
                    f"categories.{c}",
                    f"{c}: " + "; ".join(weaker) + ".",
                    purposes=self.purposes_using([c]),
                    categories=[c],
                )
            rest = [
                f
                for f in _changed_fields(a, b)
                if not (weaker and f in ("sensitive", "personal", "protection"))
            ]
            if rest:
                self.add(
                    "category.changed",
                    False,
                    f"categories.{c}",
                    f"{c}: " + ", ".join(rest) + " changed.",
                    categories=[c],
                    fields=rest,
                )

    # -- purposes
    def purposes(self) -> None:
        o, n = self.old.purposes, self.new.purposes
        for key in sorted(set(o) - set(n)):
            self.add(
                "purpose.removed",
                False,
                f"purposes.{key}",
                f"Purpose {o[key].name!r} removed.",
                purposes=[key],
                categories=o[key].categories,
            )
        for key in sorted(set(n) - set(o)):
            self.new_purpose(key, n[key])
        for key in sorted(set(o) & set(n)):
            self.purpose(key, o[key], n[key])

    def new_purpose(self, key: str, p: CompiledPurpose) -> None:
        existing = sorted(c for c in p.categories if self.collected_before(c))
        asks_first = all(m == ConsentMode.opt_in for m in p.consent.values())
        subject = f"purposes.{key}"
        if existing and not asks_first:
            self.add(
                "purpose.added",
                True,
                subject,
                f"New purpose {p.name!r} ({p.use}) uses data already collected: "
                + ", ".join(existing)
                + ".",
                purposes=[key],
                categories=existing,
                use=p.use,
                basis=str(p.basis),
            )
        else:
            why = (
                "asks for opt-in consent before any use"
                if existing
                else "uses only newly collected data"
            )
            self.add(
                "purpose.added",
                False,
                subject,
                f"New purpose {p.name!r} ({p.use}); it {why}.",
                purposes=[key],
                categories=p.categories,
                use=p.use,
                basis=str(p.basis),
            )

    def purpose(self, key: str, o: CompiledPurpose, n: CompiledPurpose) -> None:
        subject = f"purposes.{key}"
        handled: set[str] = set()

        def material(kind: str, summary: str, cats: Iterable[str] = n.categories, **details: Any) -> None:
            self.add(kind, True, subject, summary, purposes=[key], categories=cats, **details)

        def minor(kind: str, summary: str, **details: Any) -> None:
            self.add(kind, False, subject, summary, purposes=[key], categories=n.categories, **details)

        if n.use != o.use:
            handled.add("use")
            if is_within(n.use, o.use):
                minor(
                    "purpose.use_narrowed",
                    f"{n.name!r} now uses the narrower {n.use}.",
                    old=o.use,
                    new=n.use,
                )
            else:
                material(
                    "purpose.use_changed",
                    f"{n.name!r} changes use from {o.use} to {n.use}.",
                    old=o.use,
                    new=n.use,
                )

        gained = sorted(
            c for c in n.categories if not any(is_within(c, d) for d in o.declared_categories)
        )
        lost = sorted(o.categories - n.categories)
        if gained:
            material(
                "purpose.categories_added",
                f"{n.name!r} now also uses " + ", ".join(gained) + ".",
                gained,
                added=gained,
            )
        if lost:
            minor(
                "purpose.categories_removed",
                f"{n.name!r} no longer uses " + ", ".join(lost) + ".",
                removed=lost,
            )
        if gained or lost or set(o.declared_categories) != set(n.declared_categories):
            handled.add("categories")

        ob, nb = BASIS_STRENGTH[o.basis], BASIS_STRENGTH[n.basis]
        if o.basis != n.basis:
            handled.add("basis")
            if nb > ob:
                material(
                    "purpose.basis_weaker",
                    f"{n.name!r} now relies on {n.basis} instead of {o.basis}.",
                    old=str(o.basis),
                    new=str(n.basis),
                )
            else:
                minor(
                    "purpose.basis_changed",
                    f"{n.name!r} now relies on {n.basis} instead of {o.basis}.",
                    old=str(o.basis),
                    new=str(n.basis),
                )

        if n.essential and not o.essential:
            handled |= {"essential", "consent"}
            material("purpose.now_essential", f"{n.name!r} can no longer be refused.")
        elif o.essential and not n.essential:
            handled.add("essential")
            minor("purpose.now_optional", f"{n.name!r} can now be refused.")

        if not (n.essential and not o.essential):
            weaker = {}
            stronger = {}
            for j in sorted(set(o.consent) & set(n.consent)):
                a, b = o.consent[j], n.consent[j]
                if _CONSENT_RANK[b] > _CONSENT_RANK[a]:
                    weaker[j] = f"{a} -> {b}"
                elif _CONSENT_RANK[b] < _CONSENT_RANK[a]:
                    stronger[j] = f"{a} -> {b}"
            if weaker:
                material(
                    "purpose.consent_weaker",
                    f"{n.name!r} asks for less consent in "
                    + ", ".join(f"{j} ({m})" for j, m in weaker.items())
                    + ".",
                    jurisdictions=weaker,
                )
            if stronger:
                minor(
                    "purpose.consent_stronger",
                    f"{n.name!r} asks for more consent in "
                    + ", ".join(f"{j} ({m})" for j, m in stronger.items())
                    + ".",
                    jurisdictions=stronger,
                )
            handled.add("consent")

        # Under consent, withdrawal replaces objection; losing it elsewhere is material.
        if o.objection and not n.objection and n.basis != "consent":
            material("purpose.objection_removed", f"People can no longer object to {n.name!r}.")
        if o.objection != n.objection:
            handled.add("objection")

        if _FORM_RANK[n.form] > _FORM_RANK[o.form]:
            material(
                "purpose.form_identifying",
                f"{n.name!r} now uses data in {n.form} form instead of {o.form}.",
                old=str(o.form),
                new=str(n.form),
            )
            handled.add("form")

        if o.condition != n.condition and o.condition is not None:
            handled.add("condition")
            material(
                "purpose.condition_loosened",
                f"{n.name!r} no longer depends only on {o.condition!r}"
                + (f"; it now depends on {n.condition!r}." if n.condition else "."),
                old=o.condition,
                new=n.condition,
            )

        if n.sale and not o.sale:
            handled.add("sale")
            material("purpose.sale", f"{n.name!r} now involves a sale of personal data.")
        if n.direct_marketing and not o.direct_marketing:
            handled.add("direct_marketing")
            material("purpose.direct_marketing", f"{n.name!r} is now used for direct marketing.")

        os_, ns = o.source, n.source
        for name, label in (("subjects", "kinds of subject"), ("jurisdictions", "jurisdictions")):
            was, now = set(getattr(os_, name)), set(getattr(ns, name))
            widened = bool(was) and (not now or bool(now - was))  # empty means all
            if widened:
                handled.add(name)
                extra = sorted(now - was) if now else ["all"]
                material(
                    f"purpose.{name}_added",
                    f"{n.name!r} now applies to more {label}: " + ", ".join(extra) + ".",
                    added=extra,
                )
        new_channels = sorted(set(ns.channels) - set(os_.channels))
        if new_channels and os_.channels:
            handled.add("channels")
            material(
                "purpose.channels_added",
                f"{n.name!r} now also reaches people by " + ", ".join(new_channels) + ".",
                added=new_channels,
            )
        if _longer(os_.opt_out_effective, ns.opt_out_effective) and os_.opt_out_effective:
            handled.add("opt_out_effective")
            material(
                "purpose.opt_out_slower",
                f"An opt-out of {n.name!r} may now take {ns.opt_out_effective} "
                f"instead of {os_.opt_out_effective}.",
                old=_period_text(os_.opt_out_effective),
                new=_period_text(ns.opt_out_effective),
            )

        rest = [f for f in _changed_fields(os_, ns) if f not in handled]
        if rest:
            wording = set(rest) <= {"name", "description"}
            minor(
                "purpose.wording" if wording else "purpose.changed",
                f"{n.name!r}: " + ", ".join(rest) + " changed.",
                fields=rest,
            )

    # -- recipients
    def recipient_purposes(self, r: CompiledRecipient) -> set[str]:
        """The purposes whose data a recipient receives (all users of its data if unsaid)."""
        if r.purposes:
            return set(r.purposes)
        return self.purposes_using(r.categories)

    def recipients(self) -> None:
        o, n = self.old.recipients, self.new.recipients
        for key in sorted(set(o) - set(n)):
            r = o[key]
            self.add(
                "recipient.removed",
                False,
                f"recipients.{key}",
                f"Data no longer goes to {r.source.name}.",
                purposes=r.purposes,
                categories=r.categories,
            )
        for key in sorted(set(n) - set(o)):
            r = n[key]
            self.add(
                "recipient.added",
                True,
                f"recipients.{key}",
                f"Data now goes to {r.source.name} ({r.source.role}"
                + (f", {r.source.country}" if r.source.country else "")
                + ").",
                purposes=self.recipient_purposes(r),
                categories=r.categories,
                role=str(r.source.role),
                country=r.source.country,
            )
        for key in sorted(set(o) & set(n)):
            self.recipient(key, o[key], n[key])

    def recipient(self, key: str, o: CompiledRecipient, n: CompiledRecipient) -> None:
        subject = f"recipients.{key}"
        a, b = o.source, n.source
        name = b.name
        handled: set[str] = set()
        affected = self.recipient_purposes(n)

        def material(
            kind: str,
            summary: str,
            cats: Iterable[str] = n.categories,
            purposes: Iterable[str] = affected,
            **details: Any,
        ) -> None:
            self.add(kind, True, subject, summary, purposes=purposes, categories=cats, **details)

        gained = sorted(
            c for c in n.categories if not any(is_within(c, d) for d in a.categories)
        )
        if a.categories and not b.categories:
            # No list any more: it receives whatever its purposes use.
            gained = sorted(
                c
                for p in affected
                for c in self.new.purposes[p].categories
                if not any(is_within(c, d) for d in a.categories)
            )
        if gained and a.categories:
            material(
                "recipient.categories_added",
                f"{name} now also receives " + ", ".join(gained) + ".",
                gained,
                added=gained,
            )
        if set(a.categories) != set(b.categories):
            handled.add("categories")
            lost = sorted(o.categories - n.categories)
            if lost and not gained:
                self.add(
                    "recipient.categories_removed",
                    False,
                    subject,
                    f"{name} no longer receives " + ", ".join(lost) + ".",
                    purposes=affected,
                    categories=lost,
                )

        new_purposes = sorted(set(b.purposes) - set(a.purposes))
        if new_purposes or (a.purposes and not b.purposes):
            material(
                "recipient.purposes_added",
                f"{name} now receives data for " + (", ".join(new_purposes) or "every purpose") + ".",
                purposes=new_purposes or affected,  # the new ones are what need acceptance
                purposes_added=new_purposes,
            )
        if set(a.purposes) != set(b.purposes):
            handled.add("purposes")

        for flag, what in (("sale", "sold"), ("share", "shared for cross-context advertising")):
            if getattr(b, flag) and not getattr(a, flag):
                handled.add(flag)
                material(f"recipient.{flag}", f"Data given to {name} is now {what}.")
        if _FORM_RANK[b.form] > _FORM_RANK[a.form]:
            handled.add("form")
            material(
                "recipient.form_identifying",
                f"{name} now receives data in {b.form} form instead of {a.form}.",
                old=str(a.form),
                new=str(b.form),
            )
        if (
            b.min_group is not None
            and a.min_group is not None
            and b.min_group < a.min_group
        ):
            handled.add("min_group")
            material(
                "recipient.min_group_lowered",
                f"Aggregates given to {name} may now cover groups of {b.min_group} "
                f"instead of {a.min_group}.",
            )
        # Loosened: to "always", or from one circumstance to another; "always" to a
        # circumstance is a tightening and falls through to the minor changes.
        if a.condition != b.condition and a.condition not in _ALWAYS:
            handled.add("condition")
            material(
                "recipient.condition_loosened",
                f"Data now goes to {name} "
                + ("always" if b.condition in _ALWAYS else f"on {b.condition}")
                + f", not only on {a.condition}.",
                old=a.condition,
                new=b.condition,
            )
        if (a.country or "").upper() != (b.country or "").upper() and b.country:
            handled.add("country")
            material(
                "recipient.country_changed",
                f"{name} now receives data in {b.country.upper()}"
                + (f" instead of {a.country.upper()}." if a.country else "."),
                old=a.country,
                new=b.country,
            )
        if a.opt_out and not b.opt_out:
            handled.add("opt_out")
            material("recipient.opt_out_removed", f"People can no longer opt out of sharing with {name}.")
        if a.bound_by_policy and not b.bound_by_policy:
            handled.add("bound_by_policy")
            material(
                "recipient.unbound",
                f"{name} is no longer bound to use the data only for this policy's purposes.",
            )
        if b.direct_marketing and not a.direct_marketing:
            handled.add("direct_marketing")
            material("recipient.direct_marketing", f"{name} may now use the data for its own marketing.")
        if a.role != b.role and b.role != "processor":
            handled.add("role")
            material(
                "recipient.role_changed",
                f"{name} is now a {b.role} instead of a {a.role}.",
                old=str(a.role),
                new=str(b.role),
            )
        rest = [f for f in _changed_fields(a, b) if f not in handled]
        if rest:
            wording = set(rest) <= {"name", "description", "address", "privacy_policy", "webhook"}
            self.add(
                "recipient.wording" if wording else "recipient.changed",
                False,
                subject,
                f"{name}: " + ", ".join(rest) + " changed.",
                purposes=affected,
                categories=n.categories,
                fields=rest,
            )

    # -- retention
    def rule_scope(self, cp: CompiledPolicy, rule_key: str) -> set[str]:
        return {c for c, rules in cp.retention_by_category.items() if rule_key in rules}

    def retention(self) -> None:
        o, n = self.old.retention, self.new.retention
        explained: set[str] = set()  # categories whose longer retention is already reported
        for key in sorted(set(o) - set(n)):
            self.add(
                "retention.removed",
                False,
                f"retention.{key}",
                f"Retention rule {key!r} ({_retention_text(o[key])}) removed.",
                categories=self.rule_scope(self.old, key),
            )
        for key in sorted(set(n) - set(o)):
            self.add(
                "retention.added",
                False,
                f"retention.{key}",
                f"New retention rule {key!r}: {_retention_text(n[key])}.",
                categories=self.rule_scope(self.new, key),
            )
        for key in sorted(set(o) & set(n)):
            explained |= self.retention_rule(key, o[key], n[key])
        self.retention_by_category(explained)

    def retention_rule(self, key: str, a: RetentionRule, b: RetentionRule) -> set[str]:
        subject = f"retention.{key}"
        scope = self.rule_scope(self.new, key) & self.rule_scope(self.old, key)
        users = self.purposes_using(scope)
        handled: set[str] = set()
        explained: set[str] = set()
        later = _TRIGGER_RANK[b.trigger] > _TRIGGER_RANK[a.trigger]
        longer = _days(b.period) > _days(a.period)  # no period: ends at the trigger itself
        if later or longer:
            handled |= {"trigger", "period"}
            explained |= scope
            self.add(
                "retention.longer",
                True,
                subject,
                f"Data under {key!r} is now kept {_retention_text(b)} instead of {_retention_text(a)}.",
                purposes=users,
                categories=scope,
                old=_retention_text(a),
                new=_retention_text(b),
            )
        elif a.trigger != b.trigger or _period_text(a.period) != _period_text(b.period):
            handled |= {"trigger", "period"}
            self.add(
                "retention.shorter",
                False,
                subject,
                f"Data under {key!r} is now kept {_retention_text(b)} instead of {_retention_text(a)}.",
                categories=scope,
                old=_retention_text(a),
                new=_retention_text(b),
            )
        la, lb = a.legal_minimum, b.legal_minimum
        if lb is not None and (la is None or lb.period.approx_days() > la.period.approx_days()):
            handled.add("legal_minimum")
            explained |= scope
            self.add(
                "retention.legal_minimum_longer",
                True,
                subject,
                f"Data under {key!r} is now kept at least {lb.period} ({lb.reason})"
                + (f" instead of {la.period}." if la else ", even against erasure."),
                purposes=users,
                categories=scope,
                old=_period_text(la.period) if la else None,
                new=str(lb.period),
            )
        if a.action in _REMOVING and b.action == RetentionAction.truncate:
            handled.add("action")
            explained |= scope
            self.add(
                "retention.truncate_instead_of_delete",
                True,
                subject,
                f"Data under {key!r} is now truncated and kept instead of deleted.",
                purposes=users,
                categories=scope,
            )
        rest = [f for f in _changed_fields(a, b) if f not in handled]
        if rest:
            self.add(
                "retention.changed",
                False,
                subject,
                f"Retention rule {key!r}: " + ", ".join(rest) + " changed.",
                categories=scope,
                fields=rest,
            )
        return explained

    def retention_by_category(self, explained: set[str]) -> None:
        """Data moved to a longer rule, or left without any rule, is kept longer too."""
        o, n = self.old, self.new
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        unbounded: list[str] = []
        for c in sorted(o.categories & n.categories):
            if c in explained:
                continue
            ra = [o.retention[k] for k in o.retention_by_category.get(c, ())]
            rb = [n.retention[k] for k in n.retention_by_category.get(c, ())]
            if not ra:
                continue
            if not rb:
                unbounded.append(c)
                continue
            if _any_longer(_span(ra), _span(rb)):
                key = (o.retention_by_category[c], n.retention_by_category[c])
                groups.setdefault(key, []).append(c)
        for (before, after), cats in sorted(groups.items()):
            self.add(
                "retention.longer",
                True,
                "retention." + ",".join(after),
                ", ".join(cats)
                + f" now kept under {', '.join(after)} instead of {', '.join(before)}, "
                "which keeps it longer.",
                purposes=self.purposes_using(cats),
                categories=cats,
                old_rules=list(before),
                new_rules=list(after),
            )
        if unbounded:
            self.add(
                "retention.unbounded",
                True,
                "retention",
                ", ".join(unbounded) + " no longer has a retention rule (no limit is promised).",
                purposes=self.purposes_using(unbounded),
                categories=unbounded,
            )

    def backups(self) -> None:
        a, b = self.old.policy.backups, self.new.policy.backups
        if a == b:
            return
        if b is not None and (a is None or b.retention.approx_days() > a.retention.approx_days()):
            self.add(
                "backups.longer",
                True,
                "backups",
                f"Backups are now kept {b.retention}"
                + (f" instead of {a.retention}." if a else "."),
                categories=self.new.categories,
                old=str(a.retention) if a else None,
                new=str(b.retention),
            )
        else:
            self.add("backups.changed", False, "backups", "Backup retention changed.")

    # -- exemptions, children, cookies, visibility
    def exemptions(self) -> None:
        o, n = self.old.exemptions, self.new.exemptions
        for key in sorted(set(o) - set(n)):
            self.add(
                "exemption.removed", False, f"exemptions.{key}", f"Exemption {o[key].name!r} removed."
            )
        for key in sorted(set(n) - set(o)):
            e = n[key]
            self.add(
                "exemption.added",
                True,
                f"exemptions.{key}",
                f"New exemption {e.name!r}: " + ", ".join(str(s) for s in e.suspends)
                + " requests may be refused for it.",
                categories=self.new.categories_within(e.categories) if e.categories else (),
                suspends=[str(s) for s in e.suspends],
            )
        for key in sorted(set(o) & set(n)):
            a, b = o[key], n[key]
            more_cats = bool(set(b.categories) - set(a.categories)) and bool(a.categories)
            widened = more_cats or (bool(a.categories) and not b.categories)
            more_suspends = sorted(str(s) for s in set(b.suspends) - set(a.suspends))
            if widened or more_suspends:
                self.add(
                    "exemption.widened",
                    True,
                    f"exemptions.{key}",
                    f"Exemption {b.name!r} now covers more data or more requests.",
                    categories=self.new.categories_within(b.categories) if b.categories else (),
                    suspends_added=more_suspends,
                )
            elif _changed_fields(a, b):
                self.add(
                    "exemption.changed",
                    False,
                    f"exemptions.{key}",
                    f"Exemption {b.name!r} changed.",
                    fields=_changed_fields(a, b),
                )

    def children(self) -> None:
        a, b = self.old.policy.children, self.new.policy.children
        if a == b:
            return
        if a is not None and b is None:
            self.add(
                "children.removed",
                True,
                "children",
                "The rules protecting children's data were removed.",
            )
            return
        if a is None or b is None:
            self.add("children.added", False, "children", "Rules protecting children's data added.")
            return
        weaker = []
        if a.at_signup == "refuse" and b.at_signup != "refuse":
            weaker.append(f"sign-up by a child: {a.at_signup} -> {b.at_signup}")
        if a.on_discovery == "delete_account" and b.on_discovery != "delete_account":
            weaker.append(f"child discovered: {a.on_discovery} -> {b.on_discovery}")
        if (not a.categories and b.categories) or (
            a.categories and b.categories and set(a.categories) - set(b.categories)
        ):
            weaker.append("fewer categories are never collected from children")
        if weaker:
            self.add("children.weakened", True, "children", "; ".join(weaker) + ".", changes=weaker)
        rest = [
            f
            for f in _changed_fields(a, b)
            if f != "minimum_age" and not (weaker and f in ("at_signup", "on_discovery", "categories"))
        ]
        if rest:
            self.add(
                "children.changed",
                False,
                "children",
                "Children rules changed: " + ", ".join(rest) + ".",
                fields=rest,
            )

    def cookie_modes(self, cp: CompiledPolicy, cookie: Cookie) -> dict[str, ConsentMode]:
        if cookie.category == CookieCategory.strictly_necessary:
            return dict.fromkeys([*cp.jurisdictions, "*"], ConsentMode.notice_only)
        out: dict[str, ConsentMode] = {}
        for j in [*cp.jurisdictions, "*"]:
            explicit = cookie.consent.get(j) or cookie.consent.get("*")
            juris = cp.jurisdictions.get(j)
            out[j] = explicit or (juris.default_consent if juris else ConsentMode.opt_in)
        return out

    def cookies(self) -> None:
        o = {c.name: c for c in self.old.policy.cookies}
        n = {c.name: c for c in self.new.policy.cookies}
        for name in sorted(set(o) - set(n)):
            self.add("cookie.removed", False, f"cookies.{name}", f"Cookie {name!r} removed.")
        for name in sorted(set(n) - set(o)):
            c = n[name]
            modes = self.cookie_modes(self.new, c)
            needs_opt_in = all(m == ConsentMode.opt_in for m in modes.values())
            necessary = c.category == CookieCategory.strictly_necessary
            material = not (needs_opt_in or necessary)
            why = (
                "strictly necessary"
                if necessary
                else "asks first"
                if needs_opt_in
                else "set without opt-in"
            )
            self.add(
                "cookie.added",
                material,
                f"cookies.{name}",
                f"New {c.category} {c.kind} {name!r} ({why}).",
                purposes=[c.purpose] if c.purpose and material else (),
                category=str(c.category),
            )
        for name in sorted(set(o) & set(n)):
            a, b = o[name], n[name]
            if a == b:
                continue
            ma, mb = self.cookie_modes(self.old, a), self.cookie_modes(self.new, b)
            weaker = sorted(j for j in set(ma) & set(mb) if _CONSENT_RANK[mb[j]] > _CONSENT_RANK[ma[j]])
            reasons = []
            if weaker:
                reasons.append("asks for less consent in " + ", ".join(weaker))
            if not b.lifetime.is_session and (
                a.lifetime.is_session or b.lifetime.approx_days() > a.lifetime.approx_days()
            ):
                reasons.append(f"lasts {b.lifetime} instead of {a.lifetime}")
            if a.gpc == "opt_out" and b.gpc == "none":
                reasons.append("no longer honours Global Privacy Control")
            if reasons:
                self.add(
                    "cookie.weakened",
                    True,
                    f"cookies.{name}",
                    f"Cookie {name!r} " + "; ".join(reasons) + ".",
                    purposes=[b.purpose] if b.purpose else (),
                    reasons=reasons,
                )
            else:
                self.add(
                    "cookie.changed",
                    False,
                    f"cookies.{name}",
                    f"Cookie {name!r} changed: " + ", ".join(_changed_fields(a, b)) + ".",
                    fields=_changed_fields(a, b),
                )

    def visibility(self) -> None:
        o = {tuple(sorted(v.categories)): v for v in self.old.policy.visibility}
        n = {tuple(sorted(v.categories)): v for v in self.new.policy.visibility}
        for key in sorted(set(o) & set(n)):
            a, b = o[key], n[key]
            if a == b:
                continue
            reasons = []
            if _VISIBILITY_RANK[b.default] > _VISIBILITY_RANK[a.default]:
                reasons.append(f"visible to {b.default} by default instead of {a.default}")
            if a.settable and not b.settable:
                reasons.append("visibility can no longer be changed by the person")
            if b.searchable and not a.searchable:
                reasons.append("now searchable")
            subject = "visibility." + ",".join(key)
            cats = self.new.categories_within(key)
            if reasons:
                self.add(
                    "visibility.widened",
                    True,
                    subject,
                    ", ".join(key) + ": " + "; ".join(reasons) + ".",
                    purposes=self.purposes_using(cats),
                    categories=cats,
                    reasons=reasons,
                )
            else:
                self.add(
                    "visibility.changed",
                    False,
                    subject,
                    "Visibility of " + ", ".join(key) + " changed.",
                )
        for key in sorted(set(o) ^ set(n)):
            self.add(
                "visibility.added" if key in n else "visibility.removed",
                False,
                "visibility." + ",".join(key),
                "Visibility rule for " + ", ".join(key) + (" added." if key in n else " removed."),
            )

    # -- the remaining sections: reported, never material on their own
    def simple_sections(self) -> None:
        for section in ("activities", "screening"):
            a = _dump(getattr(self.old.policy, section))
            b = _dump(getattr(self.new.policy, section))
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict) and section == "activities":
                for key in sorted(set(a) | set(b)):
                    if a.get(key) != b.get(key):
                        state = "added" if key not in a else "removed" if key not in b else "changed"
                        self.add(
                            f"activity.{state}",
                            False,
                            f"activities.{key}",
                            f"Activity {key!r} {state}.",
                        )
            else:
                self.add(f"{section}.changed", False, section, f"The {section} section changed.")

    def security(self) -> None:
        a = {s.measure: s for s in self.old.policy.security}
        b = {s.measure: s for s in self.new.policy.security}
        gone = sorted(set(a) - set(b))
        if gone:
            self.add(
                "security.removed",
                True,
                "security",
                "Security measures withdrawn: " + ", ".join(gone) + ".",
                removed=gone,
            )
        added = sorted(set(b) - set(a))
        changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
        if added or changed:
            self.add(
                "security.changed",
                False,
                "security",
                "Security measures added or reworded: " + ", ".join(added + changed) + ".",
            )

    def breaches(self) -> None:
        a, b = self.old.policy.breaches, self.new.policy.breaches
        if a == b:
            return
        if b is None:
            self.add("breaches.removed", True, "breaches", "The breach notification promise was removed.")
            return
        if a is None:
            self.add("breaches.added", False, "breaches", "Breach notification promise added.")
            return
        reasons = []
        if b.authority_within.approx_days() > a.authority_within.approx_days():
            reasons.append(f"authority told within {b.authority_within} instead of {a.authority_within}")
        if _NOTIFY_RANK[b.notify_subjects] > _NOTIFY_RANK[a.notify_subjects]:
            reasons.append(f"people told {b.notify_subjects} instead of {a.notify_subjects}")
        if a.monitoring and not b.monitoring:
            reasons.append("no breach monitoring")
        if reasons:
            self.add("breaches.weakened", True, "breaches", "; ".join(reasons).capitalize() + ".")
        else:
            self.add("breaches.changed", False, "breaches", "Breach handling changed.")

    def datastores(self) -> None:
        a = {d.fides_key: _dump(d) for d in self.old.policy.datastores}
        b = {d.fides_key: _dump(d) for d in self.new.policy.datastores}
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            state = "added" if key not in a else "removed" if key not in b else "changed"
            # New data in a datastore shows as a category change; the layout is not a promise.
            self.add(
                f"datastore.{state}",
                False,
                f"datastores.{key}",
                f"Datastore {key!r} {state}.",
            )


def _dump_list(items: Iterable[Any]) -> list[Any]:
    return [_dump(i) for i in items]


def _span(rules: list[RetentionRule]) -> tuple[int, float, float]:
    """The longest trigger, period and legal minimum among rules covering one category."""
    return (
        max(_TRIGGER_RANK[r.trigger] for r in rules),
        max(_days(r.period) for r in rules),
        max((r.legal_minimum.period.approx_days() if r.legal_minimum else 0.0) for r in rules),
    )


def _any_longer(a: tuple[int, float, float], b: tuple[int, float, float]) -> bool:
    return any(y > x for x, y in zip(a, b, strict=True))


__all__ = ["Change", "PolicyDiff", "diff_policies"]

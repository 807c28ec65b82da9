"""Cross-reference and meaning checks on a parsed policy.

The schema says what shape a policy has; these checks say whether it makes sense:
taxonomy keys exist, everything named is declared, transfers are safeguarded, every
category has a retention rule, datastore references resolve and do not loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from fiduciary.policy.model import Basis, Dataset, DatasetField, Masking, Policy, Transfer
from fiduciary.policy.problems import Problem
from fiduciary.policy.source import DataPath, SourceMap
from fiduciary.policy.taxonomy import known_root, related, suggest, taxonomy

# EEA members plus countries with an EU adequacy decision (Art. 45). A recipient in one of
# these needs no further transfer mechanism.
EEA = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
    ]
)
# fideslang's DATA_TYPE_NAMES (a trailing [] marks an array); dates travel as strings.
DATA_TYPES = frozenset({"string", "integer", "float", "boolean", "object_id", "object"})
MASKING = [m.value for m in Masking]
ADEQUATE = frozenset(["AD", "AR", "CA", "FO", "GG", "IL", "IM", "JP", "JE", "NZ", "KR", "CH", "GB", "UY"])


class _Checker:
    def __init__(self, policy: Policy, smap: SourceMap) -> None:
        self.p = policy
        self.smap = smap
        self.problems: list[Problem] = []

    # -- helpers
    def error(
        self,
        code: str,
        message: str,
        path: DataPath,
        value: object = None,
        suggestion: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        pos = self.smap.key(path) if key else self.smap.value(path)
        self.problems.append(Problem(code, message, pos, path, value, suggestion))

    def warn(self, code: str, message: str, path: DataPath, suggestion: str | None = None) -> None:
        pos = self.smap.value(path)
        self.problems.append(Problem(code, message, pos, path, None, suggestion, "warning"))

    def did_you_mean(self, value: str, candidates: Iterable[str]) -> str | None:
        near = suggest(value, candidates)
        return f"did you mean {near[0]!r}?" if near else None

    # -- checks
    def run(self) -> list[Problem]:
        self.check_categories()
        self.check_subjects()
        self.check_jurisdiction_refs()
        self.check_purposes()
        self.check_recipients()
        self.check_retention()
        self.check_exemptions()
        self.check_children()
        self.check_cookies()
        self.check_visibility()
        self.check_activities()
        self.check_datastores()
        self.check_changelog()
        self.check_todo()
        return self.problems

    def check_categories(self) -> None:
        tax = taxonomy().categories
        declared = set(self.p.categories)
        for key in self.p.categories:
            path = ("categories", key)
            if key in tax:
                continue
            root = known_root(key, "category")
            parent = key.rsplit(".", 1)[0] if "." in key else None
            info = self.p.categories[key]
            if root is not None and parent in (tax.keys() | declared) and not (info and info.name):
                # A custom child must say what it is; a bare unknown key is most often a typo.
                near = suggest(key, tax)
                self.error(
                    "taxonomy.unknown_category",
                    f"{key!r} is not a fideslang data category; a custom category below "
                    f"{parent!r} needs a name",
                    path,
                    key,
                    f"did you mean {near[0]!r}?" if near else "add name: ... to declare it",
                    key=True,
                )
                continue
            if root is None or (parent not in tax and parent not in declared):
                self.error(
                    "taxonomy.unknown_category",
                    f"{key!r} is not a fideslang data category"
                    + (" nor a child of a declared one" if root else ""),
                    path,
                    key,
                    self.did_you_mean(key, [*tax, *(d for d in declared if d != key)]),
                    key=True,
                )

    def category_ref(self, value: str, path: DataPath) -> None:
        """A category named elsewhere must be declared (or be related to one declared)."""
        declared = self.p.categories
        if value in declared or any(related(value, d) for d in declared):
            return
        tax = taxonomy().categories
        if value not in tax and known_root(value, "category") is None:
            self.error(
                "taxonomy.unknown_category",
                f"{value!r} is not a fideslang data category",
                path,
                value,
                self.did_you_mean(value, list(tax)),
            )
            return
        self.error(
            "ref.undeclared_category",
            f"category {value!r} is used here but not declared under 'categories'",
            path,
            value,
            self.did_you_mean(value, declared) or f"add {value!r} to 'categories'",
        )

    def subject_ref(self, value: str, path: DataPath) -> None:
        if value not in self.p.subjects:
            self.error(
                "ref.unknown_subject",
                f"subject {value!r} is not declared under 'subjects'",
                path,
                value,
                self.did_you_mean(value, self.p.subjects),
            )

    def purpose_ref(self, value: str, path: DataPath) -> None:
        if value not in self.p.purposes:
            self.error(
                "ref.unknown_purpose",
                f"purpose {value!r} is not declared under 'purposes'",
                path,
                value,
                self.did_you_mean(value, self.p.purposes),
            )

    def jurisdiction_ref(self, value: str, path: DataPath, *, key: bool = False) -> None:
        if value != "*" and value not in self.p.jurisdictions:
            self.error(
                "ref.unknown_jurisdiction",
                f"jurisdiction {value!r} is not declared under 'jurisdictions'",
                path,
                value,
                self.did_you_mean(value, [*self.p.jurisdictions, "*"]),
                key=key,
            )

    def check_subjects(self) -> None:
        tax = taxonomy().subjects
        for key, subject in self.p.subjects.items():
            if subject.fideslang and subject.fideslang not in tax:
                self.error(
                    "taxonomy.unknown_subject",
                    f"{subject.fideslang!r} is not a fideslang data subject",
                    ("subjects", key, "fideslang"),
                    subject.fideslang,
                    self.did_you_mean(subject.fideslang, tax),
                )

    def check_jurisdiction_refs(self) -> None:
        if not self.p.jurisdictions:
            self.error("schema.missing", "a policy needs at least one jurisdiction", ("jurisdictions",))

    def check_purposes(self) -> None:
        uses = taxonomy().uses
        for key, purpose in self.p.purposes.items():
            base: DataPath = ("purposes", key)
            if purpose.use not in uses:
                self.error(
                    "taxonomy.unknown_use",
                    f"{purpose.use!r} is not a fideslang data use",
                    (*base, "use"),
                    purpose.use,
                    self.did_you_mean(purpose.use, uses),
                )
            if not purpose.categories:
                self.error(
                    "purpose.no_categories", "a purpose needs at least one category", (*base, "categories")
                )
            for i, cat in enumerate(purpose.categories):
                self.category_ref(cat, (*base, "categories", i))
            for i, subj in enumerate(purpose.subjects):
                self.subject_ref(subj, (*base, "subjects", i))
            for j in purpose.jurisdictions:
                self.jurisdiction_ref(j, (*base, "jurisdictions", purpose.jurisdictions.index(j)))
            for j in purpose.consent:
                self.jurisdiction_ref(j, (*base, "consent", j), key=True)
            if purpose.essential and purpose.basis == Basis.consent:
                self.error(
                    "purpose.essential_consent",
                    f"purpose {key!r} is based on consent, so it cannot be essential: "
                    "consent can always be withdrawn (GDPR Art. 7(3))",
                    (*base, "essential"),
                    True,
                    "set essential: false, or use basis contract or legal_obligation",
                )
            if purpose.essential and any(m == "opt_in" for m in purpose.consent.values()):
                self.error(
                    "purpose.essential_opt_in",
                    f"purpose {key!r} is essential but asks for opt-in consent",
                    (*base, "consent"),
                    suggestion="an essential purpose cannot be refused; drop the consent modes",
                )
            if purpose.basis == Basis.consent and any(m == "notice_only" for m in purpose.consent.values()):
                self.error(
                    "purpose.consent_notice_only",
                    f"purpose {key!r} is based on consent but is 'notice_only' somewhere; "
                    "consent needs a choice",
                    (*base, "consent"),
                    suggestion="use opt_in (GDPR) or opt_out (CCPA), or another basis",
                )

    def check_recipients(self) -> None:
        eu_law = any(j.law in ("gdpr", "uk_gdpr") for j in self.p.jurisdictions.values())
        for key, rec in self.p.recipients.items():
            base: DataPath = ("recipients", key)
            for i, cat in enumerate(rec.categories):
                self.category_ref(cat, (*base, "categories", i))
            for i, pur in enumerate(rec.purposes):
                self.purpose_ref(pur, (*base, "purposes", i))
            country = (rec.country or "").upper()
            if (
                eu_law
                and country
                and country not in EEA
                and country not in ADEQUATE
                and rec.transfer in (None, Transfer.none_needed)
                and rec.role not in ("other_users", "public")
            ):
                self.error(
                    "transfer.no_mechanism",
                    f"recipient {key!r} is in {country}, outside the EEA, but names no "
                    "transfer mechanism (GDPR Chapter V)",
                    (*base, "country"),
                    country,
                    "add transfer: scc, dpf, adequacy, bcr, consent or contract",
                )
            if rec.min_group is not None and rec.form != "aggregate":
                self.error(
                    "recipient.min_group_not_aggregate",
                    "min_group only applies to recipients with form: aggregate",
                    (*base, "min_group"),
                    rec.min_group,
                )

    def check_retention(self) -> None:
        covered: set[str] = set()
        collections = self.collection_names()
        for key, rule in self.p.retention.items():
            base: DataPath = ("retention", key)
            for i, cat in enumerate(rule.categories):
                self.category_ref(cat, (*base, "categories", i))
                covered.add(cat)
            for i, coll in enumerate(rule.collections):
                if coll not in collections:
                    self.error(
                        "ref.unknown_collection",
                        f"collection {coll!r} is not in any datastore (write datastore.collection)",
                        (*base, "collections", i),
                        coll,
                        self.did_you_mean(coll, collections),
                    )
                else:
                    covered.update(self.collection_categories(coll))
        for cat in self.p.categories:
            if not any(related(cat, c) for c in covered):
                self.warn(
                    "retention.missing",
                    f"category {cat!r} has no retention rule: how long is it kept?",
                    ("categories", cat),
                    "add a rule under 'retention' naming this category",
                )

    def check_exemptions(self) -> None:
        for key, ex in self.p.exemptions.items():
            for i, cat in enumerate(ex.categories):
                self.category_ref(cat, ("exemptions", key, "categories", i))

    def check_children(self) -> None:
        if self.p.children is None:
            return
        for j in self.p.children.minimum_age:
            self.jurisdiction_ref(j, ("children", "minimum_age", j), key=True)
        for i, cat in enumerate(self.p.children.categories):
            self.category_ref(cat, ("children", "categories", i))

    def check_cookies(self) -> None:
        names: dict[str, int] = {}
        for i, cookie in enumerate(self.p.cookies):
            base: DataPath = ("cookies", i)
            if cookie.purpose:
                self.purpose_ref(cookie.purpose, (*base, "purpose"))
            for j in cookie.consent:
                self.jurisdiction_ref(j, (*base, "consent", j), key=True)
            if cookie.name in names:
                self.error(
                    "cookie.duplicate",
                    f"cookie {cookie.name!r} is declared twice (first as cookies[{names[cookie.name]}])",
                    (*base, "name"),
                    cookie.name,
                )
            names.setdefault(cookie.name, i)
            if cookie.category == "strictly_necessary" and any(
                m == "opt_in" for m in cookie.consent.values()
            ):
                self.error(
                    "cookie.necessary_opt_in",
                    f"cookie {cookie.name!r} is strictly necessary, which needs no consent",
                    (*base, "consent"),
                    suggestion="drop the consent modes or choose another category",
                )

    def check_visibility(self) -> None:
        for i, vis in enumerate(self.p.visibility):
            for k, cat in enumerate(vis.categories):
                self.category_ref(cat, ("visibility", i, "categories", k))
            if vis.default not in vis.audiences:
                self.error(
                    "visibility.bad_default",
                    f"default audience {vis.default!r} is not among the audiences",
                    ("visibility", i, "default"),
                    vis.default,
                )

    def check_activities(self) -> None:
        for key, act in self.p.activities.items():
            base: DataPath = ("activities", key)
            for fld in ("mandatory", "voluntary"):
                for i, cat in enumerate(getattr(act, fld)):
                    self.category_ref(cat, (*base, fld, i))
            for i, pur in enumerate(act.purposes):
                self.purpose_ref(pur, (*base, "purposes", i))
            for i, subj in enumerate(act.subjects):
                self.subject_ref(subj, (*base, "subjects", i))
            both = set(act.mandatory) & set(act.voluntary)
            if both:
                self.error(
                    "activity.both",
                    f"{sorted(both)} are listed as both mandatory and voluntary",
                    (*base, "voluntary"),
                )

    # -- datastores
    def collection_names(self) -> list[str]:
        return [f"{d.fides_key}.{c.name}" for d in self.p.datastores for c in d.collections]

    def collection_categories(self, name: str) -> set[str]:
        ds_key, _, coll_name = name.partition(".")
        out: set[str] = set()
        for d in self.p.datastores:
            if d.fides_key != ds_key:
                continue
            for c in d.collections:
                if c.name == coll_name:
                    out.update(c.data_categories or [])
                    for f in _walk_fields(c.fields):
                        out.update(f.data_categories or [])
        return out

    def check_datastores(self) -> None:
        seen: dict[str, int] = {}
        fields: dict[str, set[str]] = {}  # "ds.coll" -> field paths
        for i, ds in enumerate(self.p.datastores):
            if ds.fides_key in seen:
                self.error(
                    "datastore.duplicate",
                    f"datastore {ds.fides_key!r} is declared twice",
                    ("datastores", i, "fides_key"),
                    ds.fides_key,
                )
            seen[ds.fides_key] = i
            for j, coll in enumerate(ds.collections):
                names: set[str] = set()
                for path_parts, fld in _walk_fields_with_path(
                    coll.fields, ("datastores", i, "collections", j)
                ):
                    dotted = ".".join(str(x) for x in path_parts)
                    names.add(dotted)
                    for k, cat in enumerate(fld[1].data_categories or []):
                        self.category_ref(cat, (*fld[0], "data_categories", k))
                    self.check_field_meta(fld[0], fld[1])
                fields[f"{ds.fides_key}.{coll.name}"] = names
        self._check_references(fields)

    def check_field_meta(self, path: DataPath, fld: DatasetField) -> None:
        meta = fld.fides_meta
        if meta is None:
            return
        if meta.data_type is not None:
            base = meta.data_type.removesuffix("[]")
            if base not in DATA_TYPES:
                self.error(
                    "datastore.bad_data_type",
                    f"data_type {meta.data_type!r} is not a fideslang data type",
                    (*path, "fides_meta", "data_type"),
                    meta.data_type,
                    self.did_you_mean(base, DATA_TYPES) or f"use one of: {', '.join(sorted(DATA_TYPES))}",
                )
        override = meta.masking_strategy_override
        if override is not None and override.strategy not in MASKING:
            self.error(
                "datastore.unknown_masking",
                f"masking strategy {override.strategy!r} is not one Fiduciary knows",
                (*path, "fides_meta", "masking_strategy_override", "strategy"),
                override.strategy,
                self.did_you_mean(override.strategy, MASKING) or f"use one of: {', '.join(MASKING)}",
            )

    def _check_references(self, fields: dict[str, set[str]]) -> None:
        edges: dict[str, set[str]] = {name: set() for name in fields}
        for i, ds in enumerate(self.p.datastores):
            for j, coll in enumerate(ds.collections):
                here = f"{ds.fides_key}.{coll.name}"
                for _, (fpath, fld) in _walk_fields_with_path(
                    coll.fields, ("datastores", i, "collections", j)
                ):
                    meta = fld.fides_meta
                    for k, ref in enumerate((meta.references or []) if meta else []):
                        rpath = (*fpath, "fides_meta", "references", k)
                        coll_name, _, field_name = ref.field.partition(".")
                        target = f"{ref.dataset}.{coll_name}"
                        if target not in fields:
                            self.error(
                                "ref.unknown_collection",
                                f"reference to collection {target!r}, which no datastore declares",
                                (*rpath, "field"),
                                ref.field,
                                self.did_you_mean(target, fields),
                            )
                            continue
                        if not field_name or field_name not in fields[target]:
                            self.error(
                                "ref.unknown_field",
                                f"reference to field {field_name!r} of {target!r}, which has no such field",
                                (*rpath, "field"),
                                ref.field,
                                self.did_you_mean(field_name, fields[target]),
                            )
                            continue
                        # direction "from": data flows from the referenced collection to
                        # this one (the other is found first); otherwise both ways for
                        # traversal, but dependency order follows "to".
                        if ref.direction == "from":
                            edges[target].add(here)
                        elif ref.direction == "to":
                            edges[here].add(target)
        cycle = _find_cycle(edges)
        if cycle:
            self.error(
                "datastore.reference_cycle",
                "datastore references form a cycle: " + " -> ".join(cycle),
                _collection_path(self.p.datastores, cycle[0]),
                suggestion="drop a direction or a reference so that traversal has an order",
            )

    def check_changelog(self) -> None:
        versions = [c.version for c in self.p.changelog]
        if self.p.changelog and self.p.version not in versions:
            self.warn(
                "changelog.missing_version",
                f"version {self.p.version!r} has no changelog entry",
                ("version",),
            )
        dup = {v for v in versions if versions.count(v) > 1}
        for v in dup:
            self.error(
                "changelog.duplicate",
                f"version {v!r} appears twice in the changelog",
                ("changelog", versions.index(v), "version"),
                v,
            )

    def check_todo(self) -> None:
        # A draft says what it does not know here; each open item keeps --strict failing.
        for i, item in enumerate(self.p.todo):
            self.warn("todo.open", f"to do: {item}", ("todo", i), "resolve it, then delete the item")


def _walk_fields(fields: list[DatasetField]) -> Iterable[DatasetField]:
    for f in fields:
        yield f
        if f.fields:
            yield from _walk_fields(f.fields)


def _walk_fields_with_path(
    fields: list[DatasetField], base: DataPath, prefix: tuple[str, ...] = ()
) -> Iterable[tuple[tuple[str, ...], tuple[DataPath, DatasetField]]]:
    for i, f in enumerate(fields):
        here = (*base, "fields", i)
        name = (*prefix, f.name)
        yield name, (here, f)
        if f.fields:
            yield from _walk_fields_with_path(f.fields, here, name)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = GREY
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if color.get(m, WHITE) == GREY:
                return [*stack[stack.index(m) :], m]
            if color.get(m, WHITE) == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = BLACK
        return None

    for node in sorted(edges):
        if color[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def _collection_path(datastores: list[Dataset], name: str) -> DataPath:
    ds_key, _, coll = name.partition(".")
    for i, d in enumerate(datastores):
        for j, c in enumerate(d.collections):
            if d.fides_key == ds_key and c.name == coll:
                return ("datastores", i, "collections", j, "name")
    return ("datastores",)


def check_policy(policy: Policy, smap: SourceMap) -> list[Problem]:
    return _Checker(policy, smap).run()

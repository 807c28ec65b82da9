"""`fiduciary disclosures ...`, `fiduciary breach ...` and `fiduciary policy publish`: thin
adapters over ``fid.disclosures``, ``fiduciary.aggregates``, ``fid.breaches`` and
``fiduciary.publish``.

    fiduciary disclosures record paypal payments --category user.financial.paypal_email --subject S1
    fiduciary disclosures record authorities legal_duties --category user.contact.email \\
        --subject S1 --legal-demand --gag court_order --reference "Case 17/2026"
    fiduciary disclosures transparency --since 2026-01-01 --until 2027-01-01 -o report.md
    fiduciary disclosures aggregate statistics_partners site_statistics --rows hits.csv \\
        --group-by country --person visitor --category user.behavior.browsing_history -o stats.csv
    fiduciary breach detect "Backup readable" --nature "..." --category user.contact.email
    fiduciary breach assess <id> --risk high --consequences "..." --measures "..."
    fiduciary breach notice <id> --for authority
    fiduciary policy publish policy.yaml --center-url https://example.com/privacy

This module imports only Typer and Rich at load time: the runtime is imported inside each
command, so mounting it keeps `fiduciary policy check` fast. Exit status 1 when the
library refuses (its message says why), 2 for a usage error.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fiduciary.cli_common import (
    EXIT_REFUSED,
    ActorOpt,
    DatabaseOpt,
    DataDirOpt,
    KeysDatabaseOpt,
    PolicyOpt,
    err,
    moment,
    out,
    store_settings,
)
from fiduciary.cli_common import (
    refused as _refused,
)
from fiduciary.cli_common import (
    usage as _usage,
)

if TYPE_CHECKING:
    from fiduciary.config import Settings
    from fiduciary.core import Fiduciary


disclosures_app = typer.Typer(
    help="The disclosure ledger: record disclosures and legal demands, aggregates, the transparency report.",
    no_args_is_help=True,
)
breach_app = typer.Typer(
    help="The breach register (LAW-10): detect, assess, notify within 72 hours, close.",
    no_args_is_help=True,
)

KeyringOpt = Annotated[
    Path | None, typer.Option("--keyring", help="Keyring file (default: DATA_DIR/keyring.json).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _open(settings: Settings) -> Iterator[Fiduciary]:
    """The runtime over the settings' policy and stores; library refusals exit 1."""
    from fiduciary.aggregates import AggregateError
    from fiduciary.breaches import BreachError
    from fiduciary.core import Fiduciary
    from fiduciary.disclosures import DisclosureError
    from fiduciary.mail import MailError
    from fiduciary.notices import NoticeError
    from fiduciary.policy import PolicyError
    from fiduciary.publish import PublishError

    policy = settings.policy
    if policy is None:
        _usage("no policy: give --policy or set FIDUCIARY_POLICY")
    if not Path(policy).is_file():
        _usage(f"no such policy file: {policy}")
    try:
        fid = Fiduciary.open(policy, settings=settings)
    except PolicyError as exc:
        _refused(f"the policy {policy} has errors: {exc}")
    try:
        yield fid
    except (DisclosureError, AggregateError, BreachError, PublishError, NoticeError, MailError) as exc:
        _refused(str(exc))
    finally:
        fid.close()


def _mailer(settings: Settings) -> Any:
    from fiduciary.mail import Mailer, MailInputError

    try:
        return Mailer.from_settings(settings)
    except MailInputError as exc:
        _usage(str(exc))


def _subject_ids(subjects: list[str] | None, subjects_file: Path | None) -> list[str]:
    ids = list(subjects or [])
    if subjects_file is not None:
        if not subjects_file.is_file():
            _usage(f"no such file: {subjects_file}")
        ids += [
            line.strip() for line in subjects_file.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    return ids


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------- disclosures

SubjectOpt = Annotated[
    list[str] | None, typer.Option("--subject", help="A subject id whose data went out (repeatable).")
]
SubjectsFileOpt = Annotated[
    Path | None, typer.Option("--subjects-file", help="A file of subject ids, one per line.")
]
CategoryOpt = Annotated[
    list[str] | None, typer.Option("--category", help="A category disclosed (repeatable).")
]


@disclosures_app.command("record")
def disclosures_record(
    recipient: Annotated[str, typer.Argument(help="The recipient (a key of the policy).")],
    purpose: Annotated[str, typer.Argument(help="The purpose (a key of the policy).")],
    category: CategoryOpt = None,
    subject: SubjectOpt = None,
    subjects_file: SubjectsFileOpt = None,
    basis: Annotated[
        str | None, typer.Option("--basis", help="The legal ground (default: the purpose's).")
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="When the data went out (default now).")] = None,
    legal_demand: Annotated[
        bool, typer.Option("--legal-demand", help="Made on a legal demand (PLU-9).")
    ] = False,
    gag: Annotated[str | None, typer.Option("--gag", help="law, court_order or emergency.")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="The demand's reference.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Record that data of these subjects went to a recipient.

    Every subject is checked against the policy first; one refusal refuses the whole
    disclosure and nothing is recorded.
    """
    ids = _subject_ids(subject, subjects_file)
    if not category:
        _usage("give --category: what data was disclosed")
    if not ids:
        _usage("give --subject or --subjects-file: whose data was disclosed")
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        d = fid.disclosures.record(
            recipient,
            purpose,
            category,
            ids,
            basis=basis,
            at=moment(at, "--at"),
            legal_demand=legal_demand,
            gag=gag,  # type: ignore[arg-type]  # checked by the ledger
            reference=reference,
            actor=actor,
        )
    if as_json:
        _print_json(d.to_dict())
        return
    out.print(str(d.id))
    told = {"tell": "the people are to be told", "withheld": f"the people are not told ({d.notify_reason})"}
    err.print(
        f"recorded disclosure {d.id}: {d.subjects} subject(s) to {d.recipient} for {d.purpose}"
        + (f"; {told[d.notify]}" if d.notify in told else "")
    )


@disclosures_app.command("list")
def disclosures_list(
    recipient: Annotated[str | None, typer.Option("--recipient")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="routine, legal_demand or aggregate.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Inclusive date.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Exclusive date.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    subject: Annotated[str | None, typer.Option("--subject", help="Only those concerning a subject.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The ledger, oldest first."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        if subject is not None:
            found = fid.disclosures.of_subject(subject)
        else:
            found = fid.disclosures.query(
                recipient=recipient,
                kind=kind,
                since=moment(since, "--since"),
                until=moment(until, "--until"),
                limit=limit,
            )
    if as_json:
        _print_json([d.to_dict() for d in found])
        return
    from rich.table import Table

    t = Table("id", "at", "kind", "recipient", "purpose", "categories", "people", "told")
    for d in found:
        t.add_row(
            str(d.id),
            d.at.strftime("%Y-%m-%d %H:%M"),
            d.kind,
            d.recipient,
            d.purpose,
            ", ".join(d.categories),
            str(d.subjects),
            {"not_applicable": "", "tell": "yes" + (" (sent)" if d.told_at else ""), "withheld": "no"}[
                d.notify
            ],
        )
    out.print(t)


@disclosures_app.command("lift-gag")
def disclosures_lift_gag(
    disclosure_id: Annotated[int, typer.Argument(help="The legal demand's disclosure id.")],
    send: Annotated[bool, typer.Option("--send/--no-send", help="Mail the people now.")] = True,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """The gag on a legal demand no longer holds: tell the people (PLU-9)."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        d = fid.disclosures.lift_gag(disclosure_id, actor=actor)
        out.print(f"disclosure {d.id}: gag lifted; people told: {d.notify}")
        if send and d.notify == "tell":
            r = fid.disclosures.tell(disclosure_id, _mailer(s), actor=actor)
            out.print(f"mailed {r.sent}, no address {r.no_address}, failed {r.failed}, left {r.left}")


@disclosures_app.command("tell")
def disclosures_tell(
    disclosure_id: Annotated[int, typer.Argument(help="The legal demand's disclosure id.")],
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Mail the people a legal demand concerned (when they are to be told)."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        r = fid.disclosures.tell(disclosure_id, _mailer(s), actor=actor)
    out.print(f"mailed {r.sent}, no address {r.no_address}, failed {r.failed}, left {r.left}")


@disclosures_app.command("transparency")
def disclosures_transparency(
    since: Annotated[str, typer.Option("--since", help="First day (inclusive).")],
    until: Annotated[str, typer.Option("--until", help="End (exclusive).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown or json.")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
) -> None:
    """The transparency report of a period: disclosures per recipient, legal demands."""
    if fmt not in ("markdown", "json"):
        _usage(f"--format must be markdown or json, not {fmt!r}")
    start, end = moment(since, "--since"), moment(until, "--until")
    assert start is not None and end is not None
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        report = fid.disclosures.transparency_report(since=start, until=end)
    text = report.to_markdown() if fmt == "markdown" else json.dumps(report.to_dict(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        _usage(f"no such file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            _usage(f"{path}: not JSON ({exc.msg} at line {exc.lineno})")
        if not isinstance(data, list):
            _usage(f"{path}: expected a JSON list of records")
        return data
    rows: list[dict[str, Any]] = []
    for row in csv.DictReader(text.splitlines()):
        rows.append({k: _csv_value(v) for k, v in row.items() if k is not None})
    return rows


def _csv_value(v: str | None) -> object:
    if v is None or v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@disclosures_app.command("aggregate")
def disclosures_aggregate(
    recipient: Annotated[str, typer.Argument(help="An aggregate-only recipient of the policy.")],
    purpose: Annotated[str, typer.Argument(help="The purpose it receives them for.")],
    rows: Annotated[Path, typer.Option("--rows", help="The rows: a CSV file with a header, or a JSON list.")],
    group_by: Annotated[list[str], typer.Option("--group-by", help="A column to group by (repeatable).")],
    category: CategoryOpt = None,
    person: Annotated[str, typer.Option("--person", help="The column naming the person.")] = "subject",
    measure: Annotated[list[str] | None, typer.Option("--measure", help="A numeric column to sum.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the CSV here.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Aggregate statistics for an aggregate-only partner (PUT-8, PLV-5, PLO-6).

    Only groups of at least k people (the recipient's min_group, default 10) are written;
    the export is recorded as a disclosure.
    """
    from fiduciary.aggregates import export_aggregates

    if not category:
        _usage("give --category: the categories the statistics are made from")
    data = _read_rows(rows)
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        export = export_aggregates(
            fid,
            recipient,
            purpose,
            data,
            group_by=group_by,
            categories=category,
            person=person,
            measures=measure or [],
            actor=actor,
        )
    text = export.to_csv()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    err.print(
        f"{len(export.groups)} group(s) of at least {export.k} people released, {export.suppressed} left out"
        + (
            f"; recorded as disclosure {export.disclosure_id}"
            if export.disclosure_id
            else "; nothing disclosed"
        )
    )


# --------------------------------------------------------------------------- breaches


def _breach_text(b: Any) -> str:
    left = b.time_left()
    hours = left.total_seconds() / 3600
    clock = (
        f"authority notified {b.authority_notified_at:%Y-%m-%d %H:%M} UTC"
        if b.authority_notified_at
        else ("not required (risk unlikely)" if not b.authority_notice_required else None)
    )
    if clock is None:
        clock = f"{hours:.1f} h left" if hours >= 0 else f"OVERDUE by {-hours:.1f} h"
    estimate = b.subjects_estimate if b.subjects_estimate is not None else "?"
    return (
        f"{b.id}  {b.status}  risk {b.risk}  {b.title}\n"
        f"  detected {b.detected_at:%Y-%m-%d %H:%M} UTC; "
        f"authority due {b.authority_due_at:%Y-%m-%d %H:%M} UTC: {clock}\n"
        f"  people linked {b.subjects}, estimated {estimate}"
        f"; people to be told: {'yes' if b.subject_notice_required else 'no'}"
        + (f" (told {b.subjects_notified_at:%Y-%m-%d})" if b.subjects_notified_at else "")
    )


@breach_app.command("detect")
def breach_detect(
    title: Annotated[str, typer.Argument(help="A short title (no personal data).")],
    nature: Annotated[str, typer.Option("--nature", help="What happened (no personal data).")],
    detected_at: Annotated[str | None, typer.Option("--detected-at", help="When it became known.")] = None,
    occurred_at: Annotated[str | None, typer.Option("--occurred-at", help="When it happened.")] = None,
    category: CategoryOpt = None,
    subject: SubjectOpt = None,
    subjects_file: SubjectsFileOpt = None,
    subjects_estimate: Annotated[
        int | None, typer.Option("--people", help="Approximate number.", min=0)
    ] = None,
    records_estimate: Annotated[
        int | None, typer.Option("--records", help="Approximate number.", min=0)
    ] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Register a breach: the 72-hour clock starts at --detected-at (default now)."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        b = fid.breaches.detect(
            title,
            nature,
            detected_at=moment(detected_at, "--detected-at"),
            occurred_at=moment(occurred_at, "--occurred-at"),
            categories=category or [],
            subject_ids=_subject_ids(subject, subjects_file),
            subjects_estimate=subjects_estimate,
            records_estimate=records_estimate,
            actor=actor,
        )
    out.print(b.id)
    err.print(_breach_text(b), markup=False)


@breach_app.command("list")
def breach_list(
    status: Annotated[str | None, typer.Option("--status", help="open or closed.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The register, the most recently detected first, with each clock."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        found = fid.breaches.query(status=status)
    if as_json:
        _print_json([b.to_dict() for b in found])
        return
    for b in found:
        out.print(_breach_text(b), markup=False)


@breach_app.command("show")
def breach_show(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One breach with its events."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        b = fid.breaches.get(breach_id)
    if as_json:
        _print_json(b.to_dict())
        return
    out.print(_breach_text(b), markup=False)
    for e in b.events:
        out.print(f"  {e.at:%Y-%m-%d %H:%M} {e.kind} by {e.actor}", markup=False)


@breach_app.command("assess")
def breach_assess(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    risk: Annotated[str, typer.Option("--risk", help="unlikely, risk or high.")],
    consequences: Annotated[str | None, typer.Option("--consequences", help="Likely consequences.")] = None,
    measures: Annotated[str | None, typer.Option("--measures", help="Measures taken or proposed.")] = None,
    advice: Annotated[str | None, typer.Option("--advice", help="What people can do.")] = None,
    category: CategoryOpt = None,
    subject: SubjectOpt = None,
    subjects_file: SubjectsFileOpt = None,
    subjects_estimate: Annotated[int | None, typer.Option("--people", min=0)] = None,
    records_estimate: Annotated[int | None, typer.Option("--records", min=0)] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Assess the risk to people; add the data and people found affected since."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        b = fid.breaches.assess(
            breach_id,
            risk=risk,  # type: ignore[arg-type]  # checked by the register
            consequences=consequences,
            measures=measures,
            advice=advice,
            categories=category or [],
            subject_ids=_subject_ids(subject, subjects_file),
            subjects_estimate=subjects_estimate,
            records_estimate=records_estimate,
            actor=actor,
        )
    out.print(_breach_text(b), markup=False)


@breach_app.command("notice")
def breach_notice(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    to: Annotated[str, typer.Option("--for", help="authority or subjects.")] = "authority",
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
) -> None:
    """Print the drafted notice for the authority (Art. 33) or for the people (Art. 34)."""
    if to not in ("authority", "subjects"):
        _usage(f"--for must be authority or subjects, not {to!r}")
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        letter = (
            fid.breaches.authority_notice(breach_id)
            if to == "authority"
            else fid.breaches.subject_notice(breach_id)
        )
    sys.stdout.write(f"Subject: {letter.subject}\n\n{letter.text}")


@breach_app.command("notify-authority")
def breach_notify_authority(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    at: Annotated[str | None, typer.Option("--at", help="When it was notified (default now).")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="The authority's reference.")] = None,
    delay_reason: Annotated[
        str | None, typer.Option("--delay-reason", help="Why later than due (required then).")
    ] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Record that the supervisory authority was notified."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        b = fid.breaches.notify_authority(
            breach_id, at=moment(at, "--at"), reference=reference, delay_reason=delay_reason, actor=actor
        )
    out.print(_breach_text(b), markup=False)


@breach_app.command("notify-subjects")
def breach_notify_subjects(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    force: Annotated[
        bool, typer.Option("--force", help="Even where the policy does not ask for it.")
    ] = False,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Mail the notice to every person linked to the breach, in batches."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        r = fid.breaches.notify_subjects(breach_id, _mailer(s), force=force, actor=actor)
    out.print(f"mailed {r.sent}, no address {r.no_address}, failed {r.failed}, left {r.left}")


@breach_app.command("close")
def breach_close(
    breach_id: Annotated[str, typer.Argument(help="The breach's id.")],
    summary: Annotated[str | None, typer.Option("--summary", help="How it ended (no personal data).")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Close a breach (it stays in the register)."""
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        b = fid.breaches.close(breach_id, summary=summary, actor=actor)
    out.print(_breach_text(b), markup=False)


@breach_app.command("overdue")
def breach_overdue(
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
) -> None:
    """Open breaches whose authority notification is late.

    Exit 1 when there is one, for a monitoring job.
    """
    s = store_settings(data_dir, database_url, keys_database_url, keyring, policy)
    with _open(s) as fid:
        late = fid.breaches.overdue()
    for b in late:
        out.print(_breach_text(b), markup=False)
    if late:
        raise typer.Exit(EXIT_REFUSED)
    out.print("no breach is overdue")


# --------------------------------------------------------------------------- policy publish


def policy_publish(
    file: Annotated[Path, typer.Argument(help="The new policy.yaml.", show_default=False)],
    email: Annotated[
        bool | None,
        typer.Option(
            "--email/--no-email", help="Tell the people concerned by mail (default: as the policy says)."
        ),
    ] = None,
    send: Annotated[bool, typer.Option("--send/--no-send", help="Send the queued notices now.")] = True,
    center_url: Annotated[
        str | None, typer.Option("--center-url", help="Where people review and accept (privacy center URL).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=5000)] = 500,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    keyring: KeyringOpt = None,
    actor: ActorOpt = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Publish a new version of the policy and announce it (PUT-3).

    Stores the version, compares it with the last published one, marks the materially
    changed purposes, and announces it to the people whose data predates it: queued, then
    mailed in batches. Publishing again resumes the mailing.
    """
    if not file.is_file():
        _usage(f"no such file: {file}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fiduciary.publish import publish, send_notices

    s = store_settings(data_dir, database_url, keys_database_url, keyring, file)
    with _open(s) as fid:
        pub = publish(fid, email=email, actor=actor)
        delivery = None
        if send and pub.email:
            from fiduciary.notices import QUEUED, counts

            todo = counts(fid, pub.topic).get(QUEUED, 0)
            with Progress(
                TextColumn("notices"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                disable=as_json or not todo,
            ) as bar:
                task = bar.add_task("notices", total=todo)
                delivery = send_notices(
                    fid,
                    _mailer(s),
                    pub,
                    center_url=center_url,
                    actor=actor,
                    batch_size=batch_size,
                    progress=lambda n: bar.update(task, completed=n),
                )
    if as_json:
        _print_json({**pub.to_dict(), "delivery": delivery.to_dict() if delivery else None})
        return
    if pub.previous is None:
        out.print(f"published version {pub.version} (the first)")
    elif pub.diff is not None:
        out.print(pub.diff.to_text(), markup=False)
        state = "published" if pub.new else "already published:"
        out.print(f"{state} version {pub.version} (after {pub.previous})")
    if pub.material_purposes:
        needs = "need the acceptance of" if pub.acceptance_needed else "apply after notice to"
        out.print(
            f"materially changed purposes ({needs} people whose data predates it): "
            + ", ".join(pub.material_purposes)
        )
    out.print(
        f"notices queued: {pub.notices}" + ("" if pub.email else " (no mail: the policy announces otherwise)")
    )
    if delivery is not None:
        out.print(
            f"mailed {delivery.sent}, no address {delivery.no_address}, failed {delivery.failed}, "
            f"left {delivery.left}"
        )

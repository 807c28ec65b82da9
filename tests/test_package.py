"""The access package: a ZIP with data.json, one CSV per collection and an HTML report.

Built from hand-made rows for examples/social and examples/filelocker (no database: the
connectors' job is tested elsewhere). The package must hold everything, say why, to whom
and for how long for every category held, read well as HTML, redact other people's data
in shared rows and nothing of the requester's own, and be the same bytes for the same
input.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from fiduciary.examples import example_policy
from fiduciary.policy import CompiledPolicy, compile_policy, load_policy, load_policy_text
from fiduciary.policy.model import RequestType
from fiduciary.requests.package import (
    FORMAT,
    HASH_WITHHELD,
    REDACTED,
    PackageError,
    PackageRequest,
    build_access_package,
)

ME, OTHER, THIRD = 7, 9, 12
AT = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
SECTIONS = [
    "What we hold about you",
    "Where it came from",
    "Why we use it",
    "Who received it",
    "How long we keep it",
    "Your consents and choices",
    "Other people's information",
    "Your rights",
    "The files in this package",
]


@pytest.fixture(scope="module")
def social() -> CompiledPolicy:
    return compile_policy(load_policy(example_policy("social")))


@pytest.fixture(scope="module")
def filelocker() -> CompiledPolicy:
    return compile_policy(load_policy(example_policy("filelocker")))


def _social_rows() -> dict[str, list[dict[str, object]]]:
    """Ada (member 7) and what the planner would fetch for her, shared rows included."""
    return {
        "social_db.members": [
            {
                "id": ME,
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "password_hash": "$argon2id$v=19$m=65536$c2FsdA$aGFzaA",
                "username": "ada",
                "created_at": datetime(2023, 1, 2, 9, 0),
                "closed_at": None,
            }
        ],
        "social_db.profiles": [
            {
                "id": 1,
                "member_id": ME,
                "headline": "Mathematician",
                "about": "Notes on the <Analytical Engine> & more",
                "sensitive_info": None,
                "photo_url": "https://img.example/ada.png",
                "website": "https://ada.example",
                "city": "London",
                "visibility": "public",
                "sensitive_visibility": "self",
                "searchable": True,
                "read_receipts": True,
                "network_updates": False,
                "promotional_messages": False,
                "updated_at": datetime(2023, 5, 1),
            }
        ],
        "social_db.posts": [
            {
                "id": 1,
                "member_id": ME,
                "body": "On Bernoulli numbers",
                "visibility": "public",
                "created_at": datetime(2024, 1, 5),
            },
        ],
        "social_db.comments": [
            {
                "id": 3,
                "post_id": 1,
                "member_id": ME,
                "body": "Thank you all",
                "created_at": datetime(2024, 2, 1),
            },
            # Another member's comment on Ada's post: his row, not hers.
            {
                "id": 4,
                "post_id": 1,
                "member_id": OTHER,
                "body": "Charles wrote this",
                "created_at": datetime(2024, 2, 2),
            },
        ],
        "social_db.messages": [
            {
                "id": 11,
                "sender_id": ME,
                "recipient_id": OTHER,
                "body": "Hello Charles",
                "sent_at": datetime(2024, 1, 1, 10),
                "delivered_at": datetime(2024, 1, 1, 10, 1),
                "read_at": None,
            },
            {
                "id": 10,
                "sender_id": OTHER,
                "recipient_id": ME,
                "body": "Hi Ada <b>!</b>",
                "sent_at": datetime(2023, 12, 31, 10),
                "delivered_at": None,
                "read_at": datetime(2024, 1, 1, 9),
            },
        ],
        "social_db.connections": [
            {
                "id": 5,
                "member_id": ME,
                "connected_member_id": THIRD,
                "status": "accepted",
                "created_at": datetime(2023, 6, 1),
            },
        ],
        "social_db.visit_logs": [
            {
                "id": i,
                "member_id": ME,
                "cookie_id": "ck-1",
                "ip_address": f"192.0.2.{i % 20}",
                "user_agent": "Firefox 123",
                "path": f"/p/{i}",
                "search_terms": None,
                "referrer_url": None,
                "next_url": None,
                "plugin_site": None,
                "visited_at": datetime(2024, 1, 1, 12, i),
            }
            for i in range(1, 41)
        ],
        "social_db.linked_services": [
            {
                "id": 2,
                "member_id": ME,
                "service": "mastodon",
                "external_account_id": "@ada@x.example",
                "scopes": ["read", "post"],
                "linked_at": datetime(2023, 7, 1),
                "unlinked_at": None,
                "note": {"added_by": "import", "n": 2},
            },
        ],
    }


CONSENTS: list[dict[str, Any]] = [
    {
        "event_id": 1,
        "subject_id": "s1",
        "kind": "consent_given",
        "scope": "mobile_location",
        "value": None,
        "at": "2023-02-01T10:00:00+00:00",
        "purpose": "mobile_location",
        "purpose_name": "Mobile location",
        "basis": "consent",
        "notice_hash": "ab" * 32,
        "notice_hash_algorithm": "sha256",
        "policy_version": "2020",
        "language": "en",
        "method": "checkbox",
        "channel": "account_settings",
        "ip": "192.0.2.0",
        "expires_at": None,
        "actor": None,
    },
]
DISCLOSURES: list[dict[str, Any]] = [
    {
        "recipient": "authorities",
        "at": "2024-02-10T12:00:00+00:00",
        "categories": ["user.name", "user.contact.email"],
        "purpose": "legal_disclosures",
        "detail": "Court order 12/2024",
    },
]


def _request(**kw: Any) -> PackageRequest:
    base: dict[str, Any] = {
        "reference": "R-2024-0001",
        "jurisdiction": "eu",
        "received_at": RECEIVED,
        "self_keys": {"social_db.members": [ME]},
        "identities": {"email": ["Ada@Example.com"]},
    }
    base.update(kw)
    return PackageRequest(**base)


def _build_social(cp: CompiledPolicy, **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "request": _request(),
        "data": _social_rows(),
        "vault": {"user.contact.email": "ada@example.com"},
        "consents": CONSENTS,
        "disclosures": DISCLOSURES,
        "generated_at": AT,
    }
    args.update(kw)
    return build_access_package(cp, **args)


def _open(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def _csv(raw: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))


@pytest.fixture(scope="module")
def social_package(social: CompiledPolicy) -> dict[str, bytes]:
    return _open(_build_social(social))


@pytest.fixture(scope="module")
def social_doc(social_package: dict[str, bytes]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(social_package["data.json"])
    return doc


# --------------------------------------------------------------------------- HTML reading

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Well-formedness (every element closed in order), headings, ids, links, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.lang: str | None = None
        self.headings: list[tuple[int, str]] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.tables = self.captions = self.unscoped_th = 0
        self._text: list[str] = []
        self._heading: list[str] | None = None
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")
        self.text = re.sub(r"\s+", " ", "".join(self._text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "html":
            self.lang = a.get("lang")
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if a.get("src") or (tag == "link" and a.get("href")):
            self.srcs.append(str(a.get("src") or a.get("href")))
        self.tables += tag == "table"
        self.captions += tag == "caption"
        self.unscoped_th += tag == "th" and not a.get("scope")
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append((int(tag[1]), " ".join("".join(self._heading).split())))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            return
        self._text.append(data)
        if self._heading is not None:
            self._heading.append(data)


# --------------------------------------------------------------------------- the ZIP


def test_zip_has_the_expected_entries(social_package: dict[str, bytes]) -> None:
    expected = ["data.json", "report.html"] + [f"collections/{n}.csv" for n in _social_rows()]
    assert sorted(social_package) == sorted(expected)


def test_zip_entries_are_sorted_with_fixed_metadata(social: CompiledPolicy) -> None:
    with zipfile.ZipFile(io.BytesIO(_build_social(social))) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(2024, 3, 5, 14, 30, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}


def test_same_input_same_bytes(social: CompiledPolicy) -> None:
    first = _build_social(social)
    assert _build_social(social) == first
    # The database's row order and the order collections come in change nothing.
    rows = _social_rows()
    shuffled = {name: random.Random(1).sample(rs, len(rs)) for name, rs in reversed(rows.items())}
    assert _build_social(social, data=shuffled) == first
    # A different moment is a different package.
    assert _build_social(social, generated_at=datetime(2024, 3, 6, tzinfo=UTC)) != first


def test_input_rows_are_not_changed(social: CompiledPolicy) -> None:
    rows = _social_rows()
    _build_social(social, data=rows)
    assert rows == _social_rows()


# --------------------------------------------------------------------------- data.json


def test_data_json_describes_the_request(social_doc: dict[str, Any]) -> None:
    assert social_doc["format"] == FORMAT
    assert social_doc["generated_at"] == AT.isoformat()
    assert social_doc["request"] == {
        "reference": "R-2024-0001",
        "type": "access",
        "type_name": "Access",
        "jurisdiction": "eu",
        "jurisdiction_name": "European Economic Area and UK (GDPR)",
        "received_at": RECEIVED.isoformat(),
        "answered_at": AT.isoformat(),
        "subject_id": None,
    }
    assert social_doc["controller"]["name"] == "Plutro"


def test_data_json_rows_carry_field_categories(social: CompiledPolicy, social_doc: dict[str, Any]) -> None:
    assert set(social_doc["collections"]) == set(_social_rows())
    for name, coll in social_doc["collections"].items():
        info = social.collections[name]
        assert {p: f["categories"] for p, f in coll["fields"].items()} == {
            p: list(f.categories) for p, f in info.fields.items()
        }
        assert len(coll["rows"]) == len(_social_rows()[name])
    members = social_doc["collections"]["social_db.members"]
    assert members["rows"][0]["email"] == "ada@example.com"
    assert members["rows"][0]["created_at"] == "2023-01-02T09:00:00"
    assert members["fields"]["email"]["category_names"] == ["Email address"]
    links = social_doc["collections"]["social_db.linked_services"]["rows"][0]
    assert links["scopes"] == ["read", "post"]
    assert links["note"] == {"added_by": "import", "n": 2}  # a field the policy does not describe


def test_every_category_held_has_purposes_recipients_retention_and_source(
    social: CompiledPolicy, social_doc: dict[str, Any]
) -> None:
    cats = social_doc["categories"]
    # Categories of every non-empty value we gave, the other people's excepted.
    assert {
        "user.name",
        "user.contact.email",
        "user.content.private",
        "user.content.public",
        "user.device.ip_address",
        "user.social.connections",
        "user.account.linked_services",
        "user.behavior.messaging",
        "user.unique_id",
    } <= set(cats)
    assert "user.location.precise" not in cats  # no device rows were given
    assert "user.demographic.profile.sensitive" not in cats  # the field was empty
    for key, c in cats.items():
        expected = {pk for pk in social.purposes if social.purpose_covers(pk, key)}
        assert {p["key"] for p in c["purposes"]} == expected, key
        for p in c["purposes"]:
            full = social_doc["purposes"][p["key"]]
            assert full["basis"] == p["basis"] == social.purposes[p["key"]].basis.value
            assert full["basis_words"] and key in full["categories"]
        assert [r["rule"] for r in c["retention"]] == [
            r for r in social.retention if r in social.retention_by_category[key]
        ]
        for r in c["retention"]:
            assert r["words"].startswith("Kept") and social_doc["retention"][r["rule"]]["words"] == r["words"]
        named = {rk for rk, r in social.recipients.items() if key in r.categories}
        assert named <= {r["key"] for r in c["recipients"]}, key
        for r in c["recipients"]:
            assert {"name", "role", "country", "transfer_safeguard"} <= set(r)
    email = cats["user.contact.email"]
    assert email["held_in"] == ["social_db.members.email", "vault"]
    assert [s["source"] for s in email["sources"]] == ["subject"]
    assert email["legal_minimums"] == [
        {
            "period": "1 year",
            "reason": "resolve disputes, maintain security, prevent fraud and abuse",
            "basis": "legal_claims",
        }
    ]
    affiliates = next(r for r in email["recipients"] if r["key"] == "affiliates")
    assert affiliates["transfer_safeguard"] == "scc"
    full = social_doc["recipients"]["affiliates"]
    assert "standard contractual clauses" in full["transfer_safeguard_words"]
    assert full["role_name"] == "Companies in our group"
    assert set(social_doc["recipients"]) == {r["key"] for c in cats.values() for r in c["recipients"]}
    assert [s["source"] for s in cats["user.behavior.messaging"]["sources"]] == ["observed"]
    assert {s["source"] for s in cats["user.content.public"]["sources"]} == {"subject", "other_users"}


def test_data_json_has_rights_consents_disclosures_vault(social_doc: dict[str, Any]) -> None:
    rights = {r["request_type"]: r for r in social_doc["rights"]}
    assert set(rights) >= {"access", "portability", "erase", "rectify", "object"}
    assert rights["access"]["deadline"] == "1 month"
    assert rights["access"]["verification"] == "email_code"
    assert social_doc["consents"] == CONSENTS
    assert social_doc["disclosures"] == DISCLOSURES
    assert social_doc["vault"] == {"user.contact.email": {"value": "ada@example.com"}}
    assert social_doc["supervisory_authority"]["url"].startswith("https://www.edpb.europa.eu")
    assert social_doc["transfers"]["statement"].startswith("We store and use your data outside")


def test_password_hash_is_withheld(social_package: dict[str, bytes], social_doc: dict[str, Any]) -> None:
    coll = social_doc["collections"]["social_db.members"]
    assert coll["rows"][0]["password_hash"] == HASH_WITHHELD
    assert coll["withheld"] == [{"row": 0, "fields": ["password_hash"]}]
    for name, raw in social_package.items():
        assert b"argon2id" not in raw, name


# --------------------------------------------------------------------------- CSV


def test_one_csv_per_collection_matching_the_rows(
    social: CompiledPolicy, social_package: dict[str, bytes], social_doc: dict[str, Any]
) -> None:
    for name in _social_rows():
        raw = social_package[f"collections/{name}.csv"]
        rows = _csv(raw)
        header = next(csv.reader(io.StringIO(raw.decode("utf-8"))))
        top = [p for p in social.collections[name].fields if "." not in p]
        assert header[: len(top)] == top
        json_rows = social_doc["collections"][name]["rows"]
        assert len(rows) == len(json_rows)
        for got, want in zip(rows, json_rows, strict=True):
            assert set(got) == set(header)
            for field, value in want.items():
                if value is None:
                    assert got[field] == ""
                elif isinstance(value, bool):
                    assert got[field] == ("true" if value else "false")
                elif isinstance(value, dict | list):
                    assert json.loads(got[field]) == value
                else:
                    assert got[field] == str(value)
    links = _csv(social_package["collections/social_db.linked_services.csv"])[0]
    assert links["scopes"] == '["read","post"]'
    assert json.loads(links["note"]) == {"added_by": "import", "n": 2}
    visits = _csv(social_package["collections/social_db.visit_logs.csv"])
    assert [int(v["id"]) for v in visits] == list(range(1, 41))


# --------------------------------------------------------------------------- redaction


def test_other_members_identifiers_in_messages_are_redacted(
    social_package: dict[str, bytes], social_doc: dict[str, Any]
) -> None:
    by_id = {m["id"]: m for m in social_doc["collections"]["social_db.messages"]["rows"]}
    sent, received = by_id[11], by_id[10]
    assert sent["sender_id"] == ME and sent["recipient_id"] == REDACTED
    assert received["recipient_id"] == ME and received["sender_id"] == REDACTED
    # Ada took part in both messages: what was said stays.
    assert sent["body"] == "Hello Charles" and received["body"] == "Hi Ada <b>!</b>"
    csv_rows = {r["id"]: r for r in _csv(social_package["collections/social_db.messages.csv"])}
    assert csv_rows["11"]["recipient_id"] == REDACTED and csv_rows["11"]["sender_id"] == str(ME)
    assert csv_rows["10"]["sender_id"] == REDACTED and csv_rows["10"]["recipient_id"] == str(ME)
    assert social_doc["collections"]["social_db.messages"]["redacted"] == [
        {"row": 0, "fields": ["sender_id"]},
        {"row": 1, "fields": ["recipient_id"]},
    ]


def test_connections_and_others_comments_are_redacted(social_doc: dict[str, Any]) -> None:
    conn = social_doc["collections"]["social_db.connections"]["rows"][0]
    assert conn["member_id"] == ME
    assert conn["connected_member_id"] == REDACTED
    assert conn["status"] == "accepted"
    comments = {c["id"]: c for c in social_doc["collections"]["social_db.comments"]["rows"]}
    assert comments[3] == {
        "id": 3,
        "post_id": 1,
        "member_id": ME,
        "body": "Thank you all",
        "created_at": "2024-02-01T00:00:00",
    }
    # Charles's comment on Ada's post: his id and his words go, the fact of it stays.
    assert comments[4] == {
        "id": 4,
        "post_id": 1,
        "member_id": REDACTED,
        "body": REDACTED,
        "created_at": "2024-02-02T00:00:00",
    }
    # Nothing else of Ada's own is touched.
    for name in ("social_db.members", "social_db.profiles", "social_db.posts", "social_db.visit_logs"):
        assert social_doc["collections"][name]["redacted"] == [], name
    assert social_doc["redaction"]["values"] == 5


def test_no_other_members_id_anywhere(social_package: dict[str, bytes]) -> None:
    for name, raw in social_package.items():
        if name.endswith(".csv"):
            for row in _csv(raw):
                for field in ("member_id", "sender_id", "recipient_id", "connected_member_id"):
                    assert row.get(field) in (None, str(ME), REDACTED), (name, field)
    assert "Charles wrote this" not in social_package["data.json"].decode()
    assert b"Charles wrote this" not in social_package["report.html"]


def test_a_member_who_is_not_the_requester_sees_the_mirror_image(social: CompiledPolicy) -> None:
    """The same message rows, asked for by Charles: now Ada's id is the redacted one."""
    rows = {"social_db.messages": _social_rows()["social_db.messages"]}
    doc = json.loads(
        _open(
            _build_social(
                social,
                data=rows,
                vault=None,
                request=_request(self_keys={"social_db.members": [str(OTHER)]}, identities={}),
            )
        )["data.json"]
    )
    by_id = {m["id"]: m for m in doc["collections"]["social_db.messages"]["rows"]}
    assert by_id[11] == {**by_id[11], "sender_id": REDACTED, "recipient_id": OTHER}
    assert by_id[10] == {**by_id[10], "sender_id": OTHER, "recipient_id": REDACTED}


# --------------------------------------------------------------------------- report.html


def test_report_is_well_formed_and_accessible(social_package: dict[str, bytes]) -> None:
    html = social_package["report.html"].decode("utf-8")
    assert html.startswith("<!doctype html>")
    page = Page(html)
    assert page.errors == []
    assert page.lang == "en"
    levels = [lvl for lvl, _ in page.headings]
    assert levels.count(1) == 1 and levels[0] == 1
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, f"heading skips from h{before} to h{after}"
    assert all(text for _, text in page.headings)
    h2 = [text for lvl, text in page.headings if lvl == 2]
    assert h2 == ["Contents", *SECTIONS]
    for tag in ("header", "nav", "main", "footer"):
        assert tag in page.tags
    assert page.tables == page.captions
    assert page.unscoped_th == 0
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in page.ids, f"dangling link {href}"
    # Self-contained and printable: no scripts, nothing loaded from elsewhere.
    assert "script" not in page.tags
    assert page.srcs == []
    assert "url(" not in html and "@import" not in html
    assert "@media print" in html


def test_report_states_what_why_who_how_long(
    social: CompiledPolicy, social_package: dict[str, bytes], social_doc: dict[str, Any]
) -> None:
    text = Page(social_package["report.html"].decode("utf-8")).text
    cats = social_doc["categories"]
    for c in cats.values():
        assert c["name"] in text
        for p in c["purposes"]:
            assert p["name"] in text, p["name"]
        for r in c["recipients"]:
            assert r["name"] in text, r["name"]
        for rule in c["retention"]:
            assert rule["words"] in text
    assert "Necessary to provide the service you signed up for" in text  # basis in words
    assert "standard contractual clauses" in text
    assert "Ada Lovelace" in text and "ada@example.com" in text  # the actual values
    assert "You give it to us" in text and "We record it when you use the service" in text
    assert "Court order 12/2024" in text  # the disclosure
    assert "You gave consent" in text and "Mobile location" in text
    assert "Article 15(4)" in text and REDACTED in text  # why other people's data is gone
    assert "One more value names another person and is left out" in text  # the connection
    assert "Autoriteit" not in text  # the EU authority of this policy, not another's
    assert "members of the EDPB" in text
    for right in social_doc["rights"]:
        assert right["name"] in text
    # Values are escaped, never markup.
    assert "Hi Ada <b>!</b>" in text
    assert "<b>!</b>" not in social_package["report.html"].decode()
    # 40 visits, 20 different addresses: the report shows some, and says where the rest is.
    assert "more different values" in text


def test_report_follows_the_jurisdiction(social: CompiledPolicy) -> None:
    pkg = _open(_build_social(social, request=_request(jurisdiction="us-ca")))
    text = Page(pkg["report.html"].decode()).text
    assert "California (CCPA/CPRA)" in text
    assert "Know and access" in text  # California's name for the right
    assert "45 days" in text
    assert json.loads(pkg["data.json"])["request"]["jurisdiction"] == "us-ca"


# --------------------------------------------------------------------------- filelocker


def _filelocker_rows() -> dict[str, list[dict[str, object]]]:
    return {
        "filelocker_db.users": [
            {
                "id": 42,
                "email": "bob@example.org",
                "password_hash": "bcrypt$secret",
                "created_at": datetime(2012, 4, 1, 10),
                "birth_date": None,
                "postal_code": "1012",
                "hometown": "Amsterdam",
                "gender": None,
                "intercom_opt_out": False,
            },
        ],
        "filelocker_db.payments": [
            {
                "id": 900,
                "user_id": 42,
                "paypal_email": "bob.pays@example.org",
                "plan": "pro",
                "amount": Decimal("9.99"),
                "currency": "EUR",
                "paypal_transaction_id": "PP-1",
                "paid_at": datetime(2020, 1, 1),
            },
        ],
        "filelocker_db.files": [
            {
                "id": 7,
                "user_id": 42,
                "blob_id": 3,
                "name": "thesis.pdf",
                "folder": "/docs",
                "created_at": datetime(2020, 2, 2),
            },
        ],
        "filelocker_db.content_blobs": [
            {
                "id": 3,
                "md5": "d41d8cd98f00b204e9800998ecf8427e",
                "sha1": "da39a3ee",
                "size_bytes": 0,
                "storage_node": "ams-1",
                "stored_at": datetime(2020, 2, 2),
                "last_requested_at": None,
            },
        ],
        "filelocker_db.access_logs": [
            {
                "id": 1,
                "user_id": 42,
                "ip_address": "198.51.100.7",
                "referrer": None,
                "path": "/files",
                "user_agent": "curl/8",
                "visited_at": datetime(2024, 1, 1),
            },
        ],
        "filelocker_db.support_messages": [
            {
                "id": 1,
                "user_id": 42,
                "email": "bob@example.org",
                "subject": "Quota",
                "body": "Can I have more space?",
                "received_at": datetime(2023, 3, 3),
            },
        ],
    }


def test_filelocker_package(filelocker: CompiledPolicy) -> None:
    pkg = _open(
        build_access_package(
            filelocker,
            request=PackageRequest(
                reference="PUT-77",
                request_type=RequestType.portability,
                jurisdiction="eu",
                received_at=RECEIVED,
                self_keys={"filelocker_db.users": ["42"]},
                identities={"email": ["bob@example.org"]},
            ),
            data=_filelocker_rows(),
            generated_at=AT,
        )
    )
    assert sorted(pkg) == sorted(
        ["data.json", "report.html"] + [f"collections/{n}.csv" for n in _filelocker_rows()]
    )
    doc = json.loads(pkg["data.json"])
    assert doc["request"]["type"] == "portability"
    assert doc["redaction"]["values"] == 0  # Bob's rows name nobody else
    payments = doc["collections"]["filelocker_db.payments"]["rows"][0]
    assert payments["amount"] == "9.99"  # exact, not a float
    assert _csv(pkg["collections/filelocker_db.payments.csv"])[0]["amount"] == "9.99"
    paypal = doc["categories"]["user.financial.paypal_email"]
    assert [r["key"] for r in paypal["recipients"]] == ["paypal"]
    assert paypal["recipients"][0]["country"] == "LU"
    assert paypal["retention"] and paypal["legal_minimums"]
    intercom = doc["categories"]["user.contact.email"]["recipients"]
    assert any(r["key"] == "intercom" and r["transfer_safeguard"] == "scc" for r in intercom)
    # Every category but the sharing choices (which no purpose uses: they only stop uses).
    assert [c["name"] for c in doc["categories"].values() if not c["purposes"]] == [
        "Email and sharing choices"
    ]
    page = Page(pkg["report.html"].decode())
    assert page.errors == []
    assert [t for lvl, t in page.headings if lvl == 2] == ["Contents", *SECTIONS]
    for c in doc["categories"].values():
        for r in c["recipients"]:
            assert r["name"] in page.text
        for p in c["purposes"]:
            assert p["name"] in page.text
    assert "Portability" in page.text
    assert "Autoriteit Persoonsgegevens" in page.text
    assert "bcrypt$secret" not in pkg["data.json"].decode()


def test_visitor_found_by_email_alone(filelocker: CompiledPolicy) -> None:
    """A visitor without an account: only their email tells their rows from others'."""
    rows = {
        "filelocker_db.support_messages": [
            {
                "id": 1,
                "user_id": None,
                "email": "Visitor@Example.net",
                "subject": "Hi",
                "body": "Is there a free plan?",
                "received_at": datetime(2023, 3, 3),
            },
            {
                "id": 2,
                "user_id": None,
                "email": "someone.else@example.net",
                "subject": "Refund",
                "body": "Private words",
                "received_at": datetime(2023, 3, 4),
            },
        ]
    }
    pkg = _open(
        build_access_package(
            filelocker,
            request=PackageRequest(
                reference="V-1",
                jurisdiction="eu",
                received_at=RECEIVED,
                identities={"email": ["visitor@example.net"]},
            ),
            data=rows,
            generated_at=AT,
        )
    )
    doc = json.loads(pkg["data.json"])
    mine, theirs = doc["collections"]["filelocker_db.support_messages"]["rows"]
    assert mine["email"] == "Visitor@Example.net" and mine["body"] == "Is there a free plan?"
    assert theirs == {
        "id": 2,
        "user_id": None,
        "email": REDACTED,
        "subject": REDACTED,
        "body": REDACTED,
        "received_at": "2023-03-04T00:00:00",
    }
    assert b"Private words" not in pkg["report.html"]


# --------------------------------------------------------------------------- names and input


def test_fideslang_redact_name_hides_schema_names() -> None:
    text = example_policy("social").read_text()
    coll = "      - name: messages\n        description: Messages between members"
    field = "          - name: closed_at\n            fides_meta: {data_type: string}"
    assert coll in text and field in text
    text = text.replace(
        coll,
        "      - name: messages\n        fides_meta: {redact: name}\n"
        "        description: Messages between members",
    )
    text = text.replace(field, field.replace("data_type: string", "data_type: string, redact: name"))
    cp = compile_policy(load_policy_text(text, "social.yaml"))
    pkg = _open(_build_social(cp))
    assert "collections/social_db.collection_9.csv" in pkg
    assert "collections/social_db.messages.csv" not in pkg
    header = next(csv.reader(io.StringIO(pkg["collections/social_db.members.csv"].decode())))
    assert header[-1] == "field_7" and "closed_at" not in header
    doc = json.loads(pkg["data.json"])
    assert "social_db.collection_9" in doc["collections"]
    assert "closed_at" not in doc["collections"]["social_db.members"]["rows"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"request": _request(jurisdiction="mars")}, "request.jurisdiction: 'mars'"),
        ({"request": _request(request_type=RequestType.erase)}, "not 'erase'"),
        ({"request": _request(reference=" ")}, "request.reference"),
        ({"request": _request(self_keys={"social_db.member": [7]})}, "did you mean 'social_db.members'"),
        ({"request": _request(self_keys={}, identities={})}, "give self_keys or identities"),
        ({"request": _request(self_keys={"social_db.members": 7})}, "self_keys['social_db.members']"),
        ({"data": {"social_db.mesages": []}}, "data['social_db.mesages']: not a collection"),
        ({"data": {"social_db.messages": [{"id": 1}, "oops"]}}, "data['social_db.messages'][1]"),
        ({"data": {"social_db.messages": "rows"}}, "expected a list of rows"),
        ({"consents": [{"kind": "consent_given"}, 3]}, "consents[1]"),
        ({"disclosures": {"recipient": "x"}}, "disclosures: expected a list"),
        ({"vault": ["user.name"]}, "vault: expected a mapping"),
    ],
)
def test_bad_input_is_a_clear_error(social: CompiledPolicy, change: dict[str, Any], message: str) -> None:
    with pytest.raises(PackageError) as err:
        _build_social(social, **change)
    assert message in str(err.value)


def test_empty_package_still_reads_well(social: CompiledPolicy) -> None:
    pkg = _open(_build_social(social, data={}, vault=None, consents=None, disclosures=None))
    assert sorted(pkg) == ["data.json", "report.html"]
    page = Page(pkg["report.html"].decode())
    assert page.errors == []
    assert "We found no personal data about you" in page.text
    assert json.loads(pkg["data.json"])["categories"] == {}

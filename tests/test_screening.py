"""Upload screening (PUT-9): hash lists, the check, and what a match does, on real stores.

The lists are real files parsed by the loader; the hashes are hashlib's of test bytes;
matches are recorded in SQLite and PostgreSQL (``stores``), quarantined copies are real
encrypted files, reports go through the real outbox mailer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from fiduciary.audit import AuditLog
from fiduciary.cli_screening import screening_app
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer, SmtpMailer
from fiduciary.policy import CompiledPolicy, compile_policy, load_policy_text
from fiduciary.screening import (
    HashList,
    HashListError,
    HashLists,
    HashSet,
    Screener,
    ScreeningError,
    UploadRefused,
    load_hash_list,
)
from fiduciary.screening.digest import digest_source
from fiduciary.store import tables as T
from fiduciary.vault.crypto import DecryptionError
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.rotate import rotate_keys
from tests.conftest import Stores

ALGOS = ("md5", "sha1", "sha256")
BAD = {a: f"known illegal test content for {a}".encode() * 1000 for a in ALGOS}


def hexd(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


class Pipe(io.RawIOBase):
    """A stream that cannot seek (a socket, a request body)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        return self._inner.readinto(b)


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def three_lists(tmp_path: Path) -> HashLists:
    """One list per algorithm, each holding the digest of BAD[algorithm] among decoys."""
    rng = random.Random(7)
    out = []
    for a in ALGOS:
        decoys = [hexd(a, rng.randbytes(20)) for _ in range(300)]
        f = write_list(tmp_path / f"{a}.txt", [f"# {a} list", *decoys[:150], hexd(a, BAD[a]), *decoys[150:]])
        hl, report = load_hash_list(f"list-{a}", [f])
        assert report.added == {a: 301} and not report.problems
        out.append(hl)
    return HashLists(out)


# --------------------------------------------------------------------------- the check


@pytest.mark.parametrize("algorithm", ALGOS)
def test_known_positives_on_each_algorithm_from_bytes_streams_and_paths(
    three_lists: HashLists, algorithm: str, tmp_path: Path
) -> None:
    data = BAD[algorithm]
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), Pipe(data), path, str(path)):
        v = three_lists.check(source)
        assert not v.clean, type(source)
        assert [(m.list, m.algorithm, m.digest) for m in v.matches] == [
            (f"list-{algorithm}", algorithm, hexd(algorithm, data))
        ]
        assert v.size == len(data)
        assert v.digests == {a: hexd(a, data) for a in ALGOS}  # all three computed, one matched
    clean = three_lists.check(b"an ordinary holiday photo")
    assert clean.clean and clean.matches == ()
    assert "clean" in clean.describe()


def test_only_the_listed_algorithms_are_computed(tmp_path: Path) -> None:
    hl, _ = load_hash_list("md5 only", [write_list(tmp_path / "l.txt", [hexd("md5", BAD["md5"])])])
    lists = HashLists([hl])
    assert lists.algorithms == ("md5",)
    v = lists.check(BAD["md5"])
    assert set(v.digests) == {"md5"} and v.matches[0].list == "md5 only"
    assert HashLists().check(b"x").digests == {}  # no list: nothing hashed


@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_chunked_and_parallel_hashing_equals_hashlib(chunk: int, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    want = {a: hashlib.new(a, data).digest() for a in ALGOS}
    for parallel in (False, True):
        for source in (data, path, io.BytesIO(data), Pipe(data)):
            got, size = digest_source(source, ALGOS, chunk_size=chunk, parallel=parallel)
            assert got == want and size == len(data)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    got, size = digest_source(empty, ["md5"])
    assert got["md5"] == hashlib.md5(b"").digest() and size == 0


def test_a_seekable_stream_is_put_back_for_the_caller(three_lists: HashLists) -> None:
    stream = io.BytesIO(b"header" + b"clean upload body")
    stream.read(6)
    v = three_lists.check(stream)
    assert v.size == len(b"clean upload body")
    assert stream.tell() == 6 and stream.read() == b"clean upload body"


def test_a_large_list_answers_like_a_python_set(tmp_path: Path) -> None:
    rng = random.Random(1)
    members = {rng.randbytes(32) for _ in range(40_000)}
    lines = [d.hex() for d in members]
    lines += lines[:500]  # duplicates are dropped
    hl, report = load_hash_list("big", [write_list(tmp_path / "big.txt", lines)])
    s = hl.sets["sha256"]
    assert report.added == {"sha256": 40_500} and s.count == 40_000
    assert s.bits == 13  # 2**13 buckets: 4 to 8 digests in each
    assert all(d in s for d in members)
    strangers = [rng.randbytes(32) for _ in range(5000)]
    strangers += [d[:-1] + bytes([d[-1] ^ 1]) for d in list(members)[:2000]]  # near misses
    assert not any(d in s for d in strangers if d not in members)
    assert list(s.digests()) == sorted(members)
    assert b"short" not in s and "not bytes" not in s


def test_a_hit_straddling_two_records_is_no_match() -> None:
    r1 = bytes([5]) + bytes(7) + bytes([5]) + b"\xaa" * 7
    r2 = bytes([5]) + b"\xbb" * 15
    s = HashSet.build("md5", [r2, r1])
    straddle = r1[8:] + r2[:8]  # the buffer holds it, across the boundary of r1 and r2
    assert straddle in b"".join(s.digests())
    assert straddle not in s
    assert r1 in s and r2 in s


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=200),
    st.lists(st.binary(min_size=1, max_size=3), max_size=50),
)
def test_membership_equals_a_set_for_crowded_buckets(heads: list[bytes], probes: list[bytes]) -> None:
    # Short random heads padded with a fixed tail crowd few buckets with shared prefixes.
    def pad(h: bytes) -> bytes:
        return (h + b"\x00" * 16)[:16]

    members = {pad(h) for h in heads}
    s = HashSet.build("md5", (pad(h) for h in heads))
    assert s.count == len(members)
    for p in [pad(h) for h in probes] + list(members):
        assert (p in s) == (p in members)


# --------------------------------------------------------------------------- loading text


def test_formats_comments_case_crlf_bom_and_checksum_tool_output(tmp_path: Path) -> None:
    md5, sha1, sha256 = (hexd(a, BAD[a]) for a in ALGOS)
    f = tmp_path / "mixed.txt"
    f.write_bytes(
        b"\xef\xbb\xbf# exported 2026-01-01\r\n\r\n"
        + md5.upper().encode()
        + b"\r\n"
        + f"{sha1}  some/file.jpg\r\n".encode()
        + f"   {sha256} *binary-mode name\r\n".encode()
        + b"# the end\r\n"
    )
    hl, report = load_hash_list("mixed", [f])
    assert report.added == {"md5": 1, "sha1": 1, "sha256": 1} and report.bad_lines == 0
    lists = HashLists([hl])
    for a in ALGOS:
        assert [m.algorithm for m in lists.check(BAD[a]).matches] == [a]


def test_nsrl_like_csv_with_a_header(tmp_path: Path) -> None:
    md5, sha1 = hexd("md5", BAD["md5"]), hexd("sha1", BAD["sha1"])
    f = tmp_path / "NSRLFile.txt"
    f.write_text(
        '"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"\n'
        f'"{sha1.upper()}","{"0" * 32}","AABBCCDD","a, with comma.exe",10,1,"WIN",""\n'
        f'"{"1" * 40}","{md5.upper()}","00000000","b.dll",20,1,"WIN",""\n'
        f'"{"2" * 40}","","00000000","c.dll",30,1,"WIN",""\n',
        encoding="utf-8",
    )
    hl, report = load_hash_list("nsrl", [f])
    assert report.added == {"sha1": 3, "md5": 2}
    lists = HashLists([hl])
    assert [m.algorithm for m in lists.check(BAD["sha1"]).matches] == ["sha1"]
    assert [m.algorithm for m in lists.check(BAD["md5"]).matches] == ["md5"]
    only, report = load_hash_list("nsrl md5", [f], algorithms=["MD5"])
    assert only.algorithms == ("md5",) and report.added == {"md5": 2}
    semi = tmp_path / "semi.csv"
    semi.write_text(f"name;sha256\nx;{hexd('sha256', BAD['sha256'])}\n", encoding="utf-8")
    hl2, _ = load_hash_list("semi", [semi])
    assert hl2.contains("sha256", hashlib.sha256(BAD["sha256"]).digest())


def test_bad_lines_refuse_the_load_naming_file_and_line(tmp_path: Path) -> None:
    good = hexd("sha256", b"fine")
    f = write_list(
        tmp_path / "list.txt",
        [good, "# fine comment", "not-a-digest", good[:-1] + "g", good, hexd("md5", b"x") + "0"],
    )
    with pytest.raises(HashListError) as err:
        load_hash_list("L", [f], algorithms=["sha256"])
    assert [(p.line, p.file) for p in err.value.problems] == [(3, str(f)), (4, str(f)), (6, str(f))]
    text = str(err.value)
    assert f"{f}:3: not a digest" in text and f"{f}:4: not hexadecimal" in text
    assert "nothing was loaded" in text
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(f"name,md5\na,{hexd('md5', b'a')}\nb,xyz\nc,{hexd('sha1', b'c')}\nshort\n")
    with pytest.raises(HashListError) as err:
        load_hash_list("C", [csv_file])
    assert [p.line for p in err.value.problems] == [3, 4, 5]
    assert "column md5: a sha1 digest" in str(err.value) and "1 column(s), 2 expected" in str(err.value)


def test_skip_bad_skips_and_reports_each_line(tmp_path: Path) -> None:
    good = hexd("md5", BAD["md5"])
    f = write_list(tmp_path / "l.txt", ["garbage", good, "zz" * 16])
    hl, report = load_hash_list("L", [f], skip_bad=True)
    assert [str(p) for p in report.problems] == [
        f"{f}:1: not a digest: 'garbage' has 7 characters (MD5 has 32, SHA-1 40, SHA-256 64 hex digits)",
        f"{f}:3: not hexadecimal: '{'zz' * 16}'",
    ]
    assert len(hl) == 1 and HashLists([hl]).check(BAD["md5"]).matches


def test_line_numbers_stay_right_across_parse_blocks(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [rng.randbytes(32).hex() for _ in range(140_000)]  # 9.1 MB: more than one block
    lines[135_000] = "oops"
    f = write_list(tmp_path / "long.txt", lines)
    with pytest.raises(HashListError) as err:
        load_hash_list("long", [f])
    assert [p.line for p in err.value.problems] == [135_001]
    hl, report = load_hash_list("long", [f], skip_bad=True)
    assert hl.sets["sha256"].count == 139_999 and report.bad_lines == 1
    assert bytes.fromhex(lines[139_999]) in hl.sets["sha256"]


def test_no_digest_and_missing_file_are_errors(tmp_path: Path) -> None:
    empty = write_list(tmp_path / "empty.txt", ["# nothing here", ""])
    with pytest.raises(HashListError, match="no digest found"):
        load_hash_list("E", [empty])
    with pytest.raises(HashListError, match="cannot read"):
        load_hash_list("E", [tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        load_hash_list("E", [empty], algorithms=["crc32"])


# --------------------------------------------------------------------------- the binary cache


def test_cache_round_trip_is_mapped_and_checked(three_lists: HashLists, tmp_path: Path) -> None:
    folder = tmp_path / "lists"
    for hl in three_lists:
        hl.save(folder / f"{hl.name}.fhl")
    assert oct(os.stat(folder / "list-md5.fhl").st_mode & 0o777) == "0o600"
    reopened = HashLists.open_dir(folder)
    assert sorted(hl.name for hl in reopened) == sorted(hl.name for hl in three_lists)
    for a in ALGOS:
        assert list(reopened[f"list-{a}"].sets[a].digests()) == list(
            three_lists[f"list-{a}"].sets[a].digests()
        )
        assert reopened.check(BAD[a]).matches[0].algorithm == a
    assert reopened.check(b"clean").clean
    copy = reopened["list-sha1"].save(tmp_path / "copy.fhl")  # a mapped list saves as it is
    assert list(HashList.open(copy).sets["sha1"].digests()) == list(
        three_lists["list-sha1"].sets["sha1"].digests()
    )
    with pytest.raises(ValueError, match="a digest is 16 bytes"):
        HashSet.build("md5", [b"short"])

    path = folder / "list-sha256.fhl"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one digest altered on disk
    path.write_bytes(bytes(raw))
    with pytest.raises(HashListError, match="checksum mismatch"):
        HashList.open(path)
    HashList.open(path, verify=False)  # opens; the damage is what verify is for
    (folder / "junk.fhl").write_bytes(b"not a cache at all")
    with pytest.raises(HashListError, match="bad magic"):
        HashList.open(folder / "junk.fhl")


# --------------------------------------------------------------------------- the screener


def filelocker(on_match: str | None = None) -> CompiledPolicy:
    text = example_policy("filelocker").read_text(encoding="utf-8")
    if on_match is not None:
        text = text.replace("on_match: [block, report]", f"on_match: {on_match}")
    return compile_policy(load_policy_text(text, "filelocker.yaml"))


def md5_lists(tmp_path: Path, *payloads: bytes) -> HashLists:
    f = write_list(tmp_path / "ncmec.txt", [hexd("md5", p) for p in payloads])
    hl, _ = load_hash_list("NCMEC", [f])
    return HashLists([hl])


def make_screener(
    stores: Stores, tmp_path: Path, lists: HashLists, cp: CompiledPolicy, ring: Keyring | None = None
) -> Screener:
    ring = ring or Keyring.generate()
    return Screener(
        lists,
        data=stores.data,
        keys=stores.keys,
        keyring=ring,
        audit=AuditLog(stores.data, ring),
        quarantine_dir=tmp_path / "quarantine",
        policy=cp,
        report_email="reports@ngo.example",
    )


def count(stores: Stores, table: object) -> int:
    with stores.data.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def test_a_match_is_refused_quarantined_encrypted_reported_and_audited(
    stores: Stores, tmp_path: Path
) -> None:
    bad = os.urandom(2_500_000)
    ring = Keyring.generate()
    sc = make_screener(
        stores, tmp_path, md5_lists(tmp_path, bad), filelocker("[block, quarantine, report]"), ring
    )
    assert sc.actions == ("block", "quarantine", "report") and sc.algorithms == ("md5",)

    with pytest.raises(UploadRefused) as refused:
        sc.screen(
            bad, subject_id="s" * 32, email="uploader@example.com", ip_address="203.0.113.9", filename="x.jpg"
        )
    v = refused.value.verdict
    assert v.record and v.lists == ("NCMEC",) and v.matches[0].digest == hexd("md5", bad)
    assert "must not be stored" in str(refused.value)

    # the record, with the uploader's details encrypted
    rec = sc.match(v.record)
    assert rec.quarantined and rec.status == "held" and rec.size == len(bad) and rec.subject_id == "s" * 32
    with stores.data.connect() as conn:
        blob = bytes(conn.scalar(select(T.screening_matches.c.context)))
    assert b"uploader@example.com" not in blob and b"203.0.113.9" not in blob
    assert sc.context(v.record) == {
        "email": "uploader@example.com",
        "ip_address": "203.0.113.9",
        "filename": "x.jpg",
    }

    # the quarantined copy: encrypted on disk, decrypted only with the key
    qfile = tmp_path / "quarantine" / f"{v.record}.fq"
    on_disk = qfile.read_bytes()
    assert bad[:4096] not in on_disk and bad[-4096:] not in on_disk
    assert sc.read_quarantined(v.record) == bad
    stranger = make_screener(stores, tmp_path, sc.lists, sc.policy, Keyring.generate())  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        stranger.read_quarantined(v.record)
    qfile.write_bytes(on_disk[:-40])  # truncated copy: detected
    with pytest.raises(DecryptionError, match="truncated"):
        sc.read_quarantined(v.record)
    qfile.write_bytes(on_disk)

    # the report, queued for the policy's designated organisation
    [report] = sc.reports(status="queued")
    assert report.match_id == v.record and report.recipient == "child_protection"
    assert report.organization == "The appropriate NGO in the offender's country"
    assert report.address == "reports@ngo.example"

    # audited, with a pseudonym, no personal data, the chain intact
    [entry] = sc.audit.query(action="screening_match")
    assert entry.result == "blocked" and entry.subject == sc.audit.pseudonym("s" * 32)
    assert entry.detail is not None and "uploader@example.com" not in json.dumps(entry.detail)
    assert sc.audit.verify(ring.verify_key()).ok

    # sent through the mailer: what the recipient's categories cover, not the file name
    outbox = OutboxMailer(tmp_path / "outbox")
    summary = sc.send_reports(outbox, actor="ops")
    assert summary.sent == [report.id] and not summary.failed
    [msg] = outbox.outbox_messages()
    assert msg.to == "reports@ngo.example" and report.id in msg.subject
    assert hexd("md5", bad) in msg.text and "uploader@example.com" in msg.text and "203.0.113.9" in msg.text
    assert "x.jpg" not in msg.text and "refused" in msg.text and v.record in msg.text
    [sent] = sc.reports(status="sent")
    assert sent.attempts == 1 and sent.message_id == msg.message_id and sent.sent_at is not None
    assert sc.send_reports(outbox).sent == []  # nothing sent twice
    assert [e.result for e in sc.audit.query(action="screening_report_sent")] == ["sent"]

    # key rotation re-wraps the match's key with the others: the copy stays readable
    rotated = ring.with_new_kek()
    done, usage = rotate_keys(stores.keys, ring, rotated)
    assert done == 1 and usage == {rotated.active_kek: 1}
    sc = make_screener(stores, tmp_path, sc.lists, sc.policy, rotated)  # type: ignore[arg-type]
    assert sc.read_quarantined(v.record) == bad
    ring = rotated

    # crypto-shredding: the key goes, the copy and details are unreadable, the record stays
    sc.destroy(v.record, actor="ops")
    assert not qfile.exists() and sc.match(v.record).status == "destroyed"
    with pytest.raises(ScreeningError, match="key was destroyed"):
        sc.context(v.record)
    assert sc.audit.verify(ring.verify_key()).ok


def test_the_filelocker_policy_blocks_and_reports_without_keeping_the_bytes(
    stores: Stores, tmp_path: Path
) -> None:
    bad = b"known bad upload" * 100
    sc = make_screener(stores, tmp_path, md5_lists(tmp_path, bad), filelocker())
    assert sc.actions == ("block", "report")
    with pytest.raises(UploadRefused) as refused:
        sc.screen(io.BytesIO(bad), email="a@example.com")
    record = refused.value.verdict.record
    assert record is not None and not sc.match(record).quarantined
    assert not list((tmp_path / "quarantine").glob("*")) if (tmp_path / "quarantine").exists() else True
    with pytest.raises(ScreeningError, match="no copy was quarantined"):
        sc.read_quarantined(record)
    assert len(sc.reports(status="queued")) == 1
    # a report with nowhere to go waits; a transport failure keeps it queued with its error
    sc.report_email = None
    with stores.data.begin() as conn:
        conn.execute(T.screening_reports.update().values(address=None))
    assert len(sc.send_reports(OutboxMailer(tmp_path / "o")).waiting) == 1
    sc.report_email = "reports@ngo.example"
    broken = SmtpMailer("127.0.0.1", 9, timeout=2)  # the discard port: nothing listens
    summary = sc.send_reports(broken)
    assert list(summary.failed) == [sc.reports()[0].id]
    [queued] = sc.reports(status="queued")
    assert queued.attempts == 1 and queued.last_error and "127.0.0.1:9" in queued.last_error


def test_clean_uploads_leave_nothing_behind(stores: Stores, tmp_path: Path) -> None:
    sc = make_screener(
        stores, tmp_path, md5_lists(tmp_path, b"bad"), filelocker("[block, quarantine, report]")
    )
    stream = io.BytesIO(b"a clean file")
    v = sc.screen(stream, subject_id="x", email="a@example.com")
    assert v.clean and v.record is None and stream.read() == b"a clean file"  # rewound: store it
    assert sc.screen(Pipe(b"clean, from a socket" * 10_000)).clean  # spooled, then discarded
    assert sc.screen(b"").clean
    assert count(stores, T.screening_matches) == 0 and count(stores, T.screening_reports) == 0
    assert sc.audit.query(action="screening_match") == []
    assert list((tmp_path / "quarantine").iterdir()) == []  # no spool left


def test_an_unseekable_stream_is_spooled_and_kept_on_a_match(stores: Stores, tmp_path: Path) -> None:
    bad = os.urandom(3 * (1 << 20) + 7)
    sc = make_screener(stores, tmp_path, md5_lists(tmp_path, bad), filelocker("[block, quarantine, report]"))
    with pytest.raises(UploadRefused) as refused:
        sc.screen(Pipe(bad))
    record = refused.value.verdict.record
    assert record is not None
    assert sc.read_quarantined(record) == bad
    assert [p.name for p in (tmp_path / "quarantine").iterdir()] == [f"{record}.fq"]


def test_report_only_policies_record_without_refusing(stores: Stores, tmp_path: Path) -> None:
    bad = b"reported, not blocked"
    sc = make_screener(stores, tmp_path, md5_lists(tmp_path, bad), filelocker("[report]"))
    v = sc.screen(bad, subject_id="abc")
    assert not v.clean and v.record is not None
    assert [e.result for e in sc.audit.query(action="screening_match")] == ["matched"]


def test_screening_is_refused_when_it_cannot_keep_the_promise(stores: Stores, tmp_path: Path) -> None:
    sha_only, _ = load_hash_list("sha", [write_list(tmp_path / "s.txt", [hexd("sha256", b"bad")])])
    sc = make_screener(stores, tmp_path, HashLists([sha_only]), filelocker())
    with pytest.raises(ScreeningError, match="promises md5 screening"):
        sc.ready()
    with pytest.raises(ScreeningError):
        sc.screen(b"anything")  # the upload is not screened, so it must not be stored
    no_section = filelocker()
    text = example_policy("filelocker").read_text(encoding="utf-8")
    start = text.index("screening:                                   # keeps PUT-9")
    end = text.index("security:", start)
    no_section = compile_policy(load_policy_text(text[:start] + text[end:], "f.yaml"))
    with pytest.raises(ScreeningError, match="no screening section"):
        make_screener(stores, tmp_path, md5_lists(tmp_path, b"bad"), no_section)
    with pytest.raises(ScreeningError, match="the policy decides"):
        Screener(
            md5_lists(tmp_path, b"bad"),
            data=stores.data,
            keys=stores.keys,
            keyring=Keyring.generate(),
            audit=AuditLog(stores.data, Keyring.generate()),
            quarantine_dir=tmp_path,
            policy=filelocker(),
            actions=["report"],
        )


# --------------------------------------------------------------------------- the command line


def test_cli_load_lists_check_and_remove(tmp_path: Path) -> None:
    cli = CliRunner()
    dd = ["--data-dir", str(tmp_path / "data")]
    bad = write_list(tmp_path / "ncmec.txt", [hexd("md5", BAD["md5"]), "oops"])
    r = cli.invoke(screening_app, ["load", str(bad), "--name", "NCMEC", *dd])
    assert r.exit_code == 1 and f"{bad}:2: not a digest" in r.output and "nothing was loaded" in r.output
    assert not (tmp_path / "data" / "screening" / "lists").exists()
    r = cli.invoke(screening_app, ["load", str(bad), "--name", "NCMEC", "--skip-bad", *dd])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "NCMEC: md5 1 digests" in r.output
    r = cli.invoke(screening_app, ["lists", "--json", *dd])
    assert json.loads(r.stdout)[0]["digests"] == {"md5": 1}
    upload = tmp_path / "upload.bin"
    upload.write_bytes(BAD["md5"])
    r = cli.invoke(screening_app, ["check", str(upload), *dd])
    assert r.exit_code == 1 and "MATCH" in r.stdout and "NCMEC" in r.stdout
    r = cli.invoke(screening_app, ["check", "--digest", hexd("md5", b"other"), *dd])
    assert r.exit_code == 0 and "clean" in r.stdout
    r = cli.invoke(screening_app, ["check", "--digest", "xyz", *dd])
    assert r.exit_code == 2
    r = cli.invoke(screening_app, ["load", str(bad), "--algorithm", "crc32", *dd])
    assert r.exit_code == 2 and "unknown hash algorithm" in r.output
    r = cli.invoke(screening_app, ["remove", "NCMEC", *dd])
    assert r.exit_code == 0
    r = cli.invoke(screening_app, ["check", str(upload), *dd])
    assert r.exit_code == 1 and "no hash list" in r.output


def test_cli_follows_and_sends_reports_of_a_running_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fiduciary.config import Settings
    from fiduciary.core import Fiduciary

    for var in (
        "FIDUCIARY_DATABASE_URL",
        "FIDUCIARY_KEYS_DATABASE_URL",
        "FIDUCIARY_KEYRING",
        "FIDUCIARY_SMTP_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FIDUCIARY_POLICY", str(example_policy("filelocker")))
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FIDUCIARY_SCREENING_REPORT_EMAIL", "reports@ngo.example")
    cli = CliRunner()
    lst = write_list(tmp_path / "l.txt", [hexd("md5", BAD["md5"])])
    assert cli.invoke(screening_app, ["load", str(lst), "-n", "NCMEC"]).exit_code == 0

    s = Settings()
    with Fiduciary.open(s.policy or "", settings=s) as fid:
        sc = Screener.from_fiduciary(fid, settings=s)
        sc.ready()
        with pytest.raises(UploadRefused):
            sc.screen(BAD["md5"], email="someone@example.com")
    r = cli.invoke(screening_app, ["matches"])
    assert r.exit_code == 0 and "NCMEC" in r.stdout
    r = cli.invoke(screening_app, ["reports", "--status", "queued"])
    assert r.exit_code == 0 and "reports@ngo.example" in r.stdout
    r = cli.invoke(screening_app, ["send"])
    assert r.exit_code == 0 and "sent 1" in r.stdout, r.output
    [msg] = OutboxMailer(tmp_path / "data" / "outbox").outbox_messages()
    assert hexd("md5", BAD["md5"]) in msg.text and "someone@example.com" in msg.text
    r = cli.invoke(screening_app, ["reports", "--status", "bogus"])
    assert r.exit_code == 2


# --------------------------------------------------------------------------- the docs


def test_the_library_example_in_the_docs_runs_and_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    doc = Path(__file__).resolve().parents[1] / "docs" / "screening.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks
    for var in list(os.environ):
        if var.startswith("FIDUCIARY_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    os.symlink(example_policy("filelocker").parents[1], tmp_path / "examples")
    expected: list[str] = []
    for block in blocks:
        expected += re.findall(r"print\(.*\)\s+# (.*)", block)
        exec(compile(block, "docs/screening.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == expected
    [msg] = OutboxMailer(tmp_path / "outbox").outbox_messages()
    assert msg.to == "reports@ngo.example" and "uploader@example.com" in msg.text

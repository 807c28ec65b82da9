"""The mail sender: the outbox folder, and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fiduciary.config import Settings
from fiduciary.mail import (
    Mailer,
    MailError,
    MailInputError,
    OutboxMailer,
    SmtpMailer,
    acknowledgement_letter,
    code_letter,
    denied_letter,
    done_letter,
    extended_letter,
    unsubscribe_headers,
)

SENDER = "Ploomber privacy <contact@ploomber.io>"


# ------------------------------------------------------------------------------- outbox
def test_outbox_writes_parseable_eml_with_the_code(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path / "outbox", sender=SENDER)
    letter = code_letter(organization="Ploomber", code="482913", minutes=30, reference="abc123")
    at = dt.datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)
    msg_id = mailer.send("ann@example.com", letter.subject, letter.text, now=at)

    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1
    assert files[0].name.startswith("20260304T050607890000Z-")
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600  # the code is in it
    with files[0].open("rb") as fh:
        parsed = BytesParser(policy=policy.default).parse(fh)
    assert parsed["To"] == "ann@example.com"
    assert parsed["From"] == SENDER
    assert parsed["Message-ID"] == msg_id
    assert "482913" in parsed["Subject"]
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and "482913" in body.get_content()
    assert not list((tmp_path / "outbox").glob(".*.tmp"))  # no half-written file left

    (listed,) = mailer.outbox_messages()
    assert listed.path == files[0]
    assert listed.to == "ann@example.com"
    assert listed.subject == letter.subject
    assert listed.date == at.replace(microsecond=0)
    assert "482913" in listed.text and "30 minutes" in listed.text


def test_outbox_reads_a_folded_subject_back_as_written(tmp_path: Path) -> None:
    """A subject longer than a header line is folded in the file, not in the outbox list."""
    mailer = OutboxMailer(tmp_path, sender=SENDER)
    subject = "We received your request to opt out of the sale and sharing of your data"
    mailer.send("ann@example.com", subject, "text")
    (path,) = tmp_path.glob("*.eml")
    assert "Subject:\n " in path.read_text() or "Subject: We" in path.read_text()
    (listed,) = mailer.outbox_messages()
    assert listed.subject == subject


def test_outbox_lists_in_order_and_keeps_html_and_headers(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path, sender=SENDER)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(3):
        mailer.send(
            f"p{i}@example.com",
            f"Message {i}",
            f"text {i}",
            html=f"<p>html {i}</p>",
            headers=unsubscribe_headers("https://ploomber.io/u/tok", mailto="unsub@ploomber.io"),
            now=t0 + dt.timedelta(seconds=10 - i),  # written newest first
        )
    listed = mailer.outbox_messages()
    assert [m.subject for m in listed] == ["Message 2", "Message 1", "Message 0"]  # by time
    assert listed[0].text.strip() == "text 2"  # the plain part is the one shown
    assert listed[0].headers["List-Unsubscribe"] == "<https://ploomber.io/u/tok>, <mailto:unsub@ploomber.io>"
    assert listed[0].headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with listed[0].path.open("rb") as fh:
        parsed = BytesParser(policy=policy.default).parse(fh)
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None and "<p>html 2</p>" in html.get_content()


def test_from_settings_picks_the_transport(tmp_path: Path) -> None:
    out = Mailer.from_settings(Settings(data_dir=tmp_path))
    assert isinstance(out, OutboxMailer)
    assert out.folder == tmp_path / "outbox"
    assert out.outbox_messages() == []  # the folder does not exist yet

    smtp = Mailer.from_settings(Settings(data_dir=tmp_path, smtp_url="smtp://u:s3cret@mail.example:2525"))
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.username, smtp.tls) == ("mail.example", 2525, "u", "none")
    assert "s3cret" not in smtp.describe
    assert smtp.outbox_messages() == []


@pytest.mark.parametrize(
    ("url", "port", "tls"),
    [
        ("smtp://mail.example", 25, "none"),
        ("smtp://mail.example?starttls=1", 587, "starttls"),
        ("smtps://mail.example", 465, "ssl"),
        ("smtps://mail.example:4650?timeout=3", 4650, "ssl"),
    ],
)
def test_smtp_url_forms(url: str, port: int, tls: str) -> None:
    m = SmtpMailer.from_url(url)
    assert (m.port, m.tls) == (port, tls)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://u:pw@mail.example", "scheme must be smtp:// or smtps://"),
        ("smtp://u:pw@mail.example?tls=1", "unknown option(s) tls"),
        ("smtps://u:pw@mail.example?starttls=1", "TLS already"),
        ("smtp://u:pw@mail.example:port", "Port could not be cast"),
        ("smtp://", "no host"),
    ],
)
def test_bad_smtp_url_is_named_without_the_password(url: str, message: str) -> None:
    with pytest.raises(MailInputError, match="FIDUCIARY_SMTP_URL") as err:
        SmtpMailer.from_url(url)
    assert message in str(err.value)
    assert "pw" not in str(err.value).replace("//u:***@", "")


def test_bad_messages_are_refused_before_sending(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path, sender=SENDER)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"to": "not-an-address"}, "recipient: not an email address"),
        ({"to": "a@example.com\r\nBcc: x@example.com"}, "line breaks"),
        ({"subject": "Hi\nBcc: x@example.com"}, "subject"),
        ({"headers": {"Subject": "again"}}, "set by the mailer"),
        ({"headers": {"X-Bad": "a\r\nb"}}, "one line"),
        ({"headers": {"Bad Name": "x"}}, "not a valid header name"),
        (
            {
                "headers": {
                    "List-Unsubscribe": "<mailto:u@example.com>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                }
            },
            "https://",
        ),
        (
            {"headers": {"List-Unsubscribe": "<https://x.example/u>", "List-Unsubscribe-Post": "yes"}},
            "One-Click",
        ),
    ]
    for change, message in cases:
        args: dict[str, Any] = {"to": "ann@example.com", "subject": "Hello", "text": "Hi", **change}
        with pytest.raises(MailInputError, match="mail") as err:
            mailer.send(args.pop("to"), args.pop("subject"), args.pop("text"), **args)
        assert message in str(err.value), (change, str(err.value))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MailInputError, match="https"):
        unsubscribe_headers("http://ploomber.io/u")


def test_letters_are_short_and_say_what_matters() -> None:
    due = dt.datetime(2026, 2, 28, tzinfo=dt.UTC)
    ack = acknowledgement_letter(organization="Ploomber", request_type="erase", reference="r1", due=due)
    assert "request to delete your data" in ack.text and "28 February 2026" in ack.text and "r1" in ack.text
    done = done_letter(
        organization="Ploomber", request_type="access", reference="r1", status_url="https://p.example/r/r1"
    )
    assert "https://p.example/r/r1" in done.text and "completed" in done.text
    part = done_letter(organization="Ploomber", request_type="erase", reference="r1", partial=True)
    assert "in part" in part.text and "partly" in part.subject
    denied = denied_letter(
        organization="Ploomber",
        request_type="erase",
        reference="r1",
        reason="Legal hold.",
        authority="the CNIL",
    )
    assert "Reason: Legal hold." in denied.text and "the CNIL" in denied.text
    ext = extended_letter(
        organization="Ploomber", request_type="access", reference="r1", reason="Many systems.", due=due
    )
    assert "Why: Many systems." in ext.text and "only extension" in ext.text
    for letter in (ack, done, part, denied, ext):
        assert len(letter.text) < 800 and "\n" not in letter.subject


# --------------------------------------------------------------------------- real SMTP
class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    handler = Recorder()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def test_smtp_server_receives_the_message(smtp_server: tuple[Recorder, int]) -> None:
    handler, port = smtp_server
    mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", sender=SENDER)
    letter = code_letter(organization="Ploomber", code="000042", minutes=30, reference="r9")
    headers = unsubscribe_headers("https://ploomber.io/u/tok")
    msg_id = mailer.send("bob@example.org", letter.subject, letter.text, headers=headers)

    (env,) = handler.envelopes
    assert env.mail_from == "contact@ploomber.io"
    assert env.rcpt_tos == ["bob@example.org"]
    received = BytesParser(policy=policy.default).parsebytes(env.content)
    assert received["Message-ID"] == msg_id
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = received.get_body(preferencelist=("plain",))
    assert body is not None and "000042" in body.get_content()


class _Auth:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"fid", b"p@ss w0rd")
        return AuthResult(success=ok, handled=False)


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client context
    that trusts exactly it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_starttls_with_login(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path)
    handler = Recorder()
    port = _free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=_Auth(),
        auth_required=True,
    )
    controller.start()
    try:
        url = f"smtp://fid:p%40ss%20w0rd@127.0.0.1:{port}?starttls=1"
        mailer = SmtpMailer.from_url(url, sender=SENDER, ssl_context=client_ctx)
        mailer.send("carol@example.net", "Hello", "over TLS")
        assert [e.rcpt_tos for e in handler.envelopes] == [["carol@example.net"]]

        wrong = SmtpMailer.from_url(
            f"smtp://fid:nope@127.0.0.1:{port}?starttls=1", sender=SENDER, ssl_context=client_ctx
        )
        with pytest.raises(MailError, match="refused the login of user 'fid'") as err:
            wrong.send("carol@example.net", "Hello", "again")
        assert "nope" not in str(err.value)

        # Without STARTTLS the server refuses to go on: a clear error, not a silent drop.
        plain = SmtpMailer.from_url(f"smtp://fid:p%40ss%20w0rd@127.0.0.1:{port}", sender=SENDER)
        with pytest.raises(MailError, match=f"SMTP server 127.0.0.1:{port}"):
            plain.send("carol@example.net", "Hello", "in clear")
        assert len(handler.envelopes) == 1
    finally:
        controller.stop()


def test_unreachable_smtp_server_is_a_clear_error() -> None:
    port = _free_port()  # nothing listens there
    mailer = SmtpMailer.from_url(f"smtp://u:secret@127.0.0.1:{port}?timeout=2", sender=SENDER)
    with pytest.raises(MailError) as err:
        mailer.send("dan@example.com", "Hello", "Hi")
    text = str(err.value)
    assert f"could not send mail through the SMTP server 127.0.0.1:{port}" in text
    assert "ConnectionRefusedError" in text
    assert "secret" not in text


class Refuser(Recorder):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        return f"550 5.1.1 <{address}>: no such user"


def test_recipient_refused_does_not_echo_the_address() -> None:
    handler = Refuser()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", sender=SENDER)
        with pytest.raises(MailError, match="refused the recipient") as err:
            mailer.send("erin@example.com", "Hello", "Hi")
        assert "erin" not in str(err.value)
        assert handler.envelopes == []
    finally:
        controller.stop()

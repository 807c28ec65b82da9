"""One mail sender for everything Fiduciary tells people: codes, acknowledgements, answers.

``Mailer.from_settings(settings)`` picks the transport:

- ``FIDUCIARY_SMTP_URL`` set: SMTP. ``smtp://user:pass@host:port`` (plain; add
  ``?starttls=1`` to upgrade with STARTTLS), ``smtps://...`` (TLS from the first byte,
  port 465 by default). ``?timeout=10`` sets the connection timeout in seconds.
- otherwise: an **outbox** folder (``data_dir/outbox``) where every message is written as
  an ``.eml`` file named ``<UTC timestamp>-<message id>.eml``, so a name sorts by time and
  never collides. ``outbox_messages()`` lists them for the console. Nothing leaves the
  machine: the default is safe for development and for a first look.

Messages are built with ``email.message.EmailMessage`` (plain text, optionally an HTML
alternative). Extra headers go through ``headers``; ``unsubscribe_headers`` builds the RFC
8058 one-click pair (List-Unsubscribe + List-Unsubscribe-Post), which ``send`` checks.

The letters below (``code_letter`` ...) are the request lifecycle's texts: plain, short,
and free of anything the reader did not ask for.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid, parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from fiduciary.config import Settings

__all__ = [
    "DEFAULT_SENDER",
    "Letter",
    "MailError",
    "MailInputError",
    "Mailer",
    "OutboxMailer",
    "OutboxMessage",
    "SmtpMailer",
    "acknowledgement_letter",
    "build_message",
    "code_letter",
    "denied_letter",
    "done_letter",
    "extended_letter",
    "read_eml",
    "request_label",
    "unsubscribe_headers",
]

DEFAULT_SENDER = "Privacy <privacy@localhost>"

# Headers the mailer sets itself; a caller passing one would produce a second copy.
_RESERVED = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    )
)
# RFC 5322 field name: printable ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9.-]+")


class MailError(Exception):
    """A message could not be delivered (SMTP refused it, the server is unreachable ...)."""


class MailInputError(MailError, ValueError):
    """A message or a setting that cannot be used; says which part is wrong."""


# ------------------------------------------------------------------------------ messages
def _check_address(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MailInputError(f"mail {what}: an email address is needed")
    if "\r" in value or "\n" in value:
        raise MailInputError(f"mail {what}: line breaks are not allowed in an address")
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise MailInputError(f"mail {what}: not an email address")
    return value.strip()


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise MailInputError(f"mail header {name!r}: not a valid header name")
        if name.lower() in _RESERVED:
            raise MailInputError(f"mail header {name!r}: set by the mailer, pass it as an argument instead")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise MailInputError(f"mail header {name!r}: the value must be one line of text")
        out[name] = value
    lower = {k.lower(): v for k, v in out.items()}
    post = lower.get("list-unsubscribe-post")
    if post is not None:
        # RFC 8058 section 3.1: the POST header has exactly this value, and a one-click
        # unsubscribe needs an HTTPS URI in List-Unsubscribe to post to.
        if post.strip() != "List-Unsubscribe=One-Click":
            raise MailInputError("mail header List-Unsubscribe-Post: must be 'List-Unsubscribe=One-Click'")
        if not re.search(r"<https://[^>]+>", lower.get("list-unsubscribe", "")):
            raise MailInputError(
                "mail header List-Unsubscribe-Post needs a List-Unsubscribe header with an <https://...> URI"
            )
    return out


def unsubscribe_headers(url: str, mailto: str | None = None) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe headers: the HTTPS ``url`` receives a POST with
    ``List-Unsubscribe=One-Click``; ``mailto`` is the fallback for older clients."""
    if not url.startswith("https://"):
        raise MailInputError(f"unsubscribe url {url!r}: RFC 8058 needs an https:// URL")
    uris = [f"<{url}>"]
    if mailto:
        uris.append(f"<mailto:{mailto}>")
    return {"List-Unsubscribe": ", ".join(uris), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def build_message(
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> EmailMessage:
    """The message as it will be sent: From, To, Subject, Date, Message-ID, the text part
    and an optional HTML alternative."""
    sender = _check_address(sender, "sender")
    to = _check_address(to, "recipient")
    if not isinstance(subject, str) or not subject.strip() or "\r" in subject or "\n" in subject:
        raise MailInputError("mail subject: one non-empty line of text is needed")
    if not isinstance(text, str):
        raise MailInputError("mail text: a string is needed")
    extra = _check_headers(headers or {})
    at = (now or datetime.now(UTC)).astimezone(UTC)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain=domain)
    for name, value in extra.items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


# ------------------------------------------------------------------------------- senders
@dataclass(frozen=True)
class OutboxMessage:
    """A message in the outbox folder, as the console shows it."""

    path: Path
    to: str
    subject: str
    date: datetime | None
    text: str
    message_id: str
    headers: dict[str, str]


class Mailer(ABC):
    """Sends messages; ``from_settings`` picks SMTP or the outbox folder."""

    def __init__(self, sender: str = DEFAULT_SENDER) -> None:
        self.sender = _check_address(sender, "sender")

    @staticmethod
    def from_settings(
        settings: Settings, *, sender: str | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> Mailer:
        """SMTP when ``settings.smtp_url`` (FIDUCIARY_SMTP_URL) is set, otherwise the outbox
        folder ``settings.data_dir / "outbox"``."""
        if settings.smtp_url:
            return SmtpMailer.from_url(
                settings.smtp_url, sender=sender or DEFAULT_SENDER, ssl_context=ssl_context
            )
        return OutboxMailer(Path(settings.data_dir) / "outbox", sender=sender or DEFAULT_SENDER)

    def send(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        sender: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Send one message; returns its Message-ID. MailInputError for a bad message
        (nothing sent), MailError when the transport fails."""
        at = (now or datetime.now(UTC)).astimezone(UTC)
        msg = build_message(sender or self.sender, to, subject, text, html, headers, now=at)
        self.deliver(msg, at)
        return str(msg["Message-ID"])

    @abstractmethod
    def deliver(self, msg: EmailMessage, at: datetime | None = None) -> None:
        """Hand a built message to the transport (``at``: when it was sent, precisely)."""

    @property
    @abstractmethod
    def describe(self) -> str:
        """Where messages go, for logs and the console (never with a password)."""

    def outbox_messages(self) -> list[OutboxMessage]:
        """Messages kept in an outbox folder, oldest first; none for SMTP."""
        return []


class OutboxMailer(Mailer):
    """Writes each message as an .eml file in ``folder`` instead of sending it."""

    def __init__(self, folder: Path | str, sender: str = DEFAULT_SENDER) -> None:
        super().__init__(sender)
        self.folder = Path(folder)

    @property
    def describe(self) -> str:
        return f"outbox folder {self.folder}"

    def deliver(self, msg: EmailMessage, at: datetime | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # The name starts with the send time to the microsecond (the Date header has whole
        # seconds only), so names sort in sending order.
        at = (at or datetime.now(UTC)).astimezone(UTC)
        token = _SAFE_NAME.sub("-", str(msg["Message-ID"]).strip("<>"))[:80]
        name = f"{at:%Y%m%dT%H%M%S%fZ}-{token}.eml"
        data = msg.as_bytes(policy=email_policy.SMTP)
        # Written aside, then renamed: a reader listing the folder never sees half a file.
        # Mode 0600: the outbox holds what would have been mailed, codes included.
        tmp = self.folder / f".{name}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise MailError(f"could not write to the outbox folder {self.folder}: {exc}") from exc

    def outbox_messages(self) -> list[OutboxMessage]:
        if not self.folder.is_dir():
            return []
        return [read_eml(p) for p in sorted(self.folder.glob("*.eml"))]


def read_eml(path: Path) -> OutboxMessage:
    """An .eml file as an OutboxMessage (its plain-text body, or the HTML one if alone)."""
    with path.open("rb") as fh:
        msg = BytesParser(policy=email_policy.default).parse(fh)
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    date_header = msg["Date"]
    return OutboxMessage(
        path=path,
        # A long header is folded after "Subject:"; unfolded it keeps the fold's space.
        to=str(msg["To"] or "").strip(),
        subject=str(msg["Subject"] or "").strip(),
        date=parsedate_to_datetime(str(date_header)) if date_header else None,
        text=str(text),
        message_id=str(msg["Message-ID"] or ""),
        headers={k: str(v) for k, v in msg.items()},
    )


class SmtpMailer(Mailer):
    """Sends through an SMTP server: one connection per message (requests are rare)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: str = "none",
        timeout: float = 10.0,
        sender: str = DEFAULT_SENDER,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(sender)
        if tls not in ("none", "starttls", "ssl"):
            raise MailInputError(f"smtp tls {tls!r}: one of none, starttls, ssl")
        self.host, self.port = host, port
        self.username, self._password = username, password
        self.tls = tls
        self.timeout = timeout
        self.ssl_context = ssl_context

    @classmethod
    def from_url(
        cls, url: str, *, sender: str = DEFAULT_SENDER, ssl_context: ssl.SSLContext | None = None
    ) -> SmtpMailer:
        """``smtp://user:pass@host:port[?starttls=1][&timeout=10]`` or ``smtps://...``."""
        parts = urlsplit(url)
        shown = _redact(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise MailInputError(f"FIDUCIARY_SMTP_URL {shown}: the scheme must be smtp:// or smtps://")
        if not parts.hostname:
            raise MailInputError(f"FIDUCIARY_SMTP_URL {shown}: no host")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"starttls", "timeout"})
        if unknown:
            raise MailInputError(
                f"FIDUCIARY_SMTP_URL {shown}: unknown option(s) {', '.join(unknown)} "
                "(known: starttls, timeout)"
            )
        starttls = query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes", "on")
        if starttls and parts.scheme == "smtps":
            raise MailInputError(f"FIDUCIARY_SMTP_URL {shown}: smtps:// is TLS already; drop ?starttls")
        try:
            timeout = float(query.get("timeout", ["10"])[-1])
            port = parts.port
        except ValueError as exc:
            raise MailInputError(f"FIDUCIARY_SMTP_URL {shown}: {exc}") from None
        tls = "ssl" if parts.scheme == "smtps" else "starttls" if starttls else "none"
        if port is None:
            port = 465 if tls == "ssl" else 587 if tls == "starttls" else 25
        return cls(
            parts.hostname,
            port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            timeout=timeout,
            sender=sender,
            ssl_context=ssl_context,
        )

    @property
    def describe(self) -> str:
        scheme = "smtps" if self.tls == "ssl" else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}" + ("?starttls=1" if self.tls == "starttls" else "")

    def deliver(self, msg: EmailMessage, at: datetime | None = None) -> None:
        where = f"SMTP server {self.host}:{self.port}"
        try:
            context = self.ssl_context or ssl.create_default_context()
            smtp: smtplib.SMTP
            if self.tls == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.tls == "starttls":
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"{where} refused the login of user {self.username!r}: {_smtp_reply(exc)}"
            ) from None
        except smtplib.SMTPRecipientsRefused:
            # The server's reply names the address: not repeated here (logs are not for it).
            raise MailError(f"{where} refused the recipient") from None
        except smtplib.SMTPResponseException as exc:
            raise MailError(f"{where} refused the message: {_smtp_reply(exc)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"could not send mail through the {where}: {type(exc).__name__}: {exc}") from None


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    err = exc.smtp_error
    text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
    return f"{exc.smtp_code} {text}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# ------------------------------------------------------------------------------ letters
@dataclass(frozen=True)
class Letter:
    """A subject line and a plain-text body, ready for ``Mailer.send``."""

    subject: str
    text: str


_LABELS = {
    "access": "request for a copy of your data",
    "portability": "request for your data in a portable format",
    "rectify": "request to correct your data",
    "erase": "request to delete your data",
    "restrict": "request to restrict the use of your data",
    "object": "objection to the use of your data",
    "withdraw_consent": "withdrawal of consent",
    "opt_out_of_sale": "request to opt out of the sale and sharing of your data",
    "opt_out_of_marketing": "request to stop marketing messages",
    "shine_the_light": "Shine the Light request",
    "close_account": "request to close your account",
    "visibility": "request to change who can see your data",
}


def request_label(request_type: str) -> str:
    return _LABELS.get(str(request_type), f"{request_type} request")


def _day(at: date | datetime) -> str:
    return f"{at:%d %B %Y}".lstrip("0")


def _sign(organization: str) -> str:
    return f"\n-- \n{organization} privacy team\n"


def code_letter(*, organization: str, code: str, minutes: int, reference: str) -> Letter:
    return Letter(
        subject=f"Your verification code: {code}",
        text=(
            f"Your verification code is:\n\n    {code}\n\n"
            f"Enter it on the page where you made your request. It works once, for {minutes} minutes.\n"
            f"Request reference: {reference}\n\n"
            "If you did not ask us anything, ignore this message: nothing happens without the code.\n"
            + _sign(organization)
        ),
    )


def acknowledgement_letter(
    *,
    organization: str,
    request_type: str,
    reference: str,
    due: date | datetime,
    status_url: str | None = None,
) -> Letter:
    label = request_label(request_type)
    where = f"\nFollow it here: {status_url}\n" if status_url else ""
    return Letter(
        subject=f"We received your {label}",
        text=(
            f"We received your {label} (reference {reference}).\n\n"
            f"We will answer by {_day(due)} at the latest.\n{where}" + _sign(organization)
        ),
    )


def done_letter(
    *,
    organization: str,
    request_type: str,
    reference: str,
    partial: bool = False,
    status_url: str | None = None,
    note: str | None = None,
) -> Letter:
    label = request_label(request_type)
    head = (
        f"We have completed your {label} in part (reference {reference})."
        if partial
        else f"We have completed your {label} (reference {reference})."
    )
    why = (
        "\nSome data had to be kept or could not be handled, for the reasons the status page gives.\n"
        if partial
        else ""
    )
    extra = f"\n{note}\n" if note else ""
    where = f"\nSee the result here: {status_url}\n" if status_url else ""
    return Letter(
        subject=f"Your {label} is {'partly ' if partial else ''}done",
        text=head + "\n" + why + extra + where + _sign(organization),
    )


def denied_letter(
    *,
    organization: str,
    request_type: str,
    reference: str,
    reason: str,
    authority: str | None = None,
    status_url: str | None = None,
) -> Letter:
    label = request_label(request_type)
    complain = (
        f"\nIf you disagree, you may complain to {authority}.\n"
        if authority
        else "\nIf you disagree, reply to this message.\n"
    )
    where = f"\nStatus: {status_url}\n" if status_url else ""
    return Letter(
        subject=f"We cannot act on your {label}",
        text=(
            f"We cannot act on your {label} (reference {reference}).\n\n"
            f"Reason: {reason}\n" + complain + where + _sign(organization)
        ),
    )


def extended_letter(
    *,
    organization: str,
    request_type: str,
    reference: str,
    reason: str,
    due: date | datetime,
    status_url: str | None = None,
) -> Letter:
    label = request_label(request_type)
    where = f"\nFollow it here: {status_url}\n" if status_url else ""
    return Letter(
        subject=f"We need more time for your {label}",
        text=(
            f"We need more time to answer your {label} (reference {reference}).\n\n"
            f"Why: {reason}\n\nWe will answer by {_day(due)} at the latest. "
            "This is the only extension we may take.\n" + where + _sign(organization)
        ),
    )

"""The consent room: the consent ledger, browser signals (GPC, DNT), unsubscribe tokens."""

from fiduciary.consent.ledger import (
    CHANNELS,
    ConsentError,
    ConsentEvent,
    ConsentLedger,
    EventKind,
    NewEvent,
    UnknownEvent,
    UnknownSubject,
    notice_digest,
)
from fiduciary.consent.signals import dnt, gpc, truncate_ip
from fiduciary.consent.tokens import BadToken, make_unsubscribe_token, read_unsubscribe_token

__all__ = [
    "CHANNELS",
    "BadToken",
    "ConsentError",
    "ConsentEvent",
    "ConsentLedger",
    "EventKind",
    "NewEvent",
    "UnknownEvent",
    "UnknownSubject",
    "dnt",
    "gpc",
    "make_unsubscribe_token",
    "notice_digest",
    "read_unsubscribe_token",
    "truncate_ip",
]

"""Upload screening (PUT-9): hash lists of known illegal content, checked at write time.

- ``lists``: loading text lists (plain hex, ``sha256sum`` output, NSRL-like CSV), the
  compact sorted index, the mmap-able binary cache;
- ``digest``: hashing bytes, streams and paths for several algorithms at once;
- ``check``: the lists in use and the pure check (``HashLists.check`` -> ``Verdict``);
- ``screener``: what a match does, as the policy says (``screening.on_match``): refuse
  the upload, quarantine it encrypted, queue a report for the designated organisation,
  audit it; and sending the queued reports.

See docs/screening.md.
"""

from fiduciary.screening.check import CACHE_SUFFIX, HashLists, Match, Verdict
from fiduciary.screening.digest import Digester, digest_source
from fiduciary.screening.lists import (
    ALGORITHMS,
    HashList,
    HashListError,
    HashSet,
    LineProblem,
    LoadReport,
    load_hash_list,
)
from fiduciary.screening.screener import (
    MatchRecord,
    ReportRecord,
    Screener,
    ScreeningError,
    SendSummary,
    UploadRefused,
)

__all__ = [
    "ALGORITHMS",
    "CACHE_SUFFIX",
    "Digester",
    "HashList",
    "HashListError",
    "HashLists",
    "HashSet",
    "LineProblem",
    "LoadReport",
    "Match",
    "MatchRecord",
    "ReportRecord",
    "Screener",
    "ScreeningError",
    "SendSummary",
    "UploadRefused",
    "Verdict",
    "digest_source",
    "load_hash_list",
]

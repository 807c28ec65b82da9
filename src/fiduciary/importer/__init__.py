"""The policy importer: a privacy policy's text -> a draft policy.yaml, every claim tied to
the sentence that says it (``fiduciary policy import-text``, docs/importer.md)."""

from fiduciary.importer.model import FIELDS, LIST_FIELDS, OBJECT_FIELDS, Claim, Evidence, Extraction

__all__ = ["FIELDS", "LIST_FIELDS", "OBJECT_FIELDS", "Claim", "Evidence", "Extraction"]

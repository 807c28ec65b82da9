"""Settings, from FIDUCIARY_* environment variables (pydantic-settings).

Out of the box everything lives in one data directory: the SQLite database, the separate
key database, and the keyring file. Production sets URLs instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebhookSetting(BaseModel):
    url: str
    secret: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIDUCIARY_", extra="ignore")

    data_dir: Path = Field(
        Path("fiduciary-data"), description="Where the default SQLite files and keyring live."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the main store; default: SQLite in data_dir."
    )
    keys_database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the key store, kept apart from the data so that its "
        "backups can have their own, short retention; default: SQLite in data_dir.",
    )
    keyring: str | None = Field(
        None,
        description="The keyring itself as JSON (for containers); otherwise read from keyring_file.",
    )
    keyring_file: Path | None = Field(None, description="Default: data_dir/keyring.json.")
    broker_url: str | None = None
    smtp_url: str | None = None
    policy: Path | None = Field(None, description="The policy.yaml the service runs (FIDUCIARY_POLICY).")
    connections: dict[str, str] = Field(
        default_factory=dict,
        description="The company's datastores: JSON object, datastore fides_key -> SQLAlchemy URL "
        "(FIDUCIARY_CONNECTIONS).",
    )
    webhooks: dict[str, WebhookSetting] = Field(
        default_factory=dict,
        description="Recipients told through a webhook: JSON object, recipient (or its webhook "
        'connector name) -> {"url": ..., "secret": ...} (FIDUCIARY_WEBHOOKS).',
    )
    checkpoint_every: int = Field(1000, ge=1, description="Audit entries between two signed checkpoints.")
    screening_dir: Path | None = Field(
        None,
        description="Upload screening (PUT-9): hash-list caches (lists/) and the encrypted "
        "quarantine (quarantine/); default: data_dir/screening.",
    )
    screening_report_to: str | None = Field(
        None,
        description="The organisation screening matches are reported to, when the policy names "
        "none (its screening.report_to comes first).",
    )
    screening_report_email: str | None = Field(
        None, description="The email address reports of screening matches are sent to."
    )
    banner_origins: list[str] = Field(
        default_factory=list,
        description="Origins of the sites that embed the consent banner (/banner.js) and may post "
        'its choices (CORS): JSON list, e.g. ["https://www.example.com"] (FIDUCIARY_BANNER_ORIGINS).',
    )

    retention_every: str | None = Field(
        None,
        description="How often the server sweeps retention itself (inline scheduler), e.g. "
        '"1 day" (FIDUCIARY_RETENTION_EVERY). Unset: the server does not sweep; with a broker '
        "Celery beat does (docs/retention.md).",
    )

    @field_validator("retention_every")
    @classmethod
    def _a_period(cls, value: str | None) -> str | None:
        if value is not None:
            retention_interval(value)
        return value

    def override(self, **values: object) -> Settings:
        """A copy with ``values`` set; a None value keeps the setting (CLI options unset)."""
        return self.model_copy(update={k: v for k, v in values.items() if v is not None})

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fiduciary.db'}"

    def resolved_keys_database_url(self) -> str:
        return self.keys_database_url or f"sqlite:///{self.data_dir / 'keys.db'}"

    def resolved_keyring_file(self) -> Path:
        return self.keyring_file or self.data_dir / "keyring.json"

    def resolved_screening_dir(self) -> Path:
        return self.screening_dir or self.data_dir / "screening"


def retention_interval(every: str) -> timedelta:
    """``every`` ("1 day", "12 hours", "P1D") as a positive timedelta; ValueError otherwise."""
    from fiduciary.policy.period import Period, PeriodError

    try:
        period = Period.parse(every)
        now = datetime.now(UTC)
        end = period.add_to(now)
    except PeriodError as exc:
        raise ValueError(f"{every!r}: {exc}") from None
    if not isinstance(end, datetime) or end <= now:
        raise ValueError(f"{every!r}: must be longer than nothing")
    return end - now

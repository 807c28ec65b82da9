"""Settings, from FIDUCIARY_* environment variables (pydantic-settings).

Out of the box everything lives in one data directory: the SQLite database, the separate
key database, and the keyring file. Production sets URLs instead.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
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

    def override(self, **values: object) -> Settings:
        """A copy with ``values`` set; a None value keeps the setting (CLI options unset)."""
        return self.model_copy(update={k: v for k, v in values.items() if v is not None})

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fiduciary.db'}"

    def resolved_keys_database_url(self) -> str:
        return self.keys_database_url or f"sqlite:///{self.data_dir / 'keys.db'}"

    def resolved_keyring_file(self) -> Path:
        return self.keyring_file or self.data_dir / "keyring.json"

"""Schemathesis against the API's own OpenAPI schema, in process (ASGI): generated
requests to every operation, valid ones and invalid ones, with an admin key so that they
reach the code behind authentication. No answer may be a server error (5xx): bad input is
a 4xx problem. Examples per operation are bounded so the run stays well under a minute.

(Schemathesis' pytest plugin does not run on pytest 9 yet; each operation's strategy is
driven with Hypothesis directly, which is what the plugin does.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import create_api_key

EXAMPLES = 25  # per operation and mode


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    fid = Fiduciary.open(example_policy("filelocker"), data_dir=tmp_path / "data", keyring=Keyring.generate())
    # A few real subjects, so that some generated bodies find someone.
    for i in range(3):
        fid.sign_up("customer", identities={"email": f"s{i}@example.com"}, region="DE", age=30)
    _, key = create_api_key(fid, "schemathesis", ["admin"])
    app = create_app(
        fid, settings=Settings(data_dir=tmp_path / "data"), mailer=OutboxMailer(tmp_path / "outbox")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # httpx vs httpx2 notices from the ASGI transport
        yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", app), key
    app.state.web.close()
    fid.close()


def test_no_operation_answers_a_server_error(api: tuple[Any, str]) -> None:
    schema, key = api
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    call()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid one
            except Exception as exc:  # collected: one report names every failing operation
                failures.append(
                    f"{op.method.upper()} {op.path} [{mode.value}]: {type(exc).__name__}: {exc}"[:2000]
                )
    assert operations >= 30
    assert not failures, "\n\n".join(failures)

"""Settings: presets, overrides, validation in one message, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ionqbo.cli import cli
from ionqbo.config import ION_PRESETS, SPECS, Settings, env_example
from ionqbo.errors import ConfigError, ExitCode


def test_defaults_point_at_production() -> None:
    s = Settings.load(None, {})
    assert s.ion_api_url == "https://api.buildwithion.com/graphql"
    assert s.ion_token_url.endswith("/realms/api-keys/protocol/openid-connect/token")
    assert s.qbo_base_url == "https://quickbooks.api.intuit.com"
    assert s.po_statuses == ("ORDERED",)


@pytest.mark.parametrize("env", sorted(ION_PRESETS))
def test_ion_presets(env: str) -> None:
    s = Settings.load(None, {"ION_ENVIRONMENT": env})
    assert (s.ion_api_url, s.ion_token_url) == ION_PRESETS[env]


def test_urls_override_presets_and_sandbox_qbo_host() -> None:
    s = Settings.load(None, {"ION_ENVIRONMENT": "gov", "ION_API_URL": "http://127.0.0.1:9/graphql",
                             "QBO_ENVIRONMENT": "sandbox"})
    assert s.ion_api_url == "http://127.0.0.1:9/graphql"
    assert s.ion_token_url == ION_PRESETS["gov"][1]
    assert s.qbo_base_url == "https://sandbox-quickbooks.api.intuit.com"


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("ION_CLIENT_ID=from-file\nQBO_AP_ACCOUNT_ID=33\n")
    s = Settings.load(env_file, {"ION_CLIENT_ID": "from-env"})
    assert s.ion_client_id == "from-env"
    assert s.qbo_ap_account_id == "33"


CASES = [
    pytest.param({"ION_ENVIRONMENT": "mars"}, "ION_ENVIRONMENT", id="bad-preset"),
    pytest.param({"QBO_ENVIRONMENT": "prod"}, "QBO_ENVIRONMENT", id="bad-qbo-env"),
    pytest.param({"QBO_AP_ACCOUNT_ID": "A/P"}, "QBO_AP_ACCOUNT_ID", id="non-numeric-id"),
    pytest.param({"ION_API_URL": "ftp://x"}, "ION_API_URL", id="bad-url"),
    pytest.param({"IONQBO_PO_STATUSES": "ORDERED,in review"}, "IONQBO_PO_STATUSES", id="unknown-status"),
    pytest.param({"IONQBO_ITEM_NAME_TEMPLATE": "{sku}"}, "IONQBO_ITEM_NAME_TEMPLATE", id="bad-template"),
    pytest.param({"IONQBO_PAGE_SIZE": "ten"}, "IONQBO_PAGE_SIZE", id="not-a-number"),
    pytest.param({"IONQBO_LOG_FORMAT": "xml"}, "IONQBO_LOG_FORMAT", id="log-format"),
]


@pytest.mark.parametrize(("env", "name"), CASES)
def test_invalid_values_are_named(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(None, env)
    assert name in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_every_problem_in_one_message() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(None, {"ION_ENVIRONMENT": "mars"}, require=["ION_CLIENT_ID", "QBO_CLIENT_SECRET"])
    assert len(info.value.problems) == 3


def test_missing_env_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.env", {})


def test_three_missing_settings_give_one_error_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in SPECS:
        monkeypatch.delenv(spec.name, raising=False)
    env_file = tmp_path / "partial.env"
    # Everything a sync needs except ION_CLIENT_SECRET, QBO_CLIENT_ID and QBO_AP_ACCOUNT_ID.
    env_file.write_text(
        "ION_CLIENT_ID=abc\nQBO_CLIENT_SECRET=s\nQBO_INVENTORY_ASSET_ACCOUNT_ID=81\n"
        "QBO_INCOME_ACCOUNT_ID=79\nQBO_COGS_ACCOUNT_ID=80\n"
        f"IONQBO_STATE_DIR={tmp_path / 'state'}\n"
    )
    result = CliRunner().invoke(cli, ["sync", "--env-file", str(env_file)])
    assert result.exit_code == 2, result.output
    for name in ("ION_CLIENT_SECRET", "QBO_CLIENT_ID", "QBO_AP_ACCOUNT_ID"):
        assert name in result.stderr
    assert result.stderr.count("error:") == 1
    assert result.stdout == ""


def test_env_example_in_step_with_code() -> None:
    path = Path(__file__).parents[1] / ".env.example"
    assert path.read_text() == env_example(), "regenerate: python -c \"from ionqbo.config import env_example; " \
                                              "open('.env.example','w').write(env_example())\""

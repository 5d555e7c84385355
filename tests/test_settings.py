"""Settings are read once from NEXTWATCH_* variables, validated, and overridden by flags."""

import subprocess
import sys

import pytest

from nextwatch.settings import Settings, SettingsError, load_settings


def test_defaults_without_environment():
    assert load_settings({}) == Settings()


def test_environment_values_are_parsed():
    settings = load_settings({"NEXTWATCH_REDIS_URL": "redis://10.0.0.1:7000/2", "NEXTWATCH_PORT": "8000",
                              "NEXTWATCH_WORKERS": "3", "NEXTWATCH_EVENT_ID_TTL": "60",
                              "NEXTWATCH_REDIS_TIMEOUT": "0.25"})
    assert settings.redis_url == "redis://10.0.0.1:7000/2"
    assert (settings.port, settings.workers, settings.event_id_ttl_seconds) == (8000, 3, 60)
    assert settings.redis_timeout_seconds == 0.25


def test_the_sequence_loss_settings_are_parsed():
    settings = load_settings({"NEXTWATCH_SEQUENCE_LOSS": "sampled", "NEXTWATCH_SEQUENCE_NEGATIVES": "500"})
    assert (settings.sequence_loss, settings.sequence_negatives) == ("sampled", 500)
    assert (Settings().sequence_loss, Settings().sequence_negatives) == ("auto", 3000)


def test_flags_override_environment():
    settings = load_settings({"NEXTWATCH_PORT": "8000"}, port=9000, workers=None)
    assert settings.port == 9000 and settings.workers == Settings().workers


@pytest.mark.parametrize("variable,value,phrase", [
    ("NEXTWATCH_PORT", "eighty", "whole number"),
    ("NEXTWATCH_PORT", "70000", "between 1 and 65535"),
    ("NEXTWATCH_WORKERS", "0", "between 1 and 64"),
    ("NEXTWATCH_REDIS_URL", "localhost:6379", "must start with redis://"),
    ("NEXTWATCH_KEY_PREFIX", "a:b", "characters"),
    ("NEXTWATCH_HISTORY_LENGTH", "-5", "between"),
    ("NEXTWATCH_REDIS_TIMEOUT", "soon", "must be a number of seconds"),
    ("NEXTWATCH_SEQUENCE_LOSS", "softmax", "must be one of auto, full, sampled, got 'softmax'"),
    ("NEXTWATCH_SEQUENCE_NEGATIVES", "0", "between 1 and 1000000"),
    ("NEXTWATCH_SEQUENCE_NEGATIVES", "many", "whole number"),
])
def test_bad_value_names_the_variable(variable, value, phrase):
    with pytest.raises(SettingsError) as problem:
        load_settings({variable: value})
    assert variable in str(problem.value) and phrase in str(problem.value)


def test_bad_flag_names_the_flag():
    with pytest.raises(SettingsError, match="--port"):
        load_settings({}, port=0)


def test_cli_stops_with_the_variable_name():
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "serve"], capture_output=True, text=True,
                            env={"NEXTWATCH_WORKERS": "many", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    assert "NEXTWATCH_WORKERS must be a whole number" in result.stderr


@pytest.mark.parametrize("command", ["serve", "train", "demo", "archive", "import", "models", "keys"])
def test_every_subcommand_has_help(command):
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage: nextwatch " + command in result.stdout

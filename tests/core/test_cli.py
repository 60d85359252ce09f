"""The CLI discovers every command module and turns user errors into exit code 2."""

import subprocess
import sys

from calibadv import cli
from calibadv.errors import ConfigError
from calibadv.train import backends


def test_help_lists_commands_and_exits_cleanly():
    out = subprocess.run(
        [sys.executable, "-m", "calibadv.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "COMMAND" in out.stdout


def test_no_command_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "usage: calibadv" in capsys.readouterr().out


def test_unknown_backend_is_a_config_error_naming_the_choices():
    try:
        backends.get_backend("megatron")
    except ConfigError as err:
        assert "megatron" in str(err) and "local" in str(err) and "verl" in str(err)
    else:
        raise AssertionError("expected ConfigError")

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


def test_name_value_flags_keep_order_and_refuse_a_missing_side_or_a_repeated_name(capsys):
    """``evaluate --suite`` and ``counterfactual --spec`` parse through one helper: a bad item
    exits 2 naming the flag, a repeated name would silently drop the first."""
    from calibadv.commands._pairs import name_value_pairs

    assert list(name_value_pairs(["b=x.yaml", "a=y=z"], "--spec", "M=Y", "m=y")) == ["b", "a"]
    assert name_value_pairs(["a=y=z"], "--spec", "M=Y", "m=y") == {"a": "y=z"}
    for items, match in ((["a"], "expected M=Y, e.g. m=y"), (["=p"], "expected"),
                         (["a="], "expected"), (["a=p", "a=q"], "'a' is given twice")):
        try:
            name_value_pairs(items, "--spec", "M=Y", "m=y")
        except ConfigError as err:
            assert match in str(err) and "--spec" in str(err)
        else:
            raise AssertionError(f"expected ConfigError for {items}")
    argv = ["counterfactual", "--spec", "calibadv", "--start", "s", "--train", "t", "--dev", "d",
            "--out", "o"]
    assert cli.main(argv) == 2
    assert "--spec 'calibadv': expected METHOD=RUNSPEC_YAML" in capsys.readouterr().err

"""`earlybrain run` plumbing: config resolution and validation, the Snakemake command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from earlybrain.cli import main as cli_main
from earlybrain.runner import (
    REPO_ROOT,
    ConfigError,
    resolve_config,
    run_workflow,
    snakemake_command,
)


def test_resolve_config_defaults_and_paths(tmp_path: Path) -> None:
    cfg = resolve_config(tmp_path / "bids", tmp_path / "out")
    assert cfg["bids_dir"] == str((tmp_path / "bids").resolve())
    assert cfg["output_dir"] == str((tmp_path / "out").resolve())
    assert cfg["preprocess"]["n4"]["spline_distance_mm"] == 200


def test_user_configfile_merges_nested_keys(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("preprocess:\n  n4:\n    shrink_factor: 2\n")
    cfg = resolve_config(tmp_path, tmp_path, user)
    assert cfg["preprocess"]["n4"]["shrink_factor"] == 2
    assert cfg["preprocess"]["n4"]["iterations"] == [100, 100]  # rest kept


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("bogus_key: 1\n", "(top level)", "'bogus_key' was unexpected"),
        ("preprocess:\n  n4:\n    shrink: 2\n", "preprocess.n4", "'shrink' was unexpected"),
        ("device: gpu\n", "device", "'gpu' is not one of"),
        ("preprocess:\n  n4:\n    shrink_factor: 0\n", "preprocess.n4.shrink_factor", "0 is less"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, where: str, what: str) -> None:
    user = tmp_path / "user.yaml"
    user.write_text(text)
    with pytest.raises(ConfigError) as exc:
        resolve_config(tmp_path, tmp_path, user)
    msg = str(exc.value)
    assert str(user) in msg and where in msg and what in msg


def test_run_workflow_stops_on_bad_config(tmp_path: Path, capsys) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("subjcts: [f01]\n")
    rc = run_workflow(tmp_path / "bids", tmp_path / "out", configfile=user)
    assert rc == 2
    assert "'subjcts' was unexpected" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_snakemake_command(tmp_path: Path) -> None:
    cmd = snakemake_command(tmp_path / "c.yaml", tmp_path, 3, "profiles/local", ["-n"])
    assert cmd[:3] == [sys.executable, "-m", "snakemake"]
    assert cmd[cmd.index("--snakefile") + 1] == str(REPO_ROOT / "Snakefile")
    assert cmd[cmd.index("--directory") + 1] == str(tmp_path)
    assert cmd[cmd.index("--cores") + 1] == "3"
    assert "--keep-going" in cmd
    # a profile path relative to the repository works from any folder
    assert cmd[cmd.index("--profile") + 1] == str(REPO_ROOT / "profiles" / "local")
    assert cmd[-1] == "-n" and "--" not in cmd


def test_run_options_after_paths_and_passthrough(monkeypatch) -> None:
    """Our options may follow the paths; what follows `--` goes to Snakemake as is."""
    seen = {}
    monkeypatch.setattr("earlybrain.runner.run_workflow", lambda **kw: seen.update(kw) or 0)
    argv = ["run", "b", "o", "--configfile", "x.yaml", "--cores", "3", "--", "-n", "--cores", "9"]
    assert cli_main(argv) == 0
    assert seen["configfile"] == Path("x.yaml") and seen["cores"] == 3
    assert seen["extra"] == ["-n", "--cores", "9"]
    cli_main(["run", "b", "o"])
    assert seen["extra"] == []


def test_profile_and_env_files_parse() -> None:
    profile = yaml.safe_load((REPO_ROOT / "profiles" / "local" / "config.yaml").read_text())
    assert profile["keep-going"] is True and profile["rerun-incomplete"] is True
    env = yaml.safe_load((REPO_ROOT / "envs" / "earlybrain.yaml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_snakemake_hears_ctrl_c_when_earlybrain_runs_in_the_background(tmp_path: Path) -> None:
    """A shell starts `earlybrain run ... &` with SIGINT ignored, and exec keeps that: the
    Snakemake it starts must still get Python's Ctrl-C handler, or the Ctrl-C (or the
    SIGINT a script sends) that we forward would be ignored."""
    out = tmp_path / "handler.txt"
    child = (
        f"import pathlib, signal; pathlib.Path({str(out)!r})"
        ".write_text(str(signal.getsignal(signal.SIGINT)))"
    )
    parent = (
        "import os, signal, sys; from earlybrain.runner import run_until_done; "
        "signal.signal(signal.SIGINT, signal.SIG_IGN); "
        f"sys.exit(run_until_done([sys.executable, '-c', {child!r}], dict(os.environ)))"
    )
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=60)
    assert out.read_text() == "<built-in function default_int_handler>"

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
    parse_config_overrides,
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


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["masks_dir=/data/masks"], {"masks_dir": "/data/masks"}),
        (["device=cpu", "subjects=[f01, f02]"], {"device": "cpu", "subjects": ["f01", "f02"]}),
        (
            ["recon.outer_iterations=2", "recon.resolution_mm=1.2"],
            {"recon": {"outer_iterations": 2, "resolution_mm": 1.2}},
        ),
        (["stack_quality={min_stacks: 1}"], {"stack_quality": {"min_stacks": 1}}),
        (["masks_dir="], {"masks_dir": ""}),
    ],
)
def test_config_words_as_snakemake_takes_them(words: list[str], expected: dict) -> None:
    assert parse_config_overrides(words) == expected


@pytest.mark.parametrize("word", ["masks_dir", "=3", "recon..x=1"])
def test_config_word_without_key_is_a_clear_error(word: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_config_overrides([word])


def test_run_config_reaches_the_workflow_and_wins(monkeypatch, tmp_path: Path) -> None:
    """`--config` is not taken for `--configfile` (argparse's abbreviations are off);
    its keys win over the config file's and keep the file's other keys of a section."""
    user = tmp_path / "user.yaml"
    user.write_text("recon:\n  outer_iterations: 5\n  resolution_mm: 1.0\n")
    seen: dict = {}
    monkeypatch.setattr("earlybrain.runner.run_workflow", lambda **kw: seen.update(kw) or 0)
    argv = ["run", "b", "o", "--configfile", str(user), "--config", "masks_dir=/m"]
    assert cli_main([*argv, "recon.outer_iterations=2"]) == 0
    assert seen["overrides"] == {"masks_dir": "/m", "recon": {"outer_iterations": 2}}
    config = resolve_config(tmp_path, tmp_path / "out", user, seen["overrides"])
    assert config["masks_dir"] == "/m"
    assert config["recon"]["outer_iterations"] == 2 and config["recon"]["resolution_mm"] == 1.0


def test_no_option_of_any_command_may_be_abbreviated(monkeypatch) -> None:
    """Every parser of the CLI, the library commands' own included, refuses prefixes."""
    from earlybrain.cli import PASSTHROUGH

    parsers: list = []

    class SeenError(Exception):
        pass

    def record(self, args=None, namespace=None):
        parsers.append(self)
        raise SeenError

    monkeypatch.setattr("argparse.ArgumentParser.parse_known_args", record)
    for command in [*PASSTHROUGH, "run"]:
        with pytest.raises(SeenError):
            cli_main([command, "--help"])
    assert len(parsers) == len(PASSTHROUGH) + 1
    subparsers = [
        p for action in parsers[-1]._subparsers._group_actions for p in action.choices.values()
    ]
    steps = next(a for a in subparsers if a.prog.endswith(" step"))
    subparsers += [
        p for action in steps._subparsers._group_actions for p in action.choices.values()
    ]
    assert len(subparsers) > 20
    for parser in parsers + subparsers:
        assert parser.allow_abbrev is False, parser.prog
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        cli_main(["run", "b", "o", "--configf", "x.yaml"])


def _fake_run(tmp_path: Path, monkeypatch, rows: list[dict], rc: int = 0) -> None:
    """Snakemake replaced by writing a cohort table with `rows` (and exiting with rc)."""
    import csv

    def fake(cmd, env):
        table = tmp_path / "out" / "earlybrain" / "group" / "cohort.tsv"
        table.parent.mkdir(parents=True, exist_ok=True)
        with table.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
        return rc

    monkeypatch.setattr("earlybrain.runner.run_until_done", fake)


ROW_OK = {
    "participant_id": "sub-f01",
    "session_id": "n/a",
    "status": "ok",
    "failed_stage": "n/a",
    "reason": "n/a",
    "report": "sub-f01.html",
}
ROW_FAILED = ROW_OK | {
    "participant_id": "sub-f02",
    "session_id": "ses-1",
    "status": "failed",
    "failed_stage": "Input discovery and validation",
    "reason": "sub-f02 ses-1: no gestational age (GA, weeks) found " + "x" * 400,
    "report": "../sub-f02_ses-1.html",
}


def test_run_exits_non_zero_when_a_session_failed(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "bids" / "sub-f01").mkdir(parents=True)
    _fake_run(tmp_path, monkeypatch, [ROW_OK, ROW_FAILED])
    assert run_workflow(tmp_path / "bids", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "1 session(s) failed:" in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("  sub-")]
    assert line.startswith("  sub-f02 ses-1: failed at Input discovery and validation: sub-f02")
    assert "x..." in line and "x" * 240 not in line
    assert line.endswith(f"{tmp_path}/out/earlybrain/sub-f02_ses-1.html)")
    _fake_run(tmp_path, monkeypatch, [ROW_OK, ROW_FAILED], rc=1)
    assert run_workflow(tmp_path / "bids", tmp_path / "out") == 1  # Snakemake's own status
    capsys.readouterr()
    _fake_run(tmp_path, monkeypatch, [ROW_OK])
    assert run_workflow(tmp_path / "bids", tmp_path / "out") == 0
    assert "failed" not in capsys.readouterr().err


def test_stale_cohort_table_is_not_read(tmp_path: Path, monkeypatch) -> None:
    """A dry run, or a run that wrote no table, does not report an old run's failures."""
    import os

    (tmp_path / "bids" / "sub-f01").mkdir(parents=True)
    _fake_run(tmp_path, monkeypatch, [ROW_FAILED])
    assert run_workflow(tmp_path / "bids", tmp_path / "out", extra=["-n"]) == 0
    table = tmp_path / "out" / "earlybrain" / "group" / "cohort.tsv"
    monkeypatch.setattr("earlybrain.runner.run_until_done", lambda cmd, env: 0)
    os.utime(table, (0, 0))
    assert run_workflow(tmp_path / "bids", tmp_path / "out") == 0

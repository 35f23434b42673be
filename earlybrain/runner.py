"""`earlybrain run` / `earlybrain demo`: run the Snakemake workflow from Python.

Snakemake runs in a subprocess (``python -m snakemake``) rather than through its Python
API: the command line is the interface Snakemake keeps stable across 9.x releases, and a
subprocess keeps its logging and working-directory changes out of our process. The
resolved configuration (defaults + user file + paths) is validated here first, so a typo
is reported before anything runs, and written into OUT for the record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from earlybrain import REPO_ROOT
from earlybrain.config_schema import DEFAULT_CONFIG, ConfigError, complete_config

SNAKEFILE = REPO_ROOT / "Snakefile"
RESOLVED_CONFIG_NAME = "earlybrain_config.yaml"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of keys to values")
    return data


def resolve_config(
    bids: Path, out: Path, configfile: Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """config/config.yaml, then the user's file, then the two paths; every other key
    takes its default (earlybrain.config_schema)."""
    config = _load_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG)
    if configfile is not None:
        config = _merge(config, _load_yaml(Path(configfile)))
        source = str(configfile)
    config = _merge(config, overrides or {})
    config["bids_dir"] = str(Path(bids).resolve())
    config["output_dir"] = str(Path(out).resolve())
    return complete_config(config, source)


def parse_config_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words, as Snakemake's ``--config`` takes them, as a config mapping.

    VALUE is read as YAML (``3``, ``true``, ``[1, 2]``, ``{a: 1}``; anything else a
    string). A dotted KEY sets a nested key (``recon.iterations=3``), which Snakemake's
    own ``--config`` cannot, so one value of a section can change without restating it.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"--config {item!r}: expected KEY=VALUE (e.g. masks_dir=/data/masks or "
                "recon.device=cpu); put --config after the BIDS and OUT paths"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        for part in reversed(parts[1:]):
            value = {part: value}
        overrides = _merge(overrides, {parts[0]: value})
    return overrides


def resolve_profile(profile: str | os.PathLike[str]) -> Path | str:
    """A profile path as given (from the current folder), else the repository's copy.

    So `earlybrain run --profile profiles/slurm` works from any folder. A bare name that
    is neither is passed on for Snakemake to look up in ~/.config/snakemake/.
    """
    given = Path(profile)
    if given.is_dir():
        return given.resolve()
    if (REPO_ROOT / given).is_dir():
        return REPO_ROOT / given
    return str(profile)


def snakemake_command(
    resolved_config: Path, out: Path, cores: int, profile: str | None, extra: list[str] | None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(out),
        "--configfile",
        str(resolved_config),
        "--cores",
        str(cores),
        "--keep-going",
        "--rerun-incomplete",
        "--printshellcmds",
    ]
    if profile:
        cmd += ["--profile", str(resolve_profile(profile))]
    return cmd + list(extra or [])


def run_workflow(
    bids: Path,
    out: Path,
    cores: int = 2,
    profile: str | None = None,
    configfile: Path | None = None,
    extra: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Run the workflow on a BIDS dataset; returns Snakemake's exit status.

    `overrides` (a config mapping) win over `configfile` and the defaults.
    """
    if not SNAKEFILE.is_file():
        print(
            f"error: the workflow files are not next to the package ({SNAKEFILE} missing); "
            "install earlybrain from its source checkout (pip install -e .)",
            file=sys.stderr,
        )
        return 2
    out = Path(out).resolve()
    try:
        config = resolve_config(Path(bids), out, configfile, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / RESOLVED_CONFIG_NAME
    from earlybrain.io.atomic import write_text_atomic

    write_text_atomic(resolved, yaml.safe_dump(config, sort_keys=True))
    cmd = snakemake_command(resolved, out, cores, profile, extra)
    print("running:", " ".join(cmd), flush=True)
    env = dict(os.environ)
    # the rules call `earlybrain`; make the one beside this interpreter win
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    started = time.time()
    rc = run_until_done(cmd, env)
    if rc == 130 or any(flag in (extra or []) for flag in NO_RUN_FLAGS):
        return rc
    failed = failed_sessions(Path(config["output_dir"]), since=started)
    if failed:
        print(f"\n{len(failed)} session(s) failed:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
    return rc if rc != 0 else (1 if failed else 0)


# Snakemake options after which no job runs, so there is no fresh cohort table to read
NO_RUN_FLAGS = ("-n", "--dry-run", "--dryrun", "--lint", "--list-rules", "--summary")
# a failed session's reason, cut for the one-line summary (the report has all of it)
REASON_CHARS = 240


def failed_sessions(out: Path, since: float) -> list[str]:
    """One line per session that failed, from the cohort table this run wrote.

    The table is written by the cohort rule or, after a failed job, by the salvage
    hook; one older than the run (nothing ran this time) is not read.
    """
    import csv

    table = out / "earlybrain" / "group" / "cohort.tsv"
    try:
        if table.stat().st_mtime < since - 1.0:
            return []
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error):
        return []
    lines = []
    for row in rows:
        if row.get("status", "failed") == "ok":
            continue
        who = row.get("participant_id", "?")
        if row.get("session_id", "n/a") != "n/a":
            who += f" {row['session_id']}"
        reason = row.get("reason") or "n/a"
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 3] + "..."
        report = row.get("report", "n/a")
        lines.append(
            f"{who}: failed at {row.get('failed_stage') or 'n/a'}: {reason}"
            # the table's links are relative to its own folder
            + (f" (report: {(table.parent / report).resolve()})" if report != "n/a" else "")
        )
    return lines


# after a job start, how long to wait before saying Ctrl-C again (`run_until_done`)
RESEND_DELAY_S = 1.0


def default_sigint() -> None:
    """In a child before exec: Ctrl-C back to its default. A shell starts a background
    command (`cmd &`, nohup scripts) with SIGINT ignored and exec keeps that, so Snakemake
    would ignore the Ctrl-C we forward and run on to the end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_until_done(cmd: list[str], env: dict[str, str]) -> int:
    """Run Snakemake; Ctrl-C / SIGTERM reach it once (again only if it lost it), and it
    stops its jobs itself.

    Snakemake runs in its own session so that a terminal's Ctrl-C goes to us only; we
    pass it on and wait. (subprocess.call would SIGKILL Snakemake 0.25 s after a
    Ctrl-C, leaving its jobs running and its outputs unmarked.)
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=default_sigint)
    stopping: list[tuple[int, float]] = []

    def forward(signum: int, frame: object) -> None:
        if not stopping:
            print(
                "\nstopping: Snakemake is ending the running jobs; run the same command "
                "again to resume (finished work is kept)",
                file=sys.stderr,
                flush=True,
            )
            proc.send_signal(signum)
        stopping.append((signum, time.time()))

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stopping and started_jobs_since(proc.pid, stopping[0][1] + 1.0):
                    # Snakemake drops a Ctrl-C that lands while it writes a log line
                    # (its handler ignores KeyboardInterrupt); an interrupted Snakemake
                    # starts no new jobs, so a new job means: say it again, once it is
                    # done logging that job. (The failures once blamed on that logging
                    # under load were SIGINT inherited as ignored: see default_sigint;
                    # the delay stays as a margin.)
                    time.sleep(RESEND_DELAY_S)
                    proc.send_signal(stopping[0][0])
                    stopping[0] = (stopping[0][0], time.time())
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 130 if stopping and rc != 0 else rc


def started_jobs_since(pid: int, since: float) -> bool:
    """Whether process `pid` has started a child process after time `since`."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
        return any(c.create_time() > since for c in children)
    except psutil.Error:  # it ended meanwhile
        return False


def run_demo(out: Path, cores: int = 2) -> int:
    """Simulate 2 fetal + 1 infant subjects, run the workflow, print where the reports are.

    Layout: OUT/data/bids (input), OUT/data/groundtruth, OUT/results (workflow output).
    The workflow finds the fetal brains itself (masking network), as on a lab's data.
    """
    from earlybrain.simulate.cohort import CohortSpec, simulate_cohort

    out = Path(out).resolve()
    print(f"simulating a small cohort into {out / 'data'} ...", flush=True)
    bids, truth = simulate_cohort(
        out / "data", CohortSpec(n_fetal=2, n_infant=1, seed=1, preset="demo")
    )
    print(f"BIDS dataset: {bids}\nground truth: {truth}", flush=True)
    results = out / "results"
    rc = run_workflow(bids, results, cores=cores)
    deriv = results / "earlybrain"
    cohort = deriv / "group" / "cohort.html"
    if cohort.is_file():
        print(f"\ncohort report:   {cohort}")
    for report in sorted(deriv.glob("sub-*.html")):
        print(f"subject report:  {report}")
    if rc != 0:
        print(f"\nthe workflow exited with status {rc}; see the logs in {results / 'logs'}")
    return rc

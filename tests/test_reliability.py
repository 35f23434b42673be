"""Issue 11: interruption, killed jobs and resource errors leave clear messages, nothing lost.

Atomic writes and the step entry points are tested in-process or in a child process;
interruption and a killed job are tested on real `snakemake --profile profiles/local`
runs of a tiny simulated cohort (marked slow).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch
from synth_fixtures import FAST_WORKFLOW_CONFIG, make_bids

import earlybrain.io.validate as validation
import earlybrain.preprocess.n4 as n4_module
from earlybrain import REPO_ROOT, cli
from earlybrain.device import DeviceUnavailableError, resolve_device
from earlybrain.io.atomic import remove_stale_parts, write_bytes_atomic
from earlybrain.runner import RESEND_DELAY_S, default_sigint, started_jobs_since
from earlybrain.workflow_steps import STEPS

# A child process that starts an atomic write and stops right before the rename:
# the moment an interruption does the most harm.
STALLING_WRITER = """
import time
import earlybrain.io.atomic as atomic

def stall(fd):
    print("writing", flush=True)
    time.sleep(120)

atomic.os.fsync = stall  # the data is in the temporary file, the rename has not happened
{call}
"""


def _start_stalled(call: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", STALLING_WRITER.format(call=call)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "writing\n", child.stderr.read()
    return child


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.part"))


def test_killed_writer_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old, complete")
    child = _start_stalled(
        f"atomic.write_bytes_atomic({str(target)!r}, b'new ' * 100000)",
    )
    child.kill()  # SIGKILL: no handler runs, like the out-of-memory killer
    child.wait(30)
    assert target.read_text() == "old, complete"  # never a truncated file with the final name
    (stale,) = _parts(tmp_path)
    assert stale.name.startswith(f".x.json.{socket.gethostname()}-{child.pid}.")
    write_bytes_atomic(target, b"newer")
    assert target.read_bytes() == b"newer"
    assert _parts(tmp_path) == []


def test_stale_parts_of_live_writers_and_other_hosts_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "y.nii.gz"
    mine = tmp_path / f".y.nii.gz.{socket.gethostname()}-{os.getpid()}.abc123.part"
    remote = tmp_path / ".y.nii.gz.othernode-1.abc123.part"
    for p in (mine, remote):
        p.write_bytes(b"in progress")
    assert remove_stale_parts(target) == []
    assert mine.exists() and remote.exists()


def test_sigterm_during_a_step_removes_its_temporary_file(tmp_path: Path) -> None:
    """scancel / a SLURM time limit / a stopping Snakemake send SIGTERM to the job."""
    out = tmp_path / "dataset_description.json"
    call = (
        "from earlybrain.cli import main\n"
        f"main(['step', 'dataset-description', '--bids', {str(tmp_path)!r}, '--out', {str(out)!r}])"
    )
    child = _start_stalled(call)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 128 + signal.SIGTERM
    assert not out.exists()
    assert _parts(tmp_path) == []


# --- resources: no GPU, out of memory -----------------------------------------------


def test_auto_and_cpu_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", allow_cpu_fallback=False) == torch.device("cpu")
    assert resolve_device("cpu", allow_cpu_fallback=False) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", allow_cpu_fallback=False) == torch.device("cuda")
    assert resolve_device("cuda", allow_cpu_fallback=False) == torch.device("cuda")
    assert resolve_device("cpu", allow_cpu_fallback=False) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, not 'gpu'"):
        resolve_device("gpu", allow_cpu_fallback=True)


def test_cuda_without_gpu_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with caplog.at_level(logging.WARNING, logger="earlybrain.device"):
        assert resolve_device("cuda", allow_cpu_fallback=True) == torch.device("cpu")
    (record,) = caplog.records
    assert "no CUDA GPU visible to this job (CUDA_VISIBLE_DEVICES=)" in record.getMessage()
    assert "running on the CPU instead (device_fallback: cpu)" in record.getMessage()


def test_cuda_without_gpu_and_no_fallback_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(DeviceUnavailableError) as exc:
        resolve_device("cuda", allow_cpu_fallback=False)
    assert str(exc.value).startswith(
        "no CUDA GPU visible to this job (CUDA_VISIBLE_DEVICES=<unset>)"
    )
    assert str(exc.value).endswith(
        "request one (gpu: 1 in the profile / --gres) or set device: cpu "
        "or device_fallback: cpu in the config"
    )


N4_ARGS = ["step", "n4", "--image", "in.nii.gz", "--out", "o.nii.gz", "--bias", "b", "--mask", "m"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            MemoryError(),
            "error: out of memory in n4 for in.nii.gz: raise mem_mb for rule n4 (set-resources "
            "in profiles/<profile>/config.yaml, or --set-resources n4:mem_mb=<MB>) or lower "
            "the resolution",
        ),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "error: GPU out of memory in n4 for in.nii.gz: lower the resolution, ask for a GPU "
            "with more memory (gpu_model in profiles/slurm/config.yaml) or set device: cpu in "
            "the config",
        ),
        (
            DeviceUnavailableError("no CUDA GPU visible to this job (...); request one"),
            "error: n4 for in.nii.gz: no CUDA GPU visible to this job (...); request one",
        ),
    ],
    ids=["out-of-memory", "cuda-out-of-memory", "no-gpu"],
)
def test_resource_errors_in_a_step_give_one_actionable_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    expected: str,
) -> None:
    def fail(*args: object, **kwargs: object) -> int:
        raise error

    monkeypatch.setattr(n4_module, "run_n4", fail)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own handlers
    assert cli.main(N4_ARGS) == 1
    assert capsys.readouterr().err == expected + "\n"


def test_out_of_memory_in_validation_is_not_blamed_on_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No "fail" status is written: it would stick, and a re-run with more memory is needed."""

    def fail(*args: object, **kwargs: object) -> dict:
        raise MemoryError

    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    out = tmp_path / "v.json"
    monkeypatch.setattr(validation, "validate_session", fail)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    argv = ["step", "validate", "--bids", str(bids), "--subject", "f01", "--out", str(out)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: out of memory in validate for {bids}/sub-f01: raise mem_mb ")
    assert not out.exists()


def test_other_errors_in_a_step_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> int:
        raise RuntimeError("ANTs failed")

    monkeypatch.setattr(n4_module, "run_n4", fail)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    with pytest.raises(RuntimeError, match="ANTs failed"):
        cli.main(N4_ARGS)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_step_names_its_rule() -> None:
    """Resource messages name the rule to give more memory: it must be a real rule that
    runs the step, and every step must have a subcommand."""
    step_names = _subcommands(_subcommands(cli.build_parser())["step"])
    assert set(step_names) == set(STEPS)
    rules = REPO_ROOT / "workflow" / "rules"
    text = "\n".join(p.read_text() for p in rules.glob("*.smk"))
    for name, declared in STEPS.items():
        rule = re.search(rf"^(?:rule|checkpoint) {declared.rule}:\n(.*?)(?=^\S)", text, re.M | re.S)
        assert rule, f"step {name}: no rule {declared.rule}"
        assert f'step_shell("{name}")' in rule[1], f"rule {declared.rule} does not run {name}"


# --- real Snakemake runs: interruption and a killed job ------------------------------

FAST = FAST_WORKFLOW_CONFIG  # the same jobs, less waiting


def _snakemake(out: Path, bids: Path, subjects: list[str]) -> list[str]:
    config = out.parent / f"{out.name}_config.yaml"
    config.write_text(FAST + f"subjects: [{', '.join(subjects)}]\n")
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(out),
        "--profile",
        str(REPO_ROOT / "profiles" / "local"),  # keep-going, rerun-incomplete
        "--configfile",
        str(config),
        "--config",
        f"bids_dir={bids}",
        f"output_dir={out}",
    ]


def _jobs(log: str) -> dict[str, tuple[str, list[str]]]:
    """jobid -> (rule, outputs) from Snakemake's job announcements (not its error reports)."""
    jobs: dict[str, tuple[str, list[str]]] = {}
    rule, outputs = None, []
    for line in log.splitlines():
        if m := re.match(r"(?:local)?(?:rule|checkpoint) (\w+):$", line):
            rule, outputs = m[1], []
        elif not line.startswith(" "):
            rule = None  # end of an announcement
        elif rule and (m := re.match(r"\s+output: (.*)$", line)):
            outputs = m[1].split(", ")
        elif rule and (m := re.match(r"\s+jobid: (\d+)$", line)):
            jobs[m[1]] = (rule, outputs)
    return jobs


def _finished(log: str, rule: str) -> set[str]:
    return set(re.findall(rf"Finished jobid: (\d+) \(Rule: {rule}\)", log))


def _running(snakemake: subprocess.Popen, step: str) -> list[psutil.Process]:
    """The `earlybrain step <step>` processes (not their shells) Snakemake is running."""
    found = []
    for child in psutil.Process(snakemake.pid).children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.Error:  # a job ended meanwhile
            continue
        if "step" in args and step in args:  # the shell has it all in one argument
            found.append(child)
    return found


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"Snakemake ended early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()}"
        time.sleep(0.05)


def _assert_nothing_half_written(out: Path) -> None:
    """Every output that exists is complete: images load, JSON parses, no temporaries."""
    assert _parts(out) == []
    for image in (out / "earlybrain").rglob("*.nii.gz"):
        assert np.isfinite(nib.load(image).get_fdata()).all(), image
    for side in (out / "earlybrain").rglob("*.json"):
        json.loads(side.read_text())


def _run(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """Started as from a terminal, even when the tests themselves run in the background
    (where SIGINT is inherited ignored: the Ctrl-C tests would then test nothing)."""
    with log.open("w") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=default_sigint, **kw
        )


def _rerun_keeps(cmd: list[str], out: Path, kept: dict[Path, int]) -> str:
    """Re-run to completion; the outputs in `kept` must not have been rewritten."""
    log_path = out.parent / "run2.log"
    with log_path.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=900).returncode
    log = log_path.read_text()
    assert rc == 0, log
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    redone = {o for _, outputs in _jobs(log).values() for o in outputs}
    assert not redone & {str(p) for p in kept}
    _assert_nothing_half_written(out)
    rows = (out / "earlybrain" / "group" / "cohort.tsv").read_text().splitlines()[1:]
    assert rows and all("\tok\t" in r for r in rows), rows
    return log


@pytest.fixture
def bids(tmp_path: Path, tiny_cohort: tuple[Path, Path]) -> Path:
    return shutil.copytree(tiny_cohort[0], tmp_path / "bids")


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_work(tmp_path: Path, bids: Path) -> None:
    """Ctrl-C (SIGINT to Snakemake and its jobs) while N4 runs, some N4 done; then re-run."""
    out = tmp_path / "out"
    cmd = _snakemake(out, bids, ["f01", "i01"])  # 5 N4 jobs: 3 stacks, T1w, T2w
    log = tmp_path / "run1.log"
    proc = _run(cmd, log, start_new_session=True)  # own process group, like a terminal job
    try:
        _wait_for(lambda: _finished(log.read_text(), "n4") and _running(proc, "n4"), proc, log)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.time()
        for _ in range(600):  # as a user would: Ctrl-C again if Snakemake starts new jobs
            try:
                proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                if started_jobs_since(proc.pid, sent + 1.0):  # see runner.run_until_done
                    time.sleep(RESEND_DELAY_S)
                    os.kill(proc.pid, signal.SIGINT)
                    sent = time.time()
        assert proc.wait(120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    jobs, done = _jobs(text), _finished(text, "n4")
    interrupted = {j for j, (rule, _) in jobs.items() if rule == "n4"} - done
    assert interrupted and len(done) < 5, "interrupt once some, not all, N4 jobs are done"
    assert not (out / "earlybrain" / "group" / "cohort.html").exists()
    _assert_nothing_half_written(out)
    # A job interrupted just as it ended can leave its whole set of outputs, each complete
    # (atomic writes) and written by this attempt (Snakemake deletes outputs before a job
    # starts); Snakemake may keep those. Any other interrupted job must be redone.
    whole = {j for j in interrupted if all(Path(o).exists() for o in jobs[j][1])}
    kept = {Path(o): Path(o).stat().st_mtime_ns for j in done & set(jobs) for o in jobs[j][1]}
    log2 = _rerun_keeps(cmd, out, kept)
    redone = {o for _, outputs in _jobs(log2).values() for o in outputs}
    assert {o for j in interrupted - whole for o in jobs[j][1]} <= redone
    trusted = {j for j in whole if not redone.intersection(jobs[j][1])}
    assert len(done) + len(trusted) + len(_finished(log2, "n4")) == 5  # each image once


STALL_HOOK = """
# Test hook (tests/test_reliability.py): the N4 job writing EB_TEST_STALL_AFTER stops
# right after writing that first output, so the test can kill it in mid-job.
import os

if os.environ.get("EB_TEST_STALL_AFTER"):
    import time

    import earlybrain.io.atomic as atomic

    _write = atomic.write_bytes_atomic

    def _write_then_stall(path, data):
        result = _write(path, data)
        if str(path).endswith(os.environ["EB_TEST_STALL_AFTER"]):
            time.sleep(300)
        return result

    atomic.write_bytes_atomic = _write_then_stall
"""


@pytest.mark.slow
def test_killed_job_leaves_no_outputs_and_the_rerun_fixes_it(tmp_path: Path, bids: Path) -> None:
    """SIGKILL (out-of-memory killer) to one N4 job after it wrote its first output."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STALL_HOOK)
    victim = "sub-f01_run-1_desc-n4_T2w.nii.gz"
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, EB_TEST_STALL_AFTER=victim)
    out = tmp_path / "out"
    cmd = _snakemake(out, bids, ["f01"])
    log = tmp_path / "run1.log"
    proc = _run(cmd, log, env=env)
    try:
        first_output = out / "earlybrain" / "sub-f01" / "anat" / victim
        _wait_for(first_output.exists, proc, log)
        (job,) = [p for p in _running(proc, "n4") if any(victim in a for a in p.cmdline())]
        job.kill()
        assert proc.wait(180) != 0  # keep-going: the other stacks finish first
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    jobs, done = _jobs(text), _finished(text, "n4")
    (killed,) = [j for j, (_, outputs) in jobs.items() if str(first_output) in outputs]
    assert killed not in done and "Error in rule n4" in text
    assert not [o for o in jobs[killed][1] if Path(o).exists()]  # removed by Snakemake
    _assert_nothing_half_written(out)
    others = {Path(o) for j in done for o in jobs[j][1]}
    assert len(others) == 2 * 6, "keep-going: the two other stacks were corrected"
    # the session still has a report saying what failed, and the cohort a table
    report = (out / "earlybrain" / "sub-f01.html").read_text()
    assert "rule n4 failed" in report and "Failed steps" in report
    rows = (out / "earlybrain" / "group" / "cohort.tsv").read_text().splitlines()[1:]
    assert len(rows) == 1 and "\tfailed\t" in rows[0] and "rule n4 failed" in rows[0]
    log2 = _rerun_keeps(cmd, out, {p: p.stat().st_mtime_ns for p in others})
    assert len(_finished(log2, "n4")) == 1  # only the killed job is redone


@pytest.mark.slow
def test_ctrl_c_on_earlybrain_run_lets_snakemake_stop_its_jobs(tmp_path: Path, bids: Path) -> None:
    """Ctrl-C on `earlybrain run` reaches Snakemake once; it ends its jobs, then we exit 130."""
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(FAST + "subjects: [f01]\n")
    cmd = [
        sys.executable,
        "-m",
        "earlybrain",
        "run",
        str(bids),
        str(out),
        "--configfile",
        str(config),
    ]
    log = tmp_path / "run.log"
    proc = _run(cmd, log)
    try:
        _wait_for(lambda: _running(proc, "n4"), proc, log)
        proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C: Snakemake runs in its own session
        assert proc.wait(120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "run the same command again to resume" in log.read_text()
    leftovers = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(out) in arg for arg in p.info["cmdline"] or []):
            leftovers.append(p)
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
    _assert_nothing_half_written(out)

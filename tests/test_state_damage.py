"""Damaged state: a state file that is truncated, overwritten, empty, not SQLite, a directory, from a
newer exporter, read-only, or on a disk that fills — each gets one clear line (and exit 2) or a
counted rebuild, never a traceback; read-only and full disks recover without a restart."""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from simulator.github import GitHubSimulator
from tests.helpers import (
    Exposition,
    assert_matches_truth,
    exporter_cmd,
    free_port,
    run_cli,
    scrape,
    wait_for,
    write_config,
)

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:12288] = os.urandom(8192)
    path.write_bytes(bytes(data))


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"NOT A DATABASE!\x00"
    path.write_bytes(bytes(data))


def _not_sqlite(path: Path) -> None:
    path.write_text("this is a text file, not a state store\n" * 100)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "garbage": _garbage_in_the_middle,
    "bad-header": _bad_header,
    "not-sqlite": _not_sqlite,
    "empty": _empty,
}


def _config(tmp_path: Path, sim: GitHubSimulator, **state: object) -> Path:
    path = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db")
    data = yaml.safe_load(path.read_text())
    data["state"].update(state)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_file_is_moved_aside_and_rebuilt(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str], damage: str
) -> None:
    """By default (state.on_damage: rebuild) a damaged file is kept as `<path>.damaged-<time>`
    with no stray -wal/-shm, a loud error is logged, the rebuild is counted (until the next
    restart), and the metrics come back from the lookback window (= truth): the pod stays
    useful, nothing is silently lost."""
    config = _config(tmp_path, sim)
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    DAMAGE[damage](tmp_path / "s.db")
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "state file damaged" in result.stderr
    kept = list(tmp_path.glob("s.db.damaged-*"))
    assert kept, "the damaged file is kept for inspection"
    # Nothing else: no -wal/-shm the integrity check itself left beside the kept file (the
    # lock file is the store's own, kept for the next process).
    assert sorted(p.name for p in tmp_path.glob("s.db*")) == ["s.db", kept[0].name, "s.db.lock"]
    exp = Exposition.parse(result.stdout)
    assert exp.total("ci_pipeline_exporter_state_rebuilds_total") == 1
    assert_matches_truth(exp, sim.truth())
    # The counter counts since the process started, as its help says.
    again = run_cli("once", "--config", str(config), env=env)
    assert Exposition.parse(again.stdout).total("ci_pipeline_exporter_state_rebuilds_total") == 0
    assert "Counts since the process started" in again.stdout


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_file_can_be_refused(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str], damage: str
) -> None:
    """With state.on_damage: refuse, a damaged file is one line and exit 2; the file is left."""
    config = _config(tmp_path, sim, on_damage="refuse")
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    DAMAGE[damage](tmp_path / "s.db")
    before = (tmp_path / "s.db").read_bytes()
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "state.path" in lines[0], lines
    assert "damaged" in lines[0], lines
    assert (tmp_path / "s.db").read_bytes() == before


def test_a_directory_or_a_newer_schema_is_one_line(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A directory in state.path, or a state file of a newer schema: one line naming state.path,
    exit 2, whatever on_damage says (moving a newer exporter's state aside would lose it)."""
    config = _config(tmp_path, sim)
    (tmp_path / "s.db").mkdir()
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 2
    assert "is a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "s.db").rmdir()
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 2
    assert "schema version 99" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _serve(
    config: Path, port: int, env: dict[str, str], log: Path, preexec: Callable[[], None] | None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            exporter_cmd(
                "serve",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            ),
            stdout=out,
            stderr=out,
            env={**os.environ, **env},
            preexec_fn=preexec,  # noqa: PLW1509 -- before threads: the test starts none here
        )
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
        30,
        message="healthz",
    )
    return process


def _reasons(url: str) -> dict[str, float]:
    exp = scrape(url)
    return {k[0]: v for k, v in exp.by("ci_pipeline_exporter_poll_errors_total", "reason").items()}


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _without_permission_override() -> None:
    """Root ignores file modes: drop CAP_DAC_OVERRIDE from the bounding set, so the exporter
    (root or not) meets the read-only file as any process would."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0 and os.getuid() == 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_file_recovers_without_a_restart(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A state file that is read-only at start: the last stored metrics are served, polls fail as
    state_write (counted, up 0); once the file is writable again the next poll stores and the
    metrics equal truth — the same process, no restart."""
    config = _config(tmp_path, sim)
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    sim.clock.advance(2 * 3600)
    for file in tmp_path.glob("s.db*"):
        file.chmod(0o444)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(config, port, env, tmp_path / "log", _without_permission_override)
    try:
        wait_for(lambda: _reasons(url).get("state_write", 0) >= 2, 30, message="failed writes")
        assert scrape(url).total("ci_pipeline_exporter_up") == 0
        assert scrape(url).total("cicd_pipeline_run_duration_seconds_count") > 0
        for file in tmp_path.glob("s.db*"):
            file.chmod(0o666)
        wait_for(lambda: scrape(url).total("ci_pipeline_exporter_up") == 1, 30, message="recovery")
        wait_for(lambda: _matches(url, sim), 30, message="metrics equal truth")
    finally:
        _stop(process)
    assert "Traceback" not in (tmp_path / "log").read_text()


def _matches(url: str, sim: GitHubSimulator) -> bool:
    try:
        assert_matches_truth(scrape(url), sim.truth())
    except AssertionError:
        return False
    return True


def test_a_full_disk_recovers_without_a_restart(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """The disk fills while serving (the file size limit of the process is reached): polls fail as
    state_write, counted, with no misleading rollback error; when space is back, the next poll
    stores everything and the metrics equal truth."""
    if shutil.which("prlimit") is None and not hasattr(resource, "prlimit"):
        pytest.skip("no prlimit")
    config = _config(tmp_path, sim)
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    size = (tmp_path / "s.db").stat().st_size

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, resource.RLIM_INFINITY))

    sim.clock.advance(6 * 3600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(config, port, env, tmp_path / "log", small_disk)
    try:
        wait_for(lambda: _reasons(url).get("state_write", 0) >= 2, 30, message="failed writes")
        resource.prlimit(
            process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        wait_for(lambda: _matches(url, sim), 30, message="metrics equal truth after recovery")
    finally:
        _stop(process)
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log
    assert "cannot rollback" not in log
    assert "database or disk is full" in log or "disk I/O error" in log


def test_serve_prunes_observed_ids(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """`serve` forgets observed ids older than any window on a schedule (first soon after start),
    not only `once`: the table does not grow without bound."""
    config = _config(tmp_path, sim)
    assert run_cli("once", "--config", str(config), env=env).returncode == 0
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(
        "INSERT INTO observed VALUES ('attempt', 'acme/webapp/1/1', 'github:acme/webapp', 1)"
    )
    db.commit()
    port = free_port()
    process = _serve(config, port, env, tmp_path / "log", None)
    try:

        def gone() -> bool:
            rows = db.execute("SELECT count(*) FROM observed WHERE at < 1000").fetchone()
            return bool(rows[0] == 0)

        wait_for(gone, 30, message="the old id pruned")
        assert db.execute("SELECT count(*) FROM observed").fetchone()[0] > 0
    finally:
        _stop(process)
        db.close()


def test_a_second_process_on_the_same_state_file_is_refused(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """While `serve` uses a state file, a second `serve` or `once` on it would count every run
    again in its own memory and overwrite the first one's rows: it is refused with one line naming
    state.path, exit 2, no traceback; once the first has stopped, the file is free again."""
    config = _config(tmp_path, sim)
    port = free_port()
    process = _serve(config, port, env, tmp_path / "log", None)
    try:
        for command in (["once"], ["serve", "--listen", f"127.0.0.1:{free_port()}"]):
            result = run_cli(*command, "--config", str(config), env=env, timeout=60)
            assert result.returncode == 2, result.stderr[-2000:]
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr[-2000:]
            assert lines[0].startswith("ci-pipeline-exporter: state error: state.path: ")
            assert "in use by another exporter process" in lines[0]
    finally:
        _stop(process)
    assert run_cli("once", "--config", str(config), env=env).returncode == 0

"""scripts/data/download_data.py against a real HTTP server on 127.0.0.1 (range requests, dropped connections, 404s)
serving small real HDF5 files in the released layout."""

import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from scripts.data import download_data

ROOT = Path(__file__).resolve().parents[1]
EVAL = "cheetah-run-scale-easy-video-hard-64px-eval.hdf5"
FULL = "cheetah-run-scale-easy-video-hard-64px-5k.hdf5"
LABELED2 = "cheetah-run-scale-easy-video-hard-labeled-1000x2-64px.hdf5"
VANILLA2 = "cheetah-run-vanilla-labeled-1000x2-64px.hdf5"


def released_file(path: Path, num_traj: int, steps: int = 6, domain: str = "cheetah", skip: str = "") -> bytes:
    """A small dataset in the released layout; its bytes."""
    with h5py.File(path, "w") as f:
        for k, v in dict(domain_name=domain, task_name="run", difficulty="scale_easy_video_hard", dynamic=True).items():
            f.attrs[k] = v
        f.attrs["img_hw"] = 8
        for i in range(num_traj):
            g = f.create_group(str(i))
            g["obs"] = np.random.default_rng(i).integers(0, 255, (steps, 8, 8, 3), dtype=np.uint8)
            g["actions"] = np.zeros((steps, 6), np.float32)
            if skip != "states":
                g["states"] = np.zeros((steps, 17), np.float32)
            g.attrs["traj_return"] = float(i)
    return path.read_bytes()


class Release(BaseHTTPRequestHandler):
    """Serves server.files by name: HEAD, GET, `Range: bytes=N-`; server.cuts[name] lists, for the next GETs, how
    many bytes to send before dropping the connection; server.announce[name] overrides the size HEAD announces."""

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.server.log.append((self.command, name, self.headers.get("Range")))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", self.headers["Range"])[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        size = self.server.announce.get(name, len(data)) if not body else len(data)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        if body:
            cuts = self.server.cuts.get(name)
            rest = data[start:]
            self.wfile.write(rest[: cuts.pop(0)] if cuts else rest)
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def release(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Release)
    server.files, server.cuts, server.announce, server.log = {}, {}, {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/lapo-data"
    yield server
    server.shutdown()
    server.server_close()


def links(tmp_path: Path, base: str, names) -> str:
    path = tmp_path / "links.txt"
    path.write_text("# test release\n" + "".join(f"{base}/{n}\n" for n in names))
    return str(path)


def error_line(err: str) -> str:
    """The error of a run (stderr also holds the progress bars): one line, no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def run(tmp_path, release, *args, names=None) -> int:
    names = names if names is not None else list(release.files)
    return download_data.main(
        ["--links", links(tmp_path, release.url, names), "--out", str(tmp_path / "data"), "--timeout", "5", *args]
    )


def test_dry_run_lists_then_files_land_under_the_sweep_names_and_a_finished_file_is_skipped(tmp_path, release, capsys):
    files = {EVAL: 2, FULL: 3, LABELED2: 2, VANILLA2: 2}
    for name, n in files.items():
        release.files[name] = released_file(tmp_path / name, n)
    assert run(tmp_path, release, "--env", "cheetah-run", "--setting", "both", "--dry_run") == 0
    out = capsys.readouterr().out
    data = tmp_path / "data"
    assert f"{data / 'cheetah-run-eval.hdf5'}  <-  {EVAL}  {download_data.human(len(release.files[EVAL]))}" in out
    assert f"{data / 'vanilla' / 'cheetah-run-labeled-1000x2.hdf5'}  <-  {VANILLA2}" in out
    assert (
        "not in the release: cheetah-run vanilla eval" in out and "vanilla full" in out and "4 file(s) to fetch" in out
    )
    assert [m for m, *_ in release.log] == ["HEAD"] * 4 and not data.exists()

    assert run(tmp_path, release, "--env", "all", "--setting", "both") == 0
    landed = {
        "cheetah-run-eval.hdf5": EVAL,
        "cheetah-run.hdf5": FULL,
        "cheetah-run-labeled-1000x2.hdf5": LABELED2,
        "vanilla/cheetah-run-labeled-1000x2.hdf5": VANILLA2,
    }
    for dest, name in landed.items():
        assert (data / dest).read_bytes() == release.files[name]
    assert not list(data.rglob("*.partial"))

    release.log.clear()
    capsys.readouterr()
    assert run(tmp_path, release, "--env", "cheetah-run", "--setting", "both") == 0
    assert release.log == [] and capsys.readouterr().out.count("present, skipped") == 4


def test_an_interrupted_download_continues_with_a_range_request(tmp_path, release, capsys):
    body = release.files[EVAL] = released_file(tmp_path / EVAL, 3)
    half = len(body) // 2
    release.cuts[EVAL] = [half]
    dest = tmp_path / "data" / "cheetah-run-eval.hdf5"
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "eval", "--retries", "0") == 1
    err = error_line(capsys.readouterr().err)
    assert "run the same command to continue" in err
    assert not dest.exists() and dest.with_name(dest.name + ".partial").read_bytes() == body[:half]

    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "eval") == 0
    assert ("GET", EVAL, f"bytes={half}-") in release.log
    assert dest.read_bytes() == body and not dest.with_name(dest.name + ".partial").exists()

    # within one command: a connection lost twice is continued (retries), the file ends whole
    body2 = release.files[LABELED2] = released_file(tmp_path / LABELED2, 2)
    release.cuts[LABELED2] = [100, 50]
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "labeled", "--budgets", "2") == 0
    assert (tmp_path / "data" / "cheetah-run-labeled-1000x2.hdf5").read_bytes() == body2
    assert ("GET", LABELED2, "bytes=150-") in release.log


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no states", "wrong env", "wrong count"])
def test_a_truncated_or_corrupt_file_is_refused_and_nothing_lands(tmp_path, release, capsys, damage):
    good = released_file(tmp_path / "good.hdf5", 2)
    body = {
        "truncated": good[: len(good) * 2 // 3],
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, len(good), dtype=np.uint8)),
        "no states": released_file(tmp_path / "x.hdf5", 2, skip="states"),
        "wrong env": released_file(tmp_path / "x.hdf5", 2, domain="walker"),
        "wrong count": released_file(tmp_path / "x.hdf5", 3),
    }[damage]
    release.files[LABELED2] = body
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "labeled") == 1
    err = error_line(capsys.readouterr().err)
    assert "cheetah-run-labeled-1000x2.hdf5.partial" in err
    assert "the download was removed" in err
    assert list((tmp_path / "data").iterdir()) == []


def test_a_connection_that_always_drops_is_refused_and_nothing_lands(tmp_path, release, capsys):
    body = release.files[EVAL] = released_file(tmp_path / EVAL, 2)
    release.cuts[EVAL] = [len(body) // 3] + [0] * 10
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "eval", "--retries", "2") == 1
    assert "interrupted at" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "data" / "cheetah-run-eval.hdf5").exists()


def test_a_404_is_named(tmp_path, release, capsys):
    release.files[LABELED2] = released_file(tmp_path / LABELED2, 2)
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "eval", names=[EVAL, LABELED2]) == 1
    err = error_line(capsys.readouterr().err)
    assert err == f"error: {release.url}/{EVAL}: HTTP 404 Not Found (for cheetah-run-eval.hdf5)"


def test_free_disk_space_is_checked_before_the_first_byte(tmp_path, release, capsys):
    release.files[FULL] = released_file(tmp_path / FULL, 2)
    release.announce[FULL] = 2**60
    assert run(tmp_path, release, "--env", "cheetah-run", "--what", "full") == 1
    assert "to download but only" in error_line(capsys.readouterr().err)
    assert [m for m, *_ in release.log] == ["HEAD"]


def test_offline_dry_run_names_the_files_and_says_sizes_are_unknown(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    links_file = links(tmp_path, f"http://127.0.0.1:{port}/lapo-data", [EVAL, LABELED2])
    cmd = [sys.executable, "scripts/data/download_data.py", "--env", "cheetah-run", "--what", "eval", "--dry_run"]
    p = subprocess.run([*cmd, "--links", links_file], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"data/cheetah-run-eval.hdf5  <-  {EVAL}  size unknown (127.0.0.1:{port} cannot be reached" in p.stdout
    assert "1 file(s) to fetch: size unknown" in p.stdout

"""download_voc against a local HTTP server (127.0.0.1, started per test) serving a tiny tar
with the VOCdevkit layout: full download, Range resume, ignored Range, 416, dropped
connections, wrong MD5, unsafe tar members, already-extracted data and voc_root checks."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xaipipe import paths
from xaipipe.data.download import extract_devkit, fetch, prepare_voc
from xaipipe.errors import ConfigError, DataError
from xaipipe.io import read_json

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "VOCtrainval_test.tar"


def build_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


DEVKIT_FILES = {
    "VOCdevkit/VOC2012/JPEGImages/a.jpg": b"jpeg-a" * 500,
    "VOCdevkit/VOC2012/JPEGImages/b.jpg": b"jpeg-b" * 500,
    "VOCdevkit/VOC2012/JPEGImages/c.jpg": b"jpeg-c" * 500,
    "VOCdevkit/VOC2012/SegmentationClass/a.png": b"png-a",
    "VOCdevkit/VOC2012/SegmentationClass/b.png": b"png-b",
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"a\n",
    "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": b"b\n",
}


class TarServer:
    """Serves ``payload`` at ``/<ARCHIVE>``; records each request's Range header and bytes
    sent. ``drop_after``: on the first request, send only that many bytes then hang up
    (``always_drop``: on every request). ``honour_range=False`` answers 200 to everything."""

    def __init__(self, payload: bytes, drop_after: int | None = None, always_drop: bool = False,
                 honour_range: bool = True):
        self.payload, self.drop_after, self.always_drop = payload, drop_after, always_drop
        self.honour_range = honour_range
        self.ranges: list[str | None] = []
        self.sent: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != f"/{ARCHIVE}":
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header and server.honour_range else 0
                total = len(server.payload)
                if start >= total and header:
                    server.sent.append(0)  # recorded before replying: the client may finish first
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.end_headers()
                    return
                body = server.payload[start:]
                drop = server.drop_after is not None and (server.always_drop or len(server.ranges) == 1)
                sent = body[:server.drop_after] if drop else body
                server.sent.append(len(sent))  # recorded before replying: the client may finish first
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(sent)
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ARCHIVE}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return build_tar(DEVKIT_FILES)


@pytest.fixture
def serve():
    servers = []

    def _serve(payload: bytes, **kwargs) -> TarServer:
        servers.append(TarServer(payload, **kwargs))
        return servers[-1]

    yield _serve
    for server in servers:
        server.close()


def voc_config(make_config, server: TarServer, md5: str, **dataset) -> dict:
    return make_config({"dataset": {"name": "voc2012", "url": server.url, "md5": md5, **dataset}})


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def archive_path(config) -> Path:
    return paths.download_dir(config) / ARCHIVE


def test_full_download_extracts_and_writes_manifest(make_config, serve, payload):
    server = serve(payload)
    config = voc_config(make_config, server, md5(payload))
    manifest = prepare_voc(config, backoff_s=0)
    root = paths.dataset_root(config)
    assert (root / "VOC2012" / "JPEGImages" / "a.jpg").read_bytes() == b"jpeg-a" * 500
    assert archive_path(config).read_bytes() == payload
    assert not archive_path(config).with_name(ARCHIVE + ".part").exists()
    assert server.ranges == [None]
    on_disk = read_json(paths.dataset_manifest(config))
    assert on_disk == manifest
    assert manifest["num_images"] == 3
    assert manifest["num_segmentation"] == {"train": 1, "val": 1}
    assert manifest["md5"] == md5(payload) and manifest["url"] == server.url
    assert not list(root.parent.glob(".*.tmp")), "no temporary directory left behind"


def test_resume_sends_range_and_only_the_rest(tmp_path, serve, payload):
    server = serve(payload)
    dest = tmp_path / ARCHIVE
    half = len(payload) // 2
    dest.with_name(ARCHIVE + ".part").write_bytes(payload[:half])
    fetch(server.url, dest, md5(payload), backoff_s=0)
    assert server.ranges == [f"bytes={half}-"]
    assert server.sent == [len(payload) - half]
    assert dest.read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(tmp_path, serve, payload):
    server = serve(payload, honour_range=False)
    dest = tmp_path / ARCHIVE
    dest.with_name(ARCHIVE + ".part").write_bytes(b"garbage that must be overwritten")
    fetch(server.url, dest, md5(payload), backoff_s=0)
    assert server.ranges == ["bytes=32-"]
    assert dest.read_bytes() == payload


def test_complete_part_answered_416_is_verified_and_kept(tmp_path, serve, payload):
    server = serve(payload)
    dest = tmp_path / ARCHIVE
    dest.with_name(ARCHIVE + ".part").write_bytes(payload)
    fetch(server.url, dest, md5(payload), backoff_s=0)
    assert server.sent == [0]
    assert dest.read_bytes() == payload


def test_dropped_connection_resumes(make_config, serve, payload):
    server = serve(payload, drop_after=3000)
    config = voc_config(make_config, server, md5(payload))
    prepare_voc(config, backoff_s=0)
    assert server.ranges == [None, "bytes=3000-"]
    assert archive_path(config).read_bytes() == payload
    assert paths.dataset_manifest(config).is_file()


def test_no_byte_ever_received_names_no_part_file_and_suggests_voc_root(tmp_path, serve, payload,
                                                                        caplog):
    """Offline: the server hangs up before sending anything. Nothing was interrupted, there
    is nothing to resume and no .part file, so the message says so and names the way out."""
    server = serve(payload, drop_after=0, always_drop=True)
    dest = tmp_path / ARCHIVE
    with pytest.raises(DataError, match="received no data") as info:
        fetch(server.url, dest, md5(payload), retries=2, backoff_s=0)
    message = str(info.value)
    assert "dataset.voc_root" in message and ".part" not in message
    assert "resum" not in message and "interrupted" not in message
    assert not any("interrupted" in r.message or "resuming" in r.message for r in caplog.records)
    assert len(server.ranges) == 3
    assert not dest.exists() and not dest.with_name(ARCHIVE + ".part").exists()


def test_giving_up_after_some_data_keeps_part_for_a_later_resume(tmp_path, monkeypatch):
    """The first request delivers 100 bytes and drops; later ones get nothing: the kept
    bytes are named and a rerun resumes from them."""
    from xaipipe.data import download

    calls = []

    def stream_once(url, part, timeout):
        calls.append(part.stat().st_size if part.exists() else 0)
        if len(calls) == 1:
            part.write_bytes(b"x" * 100)
            raise download._Dropped("connection closed after 100 of 1000 bytes")
        raise ConnectionResetError("reset")

    monkeypatch.setattr(download, "_stream_once", stream_once)
    dest = tmp_path / ARCHIVE
    with pytest.raises(DataError, match="failed 3 times in a row.*100 bytes are kept in .*"
                                        r"\.part and a rerun resumes"):
        fetch("http://127.0.0.1:9/x.tar", dest, "0" * 32, retries=2, backoff_s=0)
    assert calls == [0, 100, 100, 100]
    assert dest.with_name(ARCHIVE + ".part").stat().st_size == 100


def test_wrong_md5_leaves_nothing_valid_looking(make_config, serve, payload):
    server = serve(payload)
    wrong = "0" * 32
    config = voc_config(make_config, server, wrong)
    with pytest.raises(DataError) as info:
        prepare_voc(config, backoff_s=0)
    message = str(info.value)
    assert server.url in message and wrong in message and md5(payload) in message
    assert ARCHIVE in message
    assert not archive_path(config).exists()
    assert not archive_path(config).with_name(ARCHIVE + ".part").exists()
    assert not paths.dataset_manifest(config).exists()
    assert not paths.dataset_root(config).exists()


def test_http_error_is_reported_without_retrying(make_config, serve, payload):
    server = serve(payload)
    config = make_config({"dataset": {"name": "voc2012", "url": server.url.replace(ARCHIVE, "missing.tar")}})
    with pytest.raises(DataError, match="HTTP 404"):
        prepare_voc(config, backoff_s=0)
    assert server.ranges == []


def test_already_extracted_is_not_downloaded_again(make_config, serve, payload):
    server = serve(payload)
    config = voc_config(make_config, server, md5(payload))
    prepare_voc(config, backoff_s=0)
    archive_path(config).unlink()
    paths.dataset_manifest(config).unlink()
    prepare_voc(config, backoff_s=0)
    assert len(server.ranges) == 1
    assert paths.dataset_manifest(config).is_file()


@pytest.mark.parametrize("evil", ["VOCdevkit/../../escaped.txt", "/tmp/absolute.txt", "other/x.txt"])
def test_unsafe_tar_members_are_refused(tmp_path, evil):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(build_tar({**DEVKIT_FILES, evil: b"x"}))
    root = tmp_path / "out" / "VOCdevkit"
    with pytest.raises(DataError, match="tar member|unsafe tar member"):
        extract_devkit(archive, root)
    assert not root.exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_voc_root_is_checked_and_recorded(make_config, voc_sample):
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(voc_sample)}})
    manifest = prepare_voc(config)
    assert manifest["source"] == "voc_root" and manifest["num_images"] == 59
    assert manifest["num_segmentation"] == {"train": 40, "val": 19}


def test_synthetic_dataset_is_refused(make_config):
    with pytest.raises(ConfigError, match="make_synthetic"):
        prepare_voc(make_config({"dataset": {"name": "synthetic"}}))


def test_script_on_empty_voc_root_exits_1_without_manifest(tmp_path):
    empty = tmp_path / "VOC2012"
    empty.mkdir()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"results_dir: {tmp_path / 'results'}\n"
                   f"dataset: {{name: voc2012, voc_root: {empty}}}\n")
    result = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "download_voc.py"),
                             "--config", str(REPO / "config.yaml"), str(cfg)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "does not look like a VOCdevkit" in result.stderr
    assert str(empty) in result.stderr and "point at its parent" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results" / "data" / "voc2012" / "manifest.json").exists()


def test_schema_defaults_are_torchvisions_voc2012_url_and_md5():
    """The schema is the one place the official tar's URL and MD5 live; they must stay what
    torchvision's VOCSegmentation uses for 2012."""
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    from xaipipe.config import validate_config

    dataset = validate_config({})["dataset"]
    assert dataset["url"] == DATASET_YEAR_DICT["2012"]["url"]
    assert dataset["md5"] == DATASET_YEAR_DICT["2012"]["md5"]

"""The ``download_voc`` stage: fetch, verify and extract PASCAL VOC 2012 exactly once.

The official trainval tar (URL and MD5 as ``torchvision.datasets.VOCSegmentation`` uses them,
see :mod:`xaipipe.data.voc`) is streamed with the standard library (``urllib``) into
``<download_dir>/<name>.part``, resumed with an HTTP ``Range`` request after an interruption,
MD5-verified, renamed to its final name and extracted atomically into
``paths.dataset_root(config)``; the manifest is written last. Resumable HTTP download is
hand-written because neither torchvision (``download_url`` restarts from zero) nor any
installed library resumes; tar member safety uses the standard ``tarfile.data_filter``.

With ``dataset.voc_root`` set nothing is downloaded: the directory is only checked to look
like a VOCdevkit and the manifest records it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import logging
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from xaipipe import paths
from xaipipe.data import voc
from xaipipe.errors import ConfigError, DataError
from xaipipe.io import atomic_path, write_json

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
ARCHIVE_TOP = "VOCdevkit"
"""The VOC tar holds ``VOCdevkit/VOC2012/...``; that top directory becomes ``dataset_root``."""

_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError, OSError)


class _Dropped(Exception):
    """The connection ended before the announced number of bytes arrived."""


def md5sum(path: str | Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_name(url: str) -> str:
    """The file name of ``url`` (``VOCtrainval_11-May-2012.tar`` for the official one)."""
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ConfigError(f"dataset.url: {url!r} does not end in a file name; give the tar's URL")
    return name


def _stream_once(url: str, part: Path, timeout: float) -> None:
    """One HTTP request that continues ``part`` from its current size.

    206 Partial Content appends; 200 OK means the server ignored ``Range``, so the part is
    restarted from byte 0; 416 Range Not Satisfiable means the part is already complete.
    Raises :class:`_Dropped` or a network error when the stream ends early.
    """
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            log.info("%s: server says the %d bytes already held are the whole file", part.name, start)
            return
        raise DataError(
            f"downloading {url} failed with HTTP {exc.code} {exc.reason}; check dataset.url "
            "or set dataset.voc_root to an existing VOCdevkit"
        ) from exc
    with response:
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != start:
                raise _Dropped(f"server answered Range {start}- with "
                               f"Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            if start:
                log.info("%s: server ignored the Range request; restarting from byte 0", part.name)
            start, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = start
        with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name) as bar:
            # read1 returns what has arrived, so bytes before a drop are kept for resuming
            for chunk in iter(lambda: response.read1(CHUNK_BYTES), b""):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise _Dropped(f"connection closed after {received} of {total} bytes")


def fetch(url: str, dest: str | Path, md5: str, retries: int = 3, timeout: float = 60.0,
          backoff_s: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming and verifying ``md5``.

    A dropped connection is retried (resuming where it stopped) up to ``retries`` times in
    a row without progress. On an MD5 mismatch the ``.part`` file is deleted (resuming a
    corrupt file could never succeed) and :class:`DataError` names file, URL and both sums.
    ``dest`` appears only once verified.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _stream_once(url, part, timeout)
            break
        except (_Dropped, *_NETWORK_ERRORS) as exc:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if after == 0:  # no byte ever arrived: nothing to resume, no .part worth naming
                part.unlink(missing_ok=True)
            if failures > retries:
                if after == 0:
                    raise DataError(
                        f"could not download {url}: {failures} attempts in a row received no "
                        f"data ({exc}). Without network access, set dataset.voc_root to an "
                        "existing VOCdevkit (the directory that contains VOC2012/)") from exc
                raise DataError(
                    f"downloading {url} failed {failures} times in a row ({exc}); "
                    f"{after} bytes are kept in {part} and a rerun resumes from there, or set "
                    "dataset.voc_root to an existing VOCdevkit") from exc
            if after == 0:
                log.warning("download of %s failed before any data arrived (%s); retrying",
                            url, exc)
            else:
                log.warning("download of %s interrupted (%s); resuming from byte %d", url, exc,
                            after)
            time.sleep(backoff_s * failures)
    actual = md5sum(part)
    if actual != md5:
        part.unlink()
        raise DataError(
            f"MD5 mismatch for {part} downloaded from {url}: expected {md5}, got {actual}. "
            "The corrupt file was deleted; rerun to download again, or check dataset.md5/dataset.url"
        )
    part.replace(dest)
    return dest


def _strip_top(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tar filter: drop the archive's ``VOCdevkit/`` prefix, then apply the standard
    ``data`` filter (rejects absolute paths, ``..``, links leaving ``dest``, devices)."""
    parts = Path(member.name).parts
    if not parts or parts[0] != ARCHIVE_TOP:
        raise DataError(f"tar member {member.name!r} is outside {ARCHIVE_TOP}/; "
                        "this is not a PASCAL VOC archive")
    if len(parts) == 1:
        return None
    return tarfile.data_filter(member.replace(name="/".join(parts[1:]), deep=False), dest)


def extract_devkit(archive: str | Path, root: str | Path) -> None:
    """Extract ``archive``'s ``VOCdevkit/`` into ``root`` atomically (a temporary sibling
    directory renamed into place), refusing members that would land outside ``root``."""
    archive = Path(archive)
    try:
        with tarfile.open(archive) as tar, atomic_path(root) as tmp:
            tmp.mkdir()
            members = tar.getmembers()
            for member in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                tar.extract(member, tmp, filter=_strip_top)
    except tarfile.FilterError as exc:
        raise DataError(f"{archive}: unsafe tar member ({exc}); refusing to extract it") from exc
    except tarfile.TarError as exc:
        raise DataError(f"{archive} is not a readable tar ({exc}); delete it and rerun") from exc


def check_devkit(root: str | Path) -> dict:
    """Raise :class:`DataError` unless ``root`` looks like a VOCdevkit; return its counts."""
    root = Path(root)
    required = [voc.voc2012_dir(root) / "JPEGImages", voc.voc2012_dir(root) / "SegmentationClass",
                voc.split_list_path(root, "train"), voc.split_list_path(root, "val")]
    missing = [str(p.relative_to(root)) for p in required if not p.exists()]
    if missing:
        hint = ""
        if root.name == "VOC2012":
            hint = f" (it looks like VOC2012 itself: point at its parent {root.parent})"
        elif (root / ARCHIVE_TOP).is_dir():
            hint = f" (point at {root / ARCHIVE_TOP} instead)"
        raise DataError(
            f"{root} does not look like a VOCdevkit: missing {', '.join(missing)}{hint}. "
            "Set dataset.voc_root to the directory that contains VOC2012/, or to null to download"
        )
    splits = {split: len(voc.split_list_path(root, split).read_text().split())
              for split in ("train", "val")}
    return {"num_images": sum(1 for _ in (voc.voc2012_dir(root) / "JPEGImages").glob("*.jpg")),
            "num_segmentation": splits}


def prepare_voc(config: Mapping, retries: int = 3, backoff_s: float = 2.0) -> dict:
    """Stage main: make ``paths.dataset_root(config)`` a complete VOCdevkit and write the
    manifest (last). Downloads and extracts only what is not there yet."""
    dataset = config["dataset"]
    if dataset["name"] != "voc2012":
        raise ConfigError(f"dataset.name is {dataset['name']!r}: download_voc only prepares "
                          "voc2012 (the synthetic dataset comes from make_synthetic)")
    root = paths.dataset_root(config)
    manifest_path = paths.dataset_manifest(config)
    manifest_path.unlink(missing_ok=True)  # a failed rerun must not leave the old "complete" mark
    if dataset["voc_root"]:
        counts = check_devkit(root)
        source = "voc_root"
    else:
        if not voc.voc2012_dir(root).is_dir():
            archive = paths.download_dir(config) / archive_name(dataset["url"])
            if not archive.is_file():
                fetch(dataset["url"], archive, dataset["md5"], retries=retries, backoff_s=backoff_s)
            elif md5sum(archive) != dataset["md5"]:
                raise DataError(f"{archive} does not match dataset.md5 {dataset['md5']}; "
                                "delete it and rerun to download again")
            extract_devkit(archive, root)
        else:
            log.info("%s already extracted; nothing to download", root)
        counts = check_devkit(root)
        source = "download"
    manifest = {"dataset": "voc2012", "source": source, "root": str(root),
                "url": dataset["url"], "md5": dataset["md5"], **counts,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json(manifest_path, manifest)
    log.info("VOC 2012 ready at %s (%d images)", root, counts["num_images"])
    return manifest


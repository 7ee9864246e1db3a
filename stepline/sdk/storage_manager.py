"""``StorageManager``: fetch files from URLs into a local cache, and upload files."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stepline.backend.storage import copy_atomically
from stepline.core.config import load_config
from stepline.core.errors import ConfigError, NotFoundError, StepLineError
from stepline.sdk.serializers import extract_archive


class StorageError(StepLineError):
    pass


def _cache_root(cache_context: str | None) -> Path:
    root = load_config().cache_dir / "storage" / (cache_context or "global")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _fs_for(url: str) -> Any:
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach {url}: its filesystem driver is not installed ({exc}); for s3:// "
            "install stepline[s3]"
        ) from exc


class StorageManager:
    """Local copies of remote files (http(s)://, s3:// and any fsspec URL), cached."""

    @classmethod
    def get_local_copy(
        cls,
        remote_url: str,
        cache_context: str | None = None,
        extract_archive: bool = True,
        name: str | None = None,
        force_download: bool = False,
    ) -> str:
        """A local path for ``remote_url``. Local paths and ``file://`` URLs are returned as they
        are; anything else is downloaded once into the cache. A ``.zip``/``.tar.gz`` is extracted
        (unless ``extract_archive=False``) and the folder returned. Raises ``StorageError`` when
        the file cannot be had (the reference returns None)."""
        parsed = urlparse(str(remote_url))
        if parsed.scheme in ("", "file"):
            path = parsed.path if parsed.scheme == "file" else str(remote_url)
            if not os.path.exists(path):
                raise NotFoundError(f"StorageManager.get_local_copy: {path} does not exist")
            local = path
        else:
            local = cls._download(str(remote_url), _cache_root(cache_context), name, force_download)
        if extract_archive and (
            local.endswith(".zip") or local.endswith((".tar.gz", ".tgz", ".tar"))
        ):
            return cls._extract(local, _cache_root(cache_context))
        return local

    @staticmethod
    def _download(url: str, root: Path, name: str | None, force: bool) -> str:
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        base = name or os.path.basename(urlparse(url).path) or "download"
        dest = root / key / base
        if dest.exists() and not force:
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{base}.{uuid.uuid4().hex[:8]}.part")
        try:
            if url.startswith(("http://", "https://")):
                try:
                    with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                        shutil.copyfileobj(resp, out, 1 << 20)
                except (urllib.error.URLError, OSError) as exc:
                    raise StorageError(f"could not download {url}: {exc}") from exc
            else:
                fs, path = _fs_for(url)
                try:
                    fs.get_file(path, str(tmp))
                except FileNotFoundError:
                    raise NotFoundError(f"{url} does not exist")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return str(dest)

    @staticmethod
    def _extract(path: str, root: Path) -> str:
        digest = hashlib.sha256(f"{path}:{os.path.getmtime(path)}".encode()).hexdigest()[:24]
        dest = root / "extracted" / digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        return extract_archive(path, dest)

    @classmethod
    def download_file(
        cls, remote_url: str, local_folder: str | None = None, overwrite: bool = False, **_: object
    ) -> str:
        local = cls.get_local_copy(remote_url, extract_archive=False)
        if local_folder is None:
            return local
        dest = Path(local_folder) / os.path.basename(local)
        if dest.exists() and not overwrite:
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return str(dest)

    @classmethod
    def upload_file(
        cls,
        local_file: str,
        remote_url: str,
        wait_for_upload: bool = True,
        retries: int | None = None,
    ) -> str:
        """Copy ``local_file`` to ``remote_url`` (a path, ``file://`` or fsspec URL); the file
        appears at its destination only when whole. Returns ``remote_url``."""
        if not os.path.isfile(local_file):
            raise NotFoundError(f"StorageManager.upload_file: {local_file} is not a file")
        parsed = urlparse(remote_url)
        if parsed.scheme in ("", "file"):
            dest = Path(parsed.path if parsed.scheme == "file" else remote_url)
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_atomically(local_file, dest)
            return remote_url
        fs, path = _fs_for(remote_url)
        attempts = 1 + (retries or 0)
        for i in range(attempts):
            try:
                fs.put_file(local_file, path)
                break
            except OSError as exc:
                if i == attempts - 1:
                    raise StorageError(
                        f"could not upload {local_file} to {remote_url}: {exc}"
                    ) from exc
        return remote_url

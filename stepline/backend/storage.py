"""Artifact bytes: a local folder or any fsspec URL.

``put`` is atomic: the bytes are written under a temporary name beside their final place and
renamed (local) or uploaded as one object (object stores, where an object appears only when
whole). Keys are made of checked components and local paths are resolved and checked against
the root, so no key can reach outside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stepline.core.errors import ArtifactNotFoundError, ConfigError, UnsafePathError

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex, size) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 8):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def is_local_url(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path_of(url: str) -> str:
    # file URLs come from Path.as_uri(), which percent-encodes spaces, '%', '#', non-ASCII...
    return unquote(urlparse(url).path) if url.startswith("file://") else url


class BlobStorage:
    """Where artifact files live. ``root`` is a folder path or an fsspec URL."""

    def __init__(self, root: str, cache_dir: Path) -> None:
        self.root_url = root.rstrip("/")
        self.cache_dir = cache_dir
        self.local = is_local_url(root)
        self._fs: Any = None
        if self.local:
            self.root = Path(local_path_of(root)).expanduser().absolute()
            self.root.mkdir(parents=True, exist_ok=True)
            self._real_root = os.path.realpath(self.root)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover
                raise ConfigError("fsspec is needed for artifact storage URLs") from exc
            try:
                self._fs, _ = fsspec.core.url_to_fs(self.root_url)
            except (ImportError, ValueError) as exc:
                raise ConfigError(
                    f"artifact storage {self.root_url!r} needs a filesystem driver that is not "
                    f"installed ({exc}); for s3:// install stepline[s3]"
                ) from exc
        return self._fs

    def _local_target(self, key: str) -> Path:
        path = self.root / key
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise UnsafePathError(f"storage key {key!r} resolves outside the storage root")
        return path

    def url_for(self, key: str) -> str:
        if self.local:
            return self._local_target(key).as_uri()
        return f"{self.root_url}/{key}"

    def owns(self, url: str) -> bool:
        """Whether ``url`` points inside this storage."""
        if self.local:
            if not is_local_url(url):
                return False
            real = os.path.realpath(local_path_of(url))
            return real.startswith(self._real_root + os.sep)
        return url.startswith(self.root_url + "/")

    # -- operations ------------------------------------------------------------------------
    def put(self, local_path: str, key: str, *, move: bool = False) -> str:
        """Store the file under ``key``; return its URL. With ``move`` the source may be
        renamed into place instead of copied."""
        if self.local:
            target = self._local_target(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            if move:
                try:
                    os.replace(local_path, target)
                    return target.as_uri()
                except OSError:
                    pass  # another filesystem: copy instead
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                shutil.copyfile(local_path, tmp)
                os.replace(tmp, target)
            finally:
                if tmp.exists():
                    tmp.unlink()
            if move:
                os.unlink(local_path)
            return target.as_uri()
        url = f"{self.root_url}/{key}"
        self.fs.put_file(local_path, url)
        if move:
            os.unlink(local_path)
        return url

    def local_copy(self, url: str) -> str:
        """A local path holding the bytes at ``url`` (a download into the cache if remote)."""
        if is_local_url(url):
            path = local_path_of(url)
            if not os.path.exists(path):
                raise ArtifactNotFoundError(f"file {path} is missing from the artifact storage")
            return path
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        dest = self.cache_dir / "blobs" / digest / os.path.basename(urlparse(url).path)
        if dest.exists():
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.fs.get_file(url, str(tmp))
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"{url} is missing from the artifact storage")
        os.replace(tmp, dest)
        return str(dest)

    def delete(self, url: str) -> None:
        if not self.owns(url):
            return
        try:
            if self.local:
                os.unlink(local_path_of(url))
            else:
                self.fs.rm_file(url)
        except (FileNotFoundError, OSError):
            pass

    def delete_prefix(self, key: str) -> None:
        if self.local:
            path = self._local_target(key)
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                self.fs.rm(f"{self.root_url}/{key}", recursive=True)
            except FileNotFoundError:
                pass

"""Artifact bytes: a local folder or any fsspec URL (an object store such as S3).

What it guarantees:

* **Whole files only.** In a local folder ``put`` writes under a temporary name beside the
  final place and renames. In an object store an object appears only when whole: a small file
  goes up in one request, a large one (from ``2 * PART_SIZE`` bytes) as a multipart upload,
  which the server assembles only when told that every part has arrived. A failed upload is
  aborted, so its parts are not kept either (when the server can still be reached; where it
  cannot, a bucket lifecycle rule for incomplete multipart uploads removes them).
  ``local_copy`` downloads under a temporary name in the cache and renames.
* **Keys stay inside the root.** Keys are made of checked components (``core.paths``). Local
  paths are resolved and checked against the root; object keys may not hold empty, ``.`` or
  ``..`` parts, which some servers and HTTP clients collapse.
* **No credentials in URLs.** A root URL carrying credentials is refused: every artifact's
  URL is recorded in its task and shown to whoever reads the task. Credentials come from the
  provider's usual environment (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` or
  ``AWS_PROFILE``; ``AWS_ENDPOINT_URL`` for S3-compatible servers), read by the provider's
  own library.
* **One filesystem object per process.** fsspec's object-store filesystems hold an event loop
  thread and open connections, which a forked child does not have: the child makes its own,
  and leaves the inherited one alone (closing it would close the parent's connections).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stepline.core.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    UnsafePathError,
)

CHUNK = 1 << 20

#: Multipart upload part size: files from twice this size go up in parts, up to
#: ``UPLOAD_CONCURRENCY`` parts at a time (and so that many parts in memory).
PART_SIZE = 16 << 20
UPLOAD_CONCURRENCY = 4
MAX_PARTS = 10_000  # S3's limit on the parts of one upload

#: Schemes whose URL user part is an access key, not an account or container name.
KEYED_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "oss"})

#: Filesystems made before a fork, kept unused in the child: see ``_leave_alone``.
_INHERITED: list[Any] = []


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex, size) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 8):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def copy_atomically(src: str | os.PathLike[str], dest: Path) -> None:
    """Copy ``src`` to ``dest`` under a temporary name beside it, then rename: readers see the
    old file or the whole new one, never a part."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_local_url(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path_of(url: str) -> str:
    # file URLs come from Path.as_uri(), which percent-encodes spaces, '%', '#', non-ASCII...
    return unquote(urlparse(url).path) if url.startswith("file://") else url


def part_size(size: int) -> int:
    """The multipart part size for a file of ``size`` bytes: ``PART_SIZE``, or more (whole
    MiB) for a file that would otherwise need more than ``MAX_PARTS`` parts."""
    mib = 1 << 20
    needed = -(-size // MAX_PARTS)
    return max(PART_SIZE, -(-needed // mib) * mib)


def check_no_credentials(url: str) -> None:
    """Raise ``ConfigError`` if ``url`` carries credentials (``s3://KEY:SECRET@bucket/...``)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in KEYED_SCHEMES:
        # a bucket name holds neither '@' nor ':' (and a secret holding '/' cuts the netloc
        # short, leaving only "KEY:start-of-secret")
        if "@" not in parsed.netloc and ":" not in parsed.netloc:
            return
    elif parsed.password is None:
        return  # a user name alone, as in sftp://user@host/path, is no secret
    after = url.split("://", 1)[-1].partition("@")[2].split("/")[0] or "BUCKET"
    raise ConfigError(
        f"artifact storage URL {parsed.scheme}://***@{after}/... carries credentials, which "
        f"would be recorded in every artifact's URL. Give it without them "
        f"({parsed.scheme}://{after}/...) and set the credentials in the environment: "
        f"{credential_variables(url)}"
    )


def credential_variables(url: str) -> str:
    """Where the credentials for ``url`` are looked for, as said in error messages."""
    if urlparse(url).scheme.lower() in ("s3", "s3a"):
        return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    return "the storage provider's usual environment variables"


def _leave_alone(fs: Any) -> None:
    """Keep a filesystem made before a fork from being closed in the child. Its connections
    and event loop are the parent's: closing them would wait for a loop no thread of the child
    runs (s3fs waits a second, at exit) and unregister the parent's sockets from the epoll set
    both processes share. So it is kept referenced and its closing finalizer detached."""
    _INHERITED.append(fs)
    registry = getattr(weakref.finalize, "_registry", {})  # CPython's; public peek/detach
    for finalizer in list(registry):
        info = finalizer.peek()
        if info is not None and info[0] is fs:
            finalizer.detach()


def _provider_code(exc: BaseException) -> str:
    """The provider's error code behind ``exc`` (s3fs keeps botocore's error as the cause)."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


class BlobStorage:
    """Where artifact files live. ``root`` is a folder path or an fsspec URL."""

    def __init__(self, root: str, cache_dir: Path) -> None:
        self.root_url = root.rstrip("/")
        self.cache_dir = cache_dir
        self.local = is_local_url(root)
        self._fs: Any = None
        self._fs_pid = 0
        if self.local:
            self.root = Path(local_path_of(root)).expanduser().absolute()
            self.root.mkdir(parents=True, exist_ok=True)
            self._real_root = os.path.realpath(self.root)
        else:
            check_no_credentials(root)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """This process's fsspec filesystem of the root (made on first use)."""
        if self._fs is not None and self._fs_pid == os.getpid():
            return self._fs
        if self._fs is not None:
            _leave_alone(self._fs)
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover
            raise ConfigError("fsspec is needed for artifact storage URLs") from exc
        try:
            # not fsspec's shared instance: that one is keyed by arguments only, while
            # credentials and endpoint come from the environment
            fs, _ = fsspec.core.url_to_fs(self.root_url, skip_instance_cache=True)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"artifact storage {self.root_url!r} needs a filesystem driver that is not "
                f"installed ({exc}); for s3:// install stepline[s3]"
            ) from exc
        # two threads may both get here: each uses its own, and the one not kept is closed
        # when collected, in the process that made it
        self._fs, self._fs_pid = fs, os.getpid()
        return fs

    @property
    def _is_s3(self) -> bool:
        protocol = getattr(self.fs, "protocol", ())
        return "s3" in ((protocol,) if isinstance(protocol, str) else protocol)

    def _local_target(self, key: str) -> Path:
        path = self.root / key
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise UnsafePathError(f"storage key {key!r} resolves outside the storage root")
        return path

    def _remote_url(self, key: str) -> str:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in key or "\x00" in key:
            raise UnsafePathError(
                f"storage key {key!r} could lead outside the storage root: it must be a "
                "relative path with no empty, '.' or '..' parts"
            )
        return f"{self.root_url}/{key}"

    def url_for(self, key: str) -> str:
        if self.local:
            return self._local_target(key).as_uri()
        return self._remote_url(key)

    def owns(self, url: str) -> bool:
        """Whether ``url`` points inside this storage."""
        if self.local:
            if not is_local_url(url):
                return False
            real = os.path.realpath(local_path_of(url))
            return real.startswith(self._real_root + os.sep)
        if not url.startswith(self.root_url + "/"):
            return False
        try:
            self._remote_url(url[len(self.root_url) + 1 :])
        except UnsafePathError:
            return False
        return True

    @contextmanager
    def _remote(self, doing: str, url: str, *, reading: bool = False) -> Iterator[None]:
        """Turn the object store's errors into ours, saying what to check. With ``reading``
        a missing object is ``ArtifactNotFoundError``."""
        try:
            yield
        except (ArtifactError, ConfigError):
            raise
        except Exception as exc:
            where = f"artifact storage {self.root_url}"
            s3 = urlparse(self.root_url).scheme.lower() in ("s3", "s3a")
            creds = credential_variables(self.root_url)
            if _provider_code(exc) == "NoSuchBucket":
                lookup = " and the endpoint (AWS_ENDPOINT_URL) it is looked up at" if s3 else ""
                raise ConfigError(
                    f"{where}: the bucket does not exist (while {doing} {url}); check the "
                    f"storage URL (STEPLINE_STORAGE){lookup}"
                ) from exc
            if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                raise ConfigError(
                    f"{where}: no credentials found while {doing} {url} ({exc}); set "
                    f"{creds} in the environment"
                ) from exc
            if isinstance(exc, PermissionError):
                raise ConfigError(
                    f"{where}: access refused while {doing} {url} ({exc}); check the "
                    f"credentials in the environment ({creds}) and that they may use this "
                    "bucket"
                ) from exc
            if isinstance(exc, FileNotFoundError) and reading:
                raise ArtifactNotFoundError(f"{url} is missing from the artifact storage") from exc
            reach = " (AWS_ENDPOINT_URL, the network)" if s3 else ""
            raise ArtifactError(
                f"{where}: failed while {doing} {url}: {type(exc).__name__}: {exc}; check "
                f"that the storage can be reached{reach}"
            ) from exc

    # -- operations ------------------------------------------------------------------------
    def put(self, local_path: str, key: str, *, move: bool = False) -> str:
        """Store the file under ``key``; return its URL. With ``move`` the source may be
        renamed into place instead of copied."""
        if self.local:
            return self._put_local(local_path, key, move)
        url = self._remote_url(key)
        size = os.path.getsize(local_path)
        options: dict[str, Any] = {}
        if self._is_s3:
            options = {"chunksize": part_size(size), "max_concurrency": UPLOAD_CONCURRENCY}
        try:
            with self._remote("uploading to", url):
                self.fs.put_file(local_path, url, **options)
        except BaseException:
            if options and size >= 2 * options["chunksize"]:  # went up in parts
                self._abort_uploads(url)
            raise
        if move:
            os.unlink(local_path)
        return url

    def _put_local(self, local_path: str, key: str, move: bool) -> str:
        target = self._local_target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(local_path, target)
                return target.as_uri()
            except OSError:
                pass  # another filesystem: copy instead
        copy_atomically(local_path, target)
        if move:
            os.unlink(local_path)
        return target.as_uri()

    def _abort_uploads(self, url: str) -> None:
        """Abort unfinished multipart uploads to ``url``'s key, so that their parts are not
        kept (s3fs aborts its own on an error, but not when interrupted, nor when the abort
        itself fails). Keys are fresh per put, so these are the failed put's."""
        if not self._is_s3:
            return
        with suppress(Exception):
            bucket, key, _ = self.fs.split_path(url)
            found = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
            for upload in found.get("Uploads", []):
                if upload.get("Key") == key:
                    self.fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload["UploadId"],
                    )

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
            with self._remote("downloading", url, reading=True):
                self.fs.get_file(url, str(tmp))
            os.replace(tmp, dest)
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()
        return str(dest)

    def delete(self, url: str) -> None:
        """Delete the file at ``url`` if it is this storage's; a missing file is no error,
        nor is any other failure: deletes follow committed changes and must not undo them."""
        if not self.owns(url):
            return
        try:
            if self.local:
                os.unlink(local_path_of(url))
            else:
                self.fs.rm_file(url)
        except Exception:
            pass

    def delete_prefix(self, key: str) -> None:
        """Delete every file under the folder ``key``."""
        if self.local:
            path = self._local_target(key)
            shutil.rmtree(path, ignore_errors=True)
            return
        url = self._remote_url(key)
        try:
            with self._remote("deleting", f"{url}/"):
                self.fs.rm(f"{url}/", recursive=True)
        except ArtifactError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise

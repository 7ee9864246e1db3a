"""The ``Artifact`` object: one stored output (or input) of a task."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from stepline.backend import Backend
from stepline.core.config import load_config
from stepline.core.records import ArtifactRecord
from stepline.sdk.serializers import deserialize
from stepline.sdk.serializers import extract_archive as extract_to


class Artifact:
    """Read access to a stored artifact. ``get()`` returns the object, ``get_local_copy()``
    a local file (or, for folders, the extracted folder)."""

    def __init__(self, record: ArtifactRecord, backend: Backend) -> None:
        self._record = record
        self._backend = backend

    def __repr__(self) -> str:
        return f"<Artifact {self.name!r} type={self.type} size={self.size} url={self.url}>"

    name = property(lambda self: self._record.name)
    type = property(lambda self: self._record.type)
    url = property(lambda self: self._record.url)
    hash = property(lambda self: self._record.hash)
    size = property(lambda self: self._record.size)
    preview = property(lambda self: self._record.preview)
    mode = property(lambda self: self._record.mode)
    task_id = property(lambda self: self._record.task_id)
    content_type = property(lambda self: self._record.content_type)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._record.metadata)

    @property
    def timestamp(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._record.created)

    @property
    def record(self) -> ArtifactRecord:
        return self._record

    @property
    def _what(self) -> str:
        return f"artifact {self.name!r} of task {self.task_id}"

    def get_local_copy(
        self,
        extract_archive: bool = True,
        raise_on_error: bool = True,
        force_download: bool = False,
    ) -> str:
        """A local path with the artifact's bytes; a folder artifact is extracted (unless
        ``extract_archive=False``). Raises if the file is missing or does not match its hash."""
        path = self._backend.artifact_local_path(
            self._record, verify=True if force_download else None
        )
        if self.type == "folder" and extract_archive:
            key = hashlib.sha256(f"{self.url}:{self.hash}".encode()).hexdigest()[:24]
            dest = load_config().cache_dir / "extracted" / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            return extract_to(path, dest)
        return path

    def get(
        self,
        force_download: bool = False,
        deserialization_function: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """The stored object (for ``file`` and ``folder`` artifacts: a local path)."""
        if self.type in ("file", "folder") and deserialization_function is None:
            return self.get_local_copy(force_download=force_download)
        path = self._backend.artifact_local_path(
            self._record, verify=True if force_download else None
        )
        return deserialize(
            path,
            self.type,
            self.content_type,
            what=self._what,
            deserialization_function=deserialization_function,
        )


class Artifacts(Mapping[str, Artifact]):
    """A task's artifacts by name, as read when the mapping was made."""

    def __init__(self, records: list[ArtifactRecord], backend: Backend, task_id: str) -> None:
        self._items = {r.name: Artifact(r, backend) for r in records}
        self._task_id = task_id

    def __getitem__(self, name: str) -> Artifact:
        try:
            return self._items[name]
        except KeyError:
            have = ", ".join(sorted(self._items)) or "none"
            raise KeyError(
                f"task {self._task_id} has no artifact {name!r} (it has: {have})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Artifacts({list(self._items)})"

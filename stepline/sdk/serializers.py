"""Turning Python objects into artifact files and back.

=========  ===============================  ==================================
type       what is stored                   what ``Artifact.get()`` returns
=========  ===============================  ==================================
numpy      ``.npy`` (no pickle)             ``numpy.ndarray``
pandas     ``.parquet`` (or ``.csv.gz``)    ``pandas.DataFrame``
json       ``.json``                        the dict / list
str        ``.txt``                         the string
bytes      ``.bin``                         ``bytes``
file       the file as it is                a local path to it
folder     a ``.zip`` of the folder         a local path to the extracted folder
image      ``.png`` (PIL images)            ``PIL.Image.Image``
pickle     ``.pkl``                         the object
custom     your serialization_function's    your deserialization_function's
           bytes                            result (bytes without one)
=========  ===============================  ==================================
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepline.core.errors import ArtifactCorruptError, ArtifactError, SerializationError

PREVIEW_CHARS = 1000


@dataclass
class Serialized:
    path: str  #: the file to store
    type: str
    preview: str
    content_type: str
    owned: bool  #: True if ``path`` is a temporary file that may be moved into storage


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _module_type(obj: Any, module: str, name: str) -> bool:
    cls = type(obj)
    return any(c.__module__.split(".")[0] == module and c.__name__ == name for c in cls.__mro__)


def _json_safe(obj: Any, sort_keys: bool) -> str | None:
    try:
        text = json.dumps(obj, sort_keys=sort_keys)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == obj and not _has_tuple(obj) else None


def _has_tuple(obj: Any) -> bool:
    if isinstance(obj, tuple):
        return True
    if isinstance(obj, list):
        return any(_has_tuple(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_tuple(v) for v in obj.values())
    return False


def serialize(
    obj: Any,
    *,
    what: str,
    tmp_dir: Path,
    auto_pickle: bool = True,
    serialization_function: Callable[[Any], bytes] | None = None,
    extension_name: str | None = None,
    sort_keys: bool = True,
) -> Serialized:
    """Write ``obj`` to a file; ``what`` names it in errors ("artifact 'x' of task T")."""
    tmp_dir.mkdir(parents=True, exist_ok=True)

    def temp(suffix: str) -> str:
        fd, path = tempfile.mkstemp(suffix=suffix, dir=tmp_dir)
        os.close(fd)
        return path

    def write_bytes(data: bytes, suffix: str) -> str:
        path = temp(suffix)
        with open(path, "wb") as f:
            f.write(data)
        return path

    if serialization_function is not None:
        try:
            data = serialization_function(obj)
        except Exception as exc:
            raise SerializationError(f"{what}: serialization_function failed: {exc!r}") from exc
        if not isinstance(data, (bytes, bytearray)):
            raise SerializationError(
                f"{what}: serialization_function must return bytes, not {type(data).__name__}"
            )
        path = write_bytes(bytes(data), extension_name or ".bin")
        return Serialized(path, "custom", f"{len(data)} bytes", "application/octet-stream", True)

    if _module_type(obj, "numpy", "ndarray") and obj.dtype != object:
        import numpy as np

        path = temp(".npy")
        np.save(path, obj, allow_pickle=False)
        preview = (
            f"ndarray shape={obj.shape} dtype={obj.dtype}\n{np.array2string(obj, threshold=20)}"
        )
        return Serialized(path, "numpy", _preview(preview), "application/x-npy", True)

    if _module_type(obj, "pandas", "DataFrame"):
        preview = _preview(f"DataFrame shape={obj.shape}\n{obj.head(10).to_string()}")
        use_csv = extension_name in (".csv", ".csv.gz")
        if not use_csv:
            try:
                path = temp(".parquet")
                obj.to_parquet(path)
                return Serialized(path, "pandas", preview, "application/x-parquet", True)
            except ImportError:
                use_csv = True
            except Exception:  # columns parquet cannot hold: fall back to CSV
                use_csv = True
        path = temp(".csv.gz")
        obj.to_csv(path, compression="gzip")
        return Serialized(path, "pandas", preview, "text/csv+gzip", True)

    if isinstance(obj, (bytes, bytearray)):
        path = write_bytes(bytes(obj), extension_name or ".bin")
        return Serialized(path, "bytes", f"{len(obj)} bytes", "application/octet-stream", True)

    if isinstance(obj, Path) or (isinstance(obj, str) and obj and os.path.exists(obj)):
        src = Path(obj).expanduser()
        if not src.exists():
            raise ArtifactError(f"{what}: the path {str(src)!r} does not exist")
        if src.is_dir():
            base = temp("")
            os.unlink(base)
            path = shutil.make_archive(base, "zip", root_dir=src)
            names = sorted(p.name for p in src.iterdir())[:50]
            return Serialized(
                path,
                "folder",
                _preview(f"folder {src.name}: " + ", ".join(names)),
                "application/zip",
                True,
            )
        return Serialized(
            str(src),
            "file",
            f"file {src.name}, {src.stat().st_size} bytes",
            "application/octet-stream",
            False,
        )

    if isinstance(obj, str):
        path = write_bytes(obj.encode(), ".txt")
        return Serialized(path, "str", _preview(obj), "text/plain", True)

    if isinstance(obj, (dict, list)):
        text = _json_safe(obj, sort_keys)
        if text is not None:
            path = write_bytes(text.encode(), ".json")
            return Serialized(path, "json", _preview(text), "application/json", True)

    if _module_type(obj, "PIL", "Image"):
        path = temp(".png")
        obj.save(path, format="PNG")
        return Serialized(
            path, "image", f"image {obj.size[0]}x{obj.size[1]} {obj.mode}", "image/png", True
        )

    if not auto_pickle:
        raise SerializationError(
            f"{what}: objects of type {type(obj).__name__} are stored by pickling, and "
            "auto_pickle=False; pass auto_pickle=True or a serialization_function"
        )
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"{what}: the {type(obj).__name__} object cannot be pickled ({exc}); pass a "
            "serialization_function, or store a picklable form of it"
        ) from exc
    path = write_bytes(data, extension_name or ".pkl")
    return Serialized(path, "pickle", _preview(repr(obj)), "application/x-pickle", True)


def extract_archive(path: str, dest: Path) -> str:
    """Extract the zip or tar archive at ``path`` into ``dest`` (once; atomically: into a
    temporary folder beside it, then renamed) and return ``dest``. Members that would land
    outside ``dest`` are refused."""
    if dest.is_dir():
        return str(dest)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                inside = str(tmp.resolve()) + os.sep
                for member in zf.namelist():
                    if not str((tmp / member).resolve()).startswith(inside):
                        raise ArtifactCorruptError(
                            f"archive {path} holds a path outside its folder: {member}"
                        )
                zf.extractall(tmp)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(tmp, filter="data")
        os.replace(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
        # another process extracted it first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def deserialize(
    path: str,
    type_: str,
    content_type: str,
    *,
    what: str,
    deserialization_function: Callable[[bytes], Any] | None = None,
) -> Any:
    """Read back what ``serialize`` wrote (``file`` and ``folder`` are handled by the caller)."""
    try:
        if deserialization_function is not None:
            with open(path, "rb") as f:
                return deserialization_function(f.read())
        if type_ == "numpy":
            import numpy as np

            return np.load(path, allow_pickle=False)
        if type_ == "pandas":
            import pandas as pd

            if content_type == "application/x-parquet":
                return pd.read_parquet(path)
            return pd.read_csv(path, index_col=0, compression="gzip")
        if type_ == "json":
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        if type_ == "str":
            with open(path, encoding="utf-8") as f:
                return f.read()
        if type_ in ("bytes", "custom"):
            with open(path, "rb") as f:
                return f.read()
        if type_ == "image":
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                return img
        if type_ == "pickle":
            with open(path, "rb") as f:
                return pickle.load(f)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ArtifactError(f"{what}: reading it needs a module that is missing: {exc}") from exc
    except Exception as exc:
        raise ArtifactCorruptError(
            f"{what}: its file {path} could not be read as {type_} ({exc!r})"
        ) from exc
    raise ArtifactError(f"{what}: unknown artifact type {type_!r}; upgrade stepline")

"""Names that become parts of storage paths. Nothing a user names may leave the storage root."""

from __future__ import annotations

from stepline.core.errors import UnsafePathError

MAX_NAME = 255


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is safe as one path component, else raise ``UnsafePathError``."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} must be a non-empty string, got {name!r}")
    bad = [c for c in ("/", "\\", "\x00") if c in name]
    if bad or name in (".", "..") or name.strip() != name or len(name) > MAX_NAME:
        raise UnsafePathError(
            f"{what} {name!r} cannot be used: it must be one path component of at most "
            f"{MAX_NAME} characters, with no '/', '\\' or NUL, not '.' or '..', and no "
            "leading or trailing spaces (use e.g. 'dataset_v2')"
        )
    if any(ord(c) < 32 for c in name):
        raise UnsafePathError(f"{what} {name!r} contains a control character")
    return name


def storage_key(*parts: str) -> str:
    """A relative key under a storage root, from safe components."""
    return "/".join(check_name(p, "storage path part") for p in parts)

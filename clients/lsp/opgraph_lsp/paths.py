"""Matching a document's URI to the source file a graph's nodes name.

A node's source is the path Python ran (``/home/me/proj/train.py``); an editor names the same
file by a URI that may percent-encode it (``file:///home/me/my%20proj/train.py``), reach it
through a symlink, or spell it in another case on a case-insensitive file system. Two names
are the same file when they reach the same inode; a file that cannot be reached (deleted,
or on another machine) is compared by its normalised absolute path, without case where the
platform ignores case.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict
from urllib.parse import unquote, urlsplit

FileKey = tuple
"""What identifies a file: ``("inode", dev, ino)`` or ``("path", normalised path)``."""

CASE_INSENSITIVE = sys.platform in ("darwin", "win32", "cygwin")
"""Whether paths that cannot be reached compare without case (the platforms' defaults)."""


def uri_to_path(uri: str) -> str | None:
    """The local path of a ``file:`` URI (percent-decoded), or None for another scheme.

    ``file:///c%3A/x.py`` (as VS Code writes Windows paths) is ``c:/x.py`` on Windows;
    a URI with a host other than ``localhost`` names a file on another machine: None.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        return None
    path = unquote(parts.path)
    if os.name == "nt" and len(path) >= 3 and path[0] == "/" and path[2] == ":":
        path = path[1:]
    return os.path.normpath(path) if path else None


def path_to_uri(path: str) -> str:
    """The ``file:`` URI of ``path`` (absolute), percent-encoded as editors write it."""
    from urllib.parse import quote

    path = os.path.abspath(path)
    if os.name == "nt":
        path = "/" + path.replace("\\", "/")
    return "file://" + quote(path, safe="/:")


def file_key(path: str, *, case_insensitive: bool = CASE_INSENSITIVE) -> FileKey:
    """The identity of the file ``path`` names (see the module's docstring)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        resolved = os.path.normpath(os.path.abspath(path))
        with contextlib.suppress(OSError, ValueError):
            resolved = os.path.realpath(resolved)
        return ("path", resolved.lower() if case_insensitive else resolved)
    return ("inode", st.st_dev, st.st_ino)


class KeyCache:
    """`file_key` of the paths a graph server names, remembered for the last ``size`` paths.

    Graphs name the same few files again and again; one ``stat`` per file per refresh is
    enough. `forget` drops everything (a file may have been replaced since).
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._keys: OrderedDict[str, FileKey] = OrderedDict()

    def key(self, path: str) -> FileKey:
        """The key of ``path``, from the cache when known."""
        found = self._keys.get(path)
        if found is not None:
            self._keys.move_to_end(path)
            return found
        key = file_key(path)
        self._keys[path] = key
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return key

    def forget(self) -> None:
        """Drop every remembered key."""
        self._keys.clear()

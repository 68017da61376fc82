"""Is a FIF file complete? A walk over its tag headers, without reading the data.

A FIF file is a chain of tags, each a 16-byte header (kind, type, size, next; big-endian
int32) followed by ``size`` bytes, nested in blocks opened and closed by
``FIFF_BLOCK_START`` / ``FIFF_BLOCK_END`` tags. A copy interrupted at any point (even at a
data-buffer boundary, where MNE reads the file without error and drops the samples after
the cut with only a warning) leaves a tag that runs past the end of the file, blocks that
are never closed, or a directory pointer beyond the end.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

__all__ = ["check_fif_complete"]

_HEADER = struct.Struct(">iiii")
_FILE_ID, _DIR_POINTER, _BLOCK_START, _BLOCK_END = 100, 101, 104, 105
_NEXT_SEQ, _NEXT_NONE = 0, -1


def _problem(fid, size: int) -> str | None:
    """What is wrong with the open FIF stream ``fid`` of ``size`` bytes, or None."""
    pos, depth = 0, 0
    while pos < size:
        fid.seek(pos)
        head = fid.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return f"the tag at byte {pos} is cut after {len(head)} of its 16 header bytes"
        kind, _, length, nxt = _HEADER.unpack(head)
        end = pos + _HEADER.size + length
        if length < 0 or end > size:
            return (f"the tag at byte {pos} declares {length} bytes of data but the file "
                    f"ends {size - pos - _HEADER.size} bytes after its header")
        if kind == _DIR_POINTER and length >= 4:
            (dir_pos,) = struct.unpack(">i", fid.read(4))
            if dir_pos > 0 and dir_pos >= size:
                return f"its directory should start at byte {dir_pos}, past the end of the file"
        depth += (kind == _BLOCK_START) - (kind == _BLOCK_END)
        if nxt == _NEXT_NONE:
            break
        pos = end if nxt == _NEXT_SEQ else nxt
    if depth > 0:
        return f"{depth} block(s) opened in it are never closed"
    return None


def check_fif_complete(path: str | Path) -> None:
    """Raise ValueError when the FIF (or ``.fif.gz``) file at ``path`` is truncated.

    Parameters
    ----------
    path : str | pathlib.Path
        A FIF file.

    Raises
    ------
    ValueError
        When the file is empty or truncated, with what was found and the fix.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the file was not copied or not written. "
                         "Copy it again from the original.")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fid:
        try:
            first = fid.read(4)
            size = fid.seek(0, 2)  # the uncompressed size of a .gz
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} is truncated (the gzip stream is cut: {exc}); copy "
                             "it again from the original.") from exc
        if first != struct.pack(">i", _FILE_ID):
            raise ValueError(f"{path} is not a FIF file (it does not start with a FIF file "
                             "id); check the file name and format.")
        problem = _problem(fid, size)
    if problem is not None:
        raise ValueError(f"{path} is truncated: {problem}. The copy was probably interrupted; "
                         "copy the file again from the original.")

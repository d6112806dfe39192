"""Append a one-folder build to the launcher: the single file dist/appliance.

Usage: ``python pack.py LAUNCHER FOLDER OUTPUT``.

Layout (read by packaging/binary/launcher.c; keep the two in step)::

    launcher ELF | entry* | trailer
    entry   = type u8 (0 dir, 1 file, 2 symlink) | compressed u8 | path_len u16 | mode u32
              | size u64 | stored u64 | path | stored bytes (zlib stream or raw; link target)
    trailer = b"APPLPAK1" | payload offset u64 | payload size u64 | key (40 hex chars)

Integers are little-endian. Entries are sorted by path (parents first) and their modes
normalised (0755 for folders and executables, else 0644), so the same folder gives the same
bytes. The key, the first 40 hex digits of the payload's SHA-256, names the launcher's
cache folder: a different build never reuses another's unpacked tree.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

MAGIC = b"APPLPAK1"
DIR, FILE, LINK = 0, 1, 2
# Compress a file only where it saves this much: GGUF weights barely shrink, and stored
# bytes unpack at copy speed.
MIN_SAVING = 0.05
LEVEL = 6


def entries(folder: Path) -> list[tuple[str, Path]]:
    """Every path under ``folder``, relative, sorted so that parents come first."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


def record(relative: str, path: Path) -> tuple[bytes, int, int]:
    """One entry's bytes; its original size and stored size."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        kind, mode, compressed = LINK, 0o777, 0
        data = raw = os.readlink(path).encode()
    elif stat.S_ISDIR(info.st_mode):
        kind, mode, compressed, raw, data = DIR, 0o755, 0, b"", b""
    else:
        kind = FILE
        mode = 0o755 if info.st_mode & 0o111 else 0o644
        raw = path.read_bytes()
        if len(raw) >= 1 << 32:
            raise SystemExit(f"{relative}: files over 4 GiB are not supported")
        packed = zlib.compress(raw, LEVEL)
        compressed = len(packed) < len(raw) * (1 - MIN_SAVING)
        data = packed if compressed else raw
    name = relative.encode()
    head = struct.pack("<BBHIQQ", kind, int(compressed), len(name), mode, len(raw), len(data))
    return head + name + data, len(raw), len(data)


def main(launcher: Path, folder: Path, output: Path) -> None:
    stub = launcher.read_bytes()
    digest = hashlib.sha256()
    total = stored = 0
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("wb") as out:
        out.write(stub)
        for relative, path in entries(folder):
            blob, size, kept = record(relative, path)
            digest.update(blob)
            out.write(blob)
            total += size
            stored += kept
        payload = out.tell() - len(stub)
        key = digest.hexdigest()[:40].encode()
        out.write(MAGIC + struct.pack("<QQ", len(stub), payload) + key)
    tmp.chmod(0o755)
    tmp.replace(output)
    print(
        f"packed {folder} ({total / 1e6:.1f} MB in files) into {output}: "
        f"{output.stat().st_size / 1e6:.1f} MB, key {key.decode()}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))

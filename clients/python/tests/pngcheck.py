"""A strict PNG check with the standard library only (no PIL here).

png_info(data) -> (width, height, channels) or raises ValueError: the
signature, every chunk's CRC, IHDR first, IEND last, and the inflated IDAT
size matching the header (8-bit, non-interlaced, as common/ writes them).
"""

from __future__ import annotations

import struct
import zlib
from typing import Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_info(data: bytes) -> Tuple[int, int, int]:
    if not data.startswith(SIGNATURE):
        raise ValueError("no PNG signature")
    pos, chunks, idat = len(SIGNATURE), [], b""
    width = height = channels = depth = interlace = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("truncated chunk")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError(f"truncated {kind!r} chunk")
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if color not in _CHANNELS:
                raise ValueError(f"bad color type {color}")
            channels = _CHANNELS[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if not chunks or chunks[0] != b"IHDR" or chunks[-1] != b"IEND":
        raise ValueError(f"bad chunk order {chunks}")
    if width <= 0 or height <= 0:
        raise ValueError("empty image")
    if depth == 8 and interlace == 0:
        raw = zlib.decompress(idat)
        if len(raw) != height * (1 + width * channels):
            raise ValueError(f"IDAT holds {len(raw)} bytes, want {height * (1 + width * channels)}")
    return width, height, channels

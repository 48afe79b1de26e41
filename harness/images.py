"""Images built for tests and benchmarks."""
from __future__ import annotations

import struct
import zlib


def zero_png(width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A valid PNG of width x height zero pixels, a few hundred kB however large it declares itself (built row by
    row): the decompression bomb of memory tests. `color_type` 0 grey, 6 RGBA; `bit_depth` 8 or 16."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    z = zlib.compressobj(9)
    row = b"\x00" * (channels * bit_depth // 8 * width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))

"""``.scap`` container v2: wire-v2 packets in CRC-checked chunks, with an index of keyframes.

Layout (FORMAT.md §10 is the reference)::

    file    = "SCAP" u16 version=2 u16 flags=0  chunk*  [index-chunk trailer]
    chunk   = "SC" u8 type  varint first_seq  varint count  varint body_len
              u16 head_crc  body  u32 body_crc
    type 1  = packets: count x (varint length, packet)
    type 2  = index:   count x (varint offset, varint seq, u8 flags)
    trailer = u64 offset of the index chunk, "SCX2"

A chunk holds up to about a second of packets and is written whole, so a cut file loses at
most its last chunk. A new chunk starts at every keyframe for all faces; the index lists
those chunks. ``first_seq`` is the full sequence number of the chunk's first frame packet
(frame packets in a chunk are consecutive; header packets do not count).

Damage: a chunk whose header CRC, body CRC or structure is wrong is skipped with a warning,
and reading resumes at the next ``SC`` whose header CRC and body CRC match; a cut chunk ends
the file with a warning. Each candidate position costs O(1) unless its 16-bit header CRC
matches, so a scan over damage is linear in practice (a forged header can make one candidate
cost up to MAX_CHUNK_BYTES).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from streamcap.errors import CodecError, InputNotFound

from .container import SafeOutput
from .packet import KIND_FRAME, MAX_PACKET_BYTES, MAX_SEQ, Reader, put_varint

log = logging.getLogger(__name__)

MAGIC = b"SCAP"
VERSION = 2
FILE_HEADER = struct.Struct("<4sHH")
CHUNK_MAGIC = b"SC"
TRAILER = struct.Struct("<Q4s")
TRAILER_MAGIC = b"SCX2"
CH_PACKETS, CH_INDEX = 1, 2
MAX_CHUNK_BYTES = 1 << 25
MAX_CHUNK_COUNT = 1 << 17
MAX_HEAD = 2 + 1 + 3 * 10 + 2
MAX_FILE_BYTES = 1 << 31  # the reader holds the file in memory


@dataclass(frozen=True)
class KeyEntry:
    """A chunk that starts with a keyframe for every face (decoding can start there)."""

    offset: int
    seq: int
    flags: int = 1


def file_version(path: str | Path) -> int:
    """The container version of a ``.scap`` file (1 or 2); CodecError if it is not one."""
    with open(path, "rb") as f:
        head = f.read(FILE_HEADER.size)
    if len(head) < FILE_HEADER.size or head[:4] != MAGIC:
        raise CodecError(f"{path}: not a .scap file")
    return FILE_HEADER.unpack(head)[1]


def _chunk(kind: int, first_seq: int, count: int, body: bytes) -> bytes:
    head = bytearray(CHUNK_MAGIC)
    head.append(kind)
    put_varint(head, first_seq)
    put_varint(head, count)
    put_varint(head, len(body))
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    return bytes(head) + body + struct.pack("<I", zlib.crc32(body))


class ScapWriter2:
    """Buffers packets into chunks of ``chunk_frames`` frame packets (or fewer: a keyframe for
    all faces starts a new chunk) and writes each chunk whole, flushed. Like the v1 writer it
    never cuts an existing file short: over an existing file the new stream goes to
    ``.NAME.partial`` and replaces it on ``close()``; leaving the ``with`` block on an error
    (other than Ctrl-C) discards it (``abort()``)."""

    def __init__(self, path: str | Path, chunk_frames: int = 60) -> None:
        self.path = Path(path)
        self.chunk_frames = max(1, int(chunk_frames))
        self._out = SafeOutput(self.path, CodecError)
        self._f = self._out.file
        self._f.write(FILE_HEADER.pack(MAGIC, VERSION, 0))
        self._body = bytearray()
        self._count = 0
        self._frames = 0
        self._first_seq: int | None = None
        self._key = False
        self._next_seq = 0
        self.index: list[KeyEntry] = []
        self.overhead_bytes = FILE_HEADER.size  # chunk heads, CRCs, length prefixes, index, trailer
        self.closed = False

    @property
    def bytes_written(self) -> int:
        return self._f.tell() + len(self._body)

    def write(self, packet: bytes, seq: int | None = None, key: bool = False) -> int:
        """Append one packet. ``seq``: the full seq of a frame packet (default: one more than
        the last); ``key``: it is a keyframe for every face (a seek point). Returns the bytes
        of file framing this added (chunks it closed, the packet's length prefix), for rate control."""
        before = self.overhead_bytes
        if not packet or len(packet) > MAX_PACKET_BYTES:
            raise ValueError("packet empty or too large")
        frame = packet[0] & 3 == KIND_FRAME
        if frame:
            seq = self._next_seq if seq is None else int(seq)
            if key or self._frames >= self.chunk_frames or (
                    self._first_seq is not None and seq != self._first_seq + self._frames):
                self._flush_chunk()
            if self._first_seq is None:
                self._first_seq = seq
                self._key = key
            self._frames += 1
            self._next_seq = seq + 1
        n = len(self._body)
        put_varint(self._body, len(packet))
        self.overhead_bytes += len(self._body) - n
        self._body += packet
        self._count += 1
        if len(self._body) > MAX_CHUNK_BYTES // 2:
            self._flush_chunk()
        return self.overhead_bytes - before

    def _flush_chunk(self) -> None:
        if not self._count:
            return
        first = self._first_seq if self._first_seq is not None else self._next_seq
        off = self._f.tell()
        data = _chunk(CH_PACKETS, first, self._count, bytes(self._body))
        self.overhead_bytes += len(data) - len(self._body)
        if self._key:
            self.index.append(KeyEntry(off, first))
        self._f.write(data)
        self._f.flush()
        self._body = bytearray()
        self._count = self._frames = 0
        self._first_seq, self._key = None, False

    def close(self) -> None:
        if self.closed:
            return
        self._flush_chunk()
        body = bytearray()
        for e in self.index:
            put_varint(body, e.offset)
            put_varint(body, e.seq)
            body.append(e.flags)
        off = self._f.tell()
        data = _chunk(CH_INDEX, 0, len(self.index), bytes(body))
        self._f.write(data + TRAILER.pack(off, TRAILER_MAGIC))
        self.overhead_bytes += len(data) + TRAILER.size
        self.closed = True
        self._out.commit()

    def abort(self) -> None:
        """Give up: an older file being replaced stays as it was and the new one is removed; a
        new file keeps its readable prefix (closed with its index)."""
        if not self._out.replacing:
            self.close()
        elif not self.closed:
            self.closed = True
            self._out.discard()

    def __enter__(self) -> ScapWriter2:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if e is not None and not isinstance(e, KeyboardInterrupt):
            self.abort()
        else:
            self.close()


@dataclass
class _Chunk:
    kind: int
    first_seq: int
    count: int
    body: memoryview
    end: int


class ScapReader2:
    """Reads a v2 file: ``packets()`` yields (full seq or None for non-frame packets, bytes)."""

    def __init__(self, path: str | Path, strict: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputNotFound(f"{path}: no such file")
        self.strict = strict
        self.truncated = False
        self.skipped = 0
        size = self.path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CodecError(f"{path}: {size} bytes is more than a v2 stream file may hold ({MAX_FILE_BYTES})")
        self._data = self.path.read_bytes()  # a few kbit/s: an hour is a few MB
        self._buf = memoryview(self._data)
        if len(self._data) < FILE_HEADER.size or self._data[:4] != MAGIC:
            raise CodecError(f"{path}: not a .scap file")
        version = FILE_HEADER.unpack(self._data[:FILE_HEADER.size])[1]
        if version != VERSION:
            raise CodecError(f"{path}: .scap container version {version}; this reader knows {VERSION}")
        self._end = len(self._buf)  # where chunks stop (the index chunk, when the trailer is valid)
        self.index = self._read_index()

    def close(self) -> None:
        """Nothing to release (the file is read at open); kept for the context manager."""

    def __enter__(self) -> ScapReader2:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ----------------------------------------------------------------- parsing
    def _parse(self, pos: int) -> _Chunk | None:
        """The chunk at ``pos``, None if none valid starts there; raises EOFError if one whose
        header is valid runs past the end of the file."""
        buf = self._buf
        if bytes(buf[pos:pos + 2]) != CHUNK_MAGIC:
            return None
        r = Reader(buf[pos:pos + MAX_HEAD], "chunk header")
        try:
            r.take(2)
            kind = r.byte()
            first = r.varint(MAX_SEQ, "seq")
            count = r.varint(MAX_CHUNK_COUNT, "count")
            blen = r.varint(MAX_CHUNK_BYTES, "length")
            head_end = r.pos
            (hcrc,) = struct.unpack("<H", r.take(2))
        except CodecError:
            if len(buf) - pos < MAX_HEAD:
                raise EOFError from None
            return None
        if hcrc != zlib.crc32(buf[pos:pos + head_end]) & 0xFFFF or kind not in (CH_PACKETS, CH_INDEX):
            return None
        start = pos + head_end + 2
        end = start + blen + 4
        if end > len(buf):
            raise EOFError
        body = buf[start:start + blen]
        if struct.unpack("<I", buf[end - 4:end])[0] != zlib.crc32(body):
            return None
        return _Chunk(kind, first, count, body, end)

    def _chunks(self, start: int = FILE_HEADER.size) -> Iterator[tuple[int, _Chunk]]:
        pos = start
        n = self._end
        while pos < n:
            try:
                ch = self._parse(pos)
            except EOFError:
                self.truncated = True
                log.warning("%s: cut at byte %d (last chunk incomplete)", self.path, pos)
                return
            if ch is None or ch.end > n:
                if self.strict:
                    raise CodecError(f"{self.path}: damaged chunk at byte {pos}")
                self.skipped += 1
                log.warning("%s: damaged data at byte %d, resynchronising", self.path, pos)
                nxt = self._find(pos + 1)
                if nxt < 0:
                    return
                pos = nxt
                continue
            yield pos, ch
            pos = ch.end

    def _find(self, pos: int) -> int:
        return self._data.find(CHUNK_MAGIC, pos)

    def _read_index(self) -> list[KeyEntry]:
        buf = self._buf
        if len(buf) >= FILE_HEADER.size + TRAILER.size:
            off, magic = TRAILER.unpack(buf[len(buf) - TRAILER.size:])
            if magic == TRAILER_MAGIC and FILE_HEADER.size <= off < len(buf) - TRAILER.size:
                try:
                    ch = self._parse(off)
                except EOFError:
                    ch = None
                if ch is not None and ch.kind == CH_INDEX and ch.end == len(buf) - TRAILER.size:
                    try:
                        entries = self._index_entries(ch)
                    except CodecError:
                        entries = None
                    if entries is not None:
                        self._end = off
                        return entries
        log.info("%s: no valid index, scanning", self.path)
        return [KeyEntry(pos, ch.first_seq) for pos, ch in self._chunks()
                if ch.kind == CH_PACKETS and self._starts_key(ch)]

    @staticmethod
    def _index_entries(ch: _Chunk) -> list[KeyEntry]:
        r = Reader(ch.body, "index")
        out = []
        for _ in range(ch.count):
            out.append(KeyEntry(r.varint(MAX_SEQ, "offset"), r.varint(MAX_SEQ, "seq"), r.byte()))
        r.end()
        return out

    @staticmethod
    def _starts_key(ch: _Chunk) -> bool:
        """A chunk starts at a seek point if its first frame packet lists faces with every
        section a keyframe: cheap check on the packet's flags byte (a face list present)."""
        try:
            for _, pkt in _packets(ch):
                if pkt[0] & 3 == KIND_FRAME:
                    return bool(pkt[0] & 4) and len(pkt) > 1 and bool(pkt[1] & 1)
        except CodecError:
            return False
        return False

    def packets(self, start_offset: int | None = None) -> Iterator[tuple[int | None, bytes]]:
        """Yield (seq, packet) in file order; seq is the full sequence number of a frame
        packet and None for other packets. A damaged chunk is skipped (see module doc)."""
        for _, ch in self._chunks(start_offset or FILE_HEADER.size):
            if ch.kind != CH_PACKETS:
                continue
            try:
                pkts = list(_packets(ch))
            except CodecError as exc:
                if self.strict:
                    raise
                self.skipped += 1
                log.warning("%s: bad chunk body (%s), skipped", self.path, exc)
                continue
            seq = ch.first_seq
            for _, pkt in pkts:
                if pkt[0] & 3 == KIND_FRAME:
                    yield seq, pkt
                    seq += 1
                else:
                    yield None, pkt


def _packets(ch: _Chunk) -> Iterator[tuple[int, bytes]]:
    r = Reader(ch.body, "chunk")
    for i in range(ch.count):
        n = r.varint(MAX_PACKET_BYTES, "packet length")
        if n == 0:
            raise CodecError("empty packet")
        yield i, r.take(n)
    r.end()

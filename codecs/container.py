"""The ``.scap`` stream file: CRC-checked, length-prefixed message records and a seek index.

Layout (all little-endian; FORMAT.md is the reference)::

    file     = b"SCAP" u16 version u16 flags(0)  record*  [index-record trailer]
    record   = u32 body_len  u8 type  body  u32 crc32(type byte + body)
    type 1   = message: u8 n_frames, then n_frames x (u32 frame_len, frame bytes)
    type 2   = index:   u32 count, then count x (u64 offset, i64 frame_index, f64 ts, u8 flags)
    trailer  = u64 offset of the index record, b"SCIX"

Records are flushed as they are written, so an interrupted encode leaves a file whose every
whole record is readable; the index and trailer are written by ``close()``. A reader without a
valid trailer rebuilds the index by scanning.

Damage rule: a file cut short yields every whole record before the cut, then stops with a
logged warning (never an error). A record whose CRC does not match, whose type is unknown or
whose message does not parse is skipped with a warning, and reading resumes at the next offset
where a whole, CRC-valid record starts (normally the very next record); ``strict=True`` raises
``CodecError`` instead.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from streamcap.errors import CodecError, InputError, InputNotFound

from .messages import BackgroundKeyframe, FaceKeyframe, FrameStart, Message, StreamHeader
from .limits import MAX_FRAMES, MAX_HEADER_BYTES, MAX_RECORD
from .wire import from_frames, to_frames

log = logging.getLogger(__name__)

MAGIC = b"SCAP"
CONTAINER_VERSION = 1
TRAILER_MAGIC = b"SCIX"
FILE_HEADER = struct.Struct("<4sHH")
REC_HEAD = struct.Struct("<IB")
CRC = struct.Struct("<I")
ENTRY = struct.Struct("<QqdB")
TRAILER = struct.Struct("<Q4s")
REC_MESSAGE, REC_INDEX = 1, 2

# index entry flags
KEY = 1  # every face of the frame is a keyframe: decoding can start here
HAS_KEYFRAME = 2  # at least one face keyframe
HAS_BACKGROUND = 4


@dataclass(frozen=True)
class IndexEntry:
    """Where a frame starts (offset of its FrameStart record) and what it holds."""

    offset: int
    frame_index: int
    ts: float
    flags: int

    @property
    def key(self) -> bool:
        return bool(self.flags & KEY)


@dataclass
class _Indexer:
    """Builds index entries from the message stream (shared by writer and scanning reader)."""

    entries: list[IndexEntry] = field(default_factory=list)
    _cur: tuple[int, FrameStart] | None = None
    _keyed: set[int] = field(default_factory=set)
    _bg: bool = False

    def add(self, offset: int, msg: Message) -> None:
        if isinstance(msg, FrameStart):
            self.finish()
            self._cur = (offset, msg)
        elif self._cur is not None and isinstance(msg, FaceKeyframe):
            self._keyed.add(msg.face_id)
        elif self._cur is not None and isinstance(msg, BackgroundKeyframe):
            self._bg = True

    def finish(self) -> None:
        if self._cur is not None:
            offset, start = self._cur
            faces = set(start.face_ids)
            flags = (KEY if faces <= self._keyed and (faces or self._bg) else 0)
            flags |= (HAS_KEYFRAME if self._keyed else 0) | (HAS_BACKGROUND if self._bg else 0)
            self.entries.append(IndexEntry(offset, start.frame_index, start.ts, flags))
        self._cur, self._keyed, self._bg = None, set(), False


def _record(rtype: int, body: bytes) -> bytes:
    tb = bytes([rtype])
    return REC_HEAD.pack(len(body), rtype) + body + CRC.pack(zlib.crc32(body, zlib.crc32(tb)))


def _message_body(frames: Sequence[bytes]) -> bytes:
    parts = [bytes([len(frames)])]
    for f in frames:
        parts.append(struct.pack("<I", len(f)))
        parts.append(bytes(f))
    return b"".join(parts)


def _split_body(body: bytes) -> list[bytes] | None:
    """Message record body -> frames, or None if the framing is inconsistent."""
    if not body:
        return None
    n, pos, out = body[0], 1, []
    if not 1 <= n <= MAX_FRAMES:
        return None
    for _ in range(n):
        if pos + 4 > len(body):
            return None
        (ln,) = struct.unpack_from("<I", body, pos)
        pos += 4
        if pos + ln > len(body):
            return None
        out.append(body[pos:pos + ln])
        pos += ln
    return out if pos == len(body) else None


def _candidates(data: mmap.mmap | bytes, lo: int, hi: int, end: int) -> list[int]:
    """Offsets q in [lo, hi) whose fixed record fields are plausible (vectorised filter).

    Message record: type 1, 1..MAX_FRAMES frames, a first (header) frame of 1..MAX_HEADER_BYTES
    bytes that starts like a msgpack map, a body that holds those frames and ends by ``end``.
    Index record: type 2 and a length of exactly 4 + count x entry size."""
    need = REC_HEAD.size + 6  # length, type, n_frames, first frame length, first header byte
    avail = min(hi + need, end) - lo
    if avail < REC_HEAD.size + CRC.size:
        return []
    b = np.frombuffer(bytes(data[lo:lo + avail]), np.uint8)
    n = min(hi - lo, avail - REC_HEAD.size - CRC.size + 1)
    pad = np.zeros(need, np.uint8)
    b = np.concatenate([b, pad])
    rtype, nfr, head = b[4:4 + n], b[5:5 + n], b[10:10 + n]
    # cheap byte tests first, on every offset; 32-bit fields only for the few survivors
    msg = (rtype == REC_MESSAGE) & (nfr >= 1) & (nfr <= MAX_FRAMES) & (((head & 0xF0) == 0x80) | (head == 0xDE))
    idx_msg = np.nonzero(msg)[0]
    idx_index = np.nonzero(rtype == REC_INDEX)[0]

    def u32(at: np.ndarray) -> np.ndarray:
        return (b[at].astype(np.int64) | b[at + 1].astype(np.int64) << 8 | b[at + 2].astype(np.int64) << 16
                | b[at + 3].astype(np.int64) << 24)

    def fits(at: np.ndarray, length: np.ndarray) -> np.ndarray:
        return lo + at + REC_HEAD.size + length + CRC.size <= end

    length, f0, n_fr = u32(idx_msg), u32(idx_msg + 6), b[idx_msg + 5].astype(np.int64)
    ok_msg = fits(idx_msg, length) & (f0 >= 1) & (f0 <= MAX_HEADER_BYTES) & (length >= 1 + 4 * n_fr + f0)
    ok_msg &= (n_fr > 1) | (length == 5 + f0)
    length = u32(idx_index)
    ok_index = fits(idx_index, length) & (length == 4 + u32(idx_index + 5) * ENTRY.size)
    found = np.concatenate([idx_msg[ok_msg], idx_index[ok_index]])
    found.sort()
    return (lo + found).tolist()


class _PrefixCrc:
    """CRC-32 of any byte range of a file in bounded time, from prefix CRCs.

    ``P(i)`` = crc32(data[:i]) is kept at every ``step`` bytes (extended lazily, once, so the
    whole file costs one CRC pass); P at any offset is a checkpoint plus < ``step`` bytes. CRC-32
    is affine, so crc32(data[a:b]) = P(b) xor Z(b - a, P(a)), where Z(n, c) = crc32(n zero bytes,
    c) xor crc32(n zero bytes, 0) is a GF(2)-linear map applied with the precomputed matrices of
    Z(2^k, .) (the same algebra as zlib's crc32_combine)."""

    def __init__(self, data: mmap.mmap | bytes, step: int = 256) -> None:
        self.data, self.step = data, step
        self.marks = [0]
        self._cursor = (0, 0)  # (offset, P(offset)) of the last record start looked at
        # Z(d * 16^j, .) for d < 16, j < 10 (distances < 2^40), each as four 256-entry tables
        # (one per byte of the CRC register): a shift costs one table look-up per hex digit
        self.powers: list[list[list[list[int]]]] = []
        cols = [zlib.crc32(b"\0", 1 << j) ^ zlib.crc32(b"\0", 0) for j in range(32)]
        for _ in range(10):
            base = self._tables(cols)
            row, cur = [base, base], cols
            for _d in range(2, 16):
                cur = [self._apply(base, c) for c in cur]
                row.append(self._tables(cur))
            self.powers.append(row)
            cols = [self._apply(base, c) for c in cur]

    @staticmethod
    def _tables(cols: list[int]) -> list[list[int]]:
        out = []
        for byte in range(4):
            t = [0] * 256
            for v in range(1, 256):
                low = v & -v
                t[v] = t[v ^ low] ^ cols[8 * byte + low.bit_length() - 1]
            out.append(t)
        return out

    @staticmethod
    def _apply(t: list[list[int]], c: int) -> int:
        return t[0][c & 255] ^ t[1][(c >> 8) & 255] ^ t[2][(c >> 16) & 255] ^ t[3][c >> 24]

    def _zeros(self, n: int, c: int) -> int:
        j = 0
        while n:
            if n & 15:
                c = self._apply(self.powers[j][n & 15], c)
            n >>= 4
            j += 1
        return c

    def prefix(self, i: int) -> int:
        """P(i): from the cursor when ``i`` is just ahead of it (record starts come in order),
        else from the checkpoint below ``i``; either way at most ``step`` bytes are read."""
        at, val = self._cursor
        if not at <= i <= at + self.step:
            k = i // self.step
            while len(self.marks) <= k:
                m = len(self.marks)
                self.marks.append(zlib.crc32(self.data[(m - 1) * self.step:m * self.step], self.marks[-1]))
            at, val = k * self.step, self.marks[k]
        self._cursor = (i, zlib.crc32(self.data[at:i], val))
        return self._cursor[1]

    def crc(self, a: int, b: int) -> int:
        pa = self.prefix(a)
        cursor = self._cursor
        pb = self.prefix(b)
        self._cursor = cursor  # b is far ahead: keep serving the starts
        return pb ^ self._zeros(b - a, pa)

    def matches(self, q: int, end: int) -> bool:
        """The record at ``q`` (whose length fits before ``end``) has a matching CRC."""
        (length,) = struct.unpack_from("<I", self.data, q)
        stop = q + REC_HEAD.size + length
        (crc,) = CRC.unpack_from(self.data, stop)
        return self.crc(q + 4, stop) == crc


class SafeOutput:
    """An output file that a failure never cuts short: over an existing file the new bytes go to
    ``.NAME.partial`` beside it and replace it on ``commit()``; ``discard()`` removes them and
    keeps the old file. A new file is written in place. Both ``.scap`` writers use it."""

    def __init__(self, path: Path, error: type[Exception]) -> None:
        if path.is_dir():
            raise error(f"output {path} is a folder, not a file")
        self.path = path
        self.replacing = path.exists()
        self.write_path = path.with_name(f".{path.name}.partial") if self.replacing else path
        try:
            self.file = open(self.write_path, "wb")  # noqa: SIM115 - closed by commit() / discard()
        except OSError as exc:
            raise error(f"cannot write {path}: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        self.file.close()
        if self.replacing:
            os.replace(self.write_path, self.path)

    def discard(self) -> None:
        self.file.close()
        self.write_path.unlink(missing_ok=True)


class ScapWriter:
    """Writes a ``.scap`` file; use as a context manager so the index is written on exit.

    Every record is flushed to the OS as it is written (``fsync=True`` also forces it to disk),
    so a crash mid-encode leaves a readable prefix. An existing file at ``path`` is never cut
    short by a failure: the new stream goes to ``.NAME.partial`` beside it and replaces it on
    ``close()``; leaving the ``with`` block on an error (other than Ctrl-C) discards it and
    keeps the old file (``abort()``).
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self._out = SafeOutput(self.path, InputError)
        self._f = self._out.file
        self._fsync = fsync
        self._indexer = _Indexer()
        self._f.write(FILE_HEADER.pack(MAGIC, CONTAINER_VERSION, 0))
        self._pos = FILE_HEADER.size
        self._flush()
        self.closed = False

    def write(self, msg: Message | Sequence[bytes]) -> int:
        """Append one message (a Message, or its wire frames, which are validated); returns the
        record's offset."""
        if self.closed:
            raise ValueError("write to a closed ScapWriter")
        if isinstance(msg, (list, tuple)):
            frames = [bytes(f) for f in msg]
            parsed = from_frames(frames)
        else:
            parsed, frames = msg, to_frames(msg)  # type: ignore[assignment]
        offset = self._pos
        rec = _record(REC_MESSAGE, _message_body(frames))
        self._f.write(rec)
        self._pos += len(rec)
        self._flush()
        self._indexer.add(offset, parsed)  # type: ignore[arg-type]
        return offset

    def write_all(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            self.write(m)

    @property
    def bytes_written(self) -> int:
        return self._pos

    def close(self) -> None:
        """Write the index record and the trailer, then close the file (idempotent)."""
        if self.closed:
            return
        self._indexer.finish()
        entries = self._indexer.entries
        body = struct.pack("<I", len(entries)) + b"".join(
            ENTRY.pack(e.offset, e.frame_index, e.ts, e.flags) for e in entries)
        offset = self._pos
        self._f.write(_record(REC_INDEX, body))
        self._f.write(TRAILER.pack(offset, TRAILER_MAGIC))
        self._flush()
        self.closed = True
        self._out.commit()

    def abort(self) -> None:
        """Give up: when an older file was being replaced it stays as it was and the new one is
        removed; a new file keeps its readable prefix (closed with its index)."""
        if not self._out.replacing:
            self.close()
        elif not self.closed:
            self.closed = True
            self._out.discard()

    def _flush(self) -> None:
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def __enter__(self) -> ScapWriter:  # noqa: PYI034
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if ev is not None and not isinstance(ev, KeyboardInterrupt):
            self.abort()  # a failure never destroys an older file; a new one keeps its prefix
        else:
            self.close()  # finished, or stopped by the user: what was written is a valid, indexed file


class ScapReader:
    """Reads a ``.scap`` file: iterate messages, seek to a frame, survive damage (module doc).

    ``index`` lists every frame (from the trailer, or rebuilt by a scan); ``header`` is the
    file's first StreamHeader; ``truncated`` / ``skipped`` report damage met so far.
    """

    def __init__(self, path: str | Path, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.truncated = False
        self.skipped = 0
        if not self.path.is_file():
            raise InputNotFound(f"stream file not found: {self.path}")
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size < FILE_HEADER.size:
            self._file.close()
            raise CodecError(f"{self.path} is not a .scap stream (too short)")
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version, _flags = FILE_HEADER.unpack_from(self._data, 0)
        if magic != MAGIC:
            self.close()
            raise CodecError(f"{self.path} is not a .scap stream")
        if version != CONTAINER_VERSION:
            self.close()
            raise CodecError(f"{self.path}: .scap version {version} is not supported "
                             f"(this runtime reads {CONTAINER_VERSION})")
        self._end = self._size  # where records stop (start of the trailer when there is one)
        self._crc: _PrefixCrc | None = None  # built on the first resync
        self._resynced: dict[tuple[int, int], int | None] = {}
        self.index = self._load_index()
        # the first readable StreamHeader (writers may repeat it before seek points, so one
        # damaged header record does not make the file undecodable); ``header_damage`` says why
        # the first record was not one
        self.header: StreamHeader | None = None
        self.header_damage: str | None = self.damage_at(FILE_HEADER.size)
        for _, m in self._messages_from(FILE_HEADER.size, quiet=True):
            if isinstance(m, StreamHeader):
                self.header = m
                break

    # ------------------------------------------------------------------------------ public

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    def messages(self, start_frame: int | None = None) -> Iterator[Message]:
        """Every message in order; with ``start_frame``, the stream header then everything from
        the last seek point (all faces keyframed) at or before that frame. The caller drops
        decoded frames before ``start_frame``."""
        pos = FILE_HEADER.size
        if start_frame is not None:
            pos = self.seek_offset(start_frame)
            if pos > FILE_HEADER.size and self.header is not None:
                yield self.header
        for _, msg in self._messages_from(pos):
            yield msg

    def seek_offset(self, frame_index: int) -> int:
        """File offset of the last seek point at or before ``frame_index`` (file start if none)."""
        best = FILE_HEADER.size
        for e in self.index:
            if e.frame_index > frame_index:
                break
            if e.key:
                best = e.offset
        return best

    def message_at(self, offset: int) -> Message:
        """The message whose record starts at ``offset`` (e.g. an index entry's); CodecError if
        no whole, valid message record starts there."""
        rec = self._record_at(offset, self._end)
        if not isinstance(rec, tuple) or rec[0] != REC_MESSAGE:
            raise CodecError(f"{self.path}: no message record at offset {offset}")
        frames = _split_body(rec[1])
        if frames is None:
            raise CodecError(f"{self.path}: record at offset {offset} is malformed")
        return from_frames(frames)

    def damage_at(self, offset: int) -> str | None:
        """Why no readable message record starts at ``offset`` (None: one does)."""
        end = self._end
        if offset + REC_HEAD.size + CRC.size > end:
            return "the file ends there"
        length, rtype = REC_HEAD.unpack_from(self._data, offset)
        if rtype not in (REC_MESSAGE, REC_INDEX):
            return f"unknown record type {rtype}"
        if length > MAX_RECORD or offset + REC_HEAD.size + length + CRC.size > end:
            return f"record length {length} runs past the end of the file"
        rec = self._record_at(offset, end)
        if not isinstance(rec, tuple):
            return "CRC mismatch (damaged bytes)"
        if rtype != REC_MESSAGE:
            return "an index record, not a message"
        try:
            frames = _split_body(rec[1])
            if frames is None:
                return "inconsistent frame lengths"
            from_frames(frames)
        except CodecError as exc:
            return f"the message does not parse ({exc})"
        return None

    @property
    def n_frames(self) -> int:
        return len(self.index)

    def close(self) -> None:
        data = getattr(self, "_data", None)
        if data is not None:
            data.close()
            self._data = None  # type: ignore[assignment]
        self._file.close()

    def __enter__(self) -> ScapReader:  # noqa: PYI034
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _load_index(self) -> list[IndexEntry]:
        entries = self._read_trailer_index()
        if entries is not None:
            return entries
        log.info("%s has no valid index; rebuilding it by scanning", self.path)
        indexer = _Indexer()
        for offset, msg in self._messages_from(FILE_HEADER.size, quiet=True):
            indexer.add(offset, msg)
        indexer.finish()
        return indexer.entries

    def _read_trailer_index(self) -> list[IndexEntry] | None:
        if self._size < FILE_HEADER.size + TRAILER.size + REC_HEAD.size + CRC.size:
            return None
        offset, magic = TRAILER.unpack_from(self._data, self._size - TRAILER.size)
        if magic != TRAILER_MAGIC or not FILE_HEADER.size <= offset < self._size - TRAILER.size:
            return None
        rec = self._record_at(offset, self._size - TRAILER.size)
        if not isinstance(rec, tuple) or rec[0] != REC_INDEX or rec[2] != self._size - TRAILER.size:
            return None
        body = rec[1]
        if len(body) < 4:
            return None
        (count,) = struct.unpack_from("<I", body, 0)
        if len(body) != 4 + count * ENTRY.size:
            return None
        entries = [IndexEntry(*ENTRY.unpack_from(body, 4 + i * ENTRY.size)) for i in range(count)]
        offs = [e.offset for e in entries]
        if offs != sorted(offs) or any(not FILE_HEADER.size <= o < offset for o in offs):
            return None
        self._end = offset + 0  # records stop at the index record
        return entries

    def _record_at(self, pos: int, end: int) -> tuple[int, bytes, int] | str:
        """(type, body, next offset), or 'short' (does not fit before ``end``) or 'bad'."""
        if pos + REC_HEAD.size + CRC.size > end:
            return "short"
        length, rtype = REC_HEAD.unpack_from(self._data, pos)
        if rtype not in (REC_MESSAGE, REC_INDEX) or length > MAX_RECORD:
            return "bad"
        nxt = pos + REC_HEAD.size + length + CRC.size
        if nxt > end:
            return "short"
        body = self._data[pos + REC_HEAD.size:pos + REC_HEAD.size + length]
        (crc,) = CRC.unpack_from(self._data, nxt - CRC.size)
        if zlib.crc32(body, zlib.crc32(bytes([rtype]))) != crc:
            return "bad"
        return rtype, body, nxt

    def _resync(self, pos: int, end: int) -> int | None:
        """First offset after ``pos`` where a whole CRC-valid record starts, or None.

        Linear time with bounded work per byte (a crafted file cannot make it quadratic):
        numpy filters every offset on the record's fixed fields (type, frame count, a header
        frame of 1..MAX_HEADER_BYTES starting with a msgpack map, a length that fits), the few
        survivors get their frame lengths walked (at most MAX_FRAMES steps) and their CRC
        checked from prefix CRCs (:class:`_PrefixCrc`), never by re-reading the record."""
        key = (pos, end)
        if key in self._resynced:  # the index scan, the header look-up and reading meet the same damage
            return self._resynced[key]
        if self._crc is None:
            self._crc = _PrefixCrc(self._data)
        found = self._scan(pos, end)
        self._resynced[key] = found
        return found

    def _scan(self, pos: int, end: int) -> int | None:
        assert self._crc is not None
        lo, window = pos + 1, 256
        last = end - REC_HEAD.size - CRC.size  # last offset where an empty record could start
        while lo <= last:
            hi = min(lo + window, last + 1)
            for q in _candidates(self._data, lo, hi, end):
                if self._plausible(q, end) and self._crc.matches(q, end):
                    return q
            lo, window = hi, min(window * 2, 1 << 20)
        return None

    def _plausible(self, q: int, end: int) -> bool:
        """A candidate's framing is consistent (message: frame lengths add up to the body)."""
        data = self._data
        length, rtype = REC_HEAD.unpack_from(data, q)
        if length > MAX_RECORD:
            return False
        if rtype == REC_INDEX:
            return True  # _candidates checked count against the length
        body, stop = q + REC_HEAD.size, q + REC_HEAD.size + length
        at = body + 1
        for _ in range(data[body]):
            if at + 4 > stop:
                return False
            at += 4 + int.from_bytes(data[at:at + 4], "little")
        return at == stop

    def _messages_from(self, pos: int, quiet: bool = False) -> Iterator[tuple[int, Message]]:
        """(offset, message) of every readable message record from ``pos`` (damage rule)."""
        end = self._end
        while pos < end:
            if end == self._size and end - pos == TRAILER.size and \
                    self._data[end - 4:end] == TRAILER_MAGIC:
                return  # a trailer whose index record was unreadable
            rec = self._record_at(pos, end)
            if isinstance(rec, tuple):
                rtype, body, nxt = rec
                if rtype == REC_MESSAGE:
                    msg = self._parse(pos, body, quiet)
                    if msg is not None:
                        yield pos, msg
                pos = nxt
                continue
            if rec == "bad" and self.strict:
                raise CodecError(f"{self.path}: corrupt record at offset {pos}")
            found = None if self.strict else self._resync(pos, end)
            if found is None:
                if not quiet:
                    log.warning("%s is truncated or damaged at offset %d of %d: stopping after the "
                                "last whole record", self.path, pos, self._size)
                self.truncated = True
                return
            if not quiet:
                log.warning("%s: skipped %d damaged bytes at offset %d", self.path, found - pos, pos)
                self.skipped += 1
            pos = found

    def _parse(self, pos: int, body: bytes, quiet: bool) -> Message | None:
        frames = _split_body(body)
        try:
            if frames is None:
                raise CodecError("record framing is inconsistent")
            return from_frames(frames)
        except CodecError as exc:
            if self.strict:
                raise CodecError(f"{self.path}: bad message at offset {pos}: {exc}") from exc
            if not quiet:
                log.warning("%s: skipped a bad message at offset %d: %s", self.path, pos, exc)
                self.skipped += 1
            return None

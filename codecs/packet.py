"""Wire format v2: one compact packet per video frame (FORMAT.md §9 is the reference).

A v2 stream is a sequence of packets; the live path sends each packet as one transport
message and ``.scap`` v2 (``scap2.py``) stores them in CRC-checked chunks. There are no key
names and no payload descriptors: the first byte says what the packet is, the rest is varints
and byte strings whose lengths come first. Every length is checked against its limit before
anything is allocated, and every malformed packet raises ``CodecError`` (one error type).

Packets:

* ``StreamHeader2`` (kind 1): model, UV layout, basis, video size, rates, the full sequence
  number of the next frame packet. Sent once per session and again on request.
* ``FramePacket`` (kind 0): per face an entropy-coded geometry section (``geomcode.py``) and,
  when this frame carries one, an AV1 texture packet; optionally the face list (when it
  changed) and an AV1 intra background plate. Its sequence number travels modulo 32; the
  full value is in the stream header and in every ``.scap`` chunk header.
* ``Request`` (kind 2): receiver -> sender, a keyframe for one face or everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamcap.errors import CodecError

WIRE_VERSION = 2

KIND_FRAME, KIND_HEADER, KIND_REQUEST = 0, 1, 2
SEQ_BITS = 5
SEQ_MOD = 1 << SEQ_BITS
EXT = 1 << 2  # byte0 bit 2: a flags byte follows (frame packets)

# flags byte of a frame packet
F_FACES = 1  # the face list follows (it changed, or this is a keyframe for all)
F_PLATE = 2  # an AV1 intra background plate follows

# per-face section header (a varint): geometry length << 3 | TEX | KEY | GONE_REF
S_TEX, S_KEY = 1, 2

MAX_VARINT_BYTES = 10
MAX_FACES = 256
MAX_FACE_ID = (1 << 31) - 1
MAX_GEOM_BYTES = 1 << 16
MAX_TEX_BYTES = 1 << 20
MAX_PLATE_BYTES = 1 << 24
MAX_PACKET_BYTES = MAX_PLATE_BYTES + MAX_FACES * (MAX_GEOM_BYTES + MAX_TEX_BYTES + 16) + 64
MAX_STR = 128
MAX_SIDE = 16384
MAX_SEQ = (1 << 63) - 1


# ---------------------------------------------------------------------------- varints

def put_varint(out: bytearray, v: int) -> None:
    """Unsigned LEB128 (7 bits per byte, low group first)."""
    if v < 0 or v > MAX_SEQ:
        raise ValueError(f"varint out of range: {v}")
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


class Reader:
    """Bounded cursor over a byte string; every read checks the bytes are there."""

    def __init__(self, data: bytes | bytearray | memoryview, what: str = "packet") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise CodecError(f"{self.what} is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self, limit: int = MAX_SEQ, name: str = "value") -> int:
        v = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            b = self.byte()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                if v > limit:
                    raise CodecError(f"{self.what}: {name} {v} exceeds {limit}")
                return v
            shift += 7
        raise CodecError(f"{self.what}: varint longer than {MAX_VARINT_BYTES} bytes")

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left:
            raise CodecError(f"{self.what} is truncated ({n} bytes wanted, {self.left} left)")
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def blob(self, limit: int, name: str) -> bytes:
        return self.take(self.varint(limit, f"{name} length"))

    def text(self, name: str) -> str:
        raw = self.blob(MAX_STR, name)
        try:
            s = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{self.what}: {name} is not ASCII") from exc
        return s

    def end(self) -> None:
        if self.left:
            raise CodecError(f"{self.what}: {self.left} unexpected bytes at the end")


def _put_blob(out: bytearray, b: bytes) -> None:
    put_varint(out, len(b))
    out += b


def _put_text(out: bytearray, s: str) -> None:
    raw = s.encode("ascii")
    if len(raw) > MAX_STR:
        raise ValueError(f"string longer than {MAX_STR}: {s!r}")
    _put_blob(out, raw)


# ---------------------------------------------------------------------------- packets

@dataclass(eq=True)
class StreamHeader2:
    """Everything a receiver must agree with, plus the full seq of the next frame packet."""

    next_seq: int
    bundle_id: str
    layout_hash: str
    basis_id: str
    n_components: int
    fps_milli: int  # source frames per second x 1000
    frame_step: int  # one frame packet per frame_step source frames
    width: int
    height: int
    texture_size: int  # side of the UV texture video (0: no texture video)
    version: int = WIRE_VERSION

    @property
    def fps(self) -> float:
        return self.fps_milli / 1000.0


@dataclass(eq=True)
class FaceSection:
    """One face of a frame packet: geometry bits and (optional) AV1 texture packet."""

    face_id: int
    key: bool
    geometry: bytes
    texture: bytes = b""


@dataclass(eq=True)
class FramePacket:
    """One video frame. ``face_ids`` is None when the list is unchanged from the previous frame
    packet (the sections then follow that list's order)."""

    seq: int
    sections: list[FaceSection] = field(default_factory=list)
    face_ids: tuple[int, ...] | None = None
    plate: bytes = b""


@dataclass(eq=True)
class Request:
    """Receiver -> sender: keyframe of ``face_id``, or of everything (and a header) when -1."""

    face_id: int


Packet = StreamHeader2 | FramePacket | Request


def pack(p: Packet) -> bytes:
    """Packet -> bytes (FORMAT.md §9)."""
    out = bytearray()
    if isinstance(p, StreamHeader2):
        out.append(KIND_HEADER)
        put_varint(out, p.version)
        put_varint(out, p.next_seq)
        for s in (p.bundle_id, p.layout_hash, p.basis_id):
            _put_text(out, s)
        for v in (p.n_components, p.fps_milli, p.frame_step, p.width, p.height, p.texture_size):
            put_varint(out, int(v))
        return bytes(out)
    if isinstance(p, Request):
        out.append(KIND_REQUEST)
        put_varint(out, p.face_id + 1)
        return bytes(out)
    flags = (F_FACES if p.face_ids is not None else 0) | (F_PLATE if p.plate else 0)
    out.append(KIND_FRAME | (EXT if flags else 0) | ((p.seq % SEQ_MOD) << 3))
    if flags:
        out.append(flags)
    if p.face_ids is not None:
        if len(p.face_ids) != len(p.sections):
            raise ValueError("one section per listed face")
        put_varint(out, len(p.face_ids))
        for f in p.face_ids:
            put_varint(out, f)
    if p.plate:
        _put_blob(out, p.plate)
    for i, s in enumerate(p.sections):
        last = i == len(p.sections) - 1
        put_varint(out, (len(s.geometry) << 2) | (S_KEY if s.key else 0) | (S_TEX if s.texture else 0))
        if s.texture and not last:
            put_varint(out, len(s.texture))
        out += s.geometry
        if s.texture:
            out += s.texture
    return bytes(out)


def unpack(data: bytes | bytearray | memoryview, n_faces_prev: tuple[int, ...] | None = None) -> Packet:
    """bytes -> packet; ``n_faces_prev`` is the receiver's current face list (a frame packet
    without a face list has one section per face of it). CodecError on anything malformed."""
    if len(data) > MAX_PACKET_BYTES:
        raise CodecError(f"packet of {len(data)} bytes exceeds {MAX_PACKET_BYTES}")
    r = Reader(data)
    b0 = r.byte()
    kind = b0 & 3
    if kind == KIND_HEADER:
        if b0 != KIND_HEADER:
            raise CodecError("stream header: reserved bits set")
        version = r.varint(255, "version")
        if version != WIRE_VERSION:
            raise CodecError(f"stream header of wire version {version}; this reader knows {WIRE_VERSION}")
        nxt = r.varint(MAX_SEQ, "seq")
        bundle, layout, basis = r.text("bundle id"), r.text("layout hash"), r.text("basis id")
        k = r.varint(4096, "K")
        fps = r.varint(1_000_000, "fps")
        step = r.varint(255, "frame step")
        w, h = r.varint(MAX_SIDE, "width"), r.varint(MAX_SIDE, "height")
        tex = r.varint(2048, "texture size")
        r.end()
        if k < 1 or step < 1 or fps < 1:
            raise CodecError("stream header: K, fps and frame step must be positive")
        return StreamHeader2(nxt, bundle, layout, basis, k, fps, step, w, h, tex, version)
    if kind == KIND_REQUEST:
        if b0 != KIND_REQUEST:
            raise CodecError("request: reserved bits set")
        fid = r.varint(MAX_FACE_ID + 1, "face id") - 1
        r.end()
        return Request(fid)
    if kind != KIND_FRAME:
        raise CodecError(f"unknown packet kind {kind}")
    seq = b0 >> 3
    flags = r.byte() if b0 & EXT else 0
    if flags & ~(F_FACES | F_PLATE):
        raise CodecError(f"frame packet: unknown flags {flags:#x}")
    ids: tuple[int, ...] | None = None
    if flags & F_FACES:
        n = r.varint(MAX_FACES, "face count")
        ids = tuple(r.varint(MAX_FACE_ID, "face id") for _ in range(n))
        if len(set(ids)) != n:
            raise CodecError("frame packet: repeated face id")
        listed = ids
    elif n_faces_prev is None:
        raise CodecError("frame packet without a face list before any face list was received")
    else:
        listed = n_faces_prev
    plate = r.blob(MAX_PLATE_BYTES, "plate") if flags & F_PLATE else b""
    sections = []
    for i, fid in enumerate(listed):
        last = i == len(listed) - 1
        h = r.varint((MAX_GEOM_BYTES << 2) | 3, "section header")
        glen, key, has_tex = h >> 2, bool(h & S_KEY), bool(h & S_TEX)
        tlen = (r.left - glen if last else r.varint(MAX_TEX_BYTES, "texture length")) if has_tex else 0
        if tlen > MAX_TEX_BYTES:
            raise CodecError(f"texture packet of {tlen} bytes exceeds {MAX_TEX_BYTES}")
        geom = r.take(glen)
        tex = r.take(tlen) if has_tex else b""
        if has_tex and not tex:
            raise CodecError("empty texture packet")
        sections.append(FaceSection(fid, key, geom, tex))
    r.end()
    return FramePacket(seq, sections, ids, plate)

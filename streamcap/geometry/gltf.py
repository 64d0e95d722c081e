"""A captured take as one glTF 2.0 binary (.glb), written and read with pygltflib.

What the file holds, for one face:

- one mesh: the face at rest (the codec basis decoded at the take's median coefficients) with
  the UV layout's texture coordinates and the face texture (PNG, from the take's most frontal
  frame), and the codec's geometry basis as **morph targets** (target k moves the vertices by
  component k per unit coefficient, so a weight is a coefficient minus its rest value);
- one node carrying it, and one animation over the take's timestamps: the morph weights, the
  node's rotation and translation (LINEAR keys at the frames where the face was tracked) and
  its scale (STEP keys at every frame: 0 while the face is lost, so a gap is a gap in the
  viewer too, not a frozen or zeroed face).

Axes: glTF's (x right, y up, z toward the viewer, metres), from streamcap's image axes by
flipping y (a reflection, so triangle winding is reversed). The face is sized to about
``FACE_WIDTH_M`` across at its median scale; ``extras.streamcap`` on the node says how to go
back to image pixels (``to_image``), which ``frame_vertices`` uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .layout import UVLayout

FACE_WIDTH_M = 0.15  # width of the canonical face in the file at the take's median scale
FLIP = np.diag([1.0, -1.0, 1.0])  # image axes <-> glTF axes
_F32, _U32 = 5126, 5125  # glTF component types
_ARRAY, _ELEMENTS = 34962, 34963  # bufferView targets


@dataclass
class TakeAnimation:
    """One face's track over a take. ``times`` (N,) seconds of every frame of the take,
    ``tracked`` (N,) bool; the other arrays hold rows for the tracked frames only (M rows):
    ``coeffs`` (M, K) basis coefficients, ``rotation`` (M, 3, 3) and ``translation`` (M, 3) and
    ``scale`` (M,) of the pose in image axes (v = scale * R @ canonical + t)."""

    times: np.ndarray
    tracked: np.ndarray
    coeffs: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray


def _quat_xyzw(rot: np.ndarray) -> np.ndarray:
    """(M, 3, 3) proper rotations -> (M, 4) unit quaternions (x, y, z, w), sign-continuous."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(rot, np.float64)).as_quat()
    for i in range(1, len(q)):  # shortest path between keys
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


class _Blob:
    """The GLB's binary chunk: appends typed arrays as bufferViews (4-byte aligned)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> tuple[int, int]:
        pad = (-self.size) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        off = self.size
        self.parts.append(data)
        self.size += len(data)
        return off, len(data)

    def bytes(self) -> bytes:
        out = b"".join(self.parts)
        return out + b"\0" * ((-len(out)) % 4)


def write_take_glb(path: str | Path, anim: TakeAnimation, basis, layout: UVLayout, texture: np.ndarray | None,
                   image_size: tuple[int, int], n_targets: int = 0, name: str = "face") -> Path:
    """Write ``anim`` as a .glb (see module doc). ``basis`` is a codec ``GeometryBasis`` over
    ``layout``'s vertices; ``n_targets`` keeps its first N components as morph targets (0: all).
    The file is written to a temporary name and renamed, so a reader never sees half a file."""
    import pygltflib as g

    path = Path(path)
    m = int(np.count_nonzero(anim.tracked))
    if m == 0:
        raise InputError("a take animation needs at least one tracked frame")
    k = basis.n_components if n_targets <= 0 else min(n_targets, basis.n_components)
    coeffs = np.asarray(anim.coeffs, np.float64)
    rest = np.median(coeffs, 0)
    s_ref = float(np.median(anim.scale))
    canon = layout.canonical.astype(np.float64)
    centre = (canon.min(0) + canon.max(0)) / 2
    unit = FACE_WIDTH_M / float(np.ptp(canon[:, 0]))  # metres per canonical unit
    m_per_px = unit / s_ref
    origin = np.array([image_size[0] / 2, image_size[1] / 2, 0.0])

    base = (basis.decode(rest.astype(np.float32)).astype(np.float64) - centre) @ FLIP * unit
    comps = basis.components[:k].astype(np.float64).reshape(k, -1, 3) * np.sqrt(basis.n_vertices)
    targets = comps @ FLIP * unit  # (k, V, 3) displacement per unit coefficient
    tris = np.ascontiguousarray(layout.triangles[:, ::-1], np.uint32)  # the flip mirrors the winding

    rot = np.asarray(anim.rotation, np.float64)
    quats = _quat_xyzw(FLIP @ rot @ FLIP)
    t_img = np.asarray(anim.translation, np.float64) + np.asarray(anim.scale)[:, None] * (rot @ centre)
    trans = (t_img - origin) @ FLIP * m_per_px
    weights = coeffs[:, :k] - rest[:k]
    times = np.asarray(anim.times, np.float64)
    t0 = float(times[0])
    key_t = times[anim.tracked] - t0
    vis_t = times - t0
    vis_s = np.zeros((len(times), 3))
    vis_s[anim.tracked] = (np.asarray(anim.scale) / s_ref)[:, None]

    blob = _Blob()
    gl = g.GLTF2(asset=g.Asset(generator="streamcap capture", version="2.0"))

    def accessor(arr: np.ndarray, kind: str, ctype: int = _F32, target: int | None = None,
                 bounds: bool = False) -> int:
        a = np.ascontiguousarray(arr, np.uint32 if ctype == _U32 else np.float32)
        off, n = blob.add(a.tobytes())
        gl.bufferViews.append(g.BufferView(buffer=0, byteOffset=off, byteLength=n, target=target))
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[kind]
        flat = a.reshape(-1, width)
        acc = g.Accessor(bufferView=len(gl.bufferViews) - 1, componentType=ctype, count=len(flat), type=kind)
        if bounds:
            acc.min = [float(v) for v in flat.min(0)]
            acc.max = [float(v) for v in flat.max(0)]
        gl.accessors.append(acc)
        return len(gl.accessors) - 1

    pos = accessor(base, "VEC3", target=_ARRAY, bounds=True)
    uv = accessor(layout.uv_coords, "VEC2", target=_ARRAY)
    idx = accessor(tris, "SCALAR", _U32, target=_ELEMENTS)
    morph = [g.Attributes(POSITION=accessor(targets[i], "VEC3", target=_ARRAY, bounds=True)) for i in range(k)]
    prim = g.Primitive(attributes=g.Attributes(POSITION=pos, TEXCOORD_0=uv), indices=idx, mode=4, targets=morph)
    if texture is not None:
        ok, png = cv2.imencode(".png", texture)
        if not ok:
            raise InputError("the face texture cannot be encoded as PNG")
        off, n = blob.add(png.tobytes())
        gl.bufferViews.append(g.BufferView(buffer=0, byteOffset=off, byteLength=n))
        gl.images.append(g.Image(bufferView=len(gl.bufferViews) - 1, mimeType="image/png"))
        gl.samplers.append(g.Sampler(magFilter=9729, minFilter=9729, wrapS=33071, wrapT=33071))
        gl.textures.append(g.Texture(source=0, sampler=0))
        gl.materials.append(g.Material(
            name="face", pbrMetallicRoughness=g.PbrMetallicRoughness(
                baseColorTexture=g.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=1.0),
            extensions={"KHR_materials_unlit": {}}))  # the texture already holds the lighting
        gl.extensionsUsed = ["KHR_materials_unlit"]
        prim.material = 0
    gl.meshes.append(g.Mesh(name=name, primitives=[prim], weights=[0.0] * k,
                            extras={"targetNames": [f"basis{i:02d}" for i in range(k)]}))
    gl.nodes.append(g.Node(name=name, mesh=0, extras={"streamcap": {
        "metres_per_pixel": m_per_px, "image_origin": origin.tolist(), "image_size": list(image_size),
        "canonical_centre": centre.tolist(), "scale_ref": s_ref, "metres_per_canonical_unit": unit,
        "basis_id": basis.id, "rest_coefficients": rest.tolist(), "start_time": t0,
        "morph_targets": k, "basis_components": basis.n_components}}))
    gl.scenes.append(g.Scene(nodes=[0]))
    gl.scene = 0

    key_in = accessor(key_t, "SCALAR", bounds=True)
    vis_in = key_in if m == len(times) else accessor(vis_t, "SCALAR", bounds=True)
    samplers = [
        g.AnimationSampler(input=key_in, output=accessor(weights, "SCALAR"), interpolation="LINEAR"),
        g.AnimationSampler(input=key_in, output=accessor(quats, "VEC4"), interpolation="LINEAR"),
        g.AnimationSampler(input=key_in, output=accessor(trans, "VEC3"), interpolation="LINEAR"),
        g.AnimationSampler(input=vis_in, output=accessor(vis_s, "VEC3"), interpolation="STEP"),
    ]
    channels = [g.AnimationChannel(sampler=i, target=g.AnimationChannelTarget(node=0, path=p))
                for i, p in enumerate(("weights", "rotation", "translation", "scale"))]
    gl.animations.append(g.Animation(name="take", samplers=samplers, channels=channels))

    data = blob.bytes()
    gl.buffers.append(g.Buffer(byteLength=len(data)))
    gl.set_binary_blob(data)
    tmp = path.with_name(path.name + ".tmp")
    gl.save_binary(str(tmp))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------- reading


def _get(obj, key: str):
    """An attribute of a pygltflib object that may have been loaded as a plain dict."""
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


def _array(gl, index: int, blob: bytes) -> np.ndarray:
    acc = gl.accessors[index]
    view = gl.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    dtype = np.uint32 if acc.componentType == _U32 else np.float32
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    arr = np.frombuffer(blob, dtype, acc.count * width, start)
    return arr.reshape(acc.count, width) if width > 1 else arr


@dataclass
class GlbTake:
    """A take .glb read back: enough to pose the face at any keyframe (``frame_vertices``)."""

    base: np.ndarray  # (V, 3) rest mesh, glTF axes
    targets: np.ndarray  # (K, V, 3)
    triangles: np.ndarray  # (T, 3)
    uv: np.ndarray  # (V, 2)
    texture: np.ndarray | None  # (H, W, 3) uint8 BGR
    key_times: np.ndarray  # (M,) seconds of the LINEAR keys (tracked frames)
    weights: np.ndarray  # (M, K)
    rotation: np.ndarray  # (M, 4) x, y, z, w
    translation: np.ndarray  # (M, 3)
    vis_times: np.ndarray  # (N,) seconds of the scale keys (every frame)
    scale: np.ndarray  # (N, 3)
    info: dict

    def frame_vertices(self, key: int) -> np.ndarray:
        """(V, 3) image-space vertices (pixels, streamcap axes) of the face at LINEAR key ``key``."""
        from scipy.spatial.transform import Rotation

        local = self.base + np.tensordot(self.weights[key], self.targets, 1)
        t = float(self.key_times[key])
        vis = int(np.searchsorted(self.vis_times, t + 1e-9) - 1)
        rot = Rotation.from_quat(self.rotation[key]).as_matrix()
        world = (local * self.scale[vis]) @ rot.T + self.translation[key]
        info = self.info
        return (world @ FLIP / info["metres_per_pixel"] + np.asarray(info["image_origin"])).astype(np.float32)


def read_take_glb(path: str | Path) -> GlbTake:
    """Read a .glb written by ``write_take_glb`` with pygltflib."""
    import pygltflib as g

    gl = g.GLTF2.load(str(path))
    blob = gl.binary_blob()
    prim = gl.meshes[0].primitives[0]
    texture = None
    if gl.images:
        view = gl.bufferViews[gl.images[0].bufferView]
        png = np.frombuffer(blob, np.uint8, view.byteLength, view.byteOffset or 0)
        texture = cv2.imdecode(png, cv2.IMREAD_COLOR)
    anim = gl.animations[0]
    by_path = {ch.target.path: anim.samplers[ch.sampler] for ch in anim.channels}
    k = len(prim.targets or [])
    key_times = _array(gl, by_path["weights"].input, blob)
    return GlbTake(
        base=_array(gl, prim.attributes.POSITION, blob).astype(np.float64),
        targets=np.stack([_array(gl, _get(t, "POSITION"), blob) for t in prim.targets]).astype(np.float64) if k
        else np.zeros((0, 0, 3)),
        triangles=_array(gl, prim.indices, blob).reshape(-1, 3),
        uv=_array(gl, prim.attributes.TEXCOORD_0, blob),
        texture=texture,
        key_times=key_times,
        weights=_array(gl, by_path["weights"].output, blob).reshape(len(key_times), k).astype(np.float64),
        rotation=_array(gl, by_path["rotation"].output, blob).astype(np.float64),
        translation=_array(gl, by_path["translation"].output, blob).astype(np.float64),
        vis_times=_array(gl, by_path["scale"].input, blob),
        scale=_array(gl, by_path["scale"].output, blob).astype(np.float64),
        info=dict(gl.nodes[0].extras["streamcap"]),
    )

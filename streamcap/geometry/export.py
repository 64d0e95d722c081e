"""Mesh files that Blender and MeshLab open: Wavefront .obj (+ .mtl + texture PNG) and .ply.

Vertices are written in image pixels with y flipped up and z toward the viewer, the usual
right-handed 3D convention of those tools, so the face stands upright on import.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError


def _to_3d_axes(verts: np.ndarray, height: float) -> np.ndarray:
    out = verts.astype(np.float64).copy()
    out[:, 1] = height - out[:, 1]
    return out


def write_obj(path: str | Path, verts: np.ndarray, triangles: np.ndarray, uv: np.ndarray | None = None,
              texture: np.ndarray | None = None, image_height: float = 0.0) -> Path:
    """Write ``verts`` (V, 3) image-space, ``triangles`` (T, 3), optional per-vertex ``uv`` (V, 2)
    in [0, 1] (v down) and a BGR ``texture`` (H, W, 3) saved beside as PNG with an .mtl."""
    path = Path(path)
    if verts.ndim != 2 or verts.shape[1] != 3 or triangles.ndim != 2 or triangles.shape[1] != 3:
        raise InputError("write_obj needs verts (V, 3) and triangles (T, 3)")
    v3 = _to_3d_axes(verts, image_height)
    lines: list[str] = ["# streamcap face mesh"]
    if texture is not None:
        tex_name = path.with_suffix(".png").name
        cv2.imwrite(str(path.with_suffix(".png")), texture)
        path.with_suffix(".mtl").write_text(
            f"newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {tex_name}\n")
        lines += [f"mtllib {path.with_suffix('.mtl').name}", "usemtl face"]
    lines += [f"v {x:.3f} {y:.3f} {z:.3f}" for x, y, z in v3]
    f = triangles.astype(np.int64) + 1
    # our winding faces +z with y down; flipping y mirrors it, so reverse to keep normals outward
    f = f[:, ::-1]
    if uv is not None:
        lines += [f"vt {u:.5f} {1.0 - v:.5f}" for u, v in uv]
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in f]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ply(path: str | Path, verts: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
              image_height: float = 0.0) -> Path:
    """Binary little-endian PLY with optional per-vertex BGR ``colors`` (V, 3) uint8."""
    path = Path(path)
    v3 = _to_3d_axes(verts, image_height).astype("<f4")
    n, t = len(v3), len(triangles)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {t}", "property list uchar int vertex_indices", "end_header"]
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        vdt += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    vrec = np.zeros(n, dtype=vdt)
    vrec["x"], vrec["y"], vrec["z"] = v3[:, 0], v3[:, 1], v3[:, 2]
    if colors is not None:
        vrec["r"], vrec["g"], vrec["b"] = colors[:, 2], colors[:, 1], colors[:, 0]
    frec = np.zeros(t, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    frec["n"] = 3
    frec["i"] = triangles[:, ::-1]
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vrec.tobytes())
        fh.write(frec.tobytes())
    return path


def read_obj_counts(path: str | Path) -> tuple[int, int]:
    """(vertex count, face count) of an .obj: a minimal reader for round-trip checks."""
    nv = nf = 0
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                nv += 1
            elif line.startswith("f "):
                nf += 1
    return nv, nf

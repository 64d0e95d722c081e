"""ModernGL face renderer: UV position maps + UV textures composited over a background plate.

The mesh is static (one vertex per face pixel of the UV layout, the layout's grid triangles as
the index buffer), so per frame only the position map goes up, as a float32 RGB texture that
the vertex shader reads with ``texelFetch``. Rendering is offscreen (headless EGL by default);
a window, when asked for, only presents the offscreen result.

Colour bytes are passed through unchanged, so BGR in gives BGR out without swizzling.
The framebuffer stores frame row 0 in its first row, so neither upload nor readback flips.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..geometry.layout import UVLayout, grid_triangles

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

FaceInput = tuple[np.ndarray, np.ndarray | None]
"""One face: (posmap (S, S, 3) float32 image-space, texture (h, w, 3) uint8 BGR or None)."""

MAX_FACES = 255  # face ids are written into an 8-bit attachment, 0 = background
DEFAULT_LIGHT = (-0.3, -0.4, 1.0)  # image axes: from the upper left, in front of the face
GL_REQUIRE = 330


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create_context() -> Any:
    """A standalone (headless) ModernGL context: EGL first, then the platform default.

    EGL needs no display server (Mesa llvmpipe on CPU machines, the vendor driver on GPU ones);
    the default backend (GLX on Linux) is the fallback for desktops without EGL.
    Raises BackendUnavailable with one line when neither works.
    """
    try:
        import moderngl
    except ImportError as exc:  # a hard dependency, but say so plainly if it is missing
        raise BackendUnavailable(f"no OpenGL context: moderngl not importable ({exc})") from exc
    tried: list[str] = []
    for backend in ("egl", None):
        try:
            if backend is None:
                ctx = moderngl.create_standalone_context(require=GL_REQUIRE)
            else:
                ctx = moderngl.create_standalone_context(require=GL_REQUIRE, backend=backend)
        except Exception as exc:  # noqa: BLE001 - glcontext raises bare Exception
            tried.append(f"{backend or 'default'}: {_first_line(exc)}")
            continue
        log.debug("GL context via %s: %s", backend or "default", ctx.info.get("GL_RENDERER"))
        return ctx
    raise BackendUnavailable(
        "no OpenGL 3.3 context (" + "; ".join(tried) + "); "
        "install EGL/Mesa with scripts/install-system-deps.sh"
    )


def _load_shader(name: str) -> str:
    return resources.files("streamcap.render").joinpath("shaders", name).read_text("utf-8")


def _cv2_has_gui() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GUI":
            return value.strip().upper() not in ("", "NONE", "NO")
    return False


class _CvWindow:
    """Presents finished frames with ``cv2.imshow``; the GL work stays offscreen."""

    def __init__(self, name: str) -> None:
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise BackendUnavailable("no display: DISPLAY/WAYLAND_DISPLAY not set (render headless)")
        if not _cv2_has_gui():
            raise BackendUnavailable(
                "no display: OpenCV is built without GUI support (opencv-python-headless) "
                "and no other window toolkit is installed"
            )
        import cv2

        self.name = name
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)

    def show(self, image: np.ndarray) -> bool:
        import cv2

        cv2.imshow(self.name, image)
        key = cv2.waitKey(1) & 0xFF
        visible = cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) >= 1
        return visible and key not in (27, ord("q"))

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.name)
        except cv2.error:
            pass


def build_mesh(layout: UVLayout, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Static mesh buffers for the renderer -> (vertex table (N, 6) int32, triangles (T, 3) int32).

    Each vertex row holds its UV column and row, then the left/right column and upper/lower row
    of its neighbours ``step`` pixels away for central-difference normals (the vertex itself
    where a neighbour is off the face mask). ``step`` 1 is the layout's own grid; ``step`` k keeps
    every k-th UV row and column (about k*k fewer triangles), which matters on a software
    rasteriser when faces are small on screen.
    """
    if step < 1:
        raise InputError(f"mesh step must be >= 1, got {step}")
    s = layout.size
    mask = layout.face_mask
    if step == 1:
        rows, cols = np.divmod(layout.face_ind.astype(np.int64), s)
        triangles = np.asarray(layout.triangles, np.int32)
    else:
        sub = mask[::step, ::step]
        r, c = np.nonzero(sub)  # row-major, the order grid_triangles indexes
        rows, cols = r * step, c * step
        triangles = grid_triangles(sub)

    def on_face(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        inside = (r >= 0) & (r < s) & (c >= 0) & (c < s)
        ok = np.zeros_like(inside)
        ok[inside] = mask[r[inside], c[inside]]
        return ok

    left = np.where(on_face(rows, cols - step), cols - step, cols)
    right = np.where(on_face(rows, cols + step), cols + step, cols)
    up = np.where(on_face(rows - step, cols), rows - step, rows)
    down = np.where(on_face(rows + step, cols), rows + step, rows)
    table = np.stack([cols, rows, left, right, up, down], 1).astype(np.int32)
    return table, np.ascontiguousarray(triangles, np.int32)


class FaceRenderer:
    """Offscreen OpenGL renderer of face meshes given as UV position maps.

    Usage::

        with FaceRenderer(640, 480, layout) as r:
            frame = r.render(background, [(posmap, texture), ...])   # (H, W, 3) uint8 BGR
            ids = r.face_ids()                                        # (H, W) uint8, 0 = none

    The framebuffer follows the background's size, so frames of different sizes just work.
    One renderer holds one GL context, made current only inside each call (so several renderers
    can live in one process); use it from one thread at a time. ``mesh_step`` > 1 draws a
    coarser grid, for software rasterisers (llvmpipe) and faces small on screen.
    """

    def __init__(
        self,
        width: int,
        height: int,
        layout: UVLayout,
        window: bool = False,
        *,
        light_dir: tuple[float, float, float] = DEFAULT_LIGHT,
        mesh_step: int = 1,
        window_name: str = "streamcap",
    ) -> None:
        if width <= 0 or height <= 0:
            raise InputError(f"render size must be positive, got {width}x{height}")
        self.layout = layout
        self.mesh_step = mesh_step
        self._table, self._triangles = build_mesh(layout, mesh_step)
        self._closed = False
        self._window: _CvWindow | None = None
        self.ctx: Any = None
        self._size: tuple[int, int] = (0, 0)
        self._fbo: Any = None
        self._color: Any = None
        self._ids: Any = None
        self._depth: Any = None
        self._pos_tex: list[Any] = []
        self._uv_tex: list[Any] = []
        self._rendered = False
        try:
            if window:
                self._window = _CvWindow(window_name)
            self.ctx = create_context()
            with self.ctx:
                self._build(light_dir)
                self._allocate(width, height)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _build(self, light_dir: tuple[float, float, float]) -> None:
        ctx = self.ctx
        self.prog = ctx.program(
            vertex_shader=_load_shader("face.vert"), fragment_shader=_load_shader("face.frag")
        )
        self._vbo = ctx.buffer(self._table.tobytes())
        self._ibo = ctx.buffer(self._triangles.tobytes())
        self._vao = ctx.vertex_array(
            self.prog,
            [(self._vbo, "2i 4i", "in_uv", "in_nbr")],
            index_buffer=self._ibo,
            index_element_size=4,
        )
        light = np.asarray(light_dir, np.float64)
        light = light / np.linalg.norm(light)
        self._set("posmap", 0)
        self._set("uv_texture", 1)
        self._set("uv_size", float(self.layout.size))
        self._set("light_dir", tuple(float(v) for v in light))

    def _set(self, name: str, value: Any) -> None:
        # a driver may drop a uniform it can prove unused; that is not an error
        member = self.prog.get(name, None)
        if member is not None:
            member.value = value

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the current framebuffer."""
        return self._size

    def resize(self, width: int, height: int) -> None:
        """Reallocate the framebuffer for frames of (width, height); no-op if unchanged."""
        self._check_open()
        with self.ctx:
            self._allocate(width, height)

    def _allocate(self, width: int, height: int) -> None:
        # caller holds the context current
        if (width, height) == self._size:
            return
        if width <= 0 or height <= 0:
            raise InputError(f"render size must be positive, got {width}x{height}")
        self._release_fbo()
        ctx = self.ctx
        self._color = ctx.texture((width, height), 3)  # RGB8: the composited frame
        self._ids = ctx.texture((width, height), 1)  # R8: face index + 1, 0 = background
        self._depth = ctx.depth_renderbuffer((width, height))
        self._fbo = ctx.framebuffer([self._color, self._ids], self._depth)
        self._size = (width, height)
        self._rendered = False

    def _release_fbo(self) -> None:
        for obj in (self._fbo, self._color, self._ids, self._depth):
            if obj is not None:
                obj.release()
        self._fbo = self._color = self._ids = self._depth = None

    def _face_textures(self, i: int, uv_shape: tuple[int, int] | None) -> tuple[Any, Any]:
        """The per-slot posmap texture, and the UV texture resized to (w, h) when needed."""
        import moderngl

        s = self.layout.size
        while len(self._pos_tex) <= i:
            tex = self.ctx.texture((s, s), 3, dtype="f4")
            tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
            self._pos_tex.append(tex)
            self._uv_tex.append(None)
        uv = self._uv_tex[i]
        if uv_shape is not None and (uv is None or uv.size != uv_shape):
            if uv is not None:
                uv.release()
            uv = self.ctx.texture(uv_shape, 3)
            uv.filter = (moderngl.LINEAR, moderngl.LINEAR)
            uv.repeat_x = uv.repeat_y = False
            self._uv_tex[i] = uv
        return self._pos_tex[i], uv

    # ----------------------------------------------------------------- checks
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("FaceRenderer is closed")

    def _check_posmap(self, posmap: np.ndarray, i: int) -> np.ndarray:
        s = self.layout.size
        arr = np.asarray(posmap)
        if arr.shape != (s, s, 3):
            raise InputError(f"face {i}: position map must be ({s}, {s}, 3), got {arr.shape}")
        return np.ascontiguousarray(arr, np.float32)

    @staticmethod
    def _check_texture(texture: np.ndarray, i: int) -> np.ndarray:
        arr = np.asarray(texture)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.size == 0:
            raise InputError(
                f"face {i}: texture must be (h, w, 3) uint8 BGR, got {arr.shape} {arr.dtype}"
            )
        return np.ascontiguousarray(arr)

    # ----------------------------------------------------------------- render
    def render(
        self,
        background: np.ndarray,
        faces: Sequence[FaceInput],
        *,
        shade: bool = False,
    ) -> np.ndarray:
        """Draw ``faces`` over ``background`` (H, W, 3) uint8 BGR -> new (H, W, 3) uint8 BGR.

        Each face is (posmap (S, S, 3) float32 image-space, texture (h, w, 3) uint8 BGR or None).
        A face without texture, or every face when ``shade`` is set, is drawn as Lambert-shaded
        grey (a geometry-only view). Faces occlude each other by z (toward the camera).
        """
        self._check_open()
        bg = np.asarray(background)
        if bg.ndim != 3 or bg.shape[2] != 3 or bg.dtype != np.uint8 or bg.size == 0:
            raise InputError(f"background must be (H, W, 3) uint8, got {bg.shape} {bg.dtype}")
        if len(faces) > MAX_FACES:
            raise InputError(f"at most {MAX_FACES} faces per frame, got {len(faces)}")
        posmaps = [self._check_posmap(p, i) for i, (p, _) in enumerate(faces)]
        textures = [
            None if shade or t is None else self._check_texture(t, i)
            for i, (_, t) in enumerate(faces)
        ]
        h, w = bg.shape[:2]
        out = np.empty((h, w, 3), np.uint8)
        with self.ctx:
            self._allocate(w, h)
            self._fbo.use()
            self._fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self._color.write(np.ascontiguousarray(bg))
            if posmaps:
                self._draw_faces(posmaps, textures)
            self._fbo.read_into(out, components=3, attachment=0)
        self._rendered = True
        return out

    def _draw_faces(self, posmaps: list[np.ndarray], textures: list[np.ndarray | None]) -> None:
        import moderngl

        face_ind = self.layout.face_ind
        zs = [p.reshape(-1, 3)[face_ind, 2] for p in posmaps]
        z_min = float(min(z.min() for z in zs))
        z_max = float(max(z.max() for z in zs))
        if not (np.isfinite(z_min) and np.isfinite(z_max)):
            raise InputError("position map holds non-finite values on the face")
        margin = max(1.0, 0.01 * (z_max - z_min))
        self._set("z_range", (z_min - margin, z_max + margin))
        self._set("frame_size", (float(self._size[0]), float(self._size[1])))
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.disable(moderngl.CULL_FACE | moderngl.BLEND)
        try:
            for i, (posmap, texture) in enumerate(zip(posmaps, textures)):
                uv_shape = None if texture is None else (texture.shape[1], texture.shape[0])
                pos_tex, uv_tex = self._face_textures(i, uv_shape)
                pos_tex.write(posmap)
                pos_tex.use(0)
                if texture is not None:
                    uv_tex.write(texture)
                    uv_tex.use(1)
                self._set("textured", texture is not None)
                self._set("shade", texture is None)
                self._set("face_id", float(i + 1))
                self._vao.render(moderngl.TRIANGLES)
        finally:
            self.ctx.disable(moderngl.DEPTH_TEST)

    def face_ids(self) -> np.ndarray:
        """(H, W) uint8 of the last ``render``: k where faces[k - 1] is visible, 0 elsewhere."""
        self._check_open()
        if not self._rendered:
            raise RuntimeError("face_ids() needs a render() first")
        w, h = self._size
        ids = np.empty((h, w), np.uint8)
        with self.ctx:
            self._fbo.read_into(ids, components=1, attachment=1)
        return ids

    def render_mask(
        self, faces: Sequence[FaceInput], size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """(H, W) bool coverage of ``faces`` in a frame of ``size`` (width, height), default the
        current size; e.g. to measure PSNR inside the face."""
        w, h = size if size is not None else self._size
        self.render(np.zeros((h, w, 3), np.uint8), [(p, None) for p, _ in faces], shade=True)
        return self.face_ids() > 0

    # ----------------------------------------------------------------- window
    @property
    def has_window(self) -> bool:
        return self._window is not None

    def show(self, image: np.ndarray) -> bool:
        """Present a rendered frame in the window; False once the user closes it (q, Esc)."""
        self._check_open()
        if self._window is None:
            raise RuntimeError("FaceRenderer was created without window=True")
        return self._window.show(image)

    # --------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release every GL object and the context; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        ctx = self.ctx
        if ctx is not None:
            with ctx:
                self._release_fbo()
                for tex in (*self._pos_tex, *self._uv_tex):
                    if tex is not None:
                        tex.release()
                self._pos_tex.clear()
                self._uv_tex.clear()
                for name in ("_vao", "_ibo", "_vbo", "prog"):
                    obj = getattr(self, name, None)
                    if obj is not None:
                        obj.release()
            ctx.release()
            self.ctx = None
        if self._window is not None:
            self._window.close()
            self._window = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""ModernGL face renderer against a CPU reference: silhouette, colours, depth, compositing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamcap.errors import BackendUnavailable, InputError
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import euler_to_matrix

W, H = 320, 240


# ----------------------------------------------------------------- helpers
def place(
    layout: UVLayout,
    *,
    yaw: float = 0.0,
    roll: float = 0.0,
    scale: float = 0.8,
    t: tuple[float, float, float] = (W / 2, H / 2, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical face under a known similarity -> (posmap (S, S, 3), vertices (V, 3))."""
    c = layout.canonical - layout.canonical.mean(0)
    rot = euler_to_matrix(yaw, 0.0, roll)
    verts = (scale * c @ rot.T + np.asarray(t)).astype(np.float32)
    s = layout.size
    posmap = np.zeros((s, s, 3), np.float32)
    posmap.reshape(-1, 3)[layout.face_ind] = verts
    return posmap, verts


def uv_texture(size: int, red: int = 200) -> np.ndarray:
    """(S, S, 3) uint8 BGR: B = column, G = row (0..255 over the grid), R = constant."""
    rows, cols = np.mgrid[0:size, 0:size]
    b = np.round(cols * 255.0 / (size - 1))
    g = np.round(rows * 255.0 / (size - 1))
    return np.stack([b, g, np.full_like(b, red)], -1).astype(np.uint8)


def vertex_colours(layout: UVLayout, texture: np.ndarray) -> np.ndarray:
    return texture.reshape(-1, 3)[layout.face_ind].astype(np.int32)


def noise_background(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """Noise with R < 150 so it never equals a texture colour with R = 200."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bg[..., 2] //= 2
    return bg


def cpu_silhouette(verts: np.ndarray, triangles: np.ndarray, w: int = W, h: int = H) -> np.ndarray:
    """(H, W) bool: every projected triangle filled by OpenCV (pixel centres at integers)."""
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(verts[:, :2] * 16).astype(np.int32)
    for tri in pts[triangles]:
        cv2.fillConvexPoly(mask, tri, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def renderer(layout):
    from streamcap.render import FaceRenderer

    try:
        r = FaceRenderer(W, H, layout)
    except BackendUnavailable as exc:
        pytest.skip(f"no OpenGL context here: {exc}")
    yield r
    r.close()


@pytest.fixture(scope="module")
def frontal(layout, renderer):
    """A frontal face with a small roll, rendered once for several checks."""
    posmap, verts = place(layout, roll=10.0, t=(W / 2 + 3.3, H / 2 + 4.7, 0.0))
    tex = uv_texture(layout.size)
    bg = noise_background()
    out = renderer.render(bg, [(posmap, tex)])
    ids = renderer.face_ids()
    return {"posmap": posmap, "verts": verts, "tex": tex, "bg": bg, "out": out, "ids": ids}


# ----------------------------------------------------------------- tests
def test_silhouette_matches_cpu_raster(layout, frontal):
    ref = cpu_silhouette(frontal["verts"], layout.triangles)
    covered = frontal["ids"] > 0
    assert covered.sum() > 10000
    assert iou(covered, ref) > 0.97
    # no sub-pixel offset: frame pixel centres are at integer x, y in both
    centroid = np.argwhere(covered).mean(0) - np.argwhere(ref).mean(0)
    assert np.abs(centroid).max() < 0.2, centroid
    # the colour agrees with the id buffer: R = 200 on the face, < 150 in the background
    assert np.array_equal(frontal["out"][..., 2] >= 150, covered)
    assert set(np.unique(frontal["ids"])) == {0, 1}


def test_background_untouched_outside_face(layout, frontal):
    ref = cpu_silhouette(frontal["verts"], layout.triangles)
    near = cv2.dilate(ref.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    out, bg = frontal["out"], frontal["bg"]
    assert np.array_equal(out[~near], bg[~near])
    assert out.shape == bg.shape and out.dtype == np.uint8


def test_face_colours_match_texture(layout, frontal):
    verts, out = frontal["verts"], frontal["out"]
    colours = vertex_colours(layout, frontal["tex"])
    kv = layout.kpt_vertex[17:]  # brows, nose, eyes, mouth: visible when frontal
    px = np.round(verts[kv, :2]).astype(int)
    got = out[px[:, 1], px[:, 0]].astype(np.int32)
    err = np.abs(got - colours[kv])
    assert np.median(err) <= 2
    assert err.max() <= 10, err.max()


def test_depth_test_hides_far_side(layout, renderer):
    posmap, verts = place(layout, yaw=60.0)
    tex = uv_texture(layout.size)
    colours = vertex_colours(layout, tex)
    out = renderer.render(noise_background(), [(posmap, tex)]).astype(np.int32)
    checked = 0
    for k in (27, 33, 34):  # nose bridge and base: the far cheek lies behind them
        n = layout.kpt_vertex[k]
        d = np.hypot(verts[:, 0] - verts[n, 0], verts[:, 1] - verts[n, 1])
        behind = (d < 0.75) & (verts[:, 2] < verts[n, 2] - 10)
        far = behind & (np.abs(colours[:, 0] - colours[n, 0]) > 20)
        if not far.any():
            continue
        x, y = np.round(verts[n, :2]).astype(int)
        got = out[y, x]
        assert abs(got[0] - colours[n, 0]) <= 8, (k, got, colours[n])
        assert np.abs(colours[far, 0] - got[0]).min() > 10
        checked += 1
    assert checked >= 2, "pose no longer puts a hidden surface behind the nose"

    # every pixel where surfaces overlap shows the front one (CPU z-buffer per pixel)
    pix = np.round(verts[:, :2]).astype(np.int64)
    key = pix[:, 1] * W + pix[:, 0]
    order = np.lexsort((verts[:, 2], key))
    k_sorted = key[order]
    first = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
    last = np.r_[k_sorted[1:] != k_sorted[:-1], True]
    back, front = order[first], order[last]  # min z and max z per pixel
    overlap = (verts[front, 2] - verts[back, 2] > 20) & (
        np.abs(colours[front, 0] - colours[back, 0]) > 30
    )
    assert overlap.sum() > 100
    f, b = front[overlap], back[overlap]
    got = out[pix[f, 1], pix[f, 0], 0]
    closer_to_front = np.abs(got - colours[f, 0]) < np.abs(got - colours[b, 0])
    assert closer_to_front.mean() > 0.95, closer_to_front.mean()


def test_faces_occlude_by_depth_not_draw_order(layout, renderer):
    front, _ = place(layout, t=(W / 2, H / 2, 0.0))
    back, _ = place(layout, t=(W / 2 + 15, H / 2, -500.0))
    tex_front, tex_back = uv_texture(layout.size, red=200), uv_texture(layout.size, red=60)
    bg = noise_background()
    a = renderer.render(bg, [(front, tex_front), (back, tex_back)])
    ids_a = renderer.face_ids()
    b = renderer.render(bg, [(back, tex_back), (front, tex_front)])
    ids_b = renderer.face_ids()
    assert np.array_equal(a, b)
    front_px = ids_a == 1
    assert front_px.sum() > 10000 and (ids_a == 2).sum() > 100  # the back face peeks out
    assert np.all(a[front_px][:, 2] >= 190)
    assert np.array_equal(ids_b == 2, front_px)  # same pixels, listed second this time


def test_two_faces_in_one_frame(layout, renderer):
    p1, v1 = place(layout, scale=0.45, t=(80, 120, 0.0))
    p2, v2 = place(layout, yaw=-20.0, scale=0.5, t=(235, 115, 0.0))
    bg = noise_background(seed=1)
    out = renderer.render(
        bg, [(p1, uv_texture(layout.size, 200)), (p2, uv_texture(layout.size, 250))]
    )
    ids = renderer.face_ids()
    assert iou(ids == 1, cpu_silhouette(v1, layout.triangles)) > 0.95
    assert iou(ids == 2, cpu_silhouette(v2, layout.triangles)) > 0.95
    assert np.all(np.abs(out[ids == 1][:, 2].astype(int) - 200) <= 1)
    assert np.all(np.abs(out[ids == 2][:, 2].astype(int) - 250) <= 1)
    assert np.array_equal(out[ids == 0], bg[ids == 0])


def test_deterministic(layout, renderer, frontal):
    from streamcap.render import FaceRenderer

    again = renderer.render(frontal["bg"], [(frontal["posmap"], frontal["tex"])])
    assert np.array_equal(again, frontal["out"])
    with FaceRenderer(W, H, layout) as other:
        fresh = other.render(frontal["bg"], [(frontal["posmap"], frontal["tex"])])
    assert np.array_equal(fresh, frontal["out"])


def test_frame_size_changes(layout, renderer):
    posmap, _ = place(layout, scale=0.5, t=(128, 110, 0.0))
    tex = uv_texture(layout.size)
    big = noise_background(400, 300, seed=2)
    small = np.ascontiguousarray(big[:240, :256])
    out_small = renderer.render(small, [(posmap, tex)])
    ids_small = renderer.face_ids()
    out_big = renderer.render(big, [(posmap, tex)])
    ids_big = renderer.face_ids()
    assert out_small.shape == (240, 256, 3) and out_big.shape == (300, 400, 3)
    assert renderer.size == (400, 300)
    # the projection depends on pixel coordinates only, not on the frame size
    # (colours may differ by float rounding in the texture interpolation)
    assert ids_small.sum() > 1000
    assert np.array_equal(ids_big[:240, :256], ids_small)
    assert not ids_big[240:].any() and not ids_big[:, 256:].any()
    diff = np.abs(out_big[:240, :256].astype(int) - out_small.astype(int))
    assert diff.max() <= 1 and (diff > 0).any(-1).sum() < 20
    renderer.resize(W, H)
    assert renderer.size == (W, H)


def test_texture_of_another_size(layout, renderer, frontal):
    half = cv2.resize(frontal["tex"], (128, 128), interpolation=cv2.INTER_AREA)
    out = renderer.render(frontal["bg"], [(frontal["posmap"], half)])
    covered = renderer.face_ids() > 0
    diff = np.abs(out.astype(int) - frontal["out"].astype(int))[covered]
    assert np.median(diff) <= 2


def test_coarse_mesh_step(layout, frontal):
    from streamcap.render import FaceRenderer

    with FaceRenderer(W, H, layout, mesh_step=2) as coarse:
        out = coarse.render(frontal["bg"], [(frontal["posmap"], frontal["tex"])])
        covered = coarse.face_ids() > 0
    full = frontal["ids"] > 0
    assert iou(covered, full) > 0.95
    both = covered & full
    diff = np.abs(out.astype(int) - frontal["out"].astype(int))[both]
    assert np.median(diff) <= 2


def test_shaded_geometry_and_mask(layout, renderer, frontal):
    shaded = renderer.render(frontal["bg"], [(frontal["posmap"], None)])
    covered = renderer.face_ids() > 0
    assert np.array_equal(covered, frontal["ids"] > 0)
    face = shaded[covered].astype(int)
    assert np.all(face[:, 0] == face[:, 1]) and np.all(face[:, 1] == face[:, 2])  # grey
    assert face[:, 0].std() > 5  # shading varies with the normal
    # frontal skin (nose bridge area) is lit more than the steep sides of the face
    nose = np.round(frontal["verts"][layout.kpt_vertex[28], :2]).astype(int)
    jaw = np.round(frontal["verts"][layout.kpt_vertex[2], :2]).astype(int)
    assert shaded[nose[1], nose[0], 0] > shaded[jaw[1], jaw[0] + 3, 0]
    # shade=True ignores the texture; render_mask gives the same coverage
    forced = renderer.render(frontal["bg"], [(frontal["posmap"], frontal["tex"])], shade=True)
    assert np.array_equal(forced, shaded)
    mask = renderer.render_mask([(frontal["posmap"], frontal["tex"])])
    assert mask.dtype == bool and np.array_equal(mask, covered)


def test_no_faces_returns_background(renderer):
    bg = noise_background(seed=3)
    out = renderer.render(bg, [])
    assert np.array_equal(out, bg)
    assert not renderer.face_ids().any()


def test_bad_inputs(layout, renderer):
    posmap, _ = place(layout)
    tex = uv_texture(layout.size)
    bg = noise_background()
    with pytest.raises(InputError):
        renderer.render(bg, [(posmap[:100], tex)])
    with pytest.raises(InputError):
        renderer.render(bg, [(posmap, tex.astype(np.float32))])
    with pytest.raises(InputError):
        renderer.render(bg[..., 0], [(posmap, tex)])
    bad = posmap.copy()
    bad.reshape(-1, 3)[layout.face_ind[0], 2] = np.nan
    with pytest.raises(InputError):
        renderer.render(bg, [(bad, tex)])


def test_close_releases_and_blocks_use(layout):
    from streamcap.render import FaceRenderer

    try:
        r = FaceRenderer(64, 48, layout)
    except BackendUnavailable as exc:
        pytest.skip(f"no OpenGL context here: {exc}")
    r.render(np.zeros((48, 64, 3), np.uint8), [])
    r.close()
    r.close()
    with pytest.raises(RuntimeError):
        r.render(np.zeros((48, 64, 3), np.uint8), [])


def test_window_without_display_says_so(layout, monkeypatch):
    from streamcap.render import FaceRenderer

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(BackendUnavailable, match="no display"):
        FaceRenderer(64, 48, layout, window=True)


def test_no_context_is_one_line(monkeypatch):
    import moderngl

    from streamcap.render import create_context

    class GlcontextError(Exception):
        pass

    def fail(*args, **kwargs):
        raise GlcontextError("cannot open display\nsecond line")

    monkeypatch.setattr(moderngl, "create_standalone_context", fail)
    with pytest.raises(BackendUnavailable) as info:
        create_context()
    msg = str(info.value)
    assert "\n" not in msg and "egl" in msg and "default" in msg


def test_two_renderers_interleave(layout, renderer, frontal):
    """Each call makes its own context current, so renderers do not draw into each other."""
    from streamcap.render import FaceRenderer

    posmap, _ = place(layout, scale=0.3, t=(40, 30, 0.0))
    small_bg = noise_background(80, 60, seed=4)
    with FaceRenderer(80, 60, layout) as other:
        alone = other.render(small_bg, [(posmap, frontal["tex"])])
        big = renderer.render(frontal["bg"], [(frontal["posmap"], frontal["tex"])])
        again = other.render(small_bg, [(posmap, frontal["tex"])])
    assert np.array_equal(big, frontal["out"])
    assert np.array_equal(again, alone)
    assert not np.array_equal(alone, small_bg)


def test_window_presents_through_cv2(layout, monkeypatch):
    """The window path with a fake OpenCV GUI: show() until the user presses q."""
    import streamcap.render.renderer as mod
    from streamcap.render import FaceRenderer

    shown: list[np.ndarray] = []
    keys = iter([-1, ord("q")])
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(mod, "_cv2_has_gui", lambda: True)
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, img: shown.append(img))
    monkeypatch.setattr(cv2, "waitKey", lambda *a: next(keys))
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)
    try:
        r = FaceRenderer(64, 48, layout, window=True)
    except BackendUnavailable as exc:
        pytest.skip(f"no OpenGL context here: {exc}")
    with r:
        assert r.has_window
        frame = r.render(noise_background(64, 48), [])
        assert r.show(frame) is True
        assert r.show(frame) is False
    assert len(shown) == 2 and shown[0] is frame

"""Differentiable mesh renderer in pure PyTorch, for the cycle-GAN stage's re-rendering losses.

Conventions follow the rest of streamcap: vertices in image pixels, x right, y down, z toward
the camera (larger z is nearer), orthographic projection (PRNet's), and pixel centres at integer
coordinates (pixel (row i, column j) sits at x=j, y=i, as ``cv2.remap`` and ``grid_sample`` with
``align_corners=True`` read them).

Rendering is split in two, the way nvdiffrast and PyTorch3D split it:

* ``rasterize`` decides, without gradient, which triangle covers each pixel: every triangle
  enumerates the pixel centres of its bounding box (a ragged list built with
  ``repeat_interleave``, so large and sub-pixel triangles cost what they cover), keeps the
  centres inside it, and a z-buffer (``scatter_reduce`` amax on depth, then on the triangle
  index to break ties) picks the nearest.
* ``interpolate`` recomputes the barycentric weights of the covered pixels from the vertex
  positions *with* gradient and blends per-vertex attributes, so the image is differentiable
  with respect to positions (inside triangles) and attributes. Coverage changes at silhouettes
  carry no gradient (no anti-aliasing), which is fine for losses taken inside a face mask.

Shapes: vertices (B, V, 3), triangles (T, 3) shared by the batch, attributes (B, V, C),
images (B, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Pixel centres on a triangle's edge count as inside it (a hair of tolerance in edge-function
# units, relative to the triangle's doubled area) so a mesh has no cracks along shared edges.
_EDGE_EPS = 1e-7
_MIN_AREA = 1e-4  # px^2, twice the triangle area


@dataclass
class Fragments:
    """Rasteriser output. ``tri``: (B, H, W) long, the covering triangle or -1; ``pix``: (N, 3) long
    (b, y, x) of the covered pixels, in ``tri``'s order for ``tri[tri >= 0]``."""

    tri: torch.Tensor
    pix: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, H, W) float: 1 where some triangle covers the pixel."""
        return (self.tri >= 0).unsqueeze(1).to(torch.float32)


def _edge(ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor,
          px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of (a, b, p): positive when p is left of a->b in y-down axes' sense."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@torch.no_grad()
def rasterize(verts: torch.Tensor, tris: torch.Tensor, size: tuple[int, int],
              max_candidates: int = 1 << 24, max_tri_pixels: int = 0) -> Fragments:
    """Nearest triangle per pixel. verts (B, V, 3) pixels, tris (T, 3) long, size (H, W).

    Work is proportional to the total bounding-box area of the triangles inside the image; it is
    processed in chunks of at most ``max_candidates`` pixel-triangle pairs to bound memory.
    ``max_tri_pixels`` > 0 drops triangles whose clipped bounding box is larger (a guard against
    the time an exploded prediction would cost; a face mesh's triangles cover a few pixels).
    """
    b, _, _ = verts.shape
    h, w = size
    dev = verts.device
    v = verts.detach().to(torch.float64 if verts.dtype == torch.float64 else torch.float32)
    tris = tris.to(dev, torch.long)
    t = tris.shape[0]
    corners = v[:, tris]  # (B, T, 3, 3)
    x, y, z = corners[..., 0], corners[..., 1], corners[..., 2]
    area = _edge(x[..., 0], y[..., 0], x[..., 1], y[..., 1], x[..., 2], y[..., 2])  # (B, T)
    x0 = torch.ceil(x.amin(-1)).clamp(min=0).long()
    x1 = torch.floor(x.amax(-1)).clamp(max=w - 1).long()
    y0 = torch.ceil(y.amin(-1)).clamp(min=0).long()
    y1 = torch.floor(y.amax(-1)).clamp(max=h - 1).long()
    bw, bh = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
    keep = area.abs() > 1e-12
    if max_tri_pixels > 0:
        keep &= bw * bh <= max_tri_pixels
    count = torch.where(keep, bw * bh, torch.zeros_like(bw)).reshape(-1)  # (B*T,)
    live = torch.nonzero(count > 0).squeeze(1)
    depth = torch.full((b * h * w,), -torch.inf, dtype=v.dtype, device=dev)
    best = torch.full((b * h * w,), -1, dtype=torch.long, device=dev)
    keys, zs, ids = [], [], []
    # chunk the live triangles so each chunk enumerates at most max_candidates pixels
    csum = torch.cumsum(count[live], 0)
    start = 0
    while start < live.numel():
        base = int(csum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(csum, torch.tensor(base + max_candidates, device=dev), right=True))
        stop = max(stop, start + 1)
        sel = live[start:stop]
        n = count[sel]
        owner = torch.repeat_interleave(sel, n)  # flat (b * T + t) per candidate
        first = torch.cumsum(n, 0) - n
        local = torch.arange(int(n.sum()), device=dev) - torch.repeat_interleave(first, n)
        fw = bw.reshape(-1)[owner]
        px = x0.reshape(-1)[owner] + local % fw
        py = y0.reshape(-1)[owner] + local // fw
        cx, cy, cz = x.reshape(-1, 3)[owner], y.reshape(-1, 3)[owner], z.reshape(-1, 3)[owner]
        a = area.reshape(-1)[owner]
        pxf, pyf = px.to(v.dtype), py.to(v.dtype)
        w0 = _edge(cx[:, 1], cy[:, 1], cx[:, 2], cy[:, 2], pxf, pyf) / a
        w1 = _edge(cx[:, 2], cy[:, 2], cx[:, 0], cy[:, 0], pxf, pyf) / a
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -_EDGE_EPS) & (w1 >= -_EDGE_EPS) & (w2 >= -_EDGE_EPS)
        bi = owner // t
        keys.append(((bi * h + py) * w + px)[inside])
        zs.append((w0 * cz[:, 0] + w1 * cz[:, 1] + w2 * cz[:, 2])[inside])
        ids.append((owner % t)[inside])
        start = stop
    if keys:
        key, zz, tid = torch.cat(keys), torch.cat(zs), torch.cat(ids)
        depth.scatter_reduce_(0, key, zz, reduce="amax")
        win = zz >= depth[key]
        best.scatter_reduce_(0, key[win], tid[win], reduce="amax")
    tri = best.reshape(b, h, w)
    pix = torch.nonzero(tri >= 0)
    return Fragments(tri=tri, pix=pix)


def barycentric(verts: torch.Tensor, tris: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """(N, 3) barycentric weights of the covered pixel centres, differentiable in ``verts``."""
    tris = tris.to(verts.device, torch.long)
    bi, py, px = frags.pix.unbind(1)
    t = frags.tri[bi, py, px]
    c = verts[bi[:, None], tris[t]]  # (N, 3 corners, 3)
    x, y = c[..., 0], c[..., 1]
    pxf, pyf = px.to(verts.dtype), py.to(verts.dtype)
    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    # near-degenerate (edge-on) triangles would give 1/area gradients: floor |area| at _MIN_AREA
    area = torch.where(area < 0, area.clamp(max=-_MIN_AREA), area.clamp(min=_MIN_AREA))
    w0 = _edge(x[:, 1], y[:, 1], x[:, 2], y[:, 2], pxf, pyf) / area
    w1 = _edge(x[:, 2], y[:, 2], x[:, 0], y[:, 0], pxf, pyf) / area
    return torch.stack([w0, w1, 1.0 - w0 - w1], 1)


def interpolate(attrs: torch.Tensor, tris: torch.Tensor, frags: Fragments, bary: torch.Tensor,
                background: torch.Tensor | None = None) -> torch.Tensor:
    """Blend per-vertex ``attrs`` (B, V, C) over the covered pixels -> (B, C, H, W); uncovered
    pixels take ``background`` (B, C, H, W) or zero."""
    tris = tris.to(attrs.device, torch.long)
    bi, py, px = frags.pix.unbind(1)
    t = frags.tri[bi, py, px]
    vals = (attrs[bi[:, None], tris[t]] * bary.unsqueeze(-1).to(attrs.dtype)).sum(1)  # (N, C)
    b, h, w = frags.tri.shape
    if background is None:
        canvas = attrs.new_zeros(b, h, w, attrs.shape[-1])
    else:
        canvas = background.permute(0, 2, 3, 1).to(attrs.dtype)
    return canvas.index_put((bi, py, px), vals).permute(0, 3, 1, 2)


def front_facing(verts: torch.Tensor, tris: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """(B, 1, H, W) float mask of covered pixels whose triangle faces the camera (no gradient).

    With the layout's winding (see ``grid_triangles``) a camera-facing triangle has
    cross(v1 - v0, v2 - v0) with z > 0 in image axes (x right, y down, z toward the camera).
    """
    with torch.no_grad():
        tris = tris.to(verts.device, torch.long)
        bi, py, px = frags.pix.unbind(1)
        c = verts.detach()[bi[:, None], tris[frags.tri[bi, py, px]]]
        e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]
        nz = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        out = torch.zeros_like(frags.tri, dtype=torch.float32)
        out[bi, py, px] = (nz > 0).float()
    return out.unsqueeze(1)


@dataclass
class Rendered:
    """``image`` (B, C, H, W); ``mask`` (B, 1, H, W) covered pixels; ``visible`` (B, 1, H, W)
    covered by a camera-facing triangle; ``frags`` for reuse (e.g. interpolating more attributes)."""

    image: torch.Tensor
    mask: torch.Tensor
    visible: torch.Tensor
    frags: Fragments
    bary: torch.Tensor


def render(verts: torch.Tensor, tris: torch.Tensor, attrs: torch.Tensor, size: tuple[int, int],
           background: torch.Tensor | None = None, max_tri_pixels: int = 0) -> Rendered:
    """Rasterise ``verts`` (B, V, 3) with z-buffer and shade with per-vertex ``attrs`` (B, V, C)."""
    frags = rasterize(verts, tris, size, max_tri_pixels=max_tri_pixels)
    bary = barycentric(verts, tris, frags)
    image = interpolate(attrs, tris, frags, bary, background)
    visible = front_facing(verts, tris, frags).to(image.dtype)
    return Rendered(image=image, mask=frags.mask.to(image.dtype), visible=visible, frags=frags, bary=bary)


def sample_image(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear colours of ``image`` (B, C, H, W) at pixel positions ``xy`` (B, N, 2) -> (B, N, C),
    differentiable in both (how a UV texture is read from the frame at the predicted x, y)."""
    h, w = image.shape[-2:]
    gx = xy[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = xy[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1).unsqueeze(1).to(image.dtype)  # (B, 1, N, 2)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].transpose(1, 2)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel SSIM map (B, 1, H, W) of images in [0, 1] with a box window (Wang et al. 2004),
    averaged over channels; reflect padding keeps the map the image's size."""
    pad = window // 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, (pad,) * 4, mode="reflect"), window, stride=1)

    ma, mb = mean(a), mean(b)
    va = mean(a * a) - ma * ma
    vb = mean(b * b) - mb * mb
    cov = mean(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return s.mean(1, keepdim=True)

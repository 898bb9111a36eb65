"""Image augmentations of LAOM stage 1, on whatever device the batch is on.

Every image of a batch gets its own transform, drawn uniformly from: identity, shift, rotate, perspective,
shift-rotate, rotate-shift, rotate-perspective, perspective-rotate (the composition "a-b" applies a, then b).
All of them are projective maps of the image plane, so each image's transform is one 3 x 3 matrix and the
whole batch is resampled by a single `grid_sample` call: no per-image Python, no host round trip.
The frames of one stacked observation share their image's transform.
"""

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = (
    "identity",
    "shift",
    "rotate",
    "perspective",
    "shift-rotate",
    "rotate-shift",
    "rotate-perspective",
    "perspective-rotate",
)


def _translation(b: int, max_px: int, hw: int, device) -> torch.Tensor:
    """[B, 3, 3] sampling maps of whole-pixel shifts in -max_px..max_px (normalised coordinates, 2/hw a pixel)."""
    m = torch.eye(3, device=device).repeat(b, 1, 1)
    m[:, :2, 2] = torch.randint(-max_px, max_px + 1, (b, 2), device=device).float() * (2.0 / hw)
    return m


def _rotation(b: int, max_degrees: float, device) -> torch.Tensor:
    """[B, 3, 3] rotations about the image centre by an angle uniform in +-max_degrees."""
    a = (torch.rand(b, device=device) * 2 - 1) * math.radians(max_degrees)
    m = torch.eye(3, device=device).repeat(b, 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return m


def _perspective(b: int, distortion: float, device) -> torch.Tensor:
    """[B, 3, 3] homographies that move each image corner inwards/outwards by up to `distortion` of the half-size
    (solved from the four corner correspondences)."""
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device).expand(b, 4, 2)
    dst = src + (torch.rand(b, 4, 2, device=device) * 2 - 1) * distortion
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # [B, 8, 8]
    h = torch.linalg.solve_ex(a, torch.cat([u, v], dim=1))[0]  # [B, 8]; solve_ex: no error-check host sync
    return torch.cat([h, torch.ones(b, 1, device=device)], dim=1).reshape(b, 3, 3)


class Augmenter:
    """Random per-image projective augmentations. Call on float images [B, C, H, W] (returns the same shape).

    shift_px: largest shift in pixels; rotate_degrees: largest rotation; perspective: largest corner
    displacement as a fraction of the half-size. Pixels sampled from outside the image repeat the border.
    """

    def __init__(self, shift_px: int = 4, rotate_degrees: float = 10.0, perspective: float = 0.2, names=AUGMENTATIONS):
        unknown = [n for n in names if n not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; valid: {list(AUGMENTATIONS)}")
        self.shift_px, self.rotate_degrees, self.perspective = shift_px, rotate_degrees, perspective
        self.names = tuple(names)

    def matrices(self, b: int, hw: int, device) -> torch.Tensor:
        """[B, 3, 3] sampling maps (output coordinates -> input coordinates), one random choice per image."""
        eye = torch.eye(3, device=device).expand(b, 3, 3)
        s = _translation(b, self.shift_px, hw, device)
        r = _rotation(b, self.rotate_degrees, device)
        p = _perspective(b, self.perspective, device)
        # The image after applying a then b samples the input at G_a(G_b(x)): sampling map G_a @ G_b.
        options = {
            "identity": eye,
            "shift": s,
            "rotate": r,
            "perspective": p,
            "shift-rotate": s @ r,
            "rotate-shift": r @ s,
            "rotate-perspective": r @ p,
            "perspective-rotate": p @ r,
        }
        stacked = torch.stack([options[n] for n in self.names])  # [n_options, B, 3, 3]
        choice = torch.randint(0, len(self.names), (b,), device=device)
        return stacked[choice, torch.arange(b, device=device)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        m = self.matrices(b, h, images.device)
        ys = (torch.arange(h, device=images.device, dtype=torch.float32) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=images.device, dtype=torch.float32) * 2 + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)  # [1, HW, 3]
        pts = base @ m.transpose(1, 2)  # [B, HW, 3]
        grid = (pts[..., :2] / pts[..., 2:]).reshape(b, h, w, 2)
        return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)

"""LAOM stage 1's image augmentations as released (Augmenter): docs/FAITHFULNESS.md, "Augmentations"; docs/SPEED.md."""

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.errors import ConfigError

AUGMENTATIONS = tuple(
    "identity shift rotate perspective shift-rotate rotate-shift rotate-perspective perspective-rotate".split()
)
ROTATE_DEGREES, DISTORTION = 90.0, 0.5  # the release's RandomRotation(90) and RandomPerspective(0.5)

NONE, SHIFT, ROTATE, PERSPECTIVE = range(4)  # the ops: the first four choices
_STAGES = [([AUGMENTATIONS.index(a) for a in name.split("-")] + [NONE])[:2] for name in AUGMENTATIONS]

RELEASE_PADS = {64: (14, 17, 30), 128: (28, 28, 30), 256: (28, 28, 30)}


def release_pads(size: int) -> tuple:
    """(shift, rotate, perspective) pads: the release's at 64 / 128 / 256 px, else the 64 px ones scaled."""
    if size in RELEASE_PADS:
        return RELEASE_PADS[size]
    return tuple(max(1, round(p * size / 64)) for p in RELEASE_PADS[64])


def perspective_endpoints(n: int, width: int, height: int, distortion: float, device=None) -> torch.Tensor:
    """[n, 4, 2] corner end points (x, y), topleft first, clockwise: torchvision's `RandomPerspective.get_params`."""
    dx, dy = int(distortion * (width // 2)), int(distortion * (height // 2))
    x_lo = torch.randint(0, dx + 1, (n, 4), device=device)  # topleft / botleft x: randint(0, dx + 1)
    x_hi = torch.randint(width - dx - 1, width, (n, 4), device=device)  # topright / botright x
    y_lo = torch.randint(0, dy + 1, (n, 4), device=device)  # topleft / topright y
    y_hi = torch.randint(height - dy - 1, height, (n, 4), device=device)  # botright / botleft y
    corner = torch.arange(4, device=device)  # topleft, topright, botright, botleft
    left, top = (corner == 0) | (corner == 3), corner < 2
    return torch.stack([torch.where(left, x_lo, x_hi), torch.where(top, y_lo, y_hi)], dim=-1)


def _translate(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, dtype=t.dtype, device=t.device).repeat(*t.shape[:-1], 1, 1)
    m[..., :2, 2] = t
    return m


def _perspective_coeffs(endpoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[N, 3, 3] homographies end points -> start points (pixels), as torchvision's `_get_perspective_coeffs`."""
    p = endpoints.double()
    x, y = p[..., 0], p[..., 1]
    corner = torch.arange(4, device=p.device)  # start points [0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]
    sx = ((corner == 1) | (corner == 2)).double().mul(width - 1).expand_as(x)
    sy = (corner >= 2).double().mul(height - 1).expand_as(x)
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_x = torch.stack([x, y, ones, zeros, zeros, zeros, -sx * x, -sx * y], dim=-1)  # [N, 4, 8]
    rows_y = torch.stack([zeros, zeros, zeros, x, y, ones, -sy * x, -sy * y], dim=-1)
    a = torch.stack([rows_x, rows_y], dim=2).reshape(-1, 8, 8)
    b = torch.stack([sx, sy], dim=-1).reshape(-1, 8)
    coeffs = torch.linalg.solve_ex(a, b)[0].float()  # float64, rounded as torchvision; solve_ex: no host sync
    return torch.cat([coeffs, torch.ones_like(coeffs[:, :1])], dim=1).reshape(-1, 3, 3)


@functools.lru_cache
def _tables(names: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([AUGMENTATIONS.index(n) for n in names], device=device), torch.tensor(_STAGES, device=device)


@dataclass
class AugParams:
    """N images, K calls: choice, chunk [N], shift [N, 2] (x, y); angle [K, 8] degrees, endpoints [K, 8, 4, 2]."""

    choice: torch.Tensor
    chunk: torch.Tensor
    shift: torch.Tensor
    angle: torch.Tensor
    endpoints: torch.Tensor

    @staticmethod
    def cat(params: list["AugParams"]) -> "AugParams":
        starts = itertools.accumulate([len(p.angle) for p in params[:-1]], initial=0)
        chunk = torch.cat([p.chunk + start for p, start in zip(params, starts, strict=True)])
        rest = {k: torch.cat([getattr(p, k) for p in params]) for k in ("choice", "shift", "angle", "endpoints")}
        return AugParams(chunk=chunk, **rest)


class Augmenter:
    """Random augmentations of images [B, C, S, S] in [-1, 1]; stage 1: `draw` per call as released, `apply_each`."""

    def __init__(self, names=AUGMENTATIONS):
        self.names = tuple(names)
        unknown = [n for n in self.names if n not in AUGMENTATIONS]
        if unknown or not self.names:
            raise ConfigError(f"unknown augmentation(s) {unknown or self.names}; valid: {list(AUGMENTATIONS)}")

    def sample_params(self, n: int, size: int, device=None) -> AugParams:
        shift_pad, _, persp_pad = release_pads(size)
        choice = _tables(self.names, device)[0][torch.randint(len(self.names), (n,), device=device)]
        padded = size + 2 * persp_pad
        corners = perspective_endpoints(len(AUGMENTATIONS), padded, padded, DISTORTION, device)
        return AugParams(
            choice=choice,
            chunk=torch.zeros(n, dtype=torch.long, device=device),
            shift=torch.randint(0, 2 * shift_pad + 1, (n, 2), device=device),
            angle=torch.empty(1, len(AUGMENTATIONS), device=device).uniform_(-ROTATE_DEGREES, ROTATE_DEGREES),
            endpoints=corners[None],
        )

    def op_maps(self, params: AugParams, size: int) -> torch.Tensor:
        """[4, N, 3, 3] maps of the ops per image: output pixel -> input pixel of the unpadded image (centre at k)."""
        shift_pad, _, persp_pad = release_pads(size)
        device = params.shift.device
        shift = _translate(params.shift.float() - shift_pad)  # crop at offset s of the padded image
        # torchvision rotate: an output offset X from the image centre samples the input at R X, R = [[c, -s], [s, c]]
        a = torch.deg2rad(params.angle.float().reshape(-1))
        rot = torch.zeros(len(a), 3, 3, device=device)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos(), 1
        centre = torch.full((2,), (size - 1) / 2, device=device)
        rot = _translate(centre) @ rot @ _translate(-centre)
        # torchvision perspective: PIL's pixel centres at k + 0.5, in the padded image; the centre crop starts at pad
        padded = size + 2 * persp_pad
        h = _perspective_coeffs(params.endpoints.reshape(-1, 4, 2), padded, padded)
        to_padded = torch.full((2,), persp_pad + 0.5, device=device)
        persp = _translate(-to_padded) @ h @ _translate(to_padded)
        per_call = params.chunk * len(AUGMENTATIONS) + params.choice  # row of the [K * 8] parameter tables
        eye = torch.eye(3, device=device).expand_as(shift)
        return torch.stack([eye, shift, rot[per_call], persp[per_call]])

    def apply(self, images: torch.Tensor, params: AugParams) -> torch.Tensor:
        n, _, s, w = images.shape
        if s != w:
            raise ValueError(f"square images expected (as in the release), got {s} x {w}")
        x = images if images.dtype in (torch.float32, torch.float64) else images.float()
        maps = self.op_maps(params, s).to(x.dtype)  # [4 ops, N, 3, 3]
        shift_pad, rotate_pad, persp_pad = release_pads(s)
        stages = _tables(self.names, x.device)[1][params.choice]  # [N, 2] ops
        idx = torch.arange(n, device=x.device)
        for stage in range(2):
            op = stages[:, stage]
            pad = (op == SHIFT) * shift_pad + (op == ROTATE) * rotate_pad + (op == PERSPECTIVE) * persp_pad
            x = _warp(x, maps[op, idx], pad.to(x.dtype))  # op "none": identity map, pad 0
        if s & (s - 1):  # the identity resampling is exact for power-of-two sizes only: keep unchanged images exact
            x = torch.where((stages == NONE).all(1)[:, None, None, None], images.to(x.dtype), x)
        return x.to(images.dtype)

    def draw(self, images: torch.Tensor) -> AugParams:
        return self.sample_params(images.shape[0], images.shape[-1], images.device)

    def apply_each(self, images: list[torch.Tensor], params: list[AugParams]) -> list[torch.Tensor]:
        """images[i] augmented with params[i]: one pass on a GPU, one call each on the CPU (faster: docs/SPEED.md)."""
        if images[0].device.type == "cpu":
            return [self.apply(x, p) for x, p in zip(images, params, strict=True)]
        out = self.apply(torch.cat(images), AugParams.cat(params))
        return list(out.split([len(x) for x in images]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.draw(images))


def _warp(x: torch.Tensor, maps: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """x [N, C, S, S] resampled at maps[i] @ p, bilinear, replicate-padded by pad[i], torchvision's 0 outside it."""
    n, _, s, _ = x.shape
    # fold grid_sample's normalisation (align_corners=False: pixel k at (2k + 1) / s - 1) into the maps
    m = torch.cat([maps[:, :2] * (2 / s) + maps[:, 2:] * (1 / s - 1), maps[:, 2:]], dim=1)  # [N, 3, 3]
    k = torch.arange(s, dtype=x.dtype, device=x.device)
    grid = torch.empty(n, s, s, 2, dtype=x.dtype, device=x.device)
    rows = [(m[:, r, :1] * k)[:, None, :] + (m[:, r, 1:2] * k + m[:, r, 2:])[:, :, None] for r in range(3)]
    torch.div(rows[0], rows[2], out=grid[..., 0])
    torch.div(rows[1], rows[2], out=grid[..., 1])
    grid.clamp_(-8.0, 8.0)  # finite where a homography sends a pixel far away (the mask is 0 there)
    # torchvision's ones mask (bilinear weight inside the padded image, per axis); fill 0 = border sampling * mask^2
    reach = (pad + (s + 1) / 2)[:, None, None]
    mask = grid[..., 0].abs().mul_(-s / 2).add_(reach).clamp_(0, 1)
    mask.mul_(grid[..., 1].abs().mul_(-s / 2).add_(reach).clamp_(0, 1)).square_()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.mul_(mask[:, None])

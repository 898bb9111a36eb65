"""Foreground masks (uint8, 255 = foreground) of DCS frames and background blurring: docs/MASKS.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.errors import ConfigError, UserError

DEPTH_MODEL_IDS = {
    "vits": "depth-anything/Depth-Anything-V2-Small-hf",
    "vitb": "depth-anything/Depth-Anything-V2-Base-hf",
    "vitl": "depth-anything/Depth-Anything-V2-Large-hf",
    "vitg": "depth-anything/Depth-Anything-V2-Giant-hf",
}
FOREGROUND = 255


def kernel_pair(kernel: int | Sequence[int], name: str = "kernel") -> tuple[int, int]:
    pair = (kernel, kernel) if np.isscalar(kernel) else tuple(kernel)
    if len(pair) != 2:
        raise ConfigError(f"{name} must be one odd positive integer or two, got {kernel!r}")
    for k in pair:
        if int(k) != k or k <= 0 or k % 2 == 0:
            raise ConfigError(f"{name} sizes must be odd positive integers, got {kernel!r}")
    return int(pair[0]), int(pair[1])


def gaussian_blur(images: torch.Tensor, kernel: int | Sequence[int], sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float [N, C, H, W]; borders: OpenCV's BORDER_REFLECT_101 (tiny images: replicate)."""
    n, c, h, w = images.shape
    x = images.reshape(n * c, 1, h, w)
    for k, size, along_h in zip(kernel_pair(kernel), (h, w), (True, False), strict=True):
        if k > 1:
            if sigma <= 0:
                raise ConfigError(f"sigma must be positive, got {sigma!r}")
            g = torch.exp(-((torch.arange(k, dtype=torch.float32) - (k - 1) / 2) ** 2) / (2 * sigma**2))
            weights = (g / g.sum()).view((1, 1, k, 1) if along_h else (1, 1, 1, k))
            pad = (0, 0, k // 2, k // 2) if along_h else (k // 2, k // 2, 0, 0)
            x = F.conv2d(F.pad(x, pad, mode="reflect" if k // 2 < size else "replicate"), weights)
    return x.reshape(n, c, h, w)


def blur_background(frames: np.ndarray, masks: np.ndarray, kernel: int | Sequence[int], sigma: float) -> np.ndarray:
    """uint8 [N, H, W, 3]: mask/255 * frame + (1 - mask/255) * blurred (masks [N, H, W]); mask 255 pixels exact."""
    frames, masks = np.asarray(frames), np.asarray(masks)
    if frames.ndim != 4 or frames.shape[-1] != 3 or masks.shape != frames.shape[:3]:
        raise ValueError(f"frames must be [N, H, W, 3] and masks [N, H, W], got {frames.shape} and {masks.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    blurred = gaussian_blur(x, kernel, sigma)
    alpha = torch.from_numpy(np.ascontiguousarray(masks)).float().div(255.0).unsqueeze(1)
    out = alpha * x + (1.0 - alpha) * blurred
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fg = masks == FOREGROUND
    out[fg] = frames[fg]  # exact, whatever float rounding did
    return out


def segmentation_mask(physics, camera_id: int, height: int, width: int) -> np.ndarray:
    """uint8 [H, W]: 255 where MuJoCo's segmentation shows a geom of a body other than the world (static scenery)."""
    import mujoco

    seg = physics.render(height=height, width=width, camera_id=camera_id, segmentation=True)  # (object id, type)
    ids, types = seg[..., 0], seg[..., 1]
    is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
    fg = np.zeros(ids.shape, dtype=bool)
    fg[is_geom] = np.asarray(physics.model.geom_bodyid)[ids[is_geom]] != 0
    return np.where(fg, FOREGROUND, 0).astype(np.uint8)


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float32)
    lo = d.min(axis=(1, 2), keepdims=True)
    span = d.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (d - lo) / np.where(span > 0, span, 1.0) * 255.0, 0.0).astype(np.float32)


def ema_thresholds(raw: np.ndarray, alpha: float) -> np.ndarray:
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"threshold_alpha must be in (0, 1], got {alpha!r}")
    out = np.empty(len(raw), dtype=np.float64)
    for t, r in enumerate(raw):  # one value per frame, not per pixel
        out[t] = r if t == 0 else alpha * r + (1.0 - alpha) * out[t - 1]
    return out


def _feathered(depth: np.ndarray, thresholds: np.ndarray, kernel, sigma: float) -> np.ndarray:
    binary = (depth > thresholds[:, None, None].astype(np.float32)).astype(np.float32) * 255.0
    feathered = gaussian_blur(torch.from_numpy(binary).unsqueeze(1), kernel, sigma).squeeze(1)
    return feathered.round().clamp(0, 255).to(torch.uint8).numpy()


def depth_masks(
    depth: np.ndarray, percentile: float, threshold_alpha: float, kernel: int | Sequence[int], sigma: float
) -> np.ndarray:
    """uint8 [T, H, W] masks of ONE trajectory's depth maps (bigger = closer): EMA percentile thresholds, blurred."""
    kernel_pair(kernel, "mask kernel")
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"percentile must be in [0, 100], got {percentile!r}")
    d = normalize_depth(depth)
    raw = np.percentile(d.reshape(len(d), -1), percentile, axis=1)
    return _feathered(d, ema_thresholds(raw, threshold_alpha), kernel, sigma)


@dataclass
class DepthMasker:
    """depth_masks one frame at a time (uint8 [H, W, 3] -> [H, W]) during an episode; reset() per episode."""

    model: torch.nn.Module
    percentile: float
    threshold_alpha: float
    kernel: int | Sequence[int]
    sigma: float
    threshold: float | None = None

    def reset(self) -> None:
        self.threshold = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        d = normalize_depth(depth_of_frames(self.model, frame[None], "cpu", 1))  # [1, H, W]
        raw, a = float(np.percentile(d.reshape(-1), self.percentile)), self.threshold_alpha
        self.threshold = raw if self.threshold is None else a * raw + (1.0 - a) * self.threshold
        return _feathered(d, np.array([self.threshold]), self.kernel, self.sigma)[0]


class DepthWeightsMissing(UserError, FileNotFoundError):
    """DepthAnything weights are neither in the given folder nor in the Hugging Face cache."""


def load_depth_model(encoder: str = "vits", device: str = "cpu", model_path: str | Path | None = None, model=None):
    """DepthAnything V2 in eval mode: from model_path, else the Hugging Face cache (no download), or `model`."""
    if model is not None:
        return model.to(device).eval()
    from transformers import AutoModelForDepthEstimation

    if encoder not in DEPTH_MODEL_IDS:
        raise ConfigError(f"unknown encoder {encoder!r}: choose one of {', '.join(DEPTH_MODEL_IDS)}")
    model_id = DEPTH_MODEL_IDS[encoder]
    if model_path is not None and not Path(model_path, "config.json").is_file():
        raise DepthWeightsMissing(
            f"no DepthAnything model in {model_path} (no config.json): download {model_id} "
            f"(https://huggingface.co/{model_id}) into that folder, e.g. "
            f"`huggingface-cli download {model_id} --local-dir {model_path}`"
        )
    source, kwargs = (model_id, {"local_files_only": True}) if model_path is None else (str(model_path), {})
    try:
        model = AutoModelForDepthEstimation.from_pretrained(source, **kwargs)
    except OSError as e:
        raise DepthWeightsMissing(
            f"DepthAnything V2 weights for encoder {encoder!r} not found: download {model_id} "
            f"(https://huggingface.co/{model_id}) with `huggingface-cli download {model_id}` (into the Hugging "
            f"Face cache, HF_HOME) or with `--local-dir DIR` and pass --model-path DIR ({e})"
        ) from e
    return model.to(device).eval()


@torch.no_grad()
def depth_of_frames(model, frames: np.ndarray, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Relative depth float32 [N, H, W] (bigger = closer) of uint8 frames [N, H, W, 3], at DepthAnything's input."""
    frames = np.asarray(frames)
    n, h, w, _ = frames.shape
    backbone, patch = getattr(model.config, "backbone_config", None), getattr(model.config, "patch_size", 14)
    size = int(round((getattr(backbone, "image_size", None) or 518) / patch) * patch)  # 518 for the released ones
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1)
    out = np.empty((n, h, w), dtype=np.float32)
    for start in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float().div(255.0)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        depth = model(pixel_values=(x - mean) / std).predicted_depth  # [B, size, size]
        depth = F.interpolate(depth.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
        out[start : start + len(x)] = depth.float().cpu().numpy()
    return out

"""Background videos: a DAVIS-2017 folder (`<root>/<video name>/<frame>.jpg`) or built-in procedural videos.

Built-in videos are a deterministic function of (split, index): drifting multi-octave noise through a random colour
palette with soft-edged coloured shapes moving across it; train and val come from disjoint seeds (novel distractors).
Videos and their frames resized to the skybox are cached per process (least recently used out, bounded in bytes).
"""

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from src.dcs.constants import BUILTIN, VIDEO_SPLITS
from src.errors import ConfigError, MissingFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BUILTIN_FRAMES = 60  # frames per built-in video
BUILTIN_SIZE = 160  # side of a built-in frame in pixels (resized to the skybox like DAVIS frames)
BUILTIN_VERSION = 1  # bump when the generator changes (it seeds every built-in video)
CACHE_BYTES = int(os.environ.get("DCS_VIDEO_CACHE_BYTES", 2 * 2**30))  # decoded / generated videos
SKYBOX_CACHE_BYTES = int(os.environ.get("DCS_SKYBOX_CACHE_BYTES", 2**30))  # frames resized to the skybox

_cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_skybox_cache: "OrderedDict[tuple, SkyboxFrames]" = OrderedDict()


def select_videos(split: str, num_videos: int | None = None) -> tuple[str, ...]:
    """The first num_videos videos of the split (None: all)."""
    if split not in VIDEO_SPLITS:
        raise ConfigError(f"unknown background split {split!r}; valid: {sorted(VIDEO_SPLITS)}")
    return VIDEO_SPLITS[split][:num_videos]


def check_davis_folder(root: str, names: tuple[str, ...]) -> None:
    """Clear errors for a missing folder, videos of the split missing in it, or video folders without frames."""
    path = Path(root)
    if not path.is_dir():
        raise MissingFileError(
            f"background folder {root!r} does not exist; expected a DAVIS-2017 folder <root>/<video>/<frame>.jpg "
            f"(e.g. DAVIS/JPEGImages/480p) or '{BUILTIN}' for the built-in videos"
        )
    missing = [n for n in names if not (path / n).is_dir()]
    if missing:
        raise MissingFileError(
            f"background folder {root!r} lacks {len(missing)} video(s) of the split: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}"
        )
    for n in names:
        _frame_files(path / n)


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingFileError(f"background video folder {str(folder)!r} has no frames (.jpg / .png)")
    return files


def _lru(cache: OrderedDict, key: tuple, make, budget: int):
    """cache[key], made on a miss; the least recently used entries go while the entries hold over budget bytes."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = make()
    while sum(v.nbytes for v in cache.values()) > budget and len(cache) > 1:
        cache.popitem(last=False)
    return value


def video_key(source: str, split: str, name: str) -> tuple:
    """What identifies a video's frames: (builtin, split, index) or the resolved DAVIS folder."""
    if source == BUILTIN:
        return (BUILTIN, split, select_videos(split).index(name))
    return (str((Path(source) / name).resolve()),)


def load_video(source: str, split: str, name: str, cache: bool = True) -> np.ndarray:
    """uint8 [F, H, W, 3] frames of one video. cache=False reads a DAVIS folder again (built-in videos are always
    cached: generating them is not reading)."""
    key = video_key(source, split, name)
    if source == BUILTIN:
        return _lru(_cache, key, lambda: builtin_video(split, key[2]), CACHE_BYTES)
    read = lambda: np.stack([np.asarray(Image.open(f).convert("RGB")) for f in _frame_files(Path(source) / name)])
    return _lru(_cache, key, read, CACHE_BYTES) if cache else read()


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3], bicubic (PIL's default), as the release resizes (docs/FAITHFULNESS.md)."""
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))


class SkyboxFrames:
    """A video's frames resized to the skybox texture, each on first use: frame i is `resize_frame(video[i])`."""

    def __init__(self, video: np.ndarray, size: int):
        self.video, self.size = video, size
        self.frames: list[np.ndarray | None] = [None] * len(video)
        self.nbytes = len(video) * size * size * 3  # once every frame is resized: what the cache budgets for

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.frames[i] is None:
            self.frames[i] = resize_frame(self.video[i], self.size)
        return self.frames[i]


def skybox_frames(source: str, split: str, name: str, size: int, cache: bool = True) -> "SkyboxFrames | list":
    """A video's frames resized to size x size. cache=True: kept across resets (DCS_SKYBOX_CACHE_BYTES), each frame
    resized on first use. cache=False: the release's way, every frame read and resized now, nothing kept."""
    if not cache:
        return [resize_frame(frame, size) for frame in load_video(source, split, name, cache=False)]
    key = (*video_key(source, split, name), size)
    return _lru(_skybox_cache, key, lambda: SkyboxFrames(load_video(source, split, name), size), SKYBOX_CACHE_BYTES)


def _periodic_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Smooth noise of period `size` in both axes: a random cells x cells grid, tiled, upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    tiled = np.tile(grid, (3, 3))
    big = Image.fromarray(tiled).resize((3 * size, 3 * size), Image.BICUBIC)
    return np.asarray(big)[size : 2 * size, size : 2 * size]


def builtin_video(split: str, index: int, num_frames: int = BUILTIN_FRAMES, size: int = BUILTIN_SIZE) -> np.ndarray:
    """uint8 [num_frames, size, size, 3]: a deterministic natural-looking video for (split, index)."""
    split_id = list(VIDEO_SPLITS).index(split)
    rng = np.random.default_rng([BUILTIN_VERSION, split_id, index])
    t = np.arange(num_frames)
    # drifting multi-octave noise: each octave moves with its own velocity (pixels per frame)
    field = np.zeros((num_frames, size, size), np.float32)
    for octave, cells in enumerate((3, 6, 12, 24)):
        noise = _periodic_noise(rng, cells, size)
        vel = rng.uniform(-2.5, 2.5, size=2) * (1 + 0.5 * octave)
        dy = np.round(t * vel[0]).astype(int) % size
        dx = np.round(t * vel[1]).astype(int) % size
        rows = (np.arange(size)[None, :] + dy[:, None]) % size  # [F, size]
        cols = (np.arange(size)[None, :] + dx[:, None]) % size
        field += 0.55**octave * noise[rows[:, :, None], cols[:, None, :]]
    field = (field - field.min()) / max(1e-6, float(field.max() - field.min()))
    # colour palette: 4 random colours along the noise value
    stops = np.sort(rng.random(4, dtype=np.float32))
    stops[0], stops[-1] = 0.0, 1.0
    colours = rng.random((4, 3), dtype=np.float32)
    frames = np.stack([np.interp(field, stops, colours[:, c]) for c in range(3)], axis=-1)  # [F, S, S, 3]
    # moving soft-edged shapes that bounce off the borders
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(rng.integers(2, 6)):
        radius = rng.uniform(0.06, 0.2) * size
        pos = rng.uniform(radius, size - radius, size=2)
        vel = rng.uniform(-3.0, 3.0, size=2)
        path = np.abs((pos[None] + t[:, None] * vel[None] - radius) % (2 * (size - 2 * radius)))
        centre = radius + np.minimum(path, 2 * (size - 2 * radius) - path)  # [F, 2], reflected at the borders
        dist = np.hypot(yy[None] - centre[:, 0, None, None], xx[None] - centre[:, 1, None, None])
        mask = np.clip((radius - dist) / (0.25 * radius), 0.0, 1.0)[..., None]  # [F, S, S, 1]
        frames = frames * (1 - mask) + mask * rng.random(3, dtype=np.float32)
    return (frames * 255).astype(np.uint8)


def write_builtin_as_davis(
    root: str, split: str = "train", num_videos: int | None = None, num_frames: int | None = None
) -> list[str]:
    """Writes built-in videos as a DAVIS-layout folder (<root>/<DAVIS name>/00000.jpg ...). Returns the names."""
    names = select_videos(split, num_videos)
    for name in names:
        video = load_video(BUILTIN, split, name)[:num_frames]
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return list(names)

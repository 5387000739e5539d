"""Video: clips as uint8 arrays (N, T, C, H, W), made offline or read from a folder of video files.

Moving Fashion-MNIST (`make_moving_fashion`) is the video set nearest to the literature's Moving MNIST
(Srivastava, Mansimov and Salakhutdinov, ICML 2015; the set of OpenSTL's frame-prediction benchmark): items of
Fashion-MNIST (28x28) glide across a 64x64 black canvas at a constant speed, bounce off its walls and overlap
(the brighter pixel wins, as Moving MNIST's maximum does). Unlike Moving MNIST's, a clip's items are of one
class, which is the clip's label: class-conditional generation then has one answer per clip, and a classifier
can check that a generated clip keeps its class from frame to frame. Each clip's item centres are kept
(`tracks`), for the motion statistics real and generated clips are compared on.

Layout: OUT/{train,test}/clips.npy (N, T, 1, 64, 64) uint8, labels.npy (N,), tracks.npy (N, T, items, 2) (x, y
of each item's centre in pixels) with a meta.json each (genlab.data.base.save_arrays), and OUT/video.json with
the settings: plain .npy files, loaded without pickle. A folder of video files (GIF, MP4, WebM, AVI, MOV; class
subfolders for labels; train/ and test/ subfolders, or a tenth held out) loads the same way (`load_video_folder`),
cut to the shortest clip's length.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from genlab.data.base import DataReport, fill_report, load_arrays, save_arrays
from genlab.errors import ConfigError, DataError
from genlab.files import atomic_write

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")
MAX_FRAMES = 64


@dataclasses.dataclass
class VideoData:
    """Clips as uint8 arrays (N, T, C, H, W) with integer labels (-1 when unlabelled)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    report: DataReport
    fps: float = 10.0
    # (train, test) item centres (N, T, items, 2), for sets that know them (moving Fashion-MNIST)
    tracks: tuple[np.ndarray, np.ndarray] | None = None

    kind = "video"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(frames, channels, height, width)."""
        return tuple(self.train_x.shape[1:])


# -- moving Fashion-MNIST ------------------------------------------------------------------------------------


def bounce(n: int, frames: int, items: int, room: float, speed: tuple[float, float],
           rng: np.random.Generator) -> np.ndarray:
    """Top-left corners (n, frames, items, 2) of items moving in a straight line at a constant speed (pixels per
    frame, uniform in `speed`) in a random direction, reflected at 0 and `room` (the canvas less the item)."""
    position = rng.uniform(0, room, (n, items, 2))
    angle = rng.uniform(0, 2 * np.pi, (n, items))
    velocity = rng.uniform(*speed, (n, items))[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    out = np.empty((n, frames, items, 2))
    for f in range(frames):
        out[:, f] = position
        position = position + velocity
        low, high = position < 0, position > room  # reflect off the walls: the position mirrors, the velocity flips
        position = np.where(low, -position, np.where(high, 2 * room - position, position))
        velocity = np.where(low | high, -velocity, velocity)
    return out


def render(items: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Frames (T, 1, size, size) uint8 of `items` (k, h, w) uint8 at `corners` (T, k, 2) rounded to pixels; where
    items overlap the brighter pixel wins."""
    frames = np.zeros((len(corners), 1, size, size), np.uint8)
    h, w = items.shape[1:]
    for f, frame_corners in enumerate(np.rint(corners).astype(int)):
        for item, (x, y) in zip(items, frame_corners):
            view = frames[f, 0, y: y + h, x: x + w]
            np.maximum(view, item, out=view)
    return frames


def make_moving_fashion(out: Path, n: int = 10_000, frames: int = 20, size: int = 64, items: int = 2,
                        speed: tuple[float, float] = (2.0, 4.0), fps: float = 10.0, seed: int = 0,
                        source=None) -> Path:
    """Write `n` training clips and n / 10 test clips of moving Fashion-MNIST to `out` (the layout above): each
    clip `items` garments of one class, from the training images for train/ and the test images for test/.
    `source`: the ImageData to take the items from (default: the fashion-mnist dataset)."""
    if not 1 <= items <= 4 or not 2 <= frames <= MAX_FRAMES or not 16 <= size <= 256 or n < 10:
        raise ConfigError(f"items {items}, frames {frames}, size {size}, n {n}: out of range",
                          f"use 1-4 items, 2-{MAX_FRAMES} frames, a 16-256 px canvas and n >= 10")
    if not 0 < speed[0] <= speed[1]:
        raise ConfigError(f"speed {speed}: need 0 < low <= high (pixels per frame)", "e.g. 2,4")
    if source is None:
        from genlab.data import load_data

        source = load_data("fashion-mnist")
    item_size = source.train_x.shape[-1]
    if size < 2 * item_size:
        raise ConfigError(f"a {size} px canvas is too small for {item_size} px items", f"use --size {2 * item_size}+")
    rng = np.random.default_rng(seed)
    out = Path(out)
    for split, count, (x, y) in (("train", n, (source.train_x, source.train_y)),
                                 ("test", max(1, n // 10), (source.test_x, source.test_y))):
        labels = rng.integers(0, len(source.classes), count)
        corners = bounce(count, frames, items, size - item_size, speed, rng)
        by_class = [np.flatnonzero(y == c) for c in range(len(source.classes))]
        clips = np.empty((count, frames, 1, size, size), np.uint8)
        for i, label in enumerate(labels):
            chosen = x[rng.choice(by_class[label], items, replace=False), 0]
            clips[i] = render(chosen, corners[i], size)
        tracks = (corners + item_size / 2).astype(np.float32)
        save_arrays(out / split, {"clips": clips, "labels": labels.astype(np.int64), "tracks": tracks},
                    {"split": split, "clips": count})
    settings = {"kind": "moving-fashion", "classes": list(source.classes), "fps": fps, "frames": frames,
                "size": size, "items": items, "speed": list(speed), "seed": seed, "n": n}
    atomic_write(out / "video.json", json.dumps(settings, indent=1))
    return out


# -- loading -------------------------------------------------------------------------------------------------


def is_video_folder(path: Path) -> bool:
    """A folder genlab reads as clips: made by `make_moving_fashion`, or holding video files."""
    return (path / "video.json").is_file() or any(
        p.suffix.lower() in VIDEO_SUFFIXES for p in path.rglob("*") if p.is_file())


def load_video(path: str | Path) -> VideoData:
    path = Path(path)
    if (path / "video.json").is_file():
        return _load_arrays(path)
    return load_video_folder(path)


def _load_arrays(path: Path) -> VideoData:
    try:
        settings = json.loads((path / "video.json").read_text())
    except (OSError, ValueError):
        settings = None
    parts = {split: load_arrays(path / split, ["clips", "labels", "tracks"]) for split in ("train", "test")}
    if settings is None or None in parts.values():
        raise DataError(f"{path} is not a readable video set (its video.json, or the arrays of train/ or test/)",
                        f"make it again: genlab data make moving-fashion --out {path}")
    parts = {split: arrays for split, (arrays, _) in parts.items()}
    clips = parts["train"]["clips"]
    if clips.dtype != np.uint8 or clips.ndim != 5:
        raise DataError(f"{path}/train/clips.npy holds {clips.dtype} of shape {clips.shape}, not uint8 (N, T, C, H, W)",
                        f"make it again: genlab data make moving-fashion --out {path}")
    report = DataReport(name=path.name, kind="video", source=str(path), resolved_from="path")
    data = VideoData(path.name, clips, parts["train"]["labels"], parts["test"]["clips"], parts["test"]["labels"],
                     tuple(settings["classes"]), report, float(settings.get("fps", 10)),
                     (parts["train"]["tracks"], parts["test"]["tracks"]))
    fill_report(data)
    return data


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """The frames (T, H, W, 3) uint8 of a video file and its frame rate (Pillow for GIF; imageio's FFmpeg plugin for
    the rest, which needs the imageio-ffmpeg package)."""
    import imageio.v3 as iio

    if not path.is_file():
        raise DataError(f"video file {path} does not exist", "check the path")
    if path.suffix.lower() == ".gif":
        return _read_gif(path)
    try:
        frames = np.asarray(iio.imread(path, index=None))
        meta = iio.immeta(path)
    except Exception as e:  # imageio raises many kinds for a bad or unsupported file
        raise DataError(f"cannot read {path} as video ({type(e).__name__}: {e})",
                        "give GIF files, or MP4/WebM with the imageio-ffmpeg package installed") from None
    if frames.ndim == 3:  # (T, H, W): grey
        frames = frames[..., None]
    # FFmpeg's readers give the rate; Pillow's GIF reader each frame's duration in milliseconds
    fps = meta.get("fps") or (1000 / meta["duration"] if meta.get("duration") else 10.0)
    return frames[..., :3], float(fps)


def _read_gif(path: Path) -> tuple[np.ndarray, float]:
    """A GIF's frames at its shortest frame's duration: GIF writers (Pillow's among them) store a run of equal
    frames as one frame shown longer, which is repeated here so that a clip keeps its length."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = [(np.asarray(f.convert("RGB")), f.info.get("duration") or 100)
                      for f in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as video ({type(e).__name__}: {e})", "give a GIF or MP4 file") from None
    step = min(d for _, d in frames)
    return np.stack([f for f, d in frames for _ in range(max(1, round(d / step)))]), 1000 / step


def read_clip(path: str | Path, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """A video file's frames as uint8 (T, channels, H, W) at `size` (H, W), and its frame rate."""
    frames, fps = read_video(Path(path))
    return converted(frames, channels, size), fps


def converted(frames: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 as (T, channels, H, W) at `size` (H, W): grey by Pillow's luma (exact for
    grey frames stored as RGB), resized with Lanczos where the size differs."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.stack([np.asarray(Image.fromarray(f).convert(mode).resize((size[1], size[0]), Image.Resampling.LANCZOS))
                    for f in frames])
    return out[:, None] if channels == 1 else out.transpose(0, 3, 1, 2)


def load_video_folder(path: Path, size: int | None = None, seed: int = 0) -> VideoData:
    """Every video file under `path` as clips cut to the shortest one's length (at most 64 frames) and resized to
    `size` (default: the first clip's); class subfolders give labels; train/ and test/ subfolders the split, else
    a tenth of the clips (seeded) is held out."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise DataError(f"no video files under {path}", f"give a folder of {', '.join(VIDEO_SUFFIXES)} files")
    split_of = {f: next((s for s in ("train", "test") if s in f.relative_to(path).parts[:1]), "") for f in files}
    classes = sorted({f.parent.name for f in files if f.parent != path and f.parent.name not in ("train", "test")})
    clips, labels, rates = [], [], []
    for f in files:
        frames, fps = read_video(f)
        clips.append(frames)
        rates.append(fps)
        labels.append(classes.index(f.parent.name) if f.parent.name in classes else -1)
    frames = min(MAX_FRAMES, min(len(c) for c in clips))
    grey = all(np.array_equal(c[..., 0], c[..., 1]) and np.array_equal(c[..., 0], c[..., 2]) for c in clips)
    shape = (size, size) if size else tuple(clips[0].shape[1:3])
    out = np.stack([converted(clip[:frames], 1 if grey else 3, shape) for clip in clips])
    labels = np.array(labels, np.int64)
    if any(split_of.values()):
        test = np.array([split_of[f] == "test" for f in files])
    else:
        test = np.zeros(len(files), bool)
        test[np.random.default_rng(seed).permutation(len(files))[: max(1, len(files) // 10)]] = True
    if test.all() or not test.any():
        raise DataError(f"{path}: {len(files)} clips leave no train or no test split",
                        "give at least 2 clips, or train/ and test/ subfolders holding clips each")
    report = DataReport(name=path.name, kind="video", source=str(path), resolved_from="path")
    data = VideoData(path.name, out[~test], labels[~test], out[test], labels[test], tuple(classes), report,
                     float(np.median(rates)))
    fill_report(data)
    return data


# -- writing -------------------------------------------------------------------------------------------------


def as_uint8(clip) -> np.ndarray:
    """A clip (T, C, H, W) as uint8 (T, H, W, C) frames: floats are read as [0, 1]."""
    array = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    return array.transpose(0, 2, 3, 1)


def write_video(path: str | Path, clip, fps: float = 10.0) -> Path:
    """Write a clip (T, C, H, W), uint8 or floats in [0, 1], as an animated GIF (Pillow, looping) or an MP4
    (H.264 through imageio's FFmpeg plugin: the imageio-ffmpeg package), by the suffix; atomically."""
    path = Path(path)
    return atomic_write(path, encode_video(clip, fps, path.suffix))


def encode_video(clip, fps: float = 10.0, suffix: str = ".mp4") -> bytes:
    """The bytes of `write_video`'s file for `suffix` (.gif or .mp4): what a server sends without a file."""
    frames = as_uint8(clip)
    buffer = io.BytesIO()
    if suffix.lower() == ".gif":
        images = [frame_image(f) for f in frames]
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=round(1000 / fps))
    elif suffix.lower() == ".mp4":
        import imageio.v3 as iio

        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError("writing MP4 needs the imageio-ffmpeg package", "pip install imageio-ffmpeg, or write "
                              "a .gif") from None
        rgb = np.repeat(frames, 3, -1) if frames.shape[-1] == 1 else frames
        # H.264 in yuv420p (the plugin's default) halves the chroma resolution, so an odd size gets one black
        # row or column (macro_block_size 2; the plugin's default 16 would resize the frames)
        pad = (rgb.shape[1] % 2, rgb.shape[2] % 2)
        rgb = np.pad(rgb, ((0, 0), (0, pad[0]), (0, pad[1]), (0, 0)))
        buffer.write(iio.imwrite("<bytes>", rgb, extension=".mp4", fps=fps, codec="libx264", macro_block_size=2,
                                 output_params=["-crf", "18"]))
    else:
        raise ConfigError(f"cannot write video as {suffix or 'a file without a suffix'}",
                          "use a .gif or .mp4 path")
    return buffer.getvalue()


def frame_image(array: np.ndarray):
    """A uint8 (H, W, C) frame or grid as a Pillow image: grey for one channel, RGB for three."""
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def frame_grid(clips, every: int = 1) -> np.ndarray:
    """One image (H', W', C) uint8 of clips (B, T, C, H, W): a row per clip, a column per `every`-th frame, with a
    1-pixel gap: the report's view of a video."""
    array = np.stack([as_uint8(c) for c in clips])[:, ::every]  # (B, T, H, W, C)
    b, t, h, w, c = array.shape
    grid = np.full((b * (h + 1) - 1, t * (w + 1) - 1, c), 128, np.uint8)
    for i in range(b):
        for j in range(t):
            grid[i * (h + 1): i * (h + 1) + h, j * (w + 1): j * (w + 1) + w] = array[i, j]
    return grid

"""Video jobs: OpenAI's Videos API shape (POST /v1/videos, then poll GET /v1/videos/{id}, then download
GET /v1/videos/{id}/content) over a video model's `sample_video` and `animate`.

A video is a job, not an answer: POST returns at once with status "queued" and the clip is made on one of the
server's worker threads (the same pool, admission and time limit as every other request, so a video job counts
against `concurrency` + `queue` and is refused with 429 when they are full). Finished jobs are kept in memory,
at most `ServeConfig.max_videos` of them: when another job finishes beyond that, the oldest finished one is
forgotten (its id then answers 404). Nothing is written to disk, and a restart forgets them all.

What OpenAI's fields mean for a model that makes clips of one length and size:
- `size` (WIDTHxHEIGHT) must be the model's own, or is refused; it never resizes;
- `seconds` cuts the model's clip to its first round(seconds * fps) frames (at least 2), and is refused above
  the clip's length (frames / fps): the model cannot make longer clips;
- `prompt` is a class name for a class model (refused, listing them, when it names none) and must be empty for
  an unconditional one, which nothing steers;
- `input_reference`, an image file, is the first frame: the model animates it (`animate`).
`progress` is coarse: 0 while queued or sampling, 90 while encoding, 100 when done (the sampler reports no steps).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

import torch

from genlab.serve.limits import Job, Stopped
from genlab.serve.registry import RequestError, Served, image_tensor, to_png

# OpenAI's statuses (openai.types.Video.status)
QUEUED, RUNNING, COMPLETED, FAILED = "queued", "in_progress", "completed", "failed"
# OpenAI's download variants (openai.resources.videos.download_content): the MP4, a still, and the frames in a grid
VARIANTS = {"video": ("video/mp4", "mp4"), "thumbnail": ("image/png", "thumbnail"),
            "spritesheet": ("image/png", "spritesheet"), "gif": ("image/gif", "gif")}


@dataclasses.dataclass
class Video:
    """One video job, as GET /v1/videos/{id} shows it, and its files once made."""

    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    frames: int
    fps: float
    seed: int
    created_at: int = dataclasses.field(default_factory=lambda: int(time.time()))
    status: str = QUEUED
    progress: int = 0
    completed_at: int | None = None
    error: dict[str, str] | None = None
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # mp4, gif, thumbnail, spritesheet
    job: Job | None = None

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETED, FAILED)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "video", "created_at": self.created_at, "completed_at": self.completed_at,
                "expires_at": None, "error": self.error, "model": self.model, "progress": self.progress,
                "prompt": self.prompt, "remixed_from_video_id": None, "seconds": self.seconds, "size": self.size,
                "status": self.status, "seed": self.seed, "frames": self.frames, "fps": self.fps}


class VideoStore:
    """The server's video jobs by id: every unfinished one (bounded by the workers' admission) and the newest
    `keep` finished ones. Changed on the event loop only (the worker thread sets status and progress of its own
    job, which nothing else writes while it runs)."""

    def __init__(self, keep: int):
        self.keep = keep
        self.videos: OrderedDict[str, Video] = OrderedDict()

    def add(self, video: Video) -> None:
        self.videos[video.id] = video

    def get(self, video_id: str) -> Video:
        if video_id not in self.videos:
            raise RequestError(f"no video {video_id!r} on this server", "use the id POST /v1/videos returned; this "
                               f"server keeps the {self.keep} newest finished videos, in memory until it restarts",
                               param="video_id", status=404)
        return self.videos[video_id]

    def remove(self, video_id: str) -> Video:
        video = self.get(video_id)
        if video.job is not None and not video.finished:
            video.job.cancel("deleted")
        return self.videos.pop(video_id)

    def finish(self, video: Video, error: BaseException | None) -> None:
        """Record how `video`'s job ended, then forget the oldest finished videos beyond `keep`."""
        if video.id not in self.videos:  # deleted while it ran
            return
        if error is None:
            video.status, video.progress, video.completed_at = COMPLETED, 100, int(time.time())
        else:
            video.status = FAILED
            video.error = {"code": "timeout" if isinstance(error, Stopped) and error.reason == "timeout" else
                           "cancelled" if isinstance(error, Stopped) else "generation_failed",
                           "message": _explain(error)}
        finished = [v.id for v in self.videos.values() if v.finished]
        for old in finished[: max(0, len(finished) - self.keep)]:
            del self.videos[old]


def _explain(error: BaseException) -> str:
    if isinstance(error, Stopped):
        return {"timeout": "generation ran past this server's time limit; fix: ask for fewer steps, or start the "
                "server with a larger --timeout", "shutdown": "the server shut down"}.get(error.reason, "cancelled")
    problem, fix = getattr(error, "problem", None), getattr(error, "fix", None)
    if problem:
        return f"{problem}; fix: {fix}" if fix else problem
    return f"internal error ({type(error).__name__}); the server log has the details"


def clip_frames(served: Served, seconds: str | float | None) -> tuple[int, str]:
    """How many of the model's frames `seconds` asks for, and the clip's length in seconds as the answer states it."""
    config = served.model.config
    whole = config.frames / config.fps
    if seconds is None or seconds == "":
        return config.frames, f"{whole:g}"
    try:
        wanted = float(seconds)
    except ValueError:
        wanted = math.nan
    if not math.isfinite(wanted) or wanted <= 0:
        raise RequestError(f"seconds = {seconds!r} is not a positive number", f"give seconds up to {whole:g}, or "
                           "leave it out for the model's whole clip", param="seconds")
    frames = round(wanted * config.fps)
    if frames > config.frames:
        raise RequestError(f"model {served.name!r} makes clips of {config.frames} frames at {config.fps:g} fps "
                           f"({whole:g} s), not {wanted:g} s", f"ask for at most {whole:g} seconds (or leave seconds "
                           "out)", param="seconds")
    frames = max(2, frames)
    return frames, f"{frames / config.fps:g}"


def check_size(served: Served, size: str | None) -> str:
    h, w = served.model.config.image_size
    if size is not None and size.strip().lower() != f"{w}x{h}":
        raise RequestError(f"model {served.name!r} makes {w}x{h} clips, not {size}", f"drop size or use {w}x{h}",
                           param="size")
    return f"{w}x{h}"


def label_of(served: Served, prompt: str) -> str | None:
    """The class a prompt names (class models), or None (unconditional models, which take no prompt)."""
    config = served.model.config
    if served.conditioning != "class":
        if prompt.strip():
            raise RequestError(f"model {served.name!r} makes clips unconditionally: no prompt steers it",
                               "send an empty prompt", param="prompt")
        return None
    names = {c.lower(): c for c in config.class_names}
    if prompt.strip().lower() not in names:
        said = f"{prompt!r} is not one of them" if prompt.strip() else "the prompt is empty"
        raise RequestError(f"model {served.name!r} makes clips of a class, and {said}",
                           f"send one of {', '.join(config.class_names)} as prompt", param="prompt")
    return names[prompt.strip().lower()]


def check_sampling(served: Served, sample: dict[str, Any]) -> None:
    """Refuse, before the job is queued, sampling options the model would refuse on the worker."""
    from genlab.models.diffusion.schedule import SAMPLERS

    if sample["sampler"] is not None and sample["sampler"] not in SAMPLERS:
        raise RequestError(f"unknown sampler {sample['sampler']!r}", f"use one of {', '.join(SAMPLERS)}",
                           param="sampler")
    timesteps = served.model.config.timesteps
    if sample["steps"] is not None and sample["steps"] > timesteps:
        raise RequestError(f"steps = {sample['steps']} is more than the model's {timesteps} timesteps",
                           f"use 1 .. {timesteps} (10-25 for dpm++)", param="steps")


def make_video(job: Job, served: Served, video: Video, options: dict[str, Any]) -> None:
    """Run on a worker: the clip (from noise, or animating `options["first"]`, a PIL image), cut to `video.frames`
    frames, as MP4, GIF, a first-frame PNG and a frame-grid PNG in `video.files`."""
    from genlab.data.video import encode_video, frame_grid
    from genlab.serve.registry import sampling_options

    video.status = RUNNING
    job.check()
    model, config = served.model, served.model.config
    generator = torch.Generator().manual_seed(video.seed)
    sample = sampling_options(model, options)
    labels = [options["label"]] if options["label"] is not None else None
    if options["first"] is not None:
        first = image_tensor(options["first"], config.channels, tuple(config.image_size))
        clip = model.animate(first, labels=labels, generator=generator, options=sample)
    else:
        clip = model.sample_video(1, labels=labels, generator=generator, options=sample)
    job.check()
    video.progress = 90
    clip = clip[0, : video.frames]  # (T, C, H, W)
    grid = frame_grid(clip[None])
    video.files = {"mp4": encode_video(clip, config.fps, ".mp4"), "gif": encode_video(clip, config.fps, ".gif"),
                   "thumbnail": png(frame_grid(clip[:1, None])), "spritesheet": png(grid)}


def png(array) -> bytes:
    """A uint8 (H, W, C) image (a frame grid) as PNG bytes."""
    return to_png(torch.from_numpy(array).permute(2, 0, 1) / 255)


def new_id() -> str:
    return f"video_{secrets.token_hex(12)}"

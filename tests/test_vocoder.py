"""The learned vocoder: the generator's shapes, the STFT loss, the game's two updates, training on sound and
vocoding a sound model's samples."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

import genlab
from genlab.cli import main
from genlab.data.spectrogram import MelSettings, sound_config
from genlab.errors import ConfigError
from genlab.models.vocoder import HiFiGAN, VocoderConfig, stft_loss
from tests.test_audio import tone, tone_folders

TINY = {"generator": "upsample", "channels": 16, "kernels": (3,), "dilations": (1,), "periods": (2, 3), "scales": 1,
        "segment": 2304, "adversarial_start": 2}


def tiny(**over) -> HiFiGAN:
    return HiFiGAN(VocoderConfig(**{**TINY, **over}, sound=sound_config(MelSettings(), 4096)))


def test_the_upsampling_generator_makes_hop_samples_per_frame_and_the_config_must_match_the_hop():
    torch.manual_seed(0)
    model = tiny()
    wave = model.vocode(torch.randn(2, 80, 9) - 5)
    assert wave.shape == (2, 9 * 256) and wave.abs().max() < 1
    assert model.vocode(torch.randn(1, 80, 9), length=2000).shape == (1, 2000)
    with pytest.raises(ConfigError, match="must match the spectrogram's hop"):
        VocoderConfig(generator="upsample", upsample=(8, 8, 2), sound=sound_config(MelSettings(), 4096))
    with pytest.raises(ConfigError, match="must be even"):
        VocoderConfig(upsample=(8, 8, 3))
    with pytest.raises(ConfigError, match="the STFT loss's largest window"):
        VocoderConfig(segment=1024)


@pytest.mark.parametrize("phase", ["griffin-lim", "learned"])
def test_the_fourier_generator_makes_one_centred_frame_per_hop_and_pads_to_a_length(phase):
    torch.manual_seed(0)
    model = tiny(generator="fourier", width=16, layers=2, phase=phase)
    assert model.is_game() == (phase == "learned") and (model.discriminator is None) == (phase == "griffin-lim")
    log_mel = torch.randn(2, 80, 9) - 5
    wave = model.vocode(log_mel)
    assert wave.shape == (2, 8 * 256) and wave.abs().max() <= 1  # frames centred on 0, 256, ..., 8 x 256
    assert torch.equal(wave, model.vocode(log_mel))  # the same spectrogram always sounds the same
    longer = model.vocode(torch.randn(1, 80, 9) - 5, length=3000)
    assert longer.shape == (1, 3000) and not longer[0, 2048:].any()
    with pytest.raises(ConfigError, match="too small"):
        VocoderConfig(width=4)
    with pytest.raises(ConfigError, match="iterations"):
        VocoderConfig(iterations=0)


def test_a_magnitude_generator_starts_at_the_pseudo_inverse_and_learns_a_tones_magnitudes():
    torch.manual_seed(0)
    model = tiny(generator="fourier", width=32, layers=2)
    wave = torch.from_numpy(np.stack([tone(440, 2304 / 16_000, 16_000)] * 2))
    log_mel = model.mel(wave)
    start, _ = model.generator.frames(log_mel)  # the head starts at zero: the prior, the filterbank's pseudo-inverse
    prior = torch.clamp(model.mel.magnitude(log_mel), min=model.settings.floor).log()
    assert torch.allclose(start, prior.clamp(max=np.log(100.0)), atol=1e-4)
    optimiser = torch.optim.Adam(model.generator.parameters(), 3e-3)
    first = model.loss((wave,))
    for _ in range(60):
        out = model.loss((wave,))
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
    last = model.loss((wave,))
    assert last["spectral_convergence"] < 0.5 * first["spectral_convergence"] and last["loss"] < first["loss"]


def test_a_vocoder_saved_before_the_phase_choice_loads_as_the_learned_phase_it_was(tmp_path):
    import json

    from genlab.models.persist import save_pretrained

    model = tiny(generator="fourier", width=16, layers=1, phase="learned")
    save_pretrained(model, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["config"]["phase"], config["config"]["iterations"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = genlab.load(tmp_path / "old")
    assert loaded.config.phase == "learned" and loaded.is_game()
    log_mel = torch.randn(1, 80, 9) - 5
    assert torch.equal(loaded.vocode(log_mel), model.vocode(log_mel))


def test_reconstruction_alone_teaches_the_fourier_generator_a_tone():
    torch.manual_seed(0)
    model = tiny(generator="fourier", width=32, layers=2, phase="learned", adversarial_start=10**6)
    optimiser = torch.optim.Adam(model.generator.parameters(), 3e-3)

    def update(loss, player):
        assert player == 0
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    batch = (torch.from_numpy(np.stack([tone(440, 2304 / 16_000, 16_000)] * 2)),)
    first = model.train_step(batch, update, step=0)
    for step in range(1, 40):
        last = model.train_step(batch, update, step=step)
    assert last["mel_l1"] < 0.5 * first["mel_l1"] and last["loss"] < first["loss"]


def test_the_multi_resolution_stft_loss_is_zero_for_the_same_wave_and_grows_with_the_difference():
    x = torch.from_numpy(np.stack([tone(440, 0.5, 16_000), tone(880, 0.5, 16_000)]))
    assert stft_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    near, far = stft_loss(x * 1.1, x).item(), stft_loss(x.flip(0), x).item()
    assert 0 < near < far


def test_the_discriminators_join_after_adversarial_start():
    torch.manual_seed(0)
    model = tiny()
    players = list(model.players())
    optimisers = [torch.optim.Adam(p.parameters(), 1e-3) for p in players]
    updated = []

    def update(loss, player):
        optimisers[player].zero_grad()
        loss.backward()
        optimisers[player].step()
        updated.append(player)

    batch = (torch.from_numpy(np.stack([tone(300, 2304 / 16_000, 16_000)] * 2)),)
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    out = model.train_step(batch, update, step=0)
    assert updated == [0] and "d_loss" not in out  # the STFT loss alone at first
    assert all(torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))
    out = model.train_step(batch, update, step=2)
    assert updated == [0, 1, 0] and {"d_loss", "g_adv", "feature_matching"} <= set(out)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_a_vocoder_trains_on_sound_and_voices_a_sound_models_samples(tmp_path, capsys):
    tone_folders(tmp_path / "wavs", 5, seconds=0.4, names=("a", "b"), low=(330, 20), high=(1500, 50))
    assert main(["train", "vocoder", "--data", str(tmp_path / "wavs"), "--out", str(tmp_path / "voc"),
                 "--max-steps", "4", "--batch-size", "2", "--model.width", "16", "--model.layers", "1",
                 "--model.segment", "2304",
                 "--model.adversarial-start", "2", "--threads", "1", "--progress", "false"]) == 0
    assert f"--vocoder {tmp_path / 'voc'}" in capsys.readouterr().out
    voc = genlab.load(tmp_path / "voc" / "model")
    assert voc.config.width == 16 and voc.vocode(torch.zeros(1, 80, 5) - 11).shape == (1, 4 * 256)
    assert main(["train", "vae", "--data", str(tmp_path / "wavs"), "--max-steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "vae"), "--threads", "1", "--progress", "false"]) == 0
    assert main(["sample", str(tmp_path / "vae"), "--n", "2", "--vocoder", str(tmp_path / "voc"),
                 "--out", str(tmp_path / "out")]) == 0
    assert f"vocoder {tmp_path / 'voc'}" in capsys.readouterr().out
    wave, rate = soundfile.read(sorted((tmp_path / "out").glob("*.wav"))[0])
    assert rate == 16_000 and len(wave) == 6400
    with pytest.raises(ConfigError, match="shorter than a training window"):
        genlab.train("vocoder", str(tmp_path / "wavs"), tmp_path / "v2", model={"segment": 16384}, max_steps=1,
                     progress=False)

"""Musical notes rendered offline: an NSynth-like set of single notes of chosen instrument, pitch and loudness.

NSynth (Engel et al. 2017) is four-second notes of 1,006 instruments; it is not on this machine. genlab
renders its shape with Debian's FluidSynth and the General MIDI soundfont `timgm6mb-soundfont` (TimGM6mb, 6
MB): for each pitch (a MIDI note number, the class), each instrument of `INSTRUMENTS` plays it at each
velocity for `seconds`, with reverb and chorus off, written as `OUT/PITCH/INSTRUMENT-VELOCITY.wav`. The
MIDI file each note is rendered from is written here byte by byte (a format-0 Standard MIDI File: tempo,
program change, note on, note off).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from genlab.errors import DataError

SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/sounds/sf2/FluidR3_GM.sf2")
INSTRUMENTS = {"piano": 0, "organ": 19, "guitar": 24, "bass": 33, "violin": 40, "trumpet": 56, "flute": 73,
               "clarinet": 71}  # General MIDI programs
TICKS = 480  # per quarter note; at 120 beats a minute, 960 a second


def midi_note(program: int, pitch: int, velocity: int, seconds: float) -> bytes:
    """A format-0 Standard MIDI File holding one note of `program` (0-127) at `pitch` (0-127) for `seconds`."""
    def varlen(n: int) -> bytes:
        out = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            out.append((n & 0x7F) | 0x80)
        return bytes(reversed(out))

    duration = int(round(seconds * 2 * TICKS))
    events = (b"\x00\xff\x51\x03" + (500_000).to_bytes(3, "big")  # tempo: 500,000 us a quarter (120 bpm)
              + b"\x00" + bytes([0xC0, program])  # program change, channel 1
              + b"\x00" + bytes([0x90, pitch, velocity])  # note on
              + varlen(duration) + bytes([0x80, pitch, 0])  # note off
              + b"\x00\xff\x2f\x00")  # end of track
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS) + b"MTrk" + struct.pack(">I", len(events)) + events)


def soundfont() -> str:
    found = next((f for f in SOUNDFONTS if Path(f).exists()), None)
    if shutil.which("fluidsynth") is None or found is None:
        raise DataError("FluidSynth or a General MIDI soundfont is not installed",
                        "install Debian's fluidsynth and timgm6mb-soundfont (make setup does)")
    return found


def render_note(out: Path, program: int, pitch: int, velocity: int = 100, seconds: float = 1.0,
                sample_rate: int = 16_000) -> Path:
    """Render one note to the WAV file `out` with FluidSynth (reverb and chorus off)."""
    if not (0 <= program < 128 and 0 <= pitch < 128 and 0 < velocity < 128 and seconds > 0):
        raise DataError(f"program {program}, pitch {pitch}, velocity {velocity}, {seconds} s is not a MIDI note",
                        "programs, pitches and velocities are 0-127 (velocity at least 1), seconds above 0")
    font = soundfont()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".mid", delete=False) as f:
        f.write(midi_note(program, pitch, velocity, seconds))
    try:
        done = subprocess.run(["fluidsynth", "-ni", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(sample_rate),
                               "-F", str(out), font, f.name], capture_output=True, text=True)
    finally:
        Path(f.name).unlink()
    if done.returncode != 0 or not out.exists():
        raise DataError(f"FluidSynth could not render pitch {pitch}: {done.stderr.strip()[:200]}",
                        "check the soundfont (genlab looks in /usr/share/sounds/sf2)")
    return out


def make_notes(out: Path, pitches: tuple[int, ...] = tuple(range(48, 73)),
               instruments: tuple[str, ...] = ("piano", "guitar", "violin", "flute", "trumpet", "organ"),
               velocities: tuple[int, ...] = (64, 100, 127), seconds: float = 1.0) -> Path:
    """Every instrument at every velocity for each pitch, under OUT/PITCH/ (the pitch is the class)."""
    unknown = [i for i in instruments if i not in INSTRUMENTS]
    if unknown:
        raise DataError(f"unknown instrument {unknown[0]!r}", f"use some of {', '.join(INSTRUMENTS)}")
    for pitch in pitches:
        for name in instruments:
            for velocity in velocities:
                render_note(Path(out) / str(pitch) / f"{name}-{velocity}.wav", INSTRUMENTS[name], pitch, velocity,
                            seconds)
    return Path(out)

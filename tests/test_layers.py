"""The import rules docs/architecture.md states, checked on the source: which layer may import what, and what
the CLI imports before it runs anything."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

GENLAB = Path(__file__).resolve().parents[1] / "genlab"


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions' lazy imports included), resolved to absolute names."""
    package = ".".join(path.relative_to(GENLAB.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def files(*parts: str) -> list[Path]:
    return sorted(GENLAB.joinpath(*parts).rglob("*.py"))


def offenders(paths: list[Path], banned: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in paths:
        bad = sorted(m for m in imports(path) if any(m == b or m.startswith(b + ".") for b in banned))
        if bad:
            out[str(path.relative_to(GENLAB.parent))] = bad
    return out


RUN_LAYER = ("genlab.cli", "genlab.serve", "genlab.tune", "genlab.engine", "genlab.evaluation")


def test_models_import_no_run_layer_and_no_lightning():
    assert offenders(files("models"), (*RUN_LAYER, "lightning", "pytorch_lightning", "optuna", "fastapi",
                                       "jsonargparse")) == {}


def test_data_imports_no_model_and_no_run_layer():
    assert offenders(files("data"), ("genlab.models", *RUN_LAYER, "lightning")) == {}


def test_metrics_import_no_model_no_run_layer_and_print_nothing():
    assert offenders(files("metrics"), ("genlab.models", *RUN_LAYER, "lightning")) == {}
    printing = [
        f"{path.name}:{node.lineno}"
        for path in files("metrics")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert printing == [], "metrics report through logging; the caller decides what a person sees"


@pytest.mark.parametrize("library,home", [("lightning", "engine"), ("optuna", "tune"), ("fastapi", "serve"),
                                          ("uvicorn", "serve"), ("sentence_transformers", "models/diffusion")])
def test_heavy_libraries_are_imported_only_by_the_layer_that_uses_them(library, home):
    elsewhere = [p for p in files() if not str(p.relative_to(GENLAB)).startswith(home)]
    assert offenders(elsewhere, (library,)) == {}


def test_the_cli_starts_without_torch_or_the_parser_library():
    code = ("import sys; from genlab.cli import main; main(['--help']); "
            "heavy = [m for m in ('torch', 'jsonargparse', 'lightning', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_model_verb_imports_no_lightning_optuna_or_fastapi(tmp_path):
    from genlab.models.vae import VAE, VAEConfig

    VAE(VAEConfig(image_size=(8, 8), widths=(4,), hidden_dim=8, latent_dim=2)).save_pretrained(tmp_path / "m")
    code = (
        f"import sys; from genlab.cli import main; assert main(['sample', {str(tmp_path / 'm')!r}, '--n', '4', "
        f"'--out', {str(tmp_path / 's.png')!r}]) == 0; "
        "heavy = [m for m in ('lightning', 'optuna', 'fastapi', 'jsonargparse', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert (tmp_path / "s.png").exists()


def test_every_family_declares_what_it_can_do():
    from genlab.models import FAMILIES, families_with, get_family
    from genlab.models.base import CAPABILITIES, ImageSampler, Reconstructor, TableSampler, TextGenerator, Translator

    for family in FAMILIES:
        assert any(issubclass(get_family(family), c) for c in CAPABILITIES), family
    assert families_with(ImageSampler) == ["vae", "gan", "diffusion"]
    assert families_with(TextGenerator) == ["rnn", "gpt"]
    assert families_with(Reconstructor) == ["vae"] and families_with(Translator) == ["pix2pix"]
    assert families_with(TableSampler) == ["tabular"]

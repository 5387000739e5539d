"""sRGB <-> CIE L*a*b* (D65), for colourisation: a grey image is the lightness L, the colour is (a, b).

Lab separates what a grey photo keeps (L: perceived lightness, 0 black .. 100 white) from what it lost (a:
green- to red-ness, b: blue- to yellow-ness), and a unit step is roughly one just-noticeable difference
everywhere, so colourisation models predict ab from L (Zhang et al. 2016; Isola et al. 2017, sec. 4.5) and
colour errors are measured as distances in it (deltaE, CIE 1976).

The formulas are the standard ones: the sRGB transfer curve and primaries (IEC 61966-2-1), XYZ -> Lab with the
CIE's cube root and its linear toe below (6/29)^3. The white is the matrix's own image of RGB (1, 1, 1), which
is D65 to four digits, so that every R = G = B pixel has a = b = 0 exactly. scikit-image's rgb2lab (the check in
tests/test_colourise.py) agrees to within 0.01.

All functions take and return float tensors shaped (B, C, H, W): RGB in [0, 1], Lab with L in [0, 100].
"""

from __future__ import annotations

import torch

# linear sRGB -> CIE XYZ (IEC 61966-2-1, the D65 primaries); rows X, Y, Z
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE = _XYZ_FROM_RGB.sum(dim=1)  # (0.950456, 1.0, 1.088754): D65, the image of RGB white
_DELTA = 6 / 29  # the CIE's break between the cube root and its linear toe

AB_RANGE = 110.0
"""|a|, |b| of every sRGB colour lie below this (blue's b = -107.9 is the extreme): colourisation networks predict
ab / 110 in [-1, 1], as pytorch-CycleGAN-and-pix2pix's colourisation data does."""


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 3x3 matrix applied to the channels of (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve undone: gamma-encoded values -> linear light."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> gamma-encoded sRGB values."""
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA**3, t.clamp_min(_DELTA**3) ** (1 / 3), t / (3 * _DELTA**2) + 4 / 29)


def _f_inverse(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) L*a*b*."""
    fx, fy, fz = _f(_mix(_XYZ_FROM_RGB, srgb_to_linear(rgb)) / _WHITE.to(rgb)[:, None, None]).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lightness(grey: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) grey sRGB in [0, 1] -> (B, 1, H, W) L in [0, 100]: a grey pixel's luminance is its linear value."""
    return 116 * _f(srgb_to_linear(grey)) - 16


def grey(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB -> (B, 1, H, W): the grey of the same lightness, the sRGB encoding of the luminance Y.
    Its L is the colour image's L, so grey(x) is exactly what a black-and-white rendering of x keeps."""
    return linear_to_srgb(_mix(_XYZ_FROM_RGB[1:2], srgb_to_linear(rgb)))


def _lab_to_linear(lab: torch.Tensor) -> torch.Tensor:
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    xyz = _f_inverse(torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)) * _WHITE.to(lab)[:, None, None]
    return _mix(_RGB_FROM_XYZ, xyz)


def _inside(linear: torch.Tensor, slack: float = 1e-5) -> torch.Tensor:
    return ((linear >= -slack) & (linear <= 1 + slack)).all(dim=1, keepdim=True)


def lab_to_rgb(lab: torch.Tensor, steps: int = 12) -> torch.Tensor:
    """(B, 3, H, W) L*a*b* -> sRGB in [0, 1]. A colour outside the sRGB gamut keeps its lightness and hue and loses
    chroma (ab scaled towards 0, by bisection, `steps` halvings) until it fits, the chroma-reduction gamut mapping
    of CSS Color 4 (sec. 13.2): clipping R, G and B one by one instead would change L, which a colouriser must keep.
    Greys (a = b = 0) are in the gamut for every L in [0, 100], so the search always has a foot to stand on."""
    lab = torch.cat([lab[:, :1].clamp(0, 100), lab[:, 1:]], dim=1)
    linear = _lab_to_linear(lab)
    inside = _inside(linear)
    if not inside.all():
        low, high = torch.zeros_like(inside, dtype=lab.dtype), torch.ones_like(inside, dtype=lab.dtype)
        for _ in range(steps):
            middle = (low + high) / 2
            fits = _inside(_lab_to_linear(torch.cat([lab[:, :1], lab[:, 1:] * middle], dim=1)))
            low, high = torch.where(fits, middle, low), torch.where(fits, high, middle)
        scale = torch.where(inside, torch.ones_like(low), low)
        linear = _lab_to_linear(torch.cat([lab[:, :1], lab[:, 1:] * scale], dim=1))
    return linear_to_srgb(linear.clamp(0, 1))


def delta_e(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CIE 1976 colour difference of two sRGB images (B, 3, H, W) -> (B, H, W): the Euclidean distance in Lab."""
    return (rgb_to_lab(a) - rgb_to_lab(b)).norm(dim=1)


def chroma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB -> (B, 1, H, W) C*ab = sqrt(a^2 + b^2): 0 for grey, about 100 for the primaries."""
    return rgb_to_lab(rgb)[:, 1:].norm(dim=1, keepdim=True)

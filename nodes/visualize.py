"""A readable chart of prior vectors: one row per prior, its values and its Fourier amplitudes.

Used by the VisualizePriors node (-> PreviewImage) and handy in notebooks. Pure torch + PIL.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from restorex_core.priors import Priors

# One colour per prior row (colour-blind safe Okabe-Ito palette).
_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))
_BACKGROUND, _INK, _GRID = (250, 250, 248), (30, 30, 30), (205, 205, 200)

HEADER, ROW, LABEL, MARGIN = 34, 132, 128, 10


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], values: np.ndarray, *, bars: bool,
           colour: tuple[int, int, int], title: str) -> None:
    """Plot ``values`` inside ``box`` (x0, y0, x1, y1): a line around a zero axis, or bars from 0 up."""
    x0, y0, x1, y1 = box
    small = _font(11)
    draw.rectangle(box, outline=_GRID)
    top, bottom = y0 + 16, y1 - 4
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak if peak > 0 else 1.0
    n = max(len(values), 1)
    xs = [x0 + 2 + (x1 - x0 - 4) * (i + 0.5) / n for i in range(len(values))]
    if bars:
        base = bottom
        for x, v in zip(xs, values, strict=True):
            h = (bottom - top) * float(v) / scale
            draw.rectangle((round(x - (x1 - x0) / (2.6 * n)), round(base - h), round(x + (x1 - x0) / (2.6 * n)), base),
                           fill=colour)
        label = f"{title}   max {peak:.3g}"
    else:
        mid = (top + bottom) / 2
        draw.line((x0 + 1, mid, x1 - 1, mid), fill=_GRID)
        points = [(x, mid - (bottom - top) / 2 * float(v) / scale) for x, v in zip(xs, values, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=colour)
        label = f"{title}   range ±{peak:.3g}"
    draw.text((x0 + 4, y0 + 2), label, fill=_INK, font=small)


def render_chart(vectors: list[Tensor], *, blocks: tuple[int, ...], caption: str, width: int = 896) -> Tensor:
    """Chart of N prior vectors of one image.

    Args:
        vectors: N tensors of shape (D,).
        blocks: the 1-based CLIP block of each vector (row labels).
        caption: header text.
        width: image width in pixels (>= 400).
    Returns:
        (3, H, width) float32 in [0, 1].
    """
    if width < 400:
        raise ValueError(f"chart width must be at least 400 pixels, got {width}")
    height = HEADER + ROW * len(vectors) + MARGIN
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 9), caption, fill=_INK, font=_font(15))
    plot_w = (width - LABEL - 3 * MARGIN) // 2
    for row, (vector, block) in enumerate(zip(vectors, blocks, strict=True)):
        v = vector.detach().float().cpu()
        amplitude = torch.fft.rfft(v, norm="ortho").abs()  # |FFT(P_i)|, what FFEDM diffuses
        y0 = HEADER + row * ROW
        colour = _COLOURS[row % len(_COLOURS)]
        draw.text((MARGIN, y0 + 30), f"P{row + 1}", fill=colour, font=_font(22))
        draw.text((MARGIN, y0 + 60), f"CLIP block {block}", fill=_INK, font=_font(12))
        draw.text((MARGIN, y0 + 78), f"mean {float(v.mean()):+.3f}", fill=_INK, font=_font(11))
        draw.text((MARGIN, y0 + 94), f"std  {float(v.std(correction=0)):.3f}", fill=_INK, font=_font(11))
        left = LABEL + MARGIN
        box_v = (left, y0 + 4, left + plot_w, y0 + ROW - 8)
        box_f = (left + plot_w + MARGIN, y0 + 4, left + 2 * plot_w + MARGIN, y0 + ROW - 8)
        _panel(draw, box_v, v.numpy(), bars=False, colour=colour, title=f"values (D={v.numel()})")
        _panel(draw, box_f, amplitude.numpy(), bars=True, colour=colour,
               title=f"Fourier amplitude ({amplitude.numel()} bins)")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)  # (H, W, 3)
    return pixels.permute(2, 0, 1).contiguous()


def render_priors(priors: Priors, *, width: int = 896) -> Tensor:
    """One chart per image of the batch.

    Returns:
        (B, 3, H, width) float32 in [0, 1].
    """
    kind = priors.source + (", enhanced" if priors.enhanced else "")
    charts = []
    for b in range(priors.batch_size):
        caption = f"RestoreX priors  |  {kind}  |  image {b + 1} of {priors.batch_size}"
        charts.append(render_chart([v[b] for v in priors.vectors], blocks=priors.blocks, caption=caption, width=width))
    return torch.stack(charts)

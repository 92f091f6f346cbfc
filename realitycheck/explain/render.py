"""Heatmaps drawn for people: overlays, outlined hot regions, colour bars and panels as PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _colormap(name: str) -> int:
    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if code is None:
        raise ValueError(f"unknown colormap {name!r} (OpenCV names: jet, turbo, inferno, viridis, magma, hot...)")
    return code


def _colorize(values: np.ndarray, colormap: str) -> np.ndarray:
    u8 = np.uint8(np.clip(values, 0, 1) * 255)
    return cv2.cvtColor(cv2.applyColorMap(u8, _colormap(colormap)), cv2.COLOR_BGR2RGB)


def _fit(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if heat.shape != (size[1], size[0]):
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0, 1)


def overlay(image_region: Image.Image, heatmap: np.ndarray, opacity: float = 0.45,
            colormap: str = "jet") -> Image.Image:
    """The heatmap blended over the image region it explains (resized to fit if needed)."""
    if not 0 <= opacity <= 1:
        raise ValueError("opacity must be between 0 and 1")
    base = np.asarray(image_region.convert("RGB"), dtype=np.float32)
    colour = _colorize(_fit(heatmap, image_region.size), colormap).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip((1 - opacity) * base + opacity * colour, 0, 255)))


@dataclass(frozen=True)
class HotRegion:
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in heatmap pixels
    area: float  # share of the heatmap's pixels
    heat: float  # share of the total heat inside the region


def _hot_mask(heat: np.ndarray, percentile: float) -> np.ndarray:
    """1 where `heat` reaches its `percentile` (and is above zero), else 0."""
    return np.uint8(heat >= max(float(np.percentile(heat, percentile)), 1e-6))


def hot_regions(heatmap: np.ndarray, top_k: int = 3, percentile: float = 90) -> list[HotRegion]:
    """The top-k connected components above the heatmap's `percentile`, by heat they hold."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, 1)
    if heat.size == 0 or heat.max() <= 0:
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_hot_mask(heat, percentile), connectivity=8)
    total = float(heat.sum())
    comps = []
    for lab in range(1, n):
        x, y, w, h, area = stats[lab]
        comps.append(HotRegion((int(x), int(y), int(x + w), int(y + h)), float(area) / heat.size,
                               float(heat[labels == lab].sum()) / total))
    return sorted(comps, key=lambda r: -r.heat)[:top_k]


def outline_hot_regions(img: Image.Image, heatmap: np.ndarray, top_k: int = 3, percentile: float = 90,
                        color: tuple[int, int, int] = (255, 255, 255), width: int = 2) -> Image.Image:
    """A copy of `img` with the contours of the top-k hottest connected regions drawn on it."""
    heat = _fit(heatmap, img.size)
    regions = hot_regions(heat, top_k, percentile)
    out = np.ascontiguousarray(np.asarray(img.convert("RGB")).copy())
    if not regions:
        return Image.fromarray(out)
    mask = _hot_mask(heat, percentile)
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.zeros_like(mask)
    for r in regions:  # find each kept component by a pixel inside its box
        l, t, rr, b = r.box
        sub = labels[t:b, l:rr]
        vals, counts = np.unique(sub[sub > 0], return_counts=True)
        if len(vals):
            keep[labels == vals[counts.argmax()]] = 1
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, int(width)))
    return Image.fromarray(out)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def side_by_side(original: Image.Image, overlay_img: Image.Image, gap: int = 8,
                 background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Original and overlay next to each other at the same height."""
    a = original.convert("RGB")
    b = overlay_img.convert("RGB")
    if b.height != a.height:
        b = b.resize((max(1, round(b.width * a.height / b.height)), a.height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (a.width + gap + b.width, a.height), background)
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    return canvas


def colorbar_image(length: int, thickness: int = 12, colormap: str = "jet", vertical: bool = False,
                   label: str = "low  to  high evidence") -> Image.Image:
    """A colour bar with its label; horizontal (label below) or vertical (high at the top)."""
    length = max(16, int(length))
    ramp = np.linspace(0, 1, length, dtype=np.float32)
    font = _font(11)
    if vertical:
        bar = _colorize(ramp[::-1, None].repeat(thickness, 1), colormap)
        tw = max(font.getbbox(s)[2] for s in ("high", "low")) + 4
        canvas = Image.new("RGB", (thickness + 4 + tw, length), (255, 255, 255))
        canvas.paste(Image.fromarray(bar), (0, 0))
        d = ImageDraw.Draw(canvas)
        d.text((thickness + 4, 0), "high", fill=(0, 0, 0), font=font)
        d.text((thickness + 4, length - 14), "low", fill=(0, 0, 0), font=font)
        return canvas
    bar = _colorize(ramp[None, :].repeat(thickness, 0), colormap)
    canvas = Image.new("RGB", (length, thickness + 16), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    d = ImageDraw.Draw(canvas)
    tw = d.textbbox((0, 0), label, font=font)[2]
    d.text((max(0, (length - tw) // 2), thickness + 2), label, fill=(0, 0, 0), font=font)
    return canvas


def render_panel(image_region: Image.Image, heatmap: np.ndarray, *, opacity: float = 0.45,
                 colormap: str = "jet", outline: bool = True, top_k: int = 3, caption: str | None = None,
                 max_side: int | None = 512) -> Image.Image:
    """Original | overlay (with the hottest regions outlined), a colour bar and an optional caption."""
    img = image_region.convert("RGB")
    heat = _fit(heatmap, img.size)
    if max_side and max(img.size) > max_side:  # keep panels light for the browser
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        heat = _fit(heat, size)
    ov = overlay(img, heat, opacity, colormap)
    if outline:
        ov = outline_hot_regions(ov, heat, top_k=top_k)
    pair = side_by_side(img, ov)
    bar = colorbar_image(ov.width, colormap=colormap)
    font = _font(12)
    cap_h = 18 if caption else 0
    canvas = Image.new("RGB", (pair.width, pair.height + 4 + bar.height + cap_h), (255, 255, 255))
    canvas.paste(pair, (0, 0))
    canvas.paste(bar, (pair.width - ov.width, pair.height + 4))
    if caption:
        ImageDraw.Draw(canvas).text((2, pair.height + 4 + bar.height + 2), caption, fill=(0, 0, 0), font=font)
    return canvas


def to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

"""Pictures of what a 2-D classifier learns: its decision surface and its first layer's lines.

NumPy only, on host arrays; images are (H, W, 3) uint8, row 0 at the top. `encode_png` turns
one into PNG bytes without PIL (`zlib` and `struct`), for TensorBoard's Images tab.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Ten colors told apart easily (Tableau 10); class k gets PALETTE[k % 10].
PALETTE = np.array(
    [
        (31, 119, 180),  # blue
        (255, 127, 14),  # orange
        (44, 160, 44),  # green
        (214, 39, 40),  # red
        (148, 103, 189),  # purple
        (140, 86, 75),  # brown
        (227, 119, 194),  # pink
        (127, 127, 127),  # gray
        (188, 189, 34),  # olive
        (23, 190, 207),  # cyan
    ],
    dtype=np.uint8,
)
WHITE = np.array((255, 255, 255), dtype=np.float64)
INK = np.array((35, 35, 35), dtype=np.uint8)  # point outlines and hidden-unit lines
# A confident region is its class color mixed with this much white, so the points drawn on it
# in the full color still stand out; where the classes tie it is white.
BACKGROUND_WHITE = 0.4
POINT_RADIUS = 2.0  # px, the filled disc; the outline adds 1 px around it
LINE_HALF_WIDTH = 0.75  # px: lines are ~1.5 px wide, with a 0.5 px anti-aliased edge


# ----------------------------------------------------------------------------- PNG


def encode_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) RGB or (H, W, 4) RGBA uint8 image as PNG bytes (8 bits, no interlace)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or 0 in rgb.shape:
        raise ValueError(
            f"encode_png: expected an (H, W, 3) or (H, W, 4) uint8 array, "
            f"got shape {rgb.shape} dtype {rgb.dtype}"
        )
    h, w, c = rgb.shape
    # Each scanline is its filter type byte (0: None) followed by the row's bytes.
    raw = np.empty((h, 1 + w * c), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = rgb.reshape(h, w * c)
    color_type = 2 if c == 3 else 6  # truecolor, truecolor with alpha
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """length (big-endian), type, data, CRC-32 of type + data."""
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# ----------------------------------------------------------------------------- canvas


@dataclass(frozen=True)
class Canvas:
    """A width x height pixel grid over a rectangle of the data plane, row 0 at the top (max y).

    `extent` = (x0_min, x0_max, x1_min, x1_max) in raw data coordinates: the outer edges of
    the edge pixels. Each axis is scaled on its own, so the picture is always square.
    """

    extent: tuple[float, float, float, float]
    width: int
    height: int

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Data units per pixel along x0 and along x1."""
        x0_min, x0_max, x1_min, x1_max = self.extent
        return (x0_max - x0_min) / self.width, (x1_max - x1_min) / self.height

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(m, 2) data points -> (m, 2) float (column, row); pixel (r, c) is [c, c+1) x [r, r+1)."""
        points = np.asarray(points, dtype=np.float64)
        x0_min, _, _, x1_max = self.extent
        sx, sy = self.pixel_size
        return np.stack(((points[:, 0] - x0_min) / sx, (x1_max - points[:, 1]) / sy), axis=1)

    def centers(self) -> np.ndarray:
        """(height * width, 2) data coordinates of the pixel centers, row by row."""
        x0_min, _, _, x1_max = self.extent
        sx, sy = self.pixel_size
        x0 = x0_min + (np.arange(self.width) + 0.5) * sx
        x1 = x1_max - (np.arange(self.height) + 0.5) * sy
        g0, g1 = np.meshgrid(x0, x1)  # (height, width) each
        return np.stack((g0.ravel(), g1.ravel()), axis=1)


def canvas_for(x: np.ndarray, size: int = 256, margin: float = 0.1) -> Canvas:
    """A size x size canvas over the bounding box of the (n, 2) points, widened by `margin`."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"expected (n, 2) points with n > 0, got shape {x.shape}")
    lo, hi = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    span = hi - lo
    # a single point, or all points on one line, still gets a box around it
    span = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
    lo, hi = lo - margin * span, hi + margin * span
    return Canvas((float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])), size, size)


# ----------------------------------------------------------------------------- surface


def class_colors(n_classes: int) -> np.ndarray:
    """(n_classes, 3) uint8: the palette, repeated past ten classes."""
    return PALETTE[np.arange(n_classes) % len(PALETTE)]


def decision_surface(
    probabilities: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    size: int = 256,
    margin: float = 0.1,
    max_points: int = 2000,
    seed: int = 0,
    chunk: int = 16384,
) -> tuple[np.ndarray, Canvas]:
    """The (size, size, 3) uint8 picture of a 2-D classifier, and the canvas it is drawn on.

    `probabilities` maps raw (m, 2) float64 points to (m, n_classes) class probabilities (a
    binary model supplies both columns); it is called on at most `chunk` points at a time.
    Each pixel takes its most probable class's color, whitened as that probability falls
    towards 1 / n_classes, so the boundary shows as a soft white band. Up to `max_points` of
    the (x, y) points (a seeded sample, drawn in random order so that no class always lies on
    top) are drawn as discs in their class color with a dark outline.
    """
    if n_classes < 2:
        raise ValueError(f"decision_surface: n_classes must be >= 2, got {n_classes}")
    x, y = np.asarray(x), np.asarray(y)  # no copy: x may be a large memory map
    if y.shape[0] != x.shape[0] or y.size != y.shape[0]:
        raise ValueError(f"decision_surface: {x.shape[0]} points but labels of shape {y.shape}")
    canvas = canvas_for(x, size, margin)
    colors = class_colors(n_classes)

    grid = canvas.centers()  # (size * size, 2)
    p = np.empty((grid.shape[0], n_classes), dtype=np.float64)
    for start in range(0, grid.shape[0], chunk):
        part = np.asarray(probabilities(grid[start : start + chunk]), dtype=np.float64)
        if part.shape != (min(chunk, grid.shape[0] - start), n_classes):
            raise ValueError(
                f"decision_surface: probabilities returned shape {part.shape} for "
                f"{min(chunk, grid.shape[0] - start)} points; expected (m, {n_classes})"
            )
        p[start : start + chunk] = part
    best = p.argmax(axis=1)
    # confidence 0 where all classes tie (p = 1/k), 1 where one class is certain
    confidence = np.clip(
        (p[np.arange(len(p)), best] - 1.0 / n_classes) / (1.0 - 1.0 / n_classes), 0, 1
    )
    white = 1.0 - (1.0 - BACKGROUND_WHITE) * confidence  # (size * size,)
    rgb = colors[best] + (WHITE - colors[best]) * white[:, None]
    image = np.rint(rgb).astype(np.uint8).reshape(size, size, 3)

    # a seeded sample in random order (Generator.choice draws k of n in O(k) when k << n)
    rng = np.random.default_rng(seed)
    order = rng.choice(x.shape[0], size=min(max_points, x.shape[0]), replace=False)
    labels = np.rint(y[order].astype(np.float64)).astype(np.int64).reshape(-1)  # BCE: (n, 1)
    _draw_discs(image, canvas.to_pixels(x[order]), colors[labels % len(colors)])
    return image, canvas


def _draw_discs(image: np.ndarray, centers: np.ndarray, fill: np.ndarray) -> None:
    """Filled discs of POINT_RADIUS with a 1 px INK outline, later discs over earlier ones.

    `centers`: (m, 2) float (column, row); `fill`: (m, 3) uint8. All discs at once: every
    pixel near a center gets the key 2 * point + (1 inside the fill, 0 on the outline), and
    each pixel shows its largest key, so point i covers points before it, outline included.
    """
    h, w = image.shape[:2]
    reach = int(np.ceil(POINT_RADIUS + 1.0))
    offsets = np.arange(-reach, reach + 1)
    cols = np.floor(centers[:, 0]).astype(np.int64)[:, None, None] + offsets[None, None, :]
    rows = np.floor(centers[:, 1]).astype(np.int64)[:, None, None] + offsets[None, :, None]
    # distance from each nearby pixel's center to the point: (m, 2 reach + 1, 2 reach + 1)
    dist = np.hypot(cols + 0.5 - centers[:, 0, None, None], rows + 0.5 - centers[:, 1, None, None])
    inside = (dist <= POINT_RADIUS + 1.0) & (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    cols, rows = np.broadcast_to(cols, dist.shape), np.broadcast_to(rows, dist.shape)
    point = np.broadcast_to(np.arange(len(centers))[:, None, None], dist.shape)
    keys = 2 * point[inside] + (dist[inside] <= POINT_RADIUS)
    pixels = rows[inside] * w + cols[inside]
    top = np.full(h * w, -1, dtype=np.int64)
    np.maximum.at(top, pixels, keys)
    drawn = np.flatnonzero(top >= 0)
    key = top[drawn]
    flat = image.reshape(h * w, 3)
    flat[drawn] = np.where((key % 2 == 1)[:, None], fill[key // 2], INK)


# ----------------------------------------------------------------------------- hidden units


def hidden_lines(
    canvas_image: np.ndarray,
    canvas: Canvas,
    W0: np.ndarray,
    b0: np.ndarray,
    x_mean: np.ndarray | None = None,
    x_std: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of `canvas_image` with the line each first-layer unit draws, w·x̂ + b = 0.

    W0 (2, h) and b0 (h,) act on standardized inputs x̂ = (x - x_mean) / x_std (or on raw x
    when those are None), so in raw coordinates unit j's line is (w/std)·x + b - (w/std)·mean
    = 0. Lines are dark, ~1.5 px wide and anti-aliased; a unit with zero weights draws none.
    """
    W0 = np.asarray(W0, dtype=np.float64)
    b0 = np.asarray(b0, dtype=np.float64).reshape(-1)
    if W0.ndim != 2 or W0.shape[0] != 2 or b0.shape != (W0.shape[1],):
        raise ValueError(
            f"hidden_lines: expected W0 (2, h) and b0 (h,), got {W0.shape} and {b0.shape}"
        )
    mean = np.zeros(2) if x_mean is None else np.asarray(x_mean, dtype=np.float64).reshape(2)
    std = np.ones(2) if x_std is None else np.asarray(x_std, dtype=np.float64).reshape(2)
    a = W0 / std[:, None]  # (2, h): raw-coordinate normals
    c = b0 - mean @ a  # (h,)
    keep = (np.abs(W0).max(axis=0) > 1e-12) & np.isfinite(a).all(axis=0) & np.isfinite(c)
    a, c = a[:, keep], c[keep]

    # In pixel coordinates (column u, row v of a pixel's center) unit j's value is linear:
    # f = a0 (x0_min + u sx) + a1 (x1_max - v sy) + c = du u + dv v + f00.
    x0_min, _, _, x1_max = canvas.extent
    sx, sy = canvas.pixel_size
    du, dv = a[0] * sx, -a[1] * sy
    f00 = a[0] * x0_min + a[1] * x1_max + c
    norm = np.hypot(du, dv)  # |grad f| per pixel, so |f| / norm is the distance in pixels
    coverage = np.zeros(canvas.height * canvas.width)
    # Along its long axis a line crosses each column (or row) once: find where, and score the
    # few pixels beside that crossing. A line no steeper than 45 degrees is at most sqrt(2)
    # times farther across than along, so 6 pixels cover the 1.25 px it reaches.
    near = np.arange(-3, 3)
    for flat in (True, False):  # flat: |dv| >= |du|, one crossing per column
        j = np.flatnonzero((np.abs(dv) >= np.abs(du)) == flat)
        if not len(j):
            continue
        along = np.arange(canvas.width if flat else canvas.height)  # (L,)
        d_along, d_across = (du[j], dv[j]) if flat else (dv[j], du[j])
        cross = -(f00[j, None] + d_along[:, None] * (along + 0.5)) / d_across[:, None]  # (k, L)
        n_across = canvas.height if flat else canvas.width
        cross = np.clip(cross, -8, n_across + 8)  # off the canvas (or far off): no int overflow
        across = np.floor(cross)[:, :, None].astype(np.int64) + near  # (k, L, 6)
        along = np.broadcast_to(along[None, :, None], across.shape)
        cols, rows = (along, across) if flat else (across, along)
        f = f00[j, None, None] + du[j, None, None] * (cols + 0.5) + dv[j, None, None] * (rows + 0.5)
        alpha = np.clip(LINE_HALF_WIDTH + 0.5 - np.abs(f) / norm[j, None, None], 0.0, 1.0)
        ok = (alpha > 0) & (cols >= 0) & (cols < canvas.width) & (rows >= 0)
        ok &= rows < canvas.height
        np.maximum.at(coverage, rows[ok] * canvas.width + cols[ok], alpha[ok])
    coverage = coverage.reshape(canvas.height, canvas.width)
    image = np.asarray(canvas_image, dtype=np.float64)[..., :3]
    image = image + (INK - image) * coverage[..., None]
    return np.rint(image).astype(np.uint8)


# ----------------------------------------------------------------------------- hidden-unit picture

MAX_LINES = 8  # more lines than this cross the picture too often to be read
# A 3 x 5 pixel font for captions: each glyph is five rows of three pixels, '#' inked.
FONT = {
    "0": "### #.# #.# #.# ###",
    "1": ".#. ##. .#. .#. ###",
    "2": "### ..# ### #.. ###",
    "3": "### ..# ### ..# ###",
    "4": "#.# #.# ### ..# ..#",
    "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###",
    "7": "### ..# ..# ..# ..#",
    "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###",
    "A": ".#. #.# ### #.# #.#",
    "E": "### #.. ##. #.. ###",
    "F": "### #.. ##. #.. #..",
    "G": "### #.. #.# #.# ###",
    "I": "### .#. .#. .#. ###",
    "L": "#.. #.. #.. #.. ###",
    "N": "##. #.# #.# #.# #.#",
    "O": ".#. #.# #.# #.# .#.",
    "R": "##. #.# ##. #.# #.#",
    "S": ".## #.. .#. ..# ##.",
    "T": "### .#. .#. .#. .#.",
    "U": "#.# #.# #.# #.# ###",
    " ": "... ... ... ... ...",
}
CAPTION_SCALE = 2  # font pixels are this many image pixels wide
CAPTION_PAD = 3  # px of white around the caption's text


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a white band below it holding `text` (FONT's characters) in INK."""
    glyphs = [np.array([[c == "#" for c in row] for row in FONT[ch].split()]) for ch in text]
    s, pad = CAPTION_SCALE, CAPTION_PAD
    line = np.zeros((5, 4 * len(glyphs)), dtype=bool)  # each glyph and a blank column
    for k, glyph in enumerate(glyphs):
        line[:, 4 * k : 4 * k + 3] = glyph
    ink = np.kron(line, np.ones((s, s), dtype=bool))[:, : image.shape[1] - 2 * pad]
    band = np.full((ink.shape[0] + 2 * pad, image.shape[1], 3), 255, dtype=np.uint8)
    band[pad : pad + ink.shape[0], pad : pad + ink.shape[1]][ink] = INK
    return np.concatenate([np.asarray(image)[..., :3], band], axis=0)


def strongest_units(W0: np.ndarray, W1: np.ndarray, limit: int) -> np.ndarray:
    """Indices (ascending) of the `limit` first-layer units with the largest |w_in| |w_out|:
    how sharp a unit's line is times how much the next layer listens to it."""
    W0, W1 = np.asarray(W0, dtype=np.float64), np.asarray(W1, dtype=np.float64)
    strength = np.linalg.norm(W0, axis=0) * np.linalg.norm(W1, axis=1)  # (h,)
    strength = np.where(np.isfinite(strength), strength, -1.0)
    if len(strength) <= limit:
        return np.arange(len(strength))
    return np.sort(np.argsort(-strength, kind="stable")[:limit])


def hidden_units(
    canvas_image: np.ndarray,
    canvas: Canvas,
    W0: np.ndarray,
    b0: np.ndarray,
    W1: np.ndarray,
    x_mean: np.ndarray | None = None,
    x_std: np.ndarray | None = None,
    limit: int = MAX_LINES,
) -> np.ndarray:
    """The first layer's lines on the decision surface, captioned with which units they are:
    all of them when there are at most `limit`, else the `limit` strongest (W1: the next
    layer's weights, (h, k))."""
    h = np.asarray(W0).shape[-1]
    keep = strongest_units(W0, W1, limit)
    W0 = np.asarray(W0)[:, keep]
    b0 = np.asarray(b0).reshape(-1)[keep]
    image = hidden_lines(canvas_image, canvas, W0, b0, x_mean, x_std)
    unit = "UNIT" if h == 1 else "UNITS"
    text = f"ALL {h} {unit}" if len(keep) == h else f"{len(keep)} STRONGEST OF {h} UNITS"
    return caption(image, text)


# ----------------------------------------------------------------------------- confusion

_FONT_SCALE = 2  # each font pixel is 2 x 2 image pixels
# the digits of FONT (the captions' font) at that scale, for counts and class indices
_GLYPHS = {
    ch: np.kron([[c == "#" for c in row] for row in FONT[ch].split()], np.ones((_FONT_SCALE,) * 2))
    > 0
    for ch in "0123456789"
}
_ADVANCE = 4 * _FONT_SCALE  # a digit and one pixel of space
_GLYPH_HEIGHT = 5 * _FONT_SCALE
GRID = np.array((210, 210, 210), dtype=np.uint8)


def _draw_number(image: np.ndarray, text: str, cx: int, cy: int, color: np.ndarray) -> None:
    """Digits centered on pixel (cx, cy)."""
    width = len(text) * _ADVANCE - _FONT_SCALE
    x0, y0 = cx - width // 2, cy - _GLYPH_HEIGHT // 2
    for k, ch in enumerate(text):
        glyph = _GLYPHS[ch]
        x = x0 + k * _ADVANCE
        image[y0 : y0 + glyph.shape[0], x : x + glyph.shape[1]][glyph] = color


def confusion_image(confusion: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 picture of a confusion matrix: row i = true class i, column j =
    predicted class j, each cell holding its count and shaded by its share of the row (the
    diagonal is each class's recall); class indices along the top and the left."""
    confusion = np.asarray(confusion, dtype=np.int64)
    n = confusion.shape[0]
    cell = max(32, len(str(int(confusion.max(initial=0)))) * _ADVANCE + 10)
    margin = len(str(n - 1)) * _ADVANCE + 12
    size = margin + n * cell + 1
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)  # (n, n)
    color = WHITE + share[..., None] * (PALETTE[0].astype(np.float64) - WHITE)  # (n, n, 3)
    color = np.round(color).astype(np.uint8)
    for i in range(n):
        top = margin + i * cell
        _draw_number(image, str(i), margin // 2, top + cell // 2, INK)  # true class
        _draw_number(image, str(i), top + cell // 2, margin // 2, INK)  # predicted class
        for j in range(n):
            left = margin + j * cell
            image[top : top + cell, left : left + cell] = color[i, j]
            ink = WHITE.astype(np.uint8) if share[i, j] > 0.5 else INK
            _draw_number(image, str(confusion[i, j]), left + cell // 2, top + cell // 2, ink)
    for k in range(n + 1):  # grid lines
        image[margin + k * cell, margin:] = GRID
        image[margin:, margin + k * cell] = GRID
    return image

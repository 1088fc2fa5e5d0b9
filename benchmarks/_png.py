"""A line chart written as a PNG with the standard library only (zlib + struct).

matplotlib is not a dependency of galaxy_actors, and one chart does not earn it a place:
this draws axes, ticks, polylines, a legend and text in a 5x7 bitmap font (upper case,
digits and a little punctuation), and encodes the pixels as an 8-bit RGB PNG.

>>> chart = LineChart(title="ATTEMPTS/S", x_label="S", y_label="PER S")  # doctest: +SKIP
>>> chart.add("none", [(0.0, 0.0), (1.0, 250.0)], (220, 50, 47))
>>> write_png("plot.png", *render([chart]))
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import attrs

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)

# 5x7 glyphs, one string of five "#"/"." per row.
_FONT: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    " ": (".....",) * 7,
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
}


class Canvas:
    """An RGB pixel buffer with the few drawing operations a chart needs."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                self.set(x, y, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """Bresenham's line, ``width`` pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        half = width // 2
        while True:
            for ox in range(-half, width - half):
                for oy in range(-half, width - half):
                    self.set(x0 + ox, y0 + oy, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(
        self,
        x: int,
        y: int,
        text: str,
        color: Color = BLACK,
        scale: int = 2,
        vertical: bool = False,
    ) -> None:
        """Draw ``text`` (upper-cased) with its top-left corner at x, y; ``vertical`` runs
        it bottom to top."""
        for k, char in enumerate(text.upper()):
            glyph = _FONT.get(char, _FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit != "#":
                        continue
                    for a in range(scale):
                        for b in range(scale):
                            gx = (k * 6 + col) * scale + a
                            gy = row * scale + b
                            if vertical:
                                self.set(x + gy, y - gx, color)
                            else:
                                self.set(x + gx, y + gy, color)


def text_width(text: str, scale: int = 2) -> int:
    return len(text) * 6 * scale


def write_png(path: str | Path, width: int, height: int, rgb: bytes | bytearray) -> None:
    """Encode 8-bit RGB pixels (row by row, no padding) as a PNG file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    stride = width * 3
    raw = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    Path(path).write_bytes(data)


def nice_step(span: float, ticks: int = 6) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


def _label(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


@attrs.define
class LineChart:
    """One panel: a title, axis labels and named series of (x, y) points."""

    title: str
    x_label: str
    y_label: str
    series: list[tuple[str, list[tuple[float, float]], Color]] = attrs.field(factory=list)

    def add(self, name: str, points: Sequence[tuple[float, float]], color: Color) -> None:
        self.series.append((name, list(points), color))

    def draw(self, canvas: Canvas, top: int, height: int) -> None:
        left, right = 100, canvas.width - 30
        plot_top, plot_bottom = top + 50, top + height - 60
        canvas.text(left, top + 12, self.title, scale=2)
        xs = [x for _, pts, _ in self.series for x, _ in pts] or [0.0, 1.0]
        ys = [y for _, pts, _ in self.series for _, y in pts] or [0.0, 1.0]
        x_step = nice_step(max(xs) - min(0.0, min(xs)))
        y_step = nice_step(max(ys))
        x_min = min(0.0, math.floor(min(xs) / x_step) * x_step)
        x_max = max(x_step, math.ceil(max(xs) / x_step) * x_step)
        y_max = max(y_step, math.ceil(max(ys) / y_step) * y_step)

        def px(x: float) -> int:
            return round(left + (x - x_min) / (x_max - x_min) * (right - left))

        def py(y: float) -> int:
            return round(plot_bottom - y / y_max * (plot_bottom - plot_top))

        tick = x_min
        while tick <= x_max + 1e-9:
            canvas.line(px(tick), plot_top, px(tick), plot_bottom, GRID)
            label = _label(tick)
            canvas.text(px(tick) - text_width(label) // 2, plot_bottom + 8, label)
            tick += x_step
        tick = 0.0
        while tick <= y_max + 1e-9:
            canvas.line(left, py(tick), right, py(tick), GRID)
            label = _label(tick)
            canvas.text(left - 8 - text_width(label), py(tick) - 7, label)
            tick += y_step
        canvas.line(left, plot_top, left, plot_bottom, BLACK, 2)
        canvas.line(left, plot_bottom, right, plot_bottom, BLACK, 2)
        canvas.text((left + right - text_width(self.x_label)) // 2, plot_bottom + 32, self.x_label)
        y_middle = (plot_top + plot_bottom + text_width(self.y_label)) // 2
        canvas.text(12, y_middle, self.y_label, vertical=True)
        for _name, points, color in self.series:
            for (xa, ya), (xb, yb) in itertools.pairwise(points):
                canvas.line(px(xa), py(ya), px(xb), py(yb), color, 2)
        # Legend, top right.
        width = max((text_width(name) for name, _, _ in self.series), default=0) + 50
        y = plot_top + 10
        canvas.rect(right - width - 20, y - 8, right - 5, y + 26 * len(self.series), WHITE)
        for name, _points, color in self.series:
            canvas.rect(right - width - 10, y + 5, right - width + 20, y + 8, color)
            canvas.text(right - width + 30, y, name)
            y += 26


def render(
    charts: Sequence[LineChart], width: int = 1000, panel: int = 420
) -> tuple[int, int, bytearray]:
    """Draw the charts one under the other; return width, height and the RGB pixels."""
    canvas = Canvas(width, panel * len(charts))
    for k, chart in enumerate(charts):
        chart.draw(canvas, k * panel, panel)
    return canvas.width, canvas.height, canvas.pixels

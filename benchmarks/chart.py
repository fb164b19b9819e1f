"""A small line chart drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from PIL import Image, ImageDraw

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (560, 360),
) -> Image.Image:
    """One panel: each series is a list of (x, y) points, joined in x order."""
    width, height = size
    left, right, top, bottom = 64, 150, 36, 44
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [p for values in series.values() for p in values]
    x_max = max((x for x, _ in points), default=1) or 1
    y_max = (max((y for _, y in points), default=1) or 1) * 1.1

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + x / x_max * (width - left - right),
            height - bottom - y / y_max * (height - top - bottom),
        )

    draw.text((left, 10), title, fill="black")
    draw.line([at(0, 0), at(x_max, 0)], fill="black")
    draw.line([at(0, 0), at(0, y_max)], fill="black")
    for i in range(5):
        y = y_max * i / 4
        draw.text((6, at(0, y)[1] - 6), f"{y:.0f}", fill="gray")
    for x in sorted({x for x, _ in points}):
        draw.text((at(x, 0)[0] - 4, height - bottom + 6), f"{x:g}", fill="gray")
    draw.text((left, height - 18), x_label, fill="black")
    draw.text((6, top - 14), y_label, fill="black")
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        line = [at(x, y) for x, y in sorted(values)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for px, py in line:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.text((width - right + 10, top + 16 * index), name, fill=colour)
    return image


def side_by_side(*panels: Image.Image) -> Image.Image:
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width
    return out

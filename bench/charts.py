"""Grouped bar charts as plain SVG: no plotting library, no network, diff-friendly output."""

from __future__ import annotations

from html import escape
from pathlib import Path

PALETTE = ("#8c8c8c", "#2f6fb3", "#d9822b", "#3a9a5b", "#b33a3a")


def bar_chart(
    path: Path,
    title: str,
    groups: list[str],
    series: dict[str, list[float | None]],
    unit: str,
    goal: float | None = None,
    width: int = 640,
    height: int = 300,
) -> Path:
    """One group of bars per label, one bar per series; an optional dashed goal line."""
    left, right, top, bottom = 64, 16, 40, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = max(values + ([goal] if goal else []) + [1e-9]) * 1.15
    group_w = plot_w / max(1, len(groups))
    bar_w = group_w * 0.8 / max(1, len(series))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
    ]
    for i in range(5):
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left - 3}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">{escape(unit)}</text>')
    for g, label in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series.items()):
            value = vs[g] if g < len(vs) else None
            if value is None:
                continue
            h = plot_h * value / peak
            x = x0 + s * bar_w
            out.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(name)} {escape(label)}: {value:.4g} {escape(unit)}</title></rect>"
            )
            out.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" font-size="9">{value:.3g}</text>')
        out.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{escape(label)}</text>')
    if goal:
        y = top + plot_h - plot_h * goal / peak
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#b33a3a" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{left + plot_w - 2}" y="{y - 4:.1f}" text-anchor="end" fill="#b33a3a">goal {goal:g}</text>')
    for s, name in enumerate(series):
        x = left + s * 150
        out.append(f'<rect x="{x}" y="{height - 20}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 11}">{escape(name)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    return path

"""Plain-text and Markdown tables (no TensorFlow import: the device bundle uses it too)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, markdown: bool = False
) -> str:
    """Render ``rows`` under ``headers``; numbers right-aligned, text left-aligned.

    Example:
        >>> print(format_table(["model", "ms"], [["a", 1.5]], markdown=True))
        | model |  ms |
        | :---- | --: |
        | a     | 1.5 |
    """
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(r[i], (int, float)) for r in rows) if rows else False
        for i in range(len(headers))
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if markdown:
        widths = [max(w, 3) for w in widths]

    def line(row):
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    out = [line(cells[0])]
    if markdown:
        out.append(
            "| "
            + " | ".join(
                ("-" * (w - 1) + ":") if n else (":" + "-" * (w - 1))
                for w, n in zip(widths, numeric)
            )
            + " |"
        )
    else:
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 1000 or value == int(value) and abs(value) >= 100:
            return f"{value:,.0f}"
        return (
            f"{value:.4g}"
            if abs(value) < 1
            else f"{value:.3g}"
            if abs(value) < 10
            else f"{value:.1f}"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)

"""The console's charts, drawn on the server as SVG by pygal (no JavaScript in the page).

Each function returns an inline `<svg>` string (no XML declaration, no script: pygal's
tooltip script is switched off, so the charts work under the console's CSP with JavaScript
disabled). Every chart also has its numbers as a table next to it in the page.
"""

from __future__ import annotations

import pygal
from pygal.etree import etree
from pygal.style import Style

from policyengine.console.queries import Buckets, ModelStats

EFFECT_COLOURS = {"allow": "#2e7d32", "deny": "#c62828", "require_approval": "#ef6c00", "escalate": "#6a1b9a"}
_LOOK = {"background": "white", "plot_background": "white", "foreground": "#222", "foreground_strong": "#111",
         "foreground_subtle": "#888", "font_family": "system-ui, sans-serif", "label_font_size": 11,
         "major_label_font_size": 11, "legend_font_size": 12, "title_font_size": 14}
STYLE = Style(**_LOOK, colors=tuple(EFFECT_COLOURS.values()))  # effects; answered / failed / skipped
NEUTRAL = Style(**_LOOK, colors=("#1565c0", "#00838f", "#5d4037", "#455a64", "#6d4c41", "#283593"))  # one per model
_COMMON = {"js": [], "disable_xml_declaration": True, "style": STYLE, "width": 760, "height": 300,
           "legend_at_bottom": True, "print_values": False, "show_y_guides": True, "margin": 12}


def _render(chart: pygal.graph.graph.Graph) -> str:
    """The chart as inline SVG without any <script> element (pygal always writes one holding its
    config for the tooltips, even with `js=[]`): removed from the element tree before serialising."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return etree.tostring(tree, encoding="unicode")  # pygal's etree: the backend that built the tree


def effects_chart(b: Buckets) -> str:
    """Decisions by effect over time, stacked bars (one bar per time slice)."""
    chart = pygal.StackedBar(title="Decisions by effect over time (UTC)", x_label_rotation=30, **_COMMON)
    chart.x_labels = b.labels
    for effect in EFFECT_COLOURS:
        chart.add(effect, b.series.get(effect, []))
    return _render(chart)


def latency_chart(stats: list[ModelStats]) -> str:
    """Mean latency of answered calls per model (ms), one neutral colour per model."""
    chart = pygal.HorizontalBar(title="Mean answer latency per model (ms)",
                                **{**_COMMON, "style": NEUTRAL, "height": 120 + 36 * max(1, len(stats))})
    for s in stats:
        chart.add(s.model, [round(s.mean_latency_ms, 1) if s.mean_latency_ms is not None else None])
    return _render(chart)


def failovers_chart(stats: list[ModelStats]) -> str:
    """Per model: answered calls, failed calls (failover / retry / fatal) and skips, side by side."""
    chart = pygal.Bar(title="Attempts per model: answered, failed, skipped", **_COMMON)
    chart.x_labels = [s.model for s in stats]
    chart.add("answered", [s.answered for s in stats])
    chart.add("failed", [s.failovers for s in stats])
    chart.add("skipped", [s.skipped for s in stats])
    return _render(chart)


def usage_chart(counters: list[dict]) -> str:
    """Share of each limit or budget used now (%, reserved requests included), one bar per counter."""
    chart = pygal.HorizontalBar(title="Limits and budgets: share used now (%)", range=(0, 100), show_legend=False,
                                **{**_COMMON, "style": NEUTRAL, "height": 120 + 30 * max(1, len(counters))})
    chart.x_labels = [f"{c.get('source') or c.get('rule_id')} [{c.get('scope')}]"[:60] for c in counters]
    chart.add("used", [min(100.0, float(c.get("percent") or 0)) for c in counters])
    return _render(chart)

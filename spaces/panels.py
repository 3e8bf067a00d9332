"""What the app shows after a report: the biomarker table, the label line and the grounding check."""

from __future__ import annotations

import html
from typing import Any

from grok_retina.report_parsing import find_numbers
from processing.biomarkers import BIOMARKERS
from processing.labels import LABEL_DISPLAY

OUT_OF_RANGE_STYLE = "background:#fde2e1;color:#8a1c12;font-weight:600"
STATUS_SHOWN = {"low": "▼ low", "high": "▲ high", "normal": "normal", "missing": "missing"}
HIGHLIGHT_COLOURS = {"unsupported": "#f28b82", "supported": "#a8dab5"}


def label_line(label: str | None) -> str:
    """The predicted label as shown on the page."""
    if label is None:
        return "No diagnosis stated in the report's Conclusion."
    return f"{label} ({LABEL_DISPLAY[label]})"


def biomarker_table(biomarkers: dict[str, float | None], assessments: dict[str, Any], source: dict[str, str]) -> str:
    """An HTML table of the 37 biomarkers; rows outside the normal range have class ``grok-out`` and a red fill."""
    rows = []
    for spec in BIOMARKERS:
        value, status = biomarkers.get(spec.name), assessments[spec.name].status
        out = status in ("low", "high")
        attributes = f' class="grok-out" style="{OUT_OF_RANGE_STYLE}"' if out else ""
        cells = [
            spec.display,
            "–" if value is None else spec.format_value(value),
            f"{spec.normal[0]:g}–{spec.normal[1]:g} {spec.unit}".strip(),
            STATUS_SHOWN[status],
            source.get(spec.name, "–"),
        ]
        rows.append(f"<tr{attributes}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    flagged = sum(assessments[s.name].status in ("low", "high") for s in BIOMARKERS)
    head = "".join(f"<th>{h}</th>" for h in ("Biomarker", "Value", "Normal range", "Status", "Source"))
    return (
        f'<p id="grok-out-count">{flagged} of {len(BIOMARKERS)} biomarkers outside the normal range (highlighted).</p>'
        f'<table id="grok-biomarker-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def report_highlights(text: str, verification) -> list[tuple[str, str | None]]:
    """The report split into spans for ``gr.HighlightedText``: each number the verifier checked is marked
    "supported" or "unsupported" (matched to claims by value; a mm value is compared in µm too)."""
    bad = {c.cited_value for c in verification.claims if c.value_ok is False}
    good = {c.cited_value for c in verification.claims if c.value_ok is True}
    spans: list[tuple[str, str | None]] = []
    position = 0
    for number in find_numbers(text):
        candidates = {number.value, number.value * 1000}
        tag = "unsupported" if candidates & bad else "supported" if candidates & good else None
        if tag is None:
            continue
        spans += [(text[position : number.start], None), (text[number.start : number.end], tag)]
        position = number.end
    spans.append((text[position:], None))
    return [(chunk, tag) for chunk, tag in spans if chunk]


def grounding_summary(verification) -> str:
    """HTML: passed or not, the scores, and every unsupported number or wrong descriptor with the reason."""
    unsupported = [c for c in verification.claims if c.value_ok is False]
    verdict = "passed" if verification.passed else "did not pass"
    scores = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in verification.scores().items())
    parts = [
        f'<p id="grok-grounding-verdict"><b>Grounding check {verdict}</b> ({scores}).</p>',
        f'<p id="grok-unsupported-count">{len(unsupported)} unsupported number(s).</p>',
    ]
    problems = [c.issue for c in unsupported + verification.descriptor_errors if c.issue]
    problems += verification.issues
    if verification.conclusion_label is None:
        problems.append("The Conclusion names no diagnosis.")
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in dict.fromkeys(problems))
        parts.append(f'<ul id="grok-grounding-issues">{items}</ul>')
    return "".join(parts)

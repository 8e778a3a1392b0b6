"""Plotly figures of the app (drawing only: the numbers come from almdn.display.store_tables)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from almdn.display.store_tables import UNCERTAINTY_LABELS
from presentation import html_text

TEMPLATE = "plotly_white"
COMPONENT_COLORS = ("#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _png_url(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rect(fig: go.Figure, box, color: str, width: float = 2, dash: str = "solid", opacity: float = 1.0, fill: str | None = None) -> None:
    x1, y1, x2, y2 = box
    fig.add_shape(type="rect", x0=x1, y0=y1, x1=x2, y1=y2, line=dict(color=color, width=width, dash=dash), opacity=opacity,
                  fillcolor=fill or "rgba(0,0,0,0)", layer="above")


#: Detection labels: font size (px), and the plot width (px) the layout assumes at least.
LABEL_FONT = 11
LABEL_MIN_PLOT_WIDTH = 600
LABEL_BACKGROUND = "rgba(0,0,0,0.75)"  # white on near-black: legible on any image


def label_extent(text: str, font: int = LABEL_FONT) -> tuple[float, float]:
    """Width and height in screen pixels of a label's box (an upper bound for a sans font)."""
    return 0.62 * font * len(text) + 8.0, font + 8.0


def place_labels(boxes: list[list[float]], sizes: list[tuple[float, float]], bounds: tuple[float, float]) -> list[tuple[float, float, float, float] | None]:
    """Non-overlapping rectangles ``(x1, y1, x2, y2)`` (image units) for the detections' labels.

    In order (the caller sorts by importance), each label goes to the first free place among:
    just above its box, inside its top edge, just below it, then the free place nearest to its
    box's top-left corner anywhere in the image. A label with no free place left gets None.
    """
    w, h = bounds
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float, float, float] | None] = []
    for box, (lw, lh) in zip(boxes, sizes):
        x1, y1, x2, y2 = box
        x = min(max(x1, 0.0), max(w - lw, 0.0))
        near = [(x, y1 - lh), (x, y1), (x, y2), (min(max(x2 - lw, 0.0), max(w - lw, 0.0)), y1 - lh)]
        step = max(lh / 2, 1e-6)
        gx, gy = np.meshgrid(np.arange(0.0, max(w - lw, 0.0) + 1e-9, step), np.arange(0.0, max(h - lh, 0.0) + 1e-9, step))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        grid = grid[np.argsort((grid[:, 0] - x) ** 2 + (grid[:, 1] - y1) ** 2, kind="stable")]
        candidates = np.concatenate([np.array(near), grid])
        inside = (candidates[:, 0] >= 0) & (candidates[:, 1] >= 0) & (candidates[:, 0] + lw <= w + 1e-9) & (candidates[:, 1] + lh <= h + 1e-9)
        candidates = candidates[inside]
        if placed:
            p = np.array(placed)
            free = ~((candidates[:, None, 0] < p[None, :, 2]) & (candidates[:, None, 0] + lw > p[None, :, 0])
                     & (candidates[:, None, 1] < p[None, :, 3]) & (candidates[:, None, 1] + lh > p[None, :, 1])).any(axis=1)
            candidates = candidates[free]
        if len(candidates) == 0:
            out.append(None)
            continue
        cx, cy = (float(v) for v in candidates[0])
        rect = (cx, cy, cx + lw, cy + lh)
        placed.append(rect)
        out.append(rect)
    return out


def detection_label(d: dict[str, Any]) -> str:
    return f"#{d['detection']} '{html_text(d['class_name'])}' {d['score']:.2f}"  # a class name is text, never HTML


def mixture_figure(array: np.ndarray, detections: list[dict[str, Any]], selected: int | None = None, height: int = 640,
                   frame: tuple[int, int] | None = None) -> go.Figure:
    """The image with each detection (white) and, for the selected one (or all), every
    component's mean box (opacity by its weight) with a +-1 sigma band around its edges (dashed).

    ``frame``: ``(width, height)`` of the image the boxes are in, when ``array`` is the image
    decoded smaller for display (it is stretched over the frame); default: the array's size.

    Each detection's label sits in a dark box that no other label overlaps (:func:`place_labels`),
    with a thin line to its box when it had to move away from it; ``layout.meta`` holds the
    labels that found no room (their text is still in the hover)."""
    w, h = frame if frame is not None else (array.shape[1], array.shape[0])
    fig = go.Figure()
    fig.add_layout_image(dict(source=_png_url(array), x=0, y=0, sizex=w, sizey=h, xref="x", yref="y", sizing="stretch", layer="below"))
    # An invisible trace gives the axes their range and hover over the detections' centres.
    xs = [0.5 * (d["box"][0] + d["box"][2]) for d in detections]
    ys = [0.5 * (d["box"][1] + d["box"][3]) for d in detections]
    text = [detection_label(d) for d in detections]
    fig.add_trace(go.Scatter(x=[0, w, *xs], y=[0, h, *ys], mode="markers", text=["", "", *text],
                             marker=dict(size=1, color="rgba(0,0,0,0)"), hoverinfo="text", showlegend=False))
    for d in detections:
        show_components = selected is None or d["detection"] == selected
        if show_components:
            for k, (box, weight, sigma) in enumerate(zip(d["component_boxes"], d["component_weights"], d["component_sigmas"])):
                color = COMPONENT_COLORS[k % len(COMPONENT_COLORS)]
                opacity = float(0.25 + 0.75 * min(max(weight, 0.0), 1.0))
                _rect(fig, box, color, width=3, opacity=opacity)
                if np.all(np.isfinite(sigma)):
                    sx1, sy1, sx2, sy2 = sigma
                    outer = (box[0] - sx1, box[1] - sy1, box[2] + sx2, box[3] + sy2)
                    inner = (box[0] + sx1, box[1] + sy1, box[2] - sx2, box[3] - sy2)
                    _rect(fig, outer, color, width=1, dash="dot", opacity=opacity)
                    if inner[2] > inner[0] and inner[3] > inner[1]:
                        _rect(fig, inner, color, width=1, dash="dot", opacity=opacity)
        # the selected detection's outline is thin so that its components show through
        _rect(fig, d["box"], "white", width=1 if d["detection"] == selected else 2, dash="dash" if d["detection"] == selected else "solid")
    # Labels: the selected detection first, then by score; sizes from pixels to image units at
    # the smallest scale the plot is drawn at (a larger drawing only spreads them further).
    scale = min((height - 10) / h, LABEL_MIN_PLOT_WIDTH / w)
    order = sorted(detections, key=lambda d: (d["detection"] != selected, -d["score"]))
    sizes = [tuple(v / scale for v in label_extent(detection_label(d))) for d in order]
    places = place_labels([d["box"] for d in order], sizes, (w, h))
    left_out = []
    for d, place in zip(order, places):
        if place is None:
            left_out.append(detection_label(d))
            continue
        lx1, ly1, lx2, ly2 = place
        bx1, by1, bx2, by2 = d["box"]
        if lx2 < bx1 - 1 or lx1 > bx2 + 1 or ly2 < by1 - 1 or ly1 > by2 + 1:  # moved away: a leader line to its box
            fig.add_shape(type="line", x0=0.5 * (lx1 + lx2), y0=0.5 * (ly1 + ly2), x1=min(max(0.5 * (lx1 + lx2), bx1), bx2), y1=min(max(0.5 * (ly1 + ly2), by1), by2),
                          line=dict(color="white", width=1), layer="above")
        fig.add_annotation(x=0.5 * (lx1 + lx2), y=0.5 * (ly1 + ly2), text=detection_label(d), showarrow=False, xanchor="center", yanchor="middle",
                           font=dict(color="white", size=LABEL_FONT), bgcolor=LABEL_BACKGROUND, borderpad=2, name=f"label-{d['detection']}")
    fig.update_xaxes(range=[0, w], visible=False, constrain="domain")
    fig.update_yaxes(range=[h, 0], visible=False, scaleanchor="x")
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=0, r=0, t=10, b=0), meta={"labels_left_out": left_out})
    return fig


def class_spread_figure(detection: dict[str, Any], class_names: list[str]) -> go.Figure:
    """Each component's class probabilities (opacity by its weight) and the mixture's, as bars."""
    labels = ["background", *(html_text(n) for n in class_names)]
    fig = go.Figure()
    for k, (weight, probs) in enumerate(zip(detection["class_weights"], detection["class_probs"])):
        fig.add_trace(go.Bar(x=labels, y=probs, name=f"component {k + 1} (π = {weight:.2f})", marker_color=COMPONENT_COLORS[k % len(COMPONENT_COLORS)],
                             opacity=float(0.3 + 0.7 * weight)))
    fig.add_trace(go.Bar(x=labels, y=detection["mixture_probs"], name="mixture (Eq. 7)", marker_color="black"))
    fig.update_layout(template=TEMPLATE, barmode="group", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      title=f"Class spread of detection #{detection['detection']}", yaxis_title="probability", legend=dict(orientation="h", y=-0.25))
    return fig


def loss_curve_figure(metrics: list[dict[str, Any]], height: int = 280) -> go.Figure:
    """The live training loss (total and its parts) per iteration."""
    frame = pd.DataFrame(metrics)
    fig = go.Figure()
    if not frame.empty and "loss" in frame:
        fig.add_trace(go.Scatter(x=frame["iteration"], y=frame["loss"], mode="lines", name="loss", line=dict(width=3)))
        for column in sorted(c for c in frame.columns if c.startswith("loss_")):
            fig.add_trace(go.Scatter(x=frame["iteration"], y=frame[column], mode="lines", name=column[5:], line=dict(width=1)))
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=10, r=10, t=30, b=10), title="Training loss", xaxis_title="iteration",
                      legend=dict(orientation="h", y=-0.3))
    return fig


def learning_curve_figure(curve: pd.DataFrame) -> go.Figure:
    """The active-learning curve: mAP@0.5 and mAP@0.75 against labeled images, per model version."""
    fig = go.Figure()
    for key, name in (("map50", "mAP@0.5"), ("map75", "mAP@0.75")):
        fig.add_trace(go.Scatter(x=curve["num_labeled"], y=curve[key], mode="lines+markers+text", name=name,
                                 text=[f"v{v}" for v in curve["model_version"]] if key == "map50" else None, textposition="top center"))
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=10, r=10, t=40, b=10), title="Active-learning curve (test split)",
                      xaxis_title="labeled images", yaxis_title="mAP", legend=dict(orientation="h", y=-0.2))
    # Labeled images are whole numbers: tick exactly at the sizes the versions were trained on.
    sizes = sorted({int(n) for n in curve["num_labeled"]})
    fig.update_xaxes(tickmode="array", tickvals=sizes, ticktext=[f"{n:,}" for n in sizes])
    return fig


def reliability_figure(table: dict[str, Any], height: int = 320) -> go.Figure:
    """Reliability diagram: precision of the detections in each score bin against the bin's
    centre (the diagonal is a perfectly calibrated score), with each bin's count."""
    edges = np.asarray(table["bin_edges"], dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    precision = [np.nan if p is None else p for p in table["precision"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=precision, width=np.diff(edges) * 0.9, name="precision", text=[f"n={c}" for c in table["count"]], textposition="outside"))
    fig.add_trace(go.Scatter(x=[edges[0], 1.0], y=[edges[0], 1.0], mode="lines", name="calibrated", line=dict(dash="dot", color="grey")))
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=10, r=10, t=40, b=10), title="Reliability of the scores (test split)",
                      xaxis_title="detection score", yaxis_title="precision (true positives / detections)", yaxis_range=[0, 1.1],
                      legend=dict(orientation="h", y=-0.3))
    return fig


def labels_figure(counts: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=[html_text(n) for n in counts["class_name"]], y=counts["boxes"], marker_color="#1f77b4"))
    fig.update_layout(template=TEMPLATE, height=320, margin=dict(l=10, r=10, t=40, b=10), title="Labeled boxes per class", xaxis_title="class", yaxis_title="boxes")
    fig.update_xaxes(type="category")
    return fig


def uncertainty_histograms(detections: pd.DataFrame) -> go.Figure:
    """Distributions of the four uncertainties over the pool's kept detections."""
    names = list(UNCERTAINTY_LABELS)
    fig = make_subplots(rows=1, cols=4, subplot_titles=[UNCERTAINTY_LABELS[n] for n in names])
    for i, name in enumerate(names):
        values = detections[name].dropna() if name in detections else []
        fig.add_trace(go.Histogram(x=values, nbinsx=40, name=UNCERTAINTY_LABELS[name], showlegend=False), row=1, col=i + 1)
        fig.update_xaxes(title_text="value", row=1, col=i + 1)
    fig.update_yaxes(title_text="detections", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=50, b=10), title="Uncertainties of the pool's detections")
    return fig


def aleatoric_epistemic_figure(detections: pd.DataFrame, max_points: int = 5000) -> go.Figure:
    """Aleatoric against epistemic uncertainty, box and class, one point per detection."""
    sample = detections.sample(max_points, random_state=0) if len(detections) > max_points else detections
    fig = make_subplots(rows=1, cols=2, subplot_titles=["box", "class"])
    for col, head in enumerate(("loc", "cls"), start=1):
        fig.add_trace(go.Scattergl(x=sample[f"{head}_aleatoric"], y=sample[f"{head}_epistemic"], mode="markers", marker=dict(size=4, opacity=0.5),
                                   text=[f"image {i}, #{d}" for i, d in zip(sample["image_id"], sample["detection"])], showlegend=False), row=1, col=col)
        fig.update_xaxes(title_text="aleatoric", row=1, col=col)
        fig.update_yaxes(title_text="epistemic", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=360, margin=dict(l=10, r=10, t=50, b=10), title="Aleatoric vs epistemic (pool detections)")
    return fig


#: The Review page's colours: labels, the model's detections, and what is flagged.
LABEL_COLOR, DETECTION_COLOR, FLAG_COLOR = "#2ca02c", "#ffffff", "#ff3b30"


def review_figure(array: np.ndarray, overlay: dict[str, list[dict[str, Any]]], height: int = 560, frame: tuple[int, int] | None = None) -> go.Figure:
    """An image with its labels (green, solid) and the model's detections (white, dashed); what
    the review queue flagged (:func:`almdn.display.review_tables.image_overlay`) in red, thick,
    with its kind. ``frame`` as :func:`mixture_figure`'s."""
    w, h = frame if frame is not None else (array.shape[1], array.shape[0])
    fig = go.Figure()
    fig.add_layout_image(dict(source=_png_url(array), x=0, y=0, sizex=w, sizey=h, xref="x", yref="y", sizing="stretch", layer="below"))
    points, texts = [(0.0, 0.0), (float(w), float(h))], ["", ""]
    for d in overlay["detections"]:
        _rect(fig, d["box"], FLAG_COLOR if d["flagged"] else DETECTION_COLOR, width=3 if d["flagged"] else 1.5, dash="dash")
        points.append((0.5 * (d["box"][0] + d["box"][2]), 0.5 * (d["box"][1] + d["box"][3])))
        texts.append(f"model: '{html_text(d['class_name'])}' {d['score']:.2f}" + (" (no label covers it)" if d["flagged"] else ""))
    for label in overlay["labels"]:
        _rect(fig, label["box"], FLAG_COLOR if label["flagged"] else LABEL_COLOR, width=3 if label["flagged"] else 2)
        points.append((0.5 * (label["box"][0] + label["box"][2]), 0.5 * (label["box"][1] + label["box"][3])))
        texts.append(f"label: '{html_text(label['class_name'])}'" + (f" (flagged: {label['flagged']})" if label["flagged"] else ""))
        fig.add_annotation(x=label["box"][0], y=label["box"][1], text=html_text(label["class_name"]), showarrow=False, xanchor="left", yanchor="bottom",
                           font=dict(color="white", size=LABEL_FONT), bgcolor=FLAG_COLOR if label["flagged"] else LABEL_COLOR, borderpad=1)
    for item in overlay["items"]:
        fig.add_annotation(x=item["box"][2], y=item["box"][3], text=item["kind"], showarrow=False, xanchor="right", yanchor="top",
                           font=dict(color="white", size=LABEL_FONT), bgcolor=FLAG_COLOR, borderpad=1)
    fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers", text=texts, hoverinfo="text",
                             marker=dict(size=1, color="rgba(0,0,0,0)"), showlegend=False))
    fig.update_xaxes(range=[0, w], visible=False, constrain="domain")
    fig.update_yaxes(range=[h, 0], visible=False, scaleanchor="x")
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=0, r=0, t=10, b=0))
    return fig

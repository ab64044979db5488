# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The evaluation's figures: zero-shot confusion, retrieval examples, the decoder's attention over scenes."""

from __future__ import annotations

import math
import textwrap

import numpy as np

PLOT_FILES = {
    "zero_shot": "zero_shot_confusion.png",
    "retrieval": "retrieval_examples.png",
    "instance_retrieval": "instance_attention.png",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, row_names, col_names, path: str, title: str):
    plt = _pyplot()
    size = max(6.0, 0.45 * len(col_names) + 3)
    fig, ax = plt.subplots(figsize=(size, max(5.0, 0.45 * len(row_names) + 2.5)))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_names)), row_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), value in np.ndenumerate(matrix):
        if value >= 0.005:
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, label="fraction of the true class")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_retrieval_examples(queries: list[str], ranked: list[list], correct: list[list[bool]], path: str, title: str,
                            truth: list[tuple] | None = None):
    """One row per query: its title, the top-k gallery images (correct ones framed green), then the true image and
    its rank (`truth`: `(image, rank)` per query)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    rows, cols = len(queries), max(len(r) for r in ranked)
    extra = 1 if truth else 0
    fig, axes = plt.subplots(rows, cols + 1 + extra, figsize=(2.0 * (cols + 1 + extra) + 1.2, 2.2 * rows),
                             squeeze=False)

    def show(ax, image, good, label=None):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(image)
        width, height = image.size
        color, lw = ("#1a9850", 6) if good else ("#bbbbbb", 1)
        ax.add_patch(Rectangle((0, 0), width - 1, height - 1, fill=False, edgecolor=color, linewidth=lw))
        for spine in ax.spines.values():
            spine.set_visible(False)
        if label:
            ax.set_title(label, fontsize=8)

    for r, (query, images, flags) in enumerate(zip(queries, ranked, correct)):
        text_ax = axes[r][0]
        text_ax.axis("off")
        text_ax.text(0.0, 0.5, "\n".join(textwrap.wrap(query, 22)), va="center", ha="left", fontsize=8,
                     transform=text_ax.transAxes)
        for c in range(cols):
            ax = axes[r][c + 1]
            if c >= len(images):
                ax.axis("off")
                continue
            show(ax, images[c], flags[c], f"rank {c + 1}" if r == 0 else None)
        if truth:
            image, rank = truth[r]
            show(axes[r][cols + 1], image, True, f"the product: rank {rank}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_instance_attention(panels: list[dict], path: str, title: str):
    """Each panel: scene (PIL), heat (g, g), extent (l, r, b, t) in canvas pixels, box, peak (x, y), caption."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        scene = panel["scene"]
        ax.imshow(scene, extent=(0, scene.size[0], scene.size[1], 0))
        heat = panel["heat"]
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
        ax.imshow(heat, cmap="jet", alpha=0.45, extent=panel["extent"], interpolation="bilinear")
        x0, y0, x1, y1 = panel["box"]
        inside = panel["inside"]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=2.5,
                               edgecolor="#1a9850" if inside else "#d73027"))
        ax.plot(*panel["peak"], marker="x", color="white", markersize=10, mew=3)
        ax.plot(*panel["peak"], marker="x", color="black", markersize=8, mew=1.5)
        ax.set_xlim(0, scene.size[0])
        ax.set_ylim(scene.size[1], 0)
        ax.set_title("\n".join(textwrap.wrap(panel["caption"], 34)[:3]), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["PLOT_FILES", "plot_confusion", "plot_instance_attention", "plot_retrieval_examples"]

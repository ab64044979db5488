# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The ECLIP-vs-CLIP benchmark's report files (benchmarks/eclip_vs_clip.py builds the report dict): the comparison
tables of the README, the paired-bootstrap table, the markdown report and the two figures.
"""

from __future__ import annotations

from eclip.training.atomic import atomic_write_text


# The metrics of the README table, in order: (flattened results key, label).
HEADLINE = (
    ("instance_retrieval/text_to_image/recall@1", "scene retrieval R@1"),
    ("instance_retrieval/text_to_image/recall@10", "scene retrieval R@10"),
    ("instance_retrieval/text_to_image/mrr", "scene retrieval MRR"),
    ("instance_retrieval/text_to_image_target_only/recall@1", "scene retrieval R@1 (own scene)"),
    ("instance_retrieval/attention_in_box_rate", "attention peak on the product"),
    ("retrieval/text_to_image/recall@1", "product retrieval t2i R@1"),
    ("retrieval/text_to_image/recall@10", "product retrieval t2i R@10"),
    ("retrieval/image_to_text/recall@10", "product retrieval i2t R@10"),
    ("zero_shot/accuracy", "zero-shot articleType accuracy"),
    ("linear_probe/image/accuracy", "linear probe (image) accuracy"),
    ("clustering/nmi", "clustering NMI"),
    ("restricted/zero_shot/roc_auc", "restricted (Innerwear) zero-shot ROC-AUC"),
)
PROBE_KEYS = (
    ("scene_r10", "val scene retrieval R@10"),
    ("retrieval_r10", "val product retrieval R@10"),
    ("distinct_query_rate", "distinct queries per scene"),
    ("top_query_share", "share of the most selected query"),
    ("selection_agreement", "selection head = text choice"),
    ("instance_similarity", "mean cosine between an image's instances"),
)
LOSS_KEYS = ("loss_itc", "loss_inter", "loss_intra", "loss_selection")


def bootstrap_markdown(report: dict) -> str:
    """One row per variant with a paired bootstrap: ratio to its baseline and the 95 % interval, per metric."""
    rows = [(name, data["baseline"], data["scene_retrieval_bootstrap"]["metrics"])
            for name, data in report["variants"].items() if data.get("scene_retrieval_bootstrap")]
    if not rows:
        return ""
    lines = ["| variant (vs baseline) | scene R@1 | scene R@10 | scene MRR |", "| --- | ---: | ---: | ---: |"]
    for name, baseline, metrics in rows:
        cells = []
        for key in ("recall@1", "recall@10", "mrr"):
            m = metrics[key]
            low, high = m["ratio_ci95"]
            cells.append(f"{m['ratio']:.2f}x [{low:.2f}, {high:.2f}]")
        lines.append(f"| `{name}` (vs `{baseline}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, ratio=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def report_markdown(report: dict, keys=None) -> str:
    """The comparison table: one row per metric, one column per variant, ratios to its baseline in brackets."""
    variants = list(report["variants"])
    all_keys = list(next(iter(report["variants"].values()))["metrics"]) if variants else []
    keys = list(keys) if keys is not None else [(k, k) for k in all_keys]
    lines = ["| metric | " + " | ".join(f"`{v}`" for v in variants) + " |",
             "| --- | " + " | ".join("---:" for _ in variants) + " |"]
    for key, label in keys:
        cells = []
        for variant in variants:
            data = report["variants"][variant]
            ratio = data.get("ratio_to_baseline", {}).get(key)
            cells.append(_fmt(data["metrics"].get(key), ratio))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: str) -> None:
    hardware = report["hardware"]
    parts = [
        "# ECLIP vs the CLIP baseline (fashion-products, test split)",
        "",
        f"Command: `{report['command']}`  ",
        f"Hardware: {hardware['processor']}, {hardware['cpu_count']} cores ({hardware['jobs_in_parallel']} runs in "
        f"parallel, {hardware['torch_threads_per_job']} torch thread(s) each); wall time of this command "
        f"{report['wall_time_s'] / 60:.1f} min; training + evaluation time summed over the models "
        f"{report.get('compute_time_s', 0.0) / 60:.1f} min.",
        "",
        "Training: " + ", ".join(
            f"`{v}` {d['train']['steps']} steps in {d['train']['wall_time_s'] / 60:.1f} min"
            for v, d in report["variants"].items()) + ".",
        "",
        *[f"`{v}` is carried over (same settings) from the report of `{d['carried_over_from']}`." for v, d in
          report["variants"].items() if d.get("carried_over_from")],
        "",
        "Variants: " + "; ".join(f"`{v}` = {d['description']}" for v, d in report["variants"].items()) + ".",
        "",
        "## Headline metrics (in brackets: ratio to the baseline trained with the same targets)",
        "",
        report_markdown(report, HEADLINE),
        "## Scene retrieval against the baseline: paired bootstrap over the test queries (95 % interval)",
        "",
        bootstrap_markdown(report) or "(no variant has both its model and its baseline's model in the run folder)\n",
        "",
        "## Every metric",
        "",
        report_markdown(report),
    ]
    atomic_write_text(path, "\n".join(parts))


def plot_curves(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, k.replace("loss_", "training loss: ")) for k in LOSS_KEYS] + list(PROBE_KEYS)
    fig, axes = plt.subplots(2, 5, figsize=(24, 9))
    for ax, (key, title) in zip(axes.flat, panels):
        for index, (variant, data) in enumerate(report["variants"].items()):  # one colour per variant everywhere
            series = data["train"]["loss_curve"] if key.startswith("loss_") else data["train"]["probe"]
            points = [(e["step"], e[key]) for e in series if e.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=variant, color=f"C{index}",
                        marker="" if key.startswith("loss_") else ".",
                        linestyle="--" if "_scene" in variant else "-")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat:  # the CLIP baselines draw no decoder panels: collect every variant's line
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 5))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("ECLIP vs CLIP on fashion-products: training losses and the validation probe")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(report["variants"])
    keys = [(k, label) for k, label in HEADLINE
            if any(report["variants"][v]["metrics"].get(k) is not None for v in variants)]
    fig, ax = plt.subplots(figsize=(14, 6))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(keys))
    for i, variant in enumerate(variants):
        values = [report["variants"][variant]["metrics"].get(k) or 0.0 for k, _ in keys]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, values, width, label=variant)
    ax.set_xticks(x)
    ax.set_xticklabels([label for _, label in keys], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title("Test-split metrics, same budget for every model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["HEADLINE", "LOSS_KEYS", "PROBE_KEYS", "bootstrap_markdown", "plot_curves", "plot_metrics",
           "report_markdown", "write_markdown"]

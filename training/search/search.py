# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-search INDEX (--text QUERY | --image PATH | --scene PATH)`: query an index folder written by `eclip-index`.

    eclip-search fashion-index --text "red running shoes" --filter gender=Women --k 5
    eclip-search fashion-index --image photo.jpg --json
    eclip-search fashion-index --scene street.jpg --highlights out/   # one table per instance, its heatmap saved

Prints a table (rank, score, product id, title, image) per query, or with `--json` one JSON object
(`CatalogueIndex`'s results: hits with fields; a scene's instances with their selection share, box and heatmap).
Bad input (empty or over-long text, a file that is not an image or is truncated, too many pixels, an unknown filter,
a missing or unfinished index) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys

PROG = "eclip-search"


def build_parser():
    from eclip.training.cli import ArgumentParser

    from .api import MAX_K
    from .layout import SPACES

    parser = ArgumentParser(prog=PROG, description="Search a catalogue index (written by eclip-index) by text, by "
                            "photo, or by scene (each product a photo shows: 'shop the look').")
    parser.add_argument("index", metavar="INDEX", help="an index folder written by eclip-index")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query, e.g. 'red running shoes'")
    query.add_argument("--image", metavar="PATH", help="a photo: find the products that look like it")
    query.add_argument("--scene", metavar="PATH",
                       help="a photo showing several products: one result list per instance the model finds")
    parser.add_argument("--k", type=int, default=10, help=f"results per query (1-{MAX_K}, default 10)")
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                        help="keep products whose FIELD equals VALUE (repeat: fields ANDed, values of one field ORed)")
    parser.add_argument("--space", choices=tuple(SPACES), default="image",
                        help="what the query is compared with: the catalogue's text-free image embeddings (default), "
                        "their K instance embeddings (a product scores its best), or the product texts")
    parser.add_argument("--max-instances", type=int, default=4, help="scene: instances kept at most (default 4)")
    parser.add_argument("--highlights", metavar="DIR", default=None,
                        help="scene: save each kept instance's attention heatmap and box over the scene as PNGs here")
    parser.add_argument("--model", default=None, help="the model folder (default: the one the index records)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def _table(hits, fields=("articleType", "gender", "baseColour")) -> str:
    shown = [name for name in fields if hits and name in hits[0].fields]
    header = ["rank", "score", "product_id", "title", *shown, "image"]
    rows = [[str(hit.rank), f"{hit.score:.4f}", hit.product_id, _cut(hit.title, 48),
             *(_cut(hit.fields.get(name) or "", 16) for name in shown), hit.image or ""] for hit in hits]
    if not rows:
        return "(no product matches)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv=None) -> int:
    from eclip.training.cli import UsageError, fail

    args = build_parser().parse_args(argv)
    try:
        if args.highlights is not None and args.scene is None:
            raise UsageError("--highlights saves a scene query's heatmaps: it needs --scene.")
        from .layout import read_manifest

        read_manifest(args.index)  # a missing or unfinished folder answers before the model loads
        for flag, path in (("--image", args.image), ("--scene", args.scene)):
            if path is not None and not os.path.isfile(path):
                raise UsageError(f"{flag} {path!r}: no such file." if not os.path.isdir(path)
                                 else f"{flag} {path!r} is a folder, not an image.")
        from eclip.training.progress import disable_progress_bars_off_terminal

        disable_progress_bars_off_terminal()
        from .api import CatalogueIndex

        index = CatalogueIndex.load(args.index, model=args.model, device=args.device)
        if args.text is not None:
            result = index.search_text(args.text, k=args.k, filters=args.filter, space=args.space)
        elif args.image is not None:
            result = index.search_image(args.image, k=args.k, filters=args.filter, space=args.space)
        else:
            result = index.search_scene(args.scene, k=args.k, filters=args.filter, space=args.space,
                                        max_instances=args.max_instances)
    except (UsageError, ValueError) as error:  # QueryError is a ValueError: bad input, one line
        return fail(PROG, error)
    if args.scene is not None and args.highlights:
        _save_highlights(index, result, args.highlights)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if args.scene is None:
        print(_table(result.hits))
        return 0
    for instance in result.instances:
        box = "none" if instance.box is None else ", ".join(f"{v:.0f}" for v in instance.box)
        print(f"instance {instance.query}: selection {instance.selection:.3f}, box ({box})")
        print(_table(instance.hits))
        print()
    for skipped in result.skipped:
        print(f"instance {skipped['query']} left out: {skipped['reason']}")
    return 0


def _save_highlights(index, result, folder: str) -> None:
    from eclip.training.atomic import atomic_path

    from .api import render_highlight

    os.makedirs(folder, exist_ok=True)
    for instance in result.instances:
        picture = render_highlight(result.image, instance.heatmap, instance.box, index.processor.image_processor,
                                   max_side=max(result.image.size))
        with atomic_path(os.path.join(folder, f"instance-{instance.query}.png")) as temporary:
            picture.save(temporary, format="PNG")


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-index MODEL CATALOGUE OUT`: embed a catalogue with an ECLIP model and build its FAISS indexes.

    eclip-index eclip-fashion $ECLIP_DATA_DIR/fashion-products fashion-index
    torchrun --nproc_per_node 4 -m eclip.training.search.index eclip-fashion products.csv big-index --device cuda

1. Embeds every product (its photo: the text-free embedding, the K instance embeddings and their selection logits;
   its product text) into resumable shards under `OUT/shards/` (`eclip.training.search.shards`): a killed run,
   rerun with the same command, embeds only the shards that are missing. Under `torchrun` / `accelerate launch`
   each process embeds its own shards (rank and world size from the environment, through accelerate's
   `PartialState`) and process 0 waits for the others, then merges.
2. Merges the shards into `OUT/embeddings/*.npy` and `OUT/products.parquet` (memory holds one shard at a time).
3. Builds a FAISS index per space (image, text, instance; `--index auto`: exact below `--exact-below` vectors,
   HNSW above), measures each one's recall@10 against an exact scan and writes `OUT/index.json` last, so a folder
   with a manifest is always a complete index (layout: `eclip.training.search.layout`).

Rerunning on a finished folder with another `--index` rebuilds the FAISS indexes from the kept shards without
embedding anything; the old manifest is removed before any file is rewritten, so that the folder reads as unfinished
(not as the old index over new files) until the new manifest is written. Errors are one line; nothing heavy is
imported before the arguments are checked.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import time

from .faiss_index import DEFAULT_EXACT_BELOW, INDEX_KINDS
from .layout import EMBEDDINGS, FORMAT_VERSION, MANIFEST, PRODUCTS, SELECTION_FILE, SHARDS, SPACES

PROG = "eclip-index"
DEFAULT_SHARD_SIZE = 1024
DEFAULT_BATCH_SIZE = 32
DEFAULT_RECALL_QUERIES = 500
RECALL_K = 10
MAX_SKIPPED_NAMED = 20  # undecodable images named in the manifest; the rest are counted


def build_parser():
    from eclip.training.cli import ArgumentParser

    parser = ArgumentParser(
        prog=PROG,
        description="Embed a product catalogue with an ECLIP model into resumable shards and build FAISS indexes "
        "(image, text and instance embeddings) that eclip-search, eclip-serve and "
        "eclip.training.search.CatalogueIndex query. Rerun the same command to resume a killed run.",
    )
    parser.add_argument("model", metavar="MODEL", help="a saved ECLIP model folder (or Hub repo id)")
    parser.add_argument("catalogue", metavar="CATALOGUE",
                        help="an imagefolder (images + metadata.csv, e.g. $ECLIP_DATA_DIR/fashion-products), a "
                        ".csv/.jsonl/.parquet file with an image path column, or a spec such as 'csv:PATH'")
    parser.add_argument("out", metavar="OUT",
                        help="the index folder to write (resumed when it holds this run's shards)")
    parser.add_argument("--split", default=None, help="index only this split (default: every row)")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N rows")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per forward pass (default "
                        f"{DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the process's GPU when there "
                        "is one, else cpu)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help=f"rows per shard, the unit of resumption (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes decoding images while the model runs (default 2; 0: none)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="auto",
                        help="FAISS index kind: exact (IndexFlatIP), hnsw, ivf, or auto (exact below --exact-below "
                        "vectors, else hnsw; default)")
    parser.add_argument("--exact-below", type=int, default=DEFAULT_EXACT_BELOW,
                        help=f"--index auto's threshold, in vectors per index (default {DEFAULT_EXACT_BELOW:,})")
    parser.add_argument("--recall-queries", type=int, default=DEFAULT_RECALL_QUERIES,
                        help="products whose other-modality embeddings measure each index's recall@10 against exact "
                        f"(default {DEFAULT_RECALL_QUERIES}; 0: skip)")
    parser.add_argument("--on-bad-image", choices=("skip", "error"), default="skip",
                        help="an image that cannot be decoded: leave its product out and name it in the manifest "
                        "(default), or stop")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="stop after embedding this many shards (per process) without building the index; "
                        "rerun without it to finish (staged runs, tests)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again: remove OUT's index files and shards (needed when the settings changed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the recall sample and IVF training (default 0)")
    return parser


# --------------------------------------------------------------------------------------------------- processes
class _SingleProcess:
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


def process_state(device: str | None):
    """accelerate's `PartialState` under `torchrun` / `accelerate launch` (it reads RANK / WORLD_SIZE and joins the
    process group: gloo on CPU, nccl on GPUs), a single process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _SingleProcess()
    from accelerate import PartialState

    return PartialState(cpu=device is not None and device.startswith("cpu"))


def _device(device: str | None, state) -> str:
    import torch

    several = not isinstance(state, _SingleProcess)
    if device is not None:
        # `--device cuda` under torchrun means each process's own GPU, not GPU 0 for all of them.
        return str(state.device) if several and device == "cuda" else device
    if several:
        return str(state.device)
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------------ checks
def _check_arguments(args) -> None:
    from eclip.training.cli import UsageError, check_model_reference

    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--shard-size", args.shard_size, 1),
                             ("--workers", args.workers, 0), ("--recall-queries", args.recall_queries, 0),
                             ("--exact-below", args.exact_below, 0)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}.")
    for flag, value in (("--limit", args.limit), ("--max-shards", args.max_shards)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}.")
    check_model_reference(args.model, "MODEL")
    out = os.path.abspath(os.path.expanduser(args.out))
    if os.path.isfile(out):
        raise UsageError(f"OUT {args.out!r} is a file, not a folder.")
    if os.path.isdir(out) and os.listdir(out) and not _is_index_folder(out):
        raise UsageError(f"OUT {args.out!r} is not empty and holds no index: choose an empty or new folder.")


def _is_index_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST)) or os.path.isdir(os.path.join(folder, SHARDS))


def model_fingerprint(model_ref: str) -> str:
    """A digest of a local model folder's weights (`.safetensors` and `.bin`), config and processor files (a Hub id
    stands for itself: `hub:ID`): an index records it, so that searching it with another model is refused."""
    if not os.path.isdir(model_ref):
        return f"hub:{model_ref}"
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(os.listdir(model_ref)):
        if name.endswith((".safetensors", ".bin", ".json", ".txt", ".model")):
            digest.update(name.encode("utf-8"))
            with open(os.path.join(model_ref, name), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _run_settings(args, catalogue, fingerprint: str) -> dict:
    """What fixes the shards' content: a run with other values must not reuse them. `catalogue_fingerprint` covers
    the rows' ids and order, `catalogue_content` their fields and images (`Catalogue.content_fingerprint`)."""
    return {"model_fingerprint": fingerprint, "catalogue": catalogue.spec, "split": args.split, "limit": args.limit,
            "rows": len(catalogue), "catalogue_fingerprint": catalogue.fingerprint(),
            "catalogue_content": catalogue.content_fingerprint(), "shard_size": args.shard_size}


def _prepare_out(out: str, settings: dict, overwrite: bool) -> None:
    """Process 0: start OUT afresh (`--overwrite`), or check that its shards were made with these settings; write
    `shards/run.json` for a new run; remove a killed run's temporary files."""
    from eclip.training.atomic import atomic_write_json
    from eclip.training.cli import UsageError

    from .shards import RUN_FILE, remove_stray_files

    shard_dir = os.path.join(out, SHARDS)
    if overwrite and os.path.isdir(out):
        for name in (MANIFEST, PRODUCTS, EMBEDDINGS, SHARDS, *(files[1] for files in SPACES.values())):
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(shard_dir, exist_ok=True)
    run_file = os.path.join(shard_dir, RUN_FILE)
    if os.path.isfile(run_file):
        with open(run_file, encoding="utf-8") as handle:
            recorded = json.load(handle)
        differ = sorted(key for key in {*recorded, *settings} if recorded.get(key) != settings.get(key))
        if differ:
            why = ", ".join(differ)
            if differ == ["catalogue_content"] and "catalogue_content" in recorded:
                why += (": the same products, but a product's fields or image file changed since the shards were "
                        "embedded")
            raise UsageError(f"OUT {out!r} holds shards of another run (it differs in {why}): pass --overwrite to "
                             "start again, or choose another folder.")
    else:
        atomic_write_json(run_file, settings, indent=2)
    for folder in (out, shard_dir, os.path.join(out, EMBEDDINGS)):
        remove_stray_files(folder)


# --------------------------------------------------------------------------------------------------------- main
def main(argv=None, on_shard=None) -> int:
    """`eclip-index MODEL CATALOGUE OUT [options]`; `on_shard(index, arrays)` runs after each shard is written
    (progress hooks; tests stop a run with it)."""
    from eclip.training.cli import UsageError, fail

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    out = os.path.abspath(os.path.expanduser(args.out))
    try:
        _check_arguments(args)
        from eclip.training.progress import disable_progress_bars_off_terminal

        disable_progress_bars_off_terminal()
        from .catalogue import Catalogue

        try:
            catalogue = Catalogue(args.catalogue, split=args.split, limit=args.limit)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(f"CATALOGUE {args.catalogue!r}: {error}") from error
        state = process_state(args.device)
        if state.process_index == 0:  # the content fingerprint reads every row: once, in the process that checks
            _prepare_out(out, _run_settings(args, catalogue, model_fingerprint(args.model)), args.overwrite)
        state.wait_for_everyone()
        return _run(args, out, catalogue, state, on_shard)
    except KeyboardInterrupt:
        from .shards import written_shards

        done = len(written_shards(os.path.join(out, SHARDS)))
        print(f"{PROG}: interrupted with {done} shard(s) on disk in {out}; run the same command again to continue.",
              file=sys.stderr, flush=True)
        return 130
    except UsageError as error:
        return fail(PROG, error)
    except ValueError as error:  # an undecodable image under --on-bad-image error, a corrupt shard
        return fail(PROG, error, status=1)


def _load_model(model_ref: str, device: str):
    from transformers import AutoProcessor

    from eclip.training.cli import UsageError
    from modeling_eclip import EclipModel

    try:
        model = EclipModel.from_pretrained(model_ref).eval().to(device)
        processor = AutoProcessor.from_pretrained(model_ref)
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"cannot load MODEL {model_ref!r}: {error}") from error
    return model, processor


def _run(args, out: str, catalogue, state, on_shard) -> int:
    from tqdm.auto import tqdm

    from eclip.training.progress import is_terminal

    from .shards import ShardEmbedder, num_shards, process_shards, written_shards

    rank, world = state.process_index, state.num_processes
    device = _device(args.device, state)
    model, processor = _load_model(args.model, device)
    shard_dir = os.path.join(out, SHARDS)
    total = num_shards(len(catalogue), args.shard_size)
    before = written_shards(shard_dir)
    mine = [i for i in process_shards(total, rank, world) if i not in before]
    if args.max_shards is not None:
        mine = mine[: args.max_shards]
    rows = sum(min((i + 1) * args.shard_size, len(catalogue)) - i * args.shard_size for i in mine)
    who = f" (process {rank + 1}/{world})" if world > 1 else ""
    terminal = is_terminal()
    started = time.perf_counter()

    def shard_done(index, arrays):
        if not terminal:  # a log file gets one plain line per shard instead of the bar's redraws
            print(f"[{PROG}]{who} shard {index + 1}/{total}: {len(arrays['rows'])} images in "
                  f"{float(arrays['seconds']):.1f} s", file=sys.stderr, flush=True)
        if on_shard is not None:
            on_shard(index, arrays)

    embedder = ShardEmbedder(model, processor, args.batch_size, device, args.workers, args.on_bad_image)
    with tqdm(total=rows, desc=f"[{PROG}] embedding{who}", unit="image", disable=not terminal,
              position=rank) as progress:
        embedder.embed_shards(catalogue, shard_dir, mine, args.shard_size, on_shard=shard_done, progress=progress)
    state.wait_for_everyone()
    if rank != 0:
        return 0
    seconds = time.perf_counter() - started
    done = written_shards(shard_dir)
    if len(done) < total:
        print(f"{PROG}: {len(done)} of {total} shards embedded in {out}; run the same command again (without "
              "--max-shards) to continue.", file=sys.stderr, flush=True)
        return 0
    new = sorted(done - before)
    manifest = _merge_and_index(args, out, catalogue, model, processor, total, new, seconds, world)
    spaces = ", ".join(f"{space} ({entry['kind']}, recall@10 {_recall_text(entry)})"
                       for space, entry in manifest["indexes"].items())
    print(f"{PROG}: indexed {manifest['products']:,} products in {out}: {spaces}"
          + (f"; {manifest['skipped']['count']} images skipped (see {MANIFEST})" if manifest["skipped"]["count"]
             else ""), flush=True)
    return 0


def _recall_text(entry: dict) -> str:
    return "n/a" if entry.get("recall_at_10") is None else f"{entry['recall_at_10']:.3f}"


# ------------------------------------------------------------------------------------------------------- merge
def _merge_and_index(args, out, catalogue, model, processor, total, new_shards, seconds, world) -> dict:
    import numpy as np

    from eclip.training.atomic import atomic_write_json

    from .faiss_index import build_index, recall_at_k, resolve_kind, save_index
    from .shards import read_shard

    shard_dir = os.path.join(out, SHARDS)
    embed_dir = os.path.join(out, EMBEDDINGS)
    # A rebuild rewrites the embeddings and FAISS files: the old manifest goes first, so that a reader (or a kill
    # half-way) never takes the new files for the old index. The manifest is written last (a complete index).
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out, MANIFEST))
    os.makedirs(embed_dir, exist_ok=True)
    with_instances = bool(getattr(model, "instance_decoder", None) is not None)
    counts, skipped, new_images, new_seconds = [], [], 0, 0.0
    for index in range(total):
        shard = read_shard(shard_dir, index, ("rows", "skipped_rows", "skipped_reasons", "seconds"))
        counts.append(len(shard["rows"]))
        skipped += [{"row": int(r), "reason": str(why)} for r, why in zip(shard["skipped_rows"],
                                                                           shard["skipped_reasons"])]
        if index in new_shards:
            new_images += len(shard["rows"])
            new_seconds += float(shard["seconds"])
    count = sum(counts)
    if count == 0:
        from eclip.training.cli import UsageError

        raise UsageError(f"no image of CATALOGUE {args.catalogue!r} could be decoded ({len(skipped)} tried): "
                         f"nothing to index; the first: {skipped[0]['reason'] if skipped else 'none'}.")
    _merge_arrays(shard_dir, embed_dir, total, count, with_instances)
    _write_products(out, shard_dir, total, args.shard_size, catalogue, processor)

    rng = np.random.default_rng(args.seed)
    text = np.load(os.path.join(embed_dir, SPACES["text"][0]), mmap_mode="r")
    image = np.load(os.path.join(embed_dir, SPACES["image"][0]), mmap_mode="r")
    sample = np.sort(rng.choice(count, size=min(count, args.recall_queries), replace=False))
    has_text = sample[np.linalg.norm(text[sample], axis=1) > 0] if len(sample) else sample
    # Queries that are not vectors of the index they test: texts against image and instance vectors, images
    # against texts (a product's own vector would always find itself first).
    queries = {"image": text[has_text], "instance": text[has_text], "text": image[sample]}
    indexes = {}
    for space, (embedding_file, faiss_file) in SPACES.items():
        if space == "instance" and not with_instances:
            continue
        vectors = np.load(os.path.join(embed_dir, embedding_file), mmap_mode="r")
        per_product = vectors.shape[1] if vectors.ndim == 3 else 1
        vectors = vectors.reshape(-1, vectors.shape[-1])
        kind = resolve_kind(args.index, len(vectors), args.exact_below)
        begun = time.perf_counter()
        faiss_index, params = build_index(vectors, kind, seed=args.seed)
        params["build_seconds"] = round(time.perf_counter() - begun, 3)
        save_index(faiss_index, os.path.join(out, faiss_file))
        probe = queries[space]
        params.update(vectors=int(len(vectors)), vectors_per_product=int(per_product), file=faiss_file,
                      embeddings=f"{EMBEDDINGS}/{embedding_file}", recall_queries=int(len(probe)),
                      recall_at_10=recall_at_k(faiss_index, vectors, probe, RECALL_K) if len(probe) else None)
        indexes[space] = params
        del faiss_index

    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([PROG, *args.argv]),
        "model": {"path": os.path.abspath(args.model) if os.path.isdir(args.model) else args.model,
                  "fingerprint": model_fingerprint(args.model), "projection_dim": int(model.config.projection_dim),
                  "num_instance_queries": int(model.config.num_instance_queries) if with_instances else None,
                  "instance_decoder": with_instances},
        "catalogue": {"spec": catalogue.spec, "split": args.split, "limit": args.limit, "rows": len(catalogue),
                      "id_column": catalogue.id_column, "title_column": catalogue.title_column,
                      "fields": catalogue.columns},
        "products": int(count),
        "skipped": {"count": len(skipped), "first": skipped[:MAX_SKIPPED_NAMED]},
        "shards": {"count": total, "shard_size": args.shard_size, "folder": SHARDS},
        "embedding": {"processes": world, "images_this_run": new_images, "seconds_this_run": round(seconds, 3),
                      "images_per_second": round(new_images / seconds, 3) if new_images and seconds > 0 else None,
                      "shard_seconds_this_run": round(new_seconds, 3)},
        "indexes": indexes,
        "files": {"products": PRODUCTS, "selection_logits": f"{EMBEDDINGS}/{SELECTION_FILE}" if with_instances
                  else None},
    }
    atomic_write_json(os.path.join(out, MANIFEST), manifest, indent=2)  # last: the index is complete
    return manifest


def _merge_arrays(shard_dir: str, embed_dir: str, total: int, count: int, with_instances: bool) -> None:
    """The shards' arrays, concatenated in row order into `.npy` files written through memory maps (memory holds
    one shard), each whole or not at all."""
    import numpy as np

    from eclip.training.atomic import atomic_path

    from .shards import read_shard

    first = read_shard(shard_dir, 0)
    names = {"image": "image_embeds", "text": "text_embeds"}
    if with_instances:
        names.update(instance="instance_embeds", selection="selection_logits")
    files = {key: SPACES[key][0] if key in SPACES else SELECTION_FILE for key in names}
    with contextlib.ExitStack() as stack:
        temporaries = {key: stack.enter_context(atomic_path(os.path.join(embed_dir, files[key]))) for key in names}
        arrays = {key: np.lib.format.open_memmap(temporaries[key], mode="w+", dtype=np.float32,
                                                 shape=(count, *first[name].shape[1:]))
                  for key, name in names.items()}
        position = 0
        for index in range(total):
            shard = first if index == 0 else read_shard(shard_dir, index)
            size = len(shard["rows"])
            for key, name in names.items():
                arrays[key][position : position + size] = shard[name]
            position += size
        for array in arrays.values():
            array.flush()
        del arrays  # close the maps before the files are renamed


def _write_products(out: str, shard_dir: str, total: int, shard_size: int, catalogue, processor) -> None:
    """`products.parquet`: per indexed product (row order of the embeddings) `_row` (catalogue row), `_id`,
    `_image` (its file), `_title`, `_text` (the product text that was embedded) and every catalogue field as a string
    (the derived columns start with `_` so that no catalogue field is shadowed). Written one shard at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eclip.training.atomic import atomic_path

    from .catalogue import image_reference, product_texts
    from .shards import read_shard

    schema = pa.schema([("_row", pa.int64()), ("_id", pa.string()), ("_image", pa.string()), ("_title", pa.string()),
                        ("_text", pa.string()), *((name, pa.string()) for name in catalogue.columns)])
    with atomic_path(os.path.join(out, PRODUCTS)) as temporary:
        with pq.ParquetWriter(temporary, schema) as writer:
            for index in range(total):
                kept = set(read_shard(shard_dir, index, ("rows",))["rows"].tolist())
                start, stop = index * shard_size, min((index + 1) * shard_size, len(catalogue))
                rows = [row for row in catalogue.rows(start, stop) if row["row"] in kept]
                texts = product_texts(processor, rows)
                columns = {"_row": np.asarray([row["row"] for row in rows], dtype=np.int64),
                           "_id": [row["product_id"] for row in rows],
                           "_image": [image_reference(row["image"]) for row in rows],
                           "_title": [catalogue.title(row["fields"]) or text for row, text in zip(rows, texts)],
                           "_text": texts}
                columns.update({name: [row["fields"][name] for row in rows] for name in catalogue.columns})
                writer.write_table(pa.table(columns, schema=schema))


if __name__ == "__main__":
    sys.exit(main())

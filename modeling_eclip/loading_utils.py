# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Folder I/O of ECLIP models: atomic saves readable by others, safetensors-only loading, and LoRA adapter folders that
load as their base model with the adapter on top. `EclipPreTrainedModel.from_pretrained` / `save_pretrained` call
these. Like the modeling file it imports only the standard library, torch and transformers, so `save_pretrained`
ships it beside the model code and `trust_remote_code=True` loading works without the package installed.
"""

import contextlib
import contextvars
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from transformers import PreTrainedConfig

ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft's; the name is fixed by the Hub's LoRA repos
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def share_under_umask(folder: str) -> None:
    """
    Give `folder` and everything in it the mode a plain `mkdir` / `open` gives under the user's umask (0755 / 0644
    for the usual 022). `tempfile.mkdtemp` makes staging folders 0700 and transformers writes weights 0600; a saved
    model is meant to be read by others (a model server running as another user, shared storage, an image layer).
    """
    umask = os.umask(0)
    os.umask(umask)
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, keep_existing: bool = True) -> Iterator[str]:
    """
    Yield a staging folder next to `target`; on success it replaces `target`, on any error or kill it is discarded,
    so `target` only ever holds a complete save. With `keep_existing`, files and sub-folders already in `target` that
    the writer does not produce (a processor written earlier, Trainer checkpoints) are carried over, except weight
    files, which would mix old shards with the new weights; without it `target` becomes exactly what was written.
    The result is readable under the user's umask (`share_under_umask`). The swap is two renames; a kill between
    them leaves the previous folder whole under `.NAME.old-*`.
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    try:
        yield staging
        if os.path.isdir(target):
            for entry in os.listdir(target) if keep_existing else ():
                source, destination = os.path.join(target, entry), os.path.join(staging, entry)
                if os.path.lexists(destination) or entry.endswith(WEIGHT_SUFFIXES):
                    continue
                # The writer is done, so hard links cannot be written through: carrying checkpoints over is free.
                if os.path.isdir(source):
                    shutil.copytree(source, destination, copy_function=_link_or_copy)
                else:
                    _link_or_copy(source, destination)
            share_under_umask(staging)
            backup = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rename(target, os.path.join(backup, name))
            os.rename(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            share_under_umask(staging)
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _hub_file(path: str, name: str, kwargs: dict) -> str | None:
    """The file `name` of a local folder or a Hub repo (cached or downloaded), or `None` when it has none."""
    if os.path.isdir(path):
        file = os.path.join(path, kwargs.get("subfolder") or "", name)
    else:
        from transformers.utils import cached_file

        names = ("cache_dir", "revision", "token", "local_files_only", "subfolder")
        download = {k: kwargs[k] for k in names if k in kwargs}
        file = cached_file(path, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **download)
    return file if file and os.path.isfile(file) else None


def _hub_json(path: str, name: str, kwargs: dict) -> dict | None:
    """The JSON file `name` of a local folder or a Hub repo, or `None` when it has none."""
    file = _hub_file(path, name, kwargs)
    if file is None:
        return None
    with open(file, encoding="utf-8") as handle:
        return json.load(handle)


# Load-report exemptions for the load under way: weights that the adapter loaded right after the base restores.
_RESTORED_BY_ADAPTER: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("eclip_restored_by_adapter",
                                                                                         default=())


def weights_restored_by_adapter(adapter: str, adapter_kwargs: dict) -> list[str]:
    """
    The names (in the head, e.g. `classifier.weight`) of the weights a LoRA adapter stores whole (peft's
    `modules_to_save`, not its low-rank factors): loading the adapter restores them, so their absence from the base
    checkpoint is not a "newly initialized" weight. Empty when the adapter has no safetensors file.
    """
    file = _hub_file(os.fspath(adapter), ADAPTER_WEIGHTS_NAME, adapter_kwargs)
    if file is None:
        return []
    from safetensors import safe_open

    with safe_open(file, framework="pt") as weights:
        names = [name.removeprefix("base_model.model.") for name in weights.keys()]
    return sorted(name for name in names if not any(part.startswith("lora_") for part in name.split(".")))


@contextlib.contextmanager
def restored_by_adapter(names) -> Iterator[None]:
    """Within this block, models built by `from_pretrained` do not report `names` as missing (see `post_init`)."""
    token = _RESTORED_BY_ADAPTER.set(tuple(rf"^{re.escape(name)}$" for name in names))
    try:
        yield
    finally:
        _RESTORED_BY_ADAPTER.reset(token)


def missing_keys_restored_by_adapter() -> tuple[str, ...]:
    """The exemptions of the load under way (regexes), for `EclipPreTrainedModel.post_init`."""
    return _RESTORED_BY_ADAPTER.get()


def base_of_adapter(model_class, path: str, kwargs: dict) -> str:
    """
    A LoRA adapter (a folder or repo with `adapter_config.json` and no model weights, as `eclip-finetune --lora`
    writes) loads as its base model with the adapter on top (transformers' PEFT integration, `adapter_kwargs`),
    and with the head config saved next to the adapter (labels, modality) rather than the base's, so that
    `AutoModelFor*.from_pretrained(adapter)` and `pipeline(task, model=adapter)` give the fine-tuned head.
    Returns the path to load weights from (the base for an adapter, else `path`); updates `kwargs`.
    """
    adapter_kwargs = dict(kwargs.get("adapter_kwargs") or {})
    # Auto classes find the adapter first: they pass it here (with its own revision), with the base already swapped
    # in for a Hub repo but not for a local folder that has a config.json (transformers then expects the weights
    # beside it).
    adapter = adapter_kwargs.get("_adapter_model_path")
    if adapter is None or os.fspath(adapter) == path:
        adapter_config = _hub_json(path, ADAPTER_CONFIG_NAME, kwargs)
        base = (adapter_config or {}).get("base_model_name_or_path")
        weights = ("model.safetensors", "model.safetensors.index.json")  # a full model with an adapter inside
        if not base or any(os.path.isfile(os.path.join(path, name)) for name in weights):
            return path
        adapter, path = path, base
        adapter_kwargs["_adapter_model_path"] = adapter
        for key in ("revision", "subfolder"):  # they name the adapter's files; the base loads from its main
            if key in kwargs:
                adapter_kwargs.setdefault(key, kwargs.pop(key))
        kwargs["adapter_kwargs"] = adapter_kwargs
    config = kwargs.get("config")
    if not isinstance(config, PreTrainedConfig) or model_class.__name__ not in (config.architectures or []):
        download = {k: kwargs[k] for k in ("cache_dir", "token", "local_files_only") if k in kwargs}
        download.update({k: adapter_kwargs[k] for k in ("revision", "subfolder") if adapter_kwargs.get(k)})
        if _hub_json(adapter, "config.json", download) is not None:
            kwargs["config"] = model_class.config_class.from_pretrained(adapter, **download)
    return path


def safe_load_path(model_class, pretrained_model_name_or_path, kwargs: dict):
    """
    What `from_pretrained` should load, checked for safe loading: safetensors only (`kwargs["use_safetensors"]` is
    forced on), a LoRA adapter redirected to its base ([`base_of_adapter`]), and a folder that holds only pickle
    checkpoints (`.bin`, `.pt`...) refused, since unpickling can execute code. `None` (weights given as
    `state_dict=` with a `config=`) has no folder to check and stays `None`. Updates `kwargs`.
    """
    if kwargs.get("use_safetensors") is False:
        raise ValueError("ECLIP reads safetensors only: use_safetensors=False is not supported.")
    kwargs["use_safetensors"] = True
    if pretrained_model_name_or_path is None:
        return None
    path = base_of_adapter(model_class, os.fspath(pretrained_model_name_or_path), kwargs)
    if os.path.isdir(path):
        folder = os.path.join(path, kwargs["subfolder"]) if kwargs.get("subfolder") else path
        names = os.listdir(folder) if os.path.isdir(folder) else []
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles and not any(n.endswith(".safetensors") for n in names):
            raise ValueError(
                f"{folder} holds only pickle checkpoints ({', '.join(pickles)}). ECLIP refuses them because "
                "unpickling can execute arbitrary code; convert them once in a trusted environment with "
                "`model.save_pretrained(folder)` (which writes safetensors)."
            )
    return path


@contextlib.contextmanager
def corrupt_weights_named(path: str | None) -> Iterator[None]:
    """A truncated or tampered safetensors file read inside this block raises a `ValueError` naming `path` instead of
    a deserialisation failure deep in the loader."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise ValueError(
            f"The safetensors weights in {path} are truncated or corrupt ({error}); re-download or re-save them."
        ) from error


__all__ = ["atomic_directory", "share_under_umask"]

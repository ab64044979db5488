# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
What `eclip-pretrain`, `eclip-finetune` and `eclip-evaluate` share on the command line: checks that run before torch,
a model or any data is loaded, errors as one line with a suggestion for a near-miss name (`UsageError`), the refusal
to replace a trained folder without `--overwrite`, and the `--push-to-hub` options. Imports nothing heavy, so that
`--help` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

# A folder holding one of these has been written by a training run (or is a model): replacing it needs --overwrite.
TRAINED_MARKERS = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "adapter_config.json",
    "adapter_model.safetensors", "test_metrics.json",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class UsageError(ValueError):
    """A mistake on the command line (a path, a name, a value): shown as one line, without a traceback."""


def suggest(name: str, choices) -> str:
    """`" (did you mean 'x'?)"` for the closest of `choices`, or `""`."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def fail(prog: str, error: BaseException | str, status: int = 2) -> int:
    """Print `prog: error: message` as one line on stderr and return `status` (for `return fail(...)` in `main`)."""
    message = " ".join(str(error).split())  # one line, whatever the message's own line breaks
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return status


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: error: ... (see prog --help)`) and a suggestion for a mistyped option."""

    def error(self, message):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += suggest(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            options = [option for option in self._option_string_actions if option.startswith("--")]
            shown = [extra + (suggest(extra.split("=")[0], options) if extra.startswith("-") else "") for extra in extras]
            self.error(f"unrecognized arguments: {' '.join(shown)}")
        return args


# ------------------------------------------------------------------------------------------------------ paths
def _near_miss_path(value: str) -> str:
    """The suggestion for a local path that does not exist: a close name in its parent folder."""
    path = os.path.expanduser(value)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return ""
    names = [name for name in os.listdir(parent) if not name.startswith(".")]
    close = difflib.get_close_matches(os.path.basename(os.path.normpath(path)), names, n=1, cutoff=0.6)
    return f" (did you mean {os.path.join(os.path.dirname(value), close[0])!r}?)" if close else ""


def check_path(value: str, flag: str, kind: str = "folder") -> str:
    """`value` must be an existing folder (`kind="folder"`), file (`"file"`) or either (`"path"`)."""
    path = os.path.expanduser(value)
    exists = {"folder": os.path.isdir, "file": os.path.isfile, "path": os.path.exists}[kind](path)
    if not exists:
        if os.path.exists(path):
            raise UsageError(f"{flag} {value!r} is not a {kind}.")
        raise UsageError(f"{flag} {value!r}: no such {kind}{_near_miss_path(value)}.")
    return path


def looks_like_repo_id(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and ".." not in value and not value.endswith((".", "-"))


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hub cache holds a snapshot of model repo `repo_id`."""
    from huggingface_hub import constants

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "snapshots")
    return os.path.isdir(folder) and bool(os.listdir(folder))


def check_model_reference(value: str, flag: str = "--model", namespaced: bool = True, local_because: str | None = None) -> str:
    """
    `value` as a model source: an existing local folder, or a Hub repo id. Returns `"local"` or `"hub"`.

    A name that is not a folder is taken for a Hub id only when it cannot be a mistyped local path: a near-miss of a
    folder next to it, or `dir/name` under an existing local `dir`, is a typo (a Hub lookup would spend a minute on
    retries before failing). With `namespaced` a Hub id must be `ORG/NAME` (every ECLIP repo is; only legacy models
    such as `bert-base-uncased` have no namespace). Offline (`HF_HUB_OFFLINE=1`), a Hub id must be in the Hub cache.
    `local_because` (why) requires a local folder.
    """
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        return "local"
    if os.path.exists(path):
        raise UsageError(f"{flag} {value!r} is a file; it must be a model folder or a Hub repo id.")
    near_miss = _near_miss_path(value)
    if local_because:
        raise UsageError(f"{flag} {value!r} is not a local folder{near_miss}, and {local_because}.")
    local_parent = "/" in value.strip("/") and os.path.isdir(os.path.dirname(path))
    not_an_id = not looks_like_repo_id(value) or value.startswith((".", "/", "~")) or (namespaced and "/" not in value)
    if not_an_id or near_miss or local_parent:
        raise UsageError(f"{flag} {value!r}: no such folder{near_miss}.")
    if hub_offline() and not in_hub_cache(value):
        raise UsageError(
            f"{flag} {value!r} is not a local folder, and as a Hub repo id it is not in the Hub cache while "
            "HF_HUB_OFFLINE is set."
        )
    return "hub"


def check_output_dir(path: str, overwrite: bool, flag: str = "--output-dir") -> None:
    """Refuse to replace a folder that already holds a trained model (or a run's results) unless `overwrite`."""
    path = os.path.expanduser(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a file, not a folder.")
    if overwrite or not os.path.isdir(path):
        return
    found = [name for name in TRAINED_MARKERS if os.path.exists(os.path.join(path, name))]
    if found:
        raise UsageError(
            f"{flag} {path!r} already holds a trained model ({found[0]}): pass --overwrite to replace it, or choose "
            "another folder."
        )


# ---------------------------------------------------------------------------------------------------- the Hub
def add_hub_arguments(parser: argparse.ArgumentParser, what: str = "the final folder") -> None:
    group = parser.add_argument_group("Hugging Face Hub")
    group.add_argument(
        "--push-to-hub", metavar="REPO_ID", default=None,
        help=f"push {what} to this Hub model repo in one commit (created if missing; token as huggingface_hub "
        "reads it: HF_TOKEN or `hf auth login`).",
    )
    group.add_argument("--hub-private", action="store_true", help="create the repo private (an existing repo keeps its visibility).")
    group.add_argument("--hub-revision", metavar="BRANCH", default=None, help="push to this branch (created from main if missing).")


def check_hub_arguments(args: argparse.Namespace) -> None:
    """The Hub options are consistent, the repo id is valid and a token is available: before any training."""
    if args.push_to_hub is None:
        extra = [flag for flag, value in (("--hub-private", args.hub_private), ("--hub-revision", args.hub_revision))
                 if value]
        if extra:
            raise UsageError(f"{' and '.join(extra)} need --push-to-hub REPO_ID.")
        return
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(args.push_to_hub)
    except HFValidationError as error:
        raise UsageError(f"--push-to-hub {args.push_to_hub!r} is not a Hub repo id ({error}).") from None
    if "/" not in args.push_to_hub:
        raise UsageError(f"--push-to-hub {args.push_to_hub!r}: give the full repo id, ORG_OR_USER/NAME.")
    if get_token() is None:
        raise UsageError(
            "--push-to-hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN (nothing was trained)."
        )


__all__ = [
    "ArgumentParser", "TRAINED_MARKERS", "UsageError", "add_hub_arguments", "check_hub_arguments",
    "check_model_reference", "check_output_dir", "check_path", "fail", "hub_offline", "in_hub_cache",
    "looks_like_repo_id", "suggest",
]

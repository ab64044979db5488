# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Publishing a saved folder to the Hugging Face Hub in one commit (`HfApi.create_commit`), as `--push-to-hub` of the
three commands does, and what a folder gives the Hub: its files, without staging folders, Trainer checkpoints,
temporary files or pickles. The repo is created if missing (`exist_ok`), a `revision` branch from `main` if missing;
the token is the one huggingface_hub finds (`HF_TOKEN`, or the one `hf auth login` stored).

    python -m eclip.training.hub eclip-fashion org/eclip-fashion [--private] [--revision BRANCH]

A failed push (offline, no network, a rejected token) raises `PushError`, whose one-line message says why and where
the local folder is: it is never modified by a push.
"""

from __future__ import annotations

import json
import os
import re
import sys

# Hidden entries cover atomic_directory's `.NAME.partial-*` / `.NAME.old-*` staging folders, `.git` and `.cache`.
_SKIPPED_DIRS = re.compile(r"^(\..*|__pycache__|(tmp-)?(old-)?checkpoint-\d+|runs)$")
_SKIPPED_FILES = re.compile(r"^(\..*|.*\.tmp-\d+|.*\.lock)$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ADAPTER_CONFIG = "adapter_config.json"


class PushError(RuntimeError):
    """The push failed; the message (one line) says why and where the intact local folder is."""


def folder_files(folder: str) -> list[str]:
    """The files of `folder` a push uploads, as sorted repo paths (`/`-separated): everything but staging and
    hidden entries, checkpoints, temporary files and pickles (ECLIP reads safetensors only)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _SKIPPED_DIRS.match(d))
        for name in names:
            if _SKIPPED_FILES.match(name) or name.endswith(PICKLE_SUFFIXES):
                continue
            files.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(files)


def adapter_config_for_hub(folder: str, base_repo_id: str) -> dict[str, bytes]:
    """
    `{repo path: bytes}` replacing, in the pushed copy only, the base model of every `adapter_config.json` in `folder`
    by `base_repo_id`: locally the adapter names its base by absolute path (it loads offline, from any directory); on
    the Hub it must name a repo.
    """
    replaced = {}
    for path in folder_files(folder):
        if path.rsplit("/", 1)[-1] == ADAPTER_CONFIG:
            with open(os.path.join(folder, path), encoding="utf-8") as handle:
                config = json.load(handle)
            config["base_model_name_or_path"] = base_repo_id
            replaced[path] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return replaced


def _reason(error: BaseException) -> str:
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return "offline: HF_HUB_OFFLINE is set"
    text = " ".join(str(error).split())[:300]
    if type(error).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionError", "NameResolutionError"):
        return f"the Hub cannot be reached: {text}"
    return f"{type(error).__name__}: {text}"


def push_folder(
    folder: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    replace: dict[str, bytes] | None = None,
):
    """
    Upload `folder` (its `folder_files`) to model repo `repo_id` in one commit and return the `CommitInfo`.
    `private` creates a new repo private (an existing one keeps its visibility); `revision` is the branch (created
    if missing); `replace` maps repo paths to the bytes to push instead of the local file. Raises `PushError`.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = os.path.abspath(folder)
    files = folder_files(folder)
    if not files:
        raise ValueError(f"{folder} holds nothing to push.")
    replace = dict(replace or {})
    unknown = sorted(set(replace) - set(files))
    if unknown:
        raise ValueError(f"replace names files that are not pushed: {unknown}.")
    api = HfApi(library_name="eclip")
    try:
        api.create_repo(repo_id, private=True if private else None, token=token, exist_ok=True)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=replace.get(path, os.path.join(folder, path)))
            for path in files
        ]
        return api.create_commit(
            repo_id, operations, commit_message=commit_message or f"Upload {os.path.basename(folder)} (ECLIP)",
            revision=revision, token=token,
        )
    except Exception as error:  # offline, no network, bad token, no rights...: the folder is untouched
        raise PushError(
            f"could not push {folder} to the Hub repo {repo_id} ({_reason(error)}). The local folder is intact; push it "
            f"later with: python -m eclip.training.hub {folder} {repo_id}"
            + (f" --revision {revision}" if revision else "") + (" --private" if private else "")
        ) from error


def main(argv: list[str] | None = None) -> int:
    from eclip.training.cli import ArgumentParser, UsageError, check_path, fail

    parser = ArgumentParser(prog="python -m eclip.training.hub", description="Push a saved ECLIP folder to the Hub.")
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--base-model-id", default=None,
                        help="Hub id of an adapter's base model, written into the pushed adapter_config.json.")
    args = parser.parse_args(argv)
    try:
        check_path(args.folder, "folder")
        replace = adapter_config_for_hub(args.folder, args.base_model_id) if args.base_model_id else None
        commit = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision, replace=replace)
    except (UsageError, PushError, ValueError) as error:
        return fail(parser.prog, error, 2 if isinstance(error, UsageError) else 1)
    print(f"pushed {args.folder} to {getattr(commit, 'commit_url', args.repo_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PushError", "adapter_config_for_hub", "folder_files", "push_folder"]

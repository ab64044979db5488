"""The Hub without a network: pushes stop at huggingface_hub's commit boundary, loads read a local Hub cache.

`FakeHub` replaces `HfApi.create_repo`, `create_branch` and `create_commit` and records what they were given (the
operations' bytes included); `lay_into_cache` writes pushed files as a Hub cache snapshot
(`models--org--name/snapshots/<commit>/` with `refs/<branch>`), which transformers, peft and huggingface_hub read by
repo id with `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` pointing there.
"""

import hashlib
import os
import subprocess
import sys
from types import SimpleNamespace

from conftest import REPO_ROOT


class FakeHub:
    def __init__(self):
        self.repos, self.branches, self.commits = [], [], []

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        hub = self

        def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, **kwargs):
            hub.repos.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
            return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

        def create_branch(self, repo_id, *, branch, token=None, exist_ok=False, **kwargs):
            hub.branches.append({"repo_id": repo_id, "branch": branch})

        def create_commit(self, repo_id, operations, *, commit_message, revision=None, token=None, **kwargs):
            files = {}
            for operation in operations:
                source = operation.path_or_fileobj
                if isinstance(source, (str, os.PathLike)):
                    with open(source, "rb") as handle:
                        files[operation.path_in_repo] = handle.read()
                elif isinstance(source, bytes):
                    files[operation.path_in_repo] = source
                else:
                    files[operation.path_in_repo] = source.read() if hasattr(source, "read") else bytes(source)
            oid = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items())).encode()).hexdigest()
            hub.commits.append({"repo_id": repo_id, "files": files, "revision": revision, "message": commit_message,
                                "oid": oid, "kwargs": kwargs})
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}", oid=oid)

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
        return self

    def only_commit(self, repo_id):
        commits = [c for c in self.commits if c["repo_id"] == repo_id]
        assert len(commits) == 1, [c["repo_id"] for c in self.commits]
        return commits[0]


def lay_into_cache(cache, repo_id, files, revision=None, oid=None):
    """Write `files` ({repo path: bytes}) as the snapshot of `repo_id` at `revision` (default main) in Hub cache `cache`."""
    oid = oid or hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
    repo = os.path.join(str(cache), "models--" + repo_id.replace("/", "--"))
    for path, data in files.items():
        target = os.path.join(repo, "snapshots", oid, *path.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    for branch in {"main", revision or "main"}:
        with open(os.path.join(repo, "refs", branch), "w") as handle:
            handle.write(oid)
    return oid


def card_of(files, path="README.md"):
    """The pushed model card, parsed by huggingface_hub as the Hub would."""
    from huggingface_hub import ModelCard

    return ModelCard(files[path].decode("utf-8"))


def run_offline(script: str, cache, tmp_path, *args, hide_package=False, timeout=600):
    """Run `script` in a fresh process that reads the Hub only from `cache` (HF_HUB_OFFLINE=1); returns stdout."""
    path = tmp_path / f"script_{abs(hash(script)) % 10**8}.py"
    header = ""
    if hide_package:  # a machine without this package: only the code saved with the model may run
        header = (
            "import importlib.abc, sys\n"
            "class HideEclip(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('modeling_eclip', 'training', 'model_cards'):\n"
            "            raise ImportError(name + ' is hidden: this process must load the copied code')\n"
            "sys.meta_path.insert(0, HideEclip())\n"
        )
    path.write_text(header + script)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1", PYTHONPATH="" if hide_package else REPO_ROOT)
    env.pop("HF_TOKEN", None)
    result = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True, env=env,
                            timeout=timeout, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout

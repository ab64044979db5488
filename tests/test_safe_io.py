"""Safe loading and atomic saving: pickles refused, corrupt weights named, a killed save leaves the old folder."""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel

from conftest import REPO_ROOT, tiny_config, tiny_processor
from modeling_eclip import EclipModel, atomic_directory


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = EclipModel(tiny_config())
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    return model, folder


def weights_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pickle_checkpoint_is_refused(saved, tmp_path):
    model, folder = saved
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickle checkpoints .*pytorch_model.bin.*arbitrary code"):
        AutoModel.from_pretrained(pickled)
    with pytest.raises(ValueError, match="safetensors only"):
        EclipModel.from_pretrained(folder, use_safetensors=False)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "x", safe_serialization=False)


def _rewrite_header(path, mutate):
    blob = path.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + size])
    mutate(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + size :])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "tampered-shape", "tampered-offsets"])
def test_corrupt_safetensors_give_a_clear_error(saved, damage):
    _, folder = saved
    weights = folder / "model.safetensors"
    blob = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        weights.write_bytes(os.urandom(4096))
    elif damage == "tampered-shape":
        _rewrite_header(weights, lambda h: h[next(k for k in h if k != "__metadata__")].update(shape=[10**7]))
    else:
        def shift(header):
            key = next(k for k in header if k != "__metadata__")
            start, end = header[key]["data_offsets"]
            header[key]["data_offsets"] = [start + 8, end + 8]
        _rewrite_header(weights, shift)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        AutoModel.from_pretrained(folder)


def test_save_keeps_files_written_by_others_and_replaces_weights(saved):
    model, folder = saved
    tiny_processor().save_pretrained(folder)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    with torch.no_grad():
        model.logit_scale.fill_(1.234)
    model.save_pretrained(folder)
    assert (folder / "tokenizer.json").exists() and (folder / "processor_config.json").exists()
    assert (folder / "checkpoint-10" / "optimizer.pt").read_bytes() == b"state"
    assert EclipModel.from_pretrained(folder).logit_scale.item() == pytest.approx(1.234)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_failed_save_leaves_previous_folder(saved, monkeypatch):
    model, folder = saved
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(folder) as staging:
            (open(os.path.join(staging, "model.safetensors"), "wb")).write(b"half")
            raise RuntimeError("disk full")
    assert (folder / "model.safetensors").read_bytes() == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from modeling_eclip import EclipModel
    import safetensors.torch as st

    real_save_file = st.save_file
    def slow_save_file(*args, **kwargs):
        real_save_file(*args, **kwargs)
        print("WEIGHTS-WRITTEN", flush=True)
        time.sleep(60)  # killed here: new weights on disk, save not finished
    st.save_file = slow_save_file
    import transformers.modeling_utils as mu
    if hasattr(mu, "safe_save_file"):
        mu.safe_save_file = slow_save_file
    torch.manual_seed(1)
    model = EclipModel(tiny_config())
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    model.save_pretrained(sys.argv[1])
    """
)


def test_sigkill_during_save_pretrained_leaves_previous_model_loadable(saved, tmp_path):
    model, folder = saved
    script = tmp_path / "killed_save.py"
    script.write_text(KILL_SCRIPT.format(tests=os.path.join(REPO_ROOT, "tests")))
    process = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if "WEIGHTS-WRITTEN" in line:
                break
        else:
            pytest.fail("the save never reached the weights")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    reloaded = EclipModel.from_pretrained(folder)
    assert weights_equal(reloaded, model)
    assert reloaded.logit_scale.item() != 3.0


def test_atomic_file_write_replaces_the_whole_file_or_nothing(tmp_path, monkeypatch):
    """The one helper every results / report / card / cache-manifest file is written with."""
    from eclip.training.atomic import atomic_write_json, atomic_write_text

    path = tmp_path / "results.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):  # fails before writing: the old file stays, no temporary is left
        atomic_write_json(path, {"x": object()})
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]

    def disk_error(descriptor):
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", disk_error)  # fails after a partial write
    with pytest.raises(OSError, match="no space"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]
    monkeypatch.undo()
    atomic_write_json(path, {"a": [1, 2]}, indent=2)
    assert path.read_text() == json.dumps({"a": [1, 2]}, indent=2)

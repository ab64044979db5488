"""Product matching: the one Ditto reader and serializer, the cross-encoder matcher (save, load, LoRA), its
fine-tuning (fair truncation, measured max_length, length order, progress lines) and the committed benchmark."""

import json
import io
import logging
import os
import re

import datasets
import numpy as np
import pytest
import torch

from _heads_backbone import MATCHING_BENCHMARK, build_backbone
from conftest import REPO_ROOT, tiny_config
from modeling_eclip import EclipConfig, EclipForProductMatching
from eclip.training import finetune_data
from eclip.training.evaluation.data import load_matching
from eclip.training.matching_data import (
    DEFAULT_SERIALIZATION,
    MATCHING_DATASETS,
    SERIALIZATIONS,
    MatchingFormatError,
    parse_record,
    read_pairs,
    serialize,
)

WALMART = ("COL title VAL elite screens  85 diagonal COL category VAL electronics COL brand VAL  COL modelno VAL "
           "r85wh1 COL price VAL 409.0 ")
AMAZON = ("COL title VAL elite screens r85wh1 wide screen COL category VAL projection screens COL brand VAL elite "
          "COL modelno VAL  COL price VAL ")
ABT = "COL name VAL sony cyber-shot dscw120p COL description VAL sony 7.2 megapixel camera COL price VAL 199.0 "
BUY = "COL name VAL sony dsc-w120 pink COL description VAL  COL price VAL "


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return build_backbone(str(tmp_path_factory.mktemp("matching")))


@pytest.fixture(scope="module")
def tokenizer(backbone):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(backbone).tokenizer


def write_matching_data(root, lines_by_dataset):
    """A data root holding product-matching/<benchmark>/{train,valid,test}.txt with the given lines in each."""
    for name, lines in lines_by_dataset.items():
        folder = root / "product-matching" / name
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            (folder / f"{split}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(root)


# ---------------------------------------------------------------------------------------------------- the data
def test_the_two_serializations_of_a_record():
    record = parse_record(WALMART)
    assert record == (("title", "elite screens 85 diagonal"), ("category", "electronics"), ("brand", ""),
                      ("modelno", "r85wh1"), ("price", "409.0"))
    assert serialize(record, "ditto") == ("COL title VAL elite screens 85 diagonal COL category VAL electronics "
                                          "COL brand VAL COL modelno VAL r85wh1 COL price VAL 409.0")
    assert serialize(record, "compact") == "elite screens 85 diagonal | electronics | r85wh1 | 409.0"
    with pytest.raises(ValueError, match="serialization must be one of"):
        serialize(record, "json")


@pytest.mark.parametrize("serialization", SERIALIZATIONS + (None,))
def test_zero_shot_and_finetuning_read_a_record_as_the_same_text(tmp_path, serialization):
    """eclip-evaluate's zero-shot matching and eclip-finetune's matching dataset see one product as one text."""
    root = write_matching_data(tmp_path, {"walmart-amazon": [f"{WALMART}\t{AMAZON}\t1", f"{AMAZON}\t{WALMART}\t0"],
                                          "abt-buy": [f"{ABT}\t{BUY}\t1", f"{BUY}\t{ABT}\t0"]})
    kwargs = {} if serialization is None else {"serialization": serialization}
    tuned = finetune_data.matching_dataset(root, **kwargs)
    zero_shot = load_matching(root, None, 0, **kwargs)
    expected = serialization or DEFAULT_SERIALIZATION
    for name, left, right in (("walmart-amazon", WALMART, AMAZON), ("abt-buy", ABT, BUY)):
        rows = tuned["validation"].filter(lambda source, name=name: source == name, input_columns="source")
        assert zero_shot[name]["valid"][0] == (rows[0]["text_a"], rows[0]["text_b"], 1)
        assert rows[0]["text_a"] == serialize(parse_record(left), expected)
        assert rows[0]["text_b"] == serialize(parse_record(right), expected)
        assert zero_shot[name]["test"][1][:2] == (serialize(parse_record(right), expected),
                                                  serialize(parse_record(left), expected))


BAD_LINES = {
    "missing field": (f"{WALMART}\t{AMAZON.replace('COL brand VAL elite ', '')}\t0",
                      "missing field: the right record lacks brand"),
    "extra field": (f"{WALMART} COL colour VAL red\t{AMAZON}\t0", "unexpected field: the left record has colour"),
    "field order": (f"{WALMART}\t{AMAZON.replace('COL title', 'COL x').replace('COL category', 'COL title').replace('COL x', 'COL category')}\t0",
                    "field order: the right record has category, title"),
    "empty side": (f"{WALMART}\t  \t1", "empty record: the right side is empty"),
    "every value empty": ("COL title VAL COL category VAL COL brand VAL COL modelno VAL COL price VAL \t"
                          f"{AMAZON}\t0", "empty record: every field is empty (title, category, brand, modelno, "
                                           "price) (left side)"),
    "two parts": (f"{WALMART}\t{AMAZON}", "malformed line: expected LEFT<TAB>RIGHT<TAB>LABEL, found 2"),
    "bad label": (f"{WALMART}\t{AMAZON}\tyes", "the label must be 0 or 1"),
    "not a record": (f"elite screens 85 diagonal\t{AMAZON}\t1", "malformed record: not 'COL <name> VAL <value> ...'"),
    "repeated field": (f"{WALMART}\t{AMAZON} COL price VAL 3\t1", "malformed record: field(s) price given twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, case):
    line, message = BAD_LINES[case]
    path = tmp_path / "train.txt"
    path.write_text(f"{WALMART}\t{AMAZON}\t1\n\n{line}\n", encoding="utf-8")  # a blank line is not an error
    with pytest.raises(MatchingFormatError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
        read_pairs(str(path))


def test_bad_lines_can_be_skipped_and_are_counted(tmp_path, caplog):
    path = tmp_path / "train.txt"
    lines = [f"{WALMART}\t{AMAZON}\t1"] + [BAD_LINES[case][0] for case in sorted(BAD_LINES)] + [f"{AMAZON}\t{WALMART}\t0"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="eclip.training.matching_data"):
        pairs = read_pairs(str(path), "compact", skip_invalid=True)
    assert pairs.labels == [1, 0] and pairs.lines == [1, len(lines)]
    assert sum(pairs.skipped.values()) == len(BAD_LINES)
    assert pairs.skipped == {"empty record": 2, "malformed line": 2, "malformed record": 2, "missing field": 1,
                             "unexpected field": 1, "field order": 1}
    assert f"{path}: skipped {len(BAD_LINES)} invalid line(s)" in caplog.text


def test_the_finetuning_data_stops_at_a_bad_line(tmp_path):
    root = write_matching_data(tmp_path, {"walmart-amazon": [f"{WALMART}\t{AMAZON}\t1", BAD_LINES["empty side"][0]]})
    with pytest.raises(MatchingFormatError, match=r"walmart-amazon/train\.txt:2: empty record"):
        finetune_data.matching_dataset(root, ["walmart-amazon"])
    assert len(finetune_data.matching_dataset(root, ["walmart-amazon"], skip_invalid=True)["train"]) == 1


def test_the_real_files_read_whole(data_dir):
    expected = {"walmart-amazon": {"train": (6144, 576), "valid": (2049, 193), "test": (2049, 193)},
                "abt-buy": {"train": (5743, 616), "valid": (1916, 206), "test": (1916, 206)}}
    for name in MATCHING_DATASETS:
        for split, (count, positives) in expected[name].items():
            pairs = read_pairs(os.path.join(data_dir, "product-matching", name, f"{split}.txt"))
            assert (len(pairs), sum(pairs.labels), sum(pairs.skipped.values())) == (count, positives, 0)


# ---------------------------------------------------------------------------------------------------- the model
def pair_batch(tokenizer, texts_a, texts_b, max_length=32):
    return tokenizer(texts_a, texts_b, padding=True, truncation="longest_first", max_length=max_length,
                     return_tensors="pt")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"matching_mode": "siamese"}, "EclipConfig.matching_mode must be one of"),
        ({"matching_mode": "cross_encoder", "modality": "both"}, "needs modality='text'"),
    ],
)
def test_bad_matching_mode_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_cross_encoder_reads_the_pair_as_one_sequence(tokenizer, one_thread):
    torch.manual_seed(0)
    model = EclipForProductMatching(tiny_config(modality="text", matching_mode="cross_encoder")).eval()
    assert model.matcher[1].in_features == model.eclip.text_embed_dim
    batch = pair_batch(tokenizer, ["sony camera dscw120", "apple ipod nano"], ["sony dsc-w120 pink", "canon printer"])
    labels = torch.tensor([1.0, 0.0])
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2,) and out.embeds_a is None and out.embeds_b is None
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))
    # the head reads the text tower's pooled state of the joint sequence, both segments (token types 0 and 1)
    assert set(batch["token_type_ids"].unique().tolist()) == {0, 1}
    with torch.no_grad():
        pooled = model.eclip._pool_text(model.eclip.text_model(**batch), batch["attention_mask"])
        torch.testing.assert_close(out.logits, model.matcher(pooled).squeeze(-1))
        swapped = model(**pair_batch(tokenizer, ["sony dsc-w120 pink"], ["sony camera dscw120"])).logits
    assert not torch.allclose(swapped, out.logits[:1])  # an order-aware joint reading, not two embeddings
    with pytest.raises(ValueError, match="takes no second-product inputs: got input_ids_b"):
        model(**batch, input_ids_b=batch["input_ids"])
    with pytest.raises(ValueError, match="needs input_ids"):
        model(attention_mask=batch["attention_mask"])


@pytest.mark.parametrize("mode", ["bi_encoder", "cross_encoder"])
def test_both_modes_save_and_load(tokenizer, tmp_path, mode, one_thread):
    torch.manual_seed(0)
    model = EclipForProductMatching(tiny_config(modality="text", matching_mode=mode)).eval()
    texts_a, texts_b = ["sony camera dscw120", "apple ipod nano"], ["sony dsc-w120 pink", "canon printer"]
    if mode == "cross_encoder":
        inputs = dict(pair_batch(tokenizer, texts_a, texts_b))
    else:
        a, b = tokenizer(texts_a, padding=True, return_tensors="pt"), tokenizer(texts_b, padding=True, return_tensors="pt")
        inputs = {**a, **{f"{k}_b": v for k, v in b.items()}}
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["matching_mode"] == mode
    loaded = EclipForProductMatching.from_pretrained(tmp_path).eval()
    assert loaded.config.matching_mode == mode
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected)


def test_a_matcher_saved_before_the_field_loads_as_the_bi_encoder(tmp_path, one_thread):
    EclipForProductMatching(tiny_config(modality="text")).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["matching_mode"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert EclipConfig.from_pretrained(tmp_path).matching_mode == "bi_encoder"
    assert EclipForProductMatching.from_pretrained(tmp_path).config.matching_mode == "bi_encoder"


def test_cross_encoder_lora_trains_saves_reloads_and_merges(backbone, tokenizer, tmp_path, one_thread):
    from eclip.training.lora import apply_lora, default_lora_targets, default_modules_to_save, load_adapter, save_adapter

    torch.manual_seed(0)
    model = EclipForProductMatching.from_pretrained(backbone, modality="text", matching_mode="cross_encoder")
    targets = default_lora_targets(model)
    assert len(targets) == 24 and all(n.startswith("eclip.text_model.") for n in targets)  # MiniLM attention only
    assert default_modules_to_save(model) == ["matcher"]
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    batch = dict(pair_batch(tokenizer, ["sony camera dscw120", "apple ipod nano", "hp toner 12a", "lg dishwasher"],
                            ["sony dsc-w120 pink", "canon printer", "hp q2612a toner", "lg ldf6920bb"]))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        peft_model(**batch, labels=torch.tensor([1.0, 0.0, 1.0, 1.0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
    save_adapter(peft_model, str(tmp_path / "adapter"))
    reloaded = load_adapter(str(tmp_path / "adapter")).eval()
    assert reloaded.get_base_model().config.matching_mode == "cross_encoder"
    merged = reloaded.merge_and_unload()
    assert type(merged) is EclipForProductMatching
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- fine-tuning
def test_cross_encoder_batches_cut_the_longer_side_first(tokenizer):
    from eclip.training.finetune import PairCollator

    long_text = " ".join(f"word{i}" for i in range(200))
    rows = [{"text_a": long_text, "text_b": "sony dsc-w120 pink", "labels": 1.0},
            {"text_a": "hp toner", "text_b": long_text, "labels": 0.0}]
    batch = PairCollator(tokenizer, max_length=40, mode="cross_encoder")(rows)
    assert batch["input_ids"].shape == (2, 40) and batch["labels"].tolist() == [1.0, 0.0]
    short = tokenizer("sony dsc-w120 pink", add_special_tokens=False)["input_ids"]
    second = batch["input_ids"][0][batch["token_type_ids"][0] == 1].tolist()
    assert second[:-1] == short  # the short product is kept whole; the long one gave up the tokens
    both_long = PairCollator(tokenizer, max_length=41, mode="cross_encoder")(
        [{"text_a": long_text, "text_b": long_text[::-1], "labels": 1.0}])
    types = both_long["token_type_ids"][0]
    assert abs(int((types == 0).sum()) - int((types == 1).sum())) <= 2  # two long sides share the budget
    bi = PairCollator(tokenizer, max_length=16)(rows)  # bi-encoder: each side on its own, padded to its batch
    assert bi["input_ids"].shape[1] == 16 and bi["input_ids_b"].shape[1] == 16


def test_max_length_is_measured_on_the_training_pairs(tokenizer, data_dir):
    from eclip.training.finetune import measured_max_length, pair_lengths

    assert measured_max_length({"joint": list(range(1, 101))}, 512) == 96  # 95th percentile 95.05 -> 96
    assert measured_max_length({"a": [10] * 99, "b": [700]}, 512) == 16
    assert measured_max_length({"joint": [600] * 10}, 512) == 512
    train = finetune_data.matching_dataset(data_dir, ["walmart-amazon"])["train"]
    lengths = pair_lengths(tokenizer, train, "cross_encoder")
    assert len(lengths["joint"]) == len(train) and measured_max_length(lengths, 512) == 128


def test_predict_sorts_by_length_and_returns_rows_in_order(tokenizer, one_thread):
    from eclip.training.finetune import PairCollator, predict

    torch.manual_seed(0)
    model = EclipForProductMatching(tiny_config(modality="text", matching_mode="cross_encoder")).eval()
    texts = ["sony", "apple ipod nano 8gb silver", "hp", "lg ldf6920bb fully integrated dishwasher black", "canon"]
    rows = {"text_a": texts, "text_b": texts[::-1], "labels": [1.0, 0.0, 1.0, 0.0, 1.0]}
    plain = datasets.Dataset.from_dict(rows)
    lengths = [len(ids) for ids in tokenizer(texts, texts[::-1])["input_ids"]]
    ordered = plain.add_column("length", lengths)
    collator = PairCollator(tokenizer, 64, "cross_encoder")
    (expected,), (labels,) = predict(model, plain, collator, batch_size=1)
    (got,), (got_labels,) = predict(model, ordered, collator, batch_size=2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got_labels.tolist() == labels.tolist() == rows["labels"]


def test_progress_lines_show_rate_and_eta(tokenizer, tmp_path, one_thread):
    from transformers import Trainer, TrainingArguments

    from eclip.training.finetune import PairCollator
    from eclip.training.progress import ProgressLogCallback

    torch.manual_seed(0)
    model = EclipForProductMatching(tiny_config(modality="text", matching_mode="cross_encoder"))
    train = datasets.Dataset.from_dict({"text_a": ["sony a", "hp b"] * 4, "text_b": ["sony c", "lg d"] * 4,
                                        "labels": [1.0, 0.0] * 4})
    callback = ProgressLogCallback("eclip-finetune", every_seconds=0, stream=io.StringIO())
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, report_to="none",
                             save_strategy="no", use_cpu=True, remove_unused_columns=False, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=train, data_collator=PairCollator(tokenizer, 16, "cross_encoder"),
            callbacks=[callback]).train()
    lines = callback.lines
    assert len(lines) == 3
    assert re.fullmatch(r"\[eclip-finetune\] step 3/3 \(100%\), .*, elapsed \d+s, ETA 0s.*", lines[-1]), lines
    assert re.fullmatch(r"\[eclip-finetune\] step 1/3 \(33%\), .* ETA \d+s.*", lines[0]), lines


@pytest.mark.slow
def test_cross_encoder_fits_real_pairs(backbone, tokenizer, data_dir, one_thread):
    """The joint reading trains: the MiniLM cross-encoder separates 16 real Walmart-Amazon pairs after a few steps
    (a broken gradient path, a head on the wrong state or segments mixed up would keep it at chance)."""
    pairs = read_pairs(os.path.join(data_dir, "product-matching", "walmart-amazon", "train.txt"))
    positives = [i for i, label in enumerate(pairs.labels) if label == 1][:8]
    negatives = [i for i, label in enumerate(pairs.labels) if label == 0][:8]
    rows = positives + negatives
    batch = dict(pair_batch(tokenizer, [pairs.text_a[i] for i in rows], [pairs.text_b[i] for i in rows], 64))
    labels = torch.tensor([1.0] * 8 + [0.0] * 8)
    torch.manual_seed(0)
    model = EclipForProductMatching.from_pretrained(backbone, modality="text", matching_mode="cross_encoder")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(12):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    assert logits[:8].min() > logits[8:].max(), logits


@pytest.mark.slow
def test_matching_cli_cross_encoder_end_to_end(backbone, data_dir, tmp_path, caplog):
    from eclip.training.finetune import main

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="eclip-finetune"):
        assert main(["--task", "matching", "--matching-datasets", "walmart-amazon", "--matching-mode", "cross_encoder",
                     "--serialization", "compact", "--model", backbone, "--data", data_dir, "--limit", "64",
                     "--max-steps", "2", "--batch-size", "8", "--bf16", "--output-dir", str(out)]) == 0
    report = json.loads((out / "test_metrics.json").read_text())
    assert (report["matching_mode"], report["serialization"], report["steps"]) == ("cross_encoder", "compact", 2)
    assert f"max_length {report['max_length']}: the 95th percentile of the 64 training pairs" in caplog.text
    assert 48 <= report["max_length"] <= 128 and report["max_length"] % 8 == 0
    assert set(report["validation"]) == {"walmart-amazon", "all"}
    assert 0.0 <= report["test"]["walmart-amazon"]["f1"] <= 1.0
    assert EclipForProductMatching.from_pretrained(out).config.matching_mode == "cross_encoder"


# ---------------------------------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_benchmark_writes_each_run_and_reuses_them(tmp_path, data_dir):
    bench = MATCHING_BENCHMARK
    output, work = tmp_path / "matching.json", tmp_path / "work"
    args = ["--datasets", "walmart-amazon", "--seeds", "0,1", "--limit", "24", "--max-steps", "1", "--float32",
            "--threads", "2", "--output", str(output), "--work-dir", str(work), "--data", data_dir]
    assert bench.main(args + ["--reuse"]) == 0
    report = json.loads(output.read_text())
    best = report["choices"]["mode"]["best"]
    chosen = report["choices"]["serialization"]["chosen"]
    assert sorted(report["runs"]) == sorted(
        [f"walmart-amazon/bi_encoder/{s}/seed0" for s in SERIALIZATIONS]
        + [f"walmart-amazon/cross_encoder/{chosen}/seed0", f"walmart-amazon/{best}/{chosen}/seed1"])
    assert report["summary"]["walmart-amazon"][best]["seeds"] == [0, 1]
    assert report["zero_shot"]["serialization"] == chosen and 0.0 <= report["zero_shot"]["walmart-amazon"]["f1"] <= 1
    assert not [name for name in os.listdir(work) if name != "backbone"]  # the run folders are gone
    assert bench.markdown_table(report).splitlines()[0] == "| model | walmart-amazon F1 |"
    assert bench.main(args + ["--reuse"]) == 0  # nothing left to run
    again = json.loads(output.read_text())
    assert again["runs"] == report["runs"] and len(again["sessions"]) == 2
    with pytest.raises(SystemExit, match="other settings"):
        bench.main([a if a != "1" else "2" for a in args] + ["--reuse"])


def test_committed_results_match_the_readme():
    """The docs/matching.md's matching table is the committed JSON's, and the default serializer is the one it chose."""
    bench = MATCHING_BENCHMARK
    with open(os.path.join(REPO_ROOT, "benchmarks", "results", "matching.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(REPO_ROOT, "docs", "matching.md"), encoding="utf-8") as handle:
        readme = handle.read()
    table = bench.markdown_table(report)
    assert table in readme, f"the docs/matching.md's matching table differs from benchmarks/results/matching.json:\n{table}"
    assert report["settings"] == {**bench.SETTINGS, "datasets": list(MATCHING_DATASETS), "seeds": [0, 1, 2],
                                  "limit": None, "max_steps": -1}
    assert DEFAULT_SERIALIZATION == report["choices"]["serialization"]["chosen"]
    scores = report["choices"]["mode"]["mean_validation_f1"]
    assert report["choices"]["mode"]["best"] == max(scores, key=scores.get)
    for name in MATCHING_DATASETS:
        assert report["summary"][name][report["choices"]["mode"]["best"]]["seeds"] == [0, 1, 2]

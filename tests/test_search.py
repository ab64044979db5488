"""
Catalogue search (issue #39): `eclip-index` on real fashion photos with a tiny ECLIP (embeddings equal the model's own
`get_*_features`, shards resume after an interruption, settings are checked), the FAISS indexes and their recall,
`CatalogueIndex` (text, image and scene queries, filters, bad input) and `eclip-search`. No mocks: the real model,
the real FAISS, the real photos.
"""

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from _search_helpers import (PHOTOS, SHARD_SIZE, build_index, fashion_dir, index_argv, one_thread, save_tiny_model,
                             small_catalogue)

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

ATOL = 1e-5


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    """A seeded tiny ECLIP and its index of the first 24 fashion photos (three shards of 8), built by eclip-index."""
    threads = one_thread()
    root = tmp_path_factory.mktemp("search")
    model = save_tiny_model(root / "model")
    index = build_index(model, root / "index")
    # The same 24 products as a small imagefolder, for the tests that run eclip-index several times.
    yield {"root": root, "model": model, "index": index, "small": small_catalogue(root / "catalogue")}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def catalogue_index(built):
    from eclip.training.search import CatalogueIndex

    return CatalogueIndex.load(built["index"])


def fashion_rows(n=PHOTOS):
    import csv

    with open(os.path.join(fashion_dir(), "metadata.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    for row in rows:
        row["path"] = os.path.join(fashion_dir(), row["file_name"])
    return rows


def photo_records(rows, folder, **columns) -> list[dict]:
    """Copy the rows' photos to `folder/photos` and return catalogue records with relative image paths, an id and a
    title; `columns` maps a column name to a function of (position, row) giving its value."""
    (folder / "photos").mkdir(parents=True)
    records = []
    for i, row in enumerate(rows):
        shutil.copy(row["path"], folder / "photos" / f"{i}.jpg")
        records.append({"image_path": f"photos/{i}.jpg", "product_id": f"SKU-{i}", "title": row["productDisplayName"],
                        **{name: value(i, row) for name, value in columns.items()}})
    return records


# --------------------------------------------------------------------------------------------------- the index
def test_index_layout_manifest_and_products(built):
    import pandas as pd

    from eclip.training.search.layout import read_manifest

    folder = built["index"]
    manifest = read_manifest(folder)
    assert manifest["products"] == PHOTOS and manifest["skipped"]["count"] == 0
    assert manifest["shards"] == {"count": 3, "shard_size": SHARD_SIZE, "folder": "shards"}
    assert sorted(os.listdir(os.path.join(folder, "shards"))) == [
        "run.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert manifest["embedding"]["images_this_run"] == PHOTOS
    for space, vectors in (("image", PHOTOS), ("text", PHOTOS), ("instance", PHOTOS * 4)):
        entry = manifest["indexes"][space]
        assert entry["kind"] == "exact" and entry["vectors"] == vectors  # auto: far below the HNSW threshold
        assert entry["recall_at_10"] == 1.0 and entry["recall_queries"] == PHOTOS
        assert os.path.isfile(os.path.join(folder, entry["file"]))
    assert not [name for root, _, names in os.walk(folder) for name in names if ".tmp-" in name]

    products = pd.read_parquet(os.path.join(folder, "products.parquet"))
    rows = fashion_rows()
    assert products["_row"].tolist() == list(range(PHOTOS))
    assert products["_id"].tolist() == [row["id"] for row in rows]
    assert products["_title"].tolist() == [row["productDisplayName"] for row in rows]
    assert products["_image"].tolist() == [row["path"] for row in rows]
    assert products["gender"].tolist() == [row["gender"] for row in rows]
    # The product text is the fashion schema through the training field map (what the model was trained on).
    first = rows[0]
    assert products["_text"].iloc[0] == (
        f"{first['productDisplayName']} | {first['masterCategory']} > {first['subCategory']} > "
        f"{first['articleType']} | colour: {first['baseColour']} | gender: {first['gender']} | "
        f"usage: {first['usage']} | season: {first['season']}")


def test_embeddings_equal_the_models_own_features(built):
    """Every stored embedding is the model's `get_image_features` / `get_instance_features` / `get_text_features`
    output (normalised), computed here in one batch of 24 (the index used batches of 5)."""
    import pandas as pd
    from transformers import AutoProcessor

    from modeling_eclip import EclipModel, open_image

    folder = built["index"]
    model = EclipModel.from_pretrained(built["model"]).eval()
    processor = AutoProcessor.from_pretrained(built["model"])
    texts = pd.read_parquet(os.path.join(folder, "products.parquet"))["_text"].tolist()
    images = [open_image(row["path"]) for row in fashion_rows()]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    text_inputs = processor(text=texts, return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        image = model.get_image_features(pixel_values=pixel_values).pooler_output
        instances = model.get_instance_features(pixel_values=pixel_values)
        text = model.get_text_features(**text_inputs).pooler_output
    stored = {name: np.load(os.path.join(folder, "embeddings", f"{name}.npy"))
              for name in ("image", "text", "instance", "selection")}
    np.testing.assert_allclose(stored["image"], torch.nn.functional.normalize(image, dim=-1).numpy(), atol=ATOL,
                               rtol=0)
    np.testing.assert_allclose(stored["image"], image.numpy(), atol=ATOL, rtol=0)  # already unit norm
    np.testing.assert_allclose(stored["instance"], instances.instance_embeds.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(stored["selection"], instances.selection_logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(stored["text"], torch.nn.functional.normalize(text, dim=-1).numpy(), atol=ATOL,
                               rtol=0)
    assert stored["instance"].shape == (PHOTOS, 4, 16) and stored["image"].dtype == np.float32


def test_an_interrupted_run_resumes_without_recomputing_written_shards(built, tmp_path, capsys):
    from eclip.training.search import CatalogueIndex
    from eclip.training.search.index import main

    out = tmp_path / "index"
    embedded = []

    def stop_after_two(index, arrays):
        embedded.append(len(arrays["rows"]))
        if len(embedded) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C or a kill right after the second shard is on disk

    assert main(index_argv(built["model"], out, catalogue=built["small"]), on_shard=stop_after_two) == 130
    assert "interrupted with 2 shard(s) on disk" in capsys.readouterr().err
    assert sorted(os.listdir(out / "shards")) == ["run.json", "shard-00000.npz", "shard-00001.npz"]
    with pytest.raises(ValueError, match="unfinished index"):
        CatalogueIndex.load(out)
    # A write cut short by a kill leaves at most a temporary file, never a shard: the next run removes it.
    (out / "shards" / "shard-00002.npz.tmp-99999").write_bytes(b"partial")

    embedded.clear()
    assert main(index_argv(built["model"], out, catalogue=built["small"]),
                on_shard=lambda index, arrays: embedded.append((index, len(arrays["rows"])))) == 0
    assert embedded == [(2, SHARD_SIZE)]  # only the missing shard: 8 of the 24 images
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["embedding"]["images_this_run"] == SHARD_SIZE and manifest["products"] == PHOTOS
    assert not (out / "shards" / "shard-00002.npz.tmp-99999").exists()
    for name in ("image", "text", "instance"):
        np.testing.assert_allclose(np.load(out / "embeddings" / f"{name}.npy"),
                                   np.load(os.path.join(built["index"], "embeddings", f"{name}.npy")), atol=ATOL,
                                   rtol=0)


def test_max_shards_stages_a_run_and_settings_are_checked(built, tmp_path, capsys):
    from eclip.training.search.index import main

    out = tmp_path / "index"

    def argv(*extra):
        return index_argv(built["model"], out, *extra, catalogue=built["small"])

    assert main(argv("--max-shards", "1")) == 0
    assert "1 of 3 shards embedded" in capsys.readouterr().err
    assert not (out / "index.json").exists()
    # Another shard size or other rows would mix shards of two runs: refused, naming what differs.
    assert main(argv("--shard-size", "6")) == 2
    assert "holds shards of another run (it differs in shard_size)" in capsys.readouterr().err
    assert main(argv("--limit", "16")) == 2
    assert "(it differs in catalogue_content, catalogue_fingerprint, limit, rows)" in capsys.readouterr().err
    embedded = []
    assert main(argv(), on_shard=lambda i, a: embedded.append(i)) == 0
    assert embedded == [1, 2]
    # A rebuild with another kind removes the manifest before it rewrites any file: killed half-way (here while
    # building the first FAISS index, the embeddings and products already rewritten), the folder is an unfinished
    # index, not the old manifest over new files.
    import eclip.training.search.faiss_index as faiss_index
    from eclip.training.search import CatalogueIndex

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faiss_index, "build_index", killed)
        assert main(argv("--index", "hnsw")) == 130
    capsys.readouterr()
    assert not (out / "index.json").exists()
    with pytest.raises(ValueError, match="unfinished index"):
        CatalogueIndex.load(out)
    # A finished folder rerun with another kind rebuilds the FAISS indexes from the kept shards, embedding nothing.
    assert main(argv("--index", "hnsw")) == 0
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["embedding"]["images_this_run"] == 0
    assert {entry["kind"] for entry in manifest["indexes"].values()} == {"hnsw"}
    assert all(entry["recall_at_10"] == pytest.approx(1.0) for entry in manifest["indexes"].values())
    # --overwrite starts again.
    embedded.clear()
    assert main(argv("--limit", "16", "--overwrite"), on_shard=lambda i, a: embedded.append(i)) == 0
    assert embedded == [0, 1] and json.loads((out / "index.json").read_text())["products"] == 16


def test_a_catalogue_changed_under_the_same_ids_is_refused_on_resume(built, tmp_path, capsys):
    """Shards embedded from a title or a photo that has since changed are not reused beside the new content: the run
    is refused, naming the difference, until --overwrite; the same content written again resumes."""
    import csv

    import pandas as pd

    from eclip.training.search.index import main

    rows = fashion_rows(6)
    folder = tmp_path / "catalogue"
    records = photo_records(rows, folder, gender=lambda i, row: row["gender"])
    catalogue = folder / "products.csv"

    def write(records, stamp):
        with open(catalogue, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        os.utime(catalogue, (stamp, stamp))  # a distinct modification time: the datasets cache must reread it

    out = tmp_path / "index"
    argv = [built["model"], str(catalogue), str(out), "--shard-size", "3", "--batch-size", "3", "--workers", "0"]
    write(records, 1_000_000)
    assert main([*argv, "--max-shards", "1"]) == 0
    capsys.readouterr()
    changed = "the same products, but a product's fields or image file changed"

    # A title rewritten in the embedded shard 0, under the same id.
    write([{**r, "title": "Renamed shirt"} if i == 1 else r for i, r in enumerate(records)], 1_000_100)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"(it differs in catalogue_content: {changed}" in err and "--overwrite" in err, err
    write(records, 1_000_200)  # the same content again (another file time): resumed
    assert main([*argv, "--max-shards", "1"]) == 0 and (out / "shards" / "shard-00001.npz").exists()
    capsys.readouterr()

    shutil.copy(rows[5]["path"], folder / "photos" / "1.jpg")  # a photo replaced, the same file name
    assert main(argv) == 2
    assert f"(it differs in catalogue_content: {changed}" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert pd.read_parquet(out / "products.parquet")["_title"].tolist() == [r["title"] for r in records]
    image = np.load(out / "embeddings" / "image.npy")
    np.testing.assert_allclose(image[1], image[5], atol=ATOL, rtol=0)  # re-embedded from the new photo


def test_index_command_errors_are_one_line(built, tmp_path, capsys):
    from eclip.training.search.index import main

    cases = [
        (index_argv(built["model"], tmp_path / "a", "--limit", "0"), "--limit must be a positive integer"),
        ([built["model"], str(tmp_path / "missing.csv"), str(tmp_path / "b")], "no such file or folder"),
        ([str(tmp_path / "no-model"), fashion_dir(), str(tmp_path / "c")], "no such folder"),
        (index_argv(built["model"], __file__), "is a file, not a folder"),
        (index_argv(built["model"], os.path.dirname(__file__)), "is not empty and holds no index"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("eclip-index: error: ")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


def test_csv_and_jsonl_catalogues_with_an_image_path_column(built, tmp_path):
    """A CSV and a JSONL with relative image paths and their own columns (a `title`, a `product_id`, a `brand`)."""
    import pandas as pd

    from eclip.training.search.index import main

    rows = fashion_rows(5)
    folder = tmp_path / "catalogue"
    records = photo_records(rows, folder, brand=lambda i, row: "Palm Tree" if i < 3 else "Acme",
                            colour=lambda i, row: row["baseColour"])
    pd.DataFrame(records).to_csv(folder / "products.csv", index=False)
    with open(folder / "products.jsonl", "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    for name in ("products.csv", "products.jsonl"):
        out = tmp_path / f"index-{name}"
        assert main([built["model"], str(folder / name), str(out), "--workers", "0", "--batch-size", "2"]) == 0
        products = pd.read_parquet(out / "products.parquet")
        assert products["_id"].tolist() == [f"SKU-{i}" for i in range(5)]
        assert products["_image"].tolist() == [str(folder / "photos" / f"{i}.jpg") for i in range(5)]
        # The brand the title starts with is not repeated; the others lead the text.
        assert products["_text"].iloc[0] == f"{rows[0]['productDisplayName']} | colour: {rows[0]['baseColour']}"
        assert products["_text"].iloc[4].startswith(f"Acme {rows[4]['productDisplayName']}")


def test_undecodable_images_are_skipped_and_named(built, tmp_path):
    import pandas as pd

    rows = fashion_rows(4)
    folder = tmp_path / "catalogue"
    folder.mkdir()
    data = open(rows[1]["path"], "rb").read()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("not a photo")
    paths = [rows[0]["path"], str(folder / "cut.jpg"), str(folder / "text.jpg"), rows[3]["path"]]
    pd.DataFrame({"image": paths, "title": [r["productDisplayName"] for r in rows]}).to_csv(folder / "c.csv",
                                                                                            index=False)
    from eclip.training.search.index import main

    assert main([built["model"], str(folder / "c.csv"), str(tmp_path / "idx"), "--workers", "0"]) == 0
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["products"] == 2 and manifest["skipped"]["count"] == 2
    reasons = {entry["row"]: entry["reason"] for entry in manifest["skipped"]["first"]}
    assert "truncated" in reasons[1] and "not an image" in reasons[2]
    assert pd.read_parquet(tmp_path / "idx" / "products.parquet")["_row"].tolist() == [0, 3]
    assert main([built["model"], str(folder / "c.csv"), str(tmp_path / "idx2"), "--workers", "0",
                 "--on-bad-image", "error"]) == 1


def test_split_and_a_clip_baseline_without_instance_decoder(built, tmp_path):
    """`--split` keeps one split's rows; a plain CLIP (no instance decoder) gets image and text indexes, and a scene
    query says it needs the decoder."""
    import pandas as pd

    from eclip.training.search import CatalogueIndex, QueryError

    clip = save_tiny_model(tmp_path / "clip", use_instance_decoder=False)
    folder = build_index(clip, tmp_path / "index", "--split", "train", catalogue=built["small"])
    products = pd.read_parquet(os.path.join(folder, "products.parquet"))
    train = [row["id"] for row in fashion_rows() if row["split"] == "train"]
    assert products["_id"].tolist() == train and set(products["split"]) == {"train"}
    manifest = json.loads(open(os.path.join(folder, "index.json")).read())
    assert set(manifest["indexes"]) == {"image", "text"} and manifest["model"]["instance_decoder"] is False
    index = CatalogueIndex.load(folder)
    assert index.search_image(products["_image"].iloc[0], k=1).hits[0].index_row == 0
    with pytest.raises(QueryError, match="needs a model with the instance decoder"):
        index.search_scene(products["_image"].iloc[0])
    with pytest.raises(QueryError, match="no instance space"):
        index.search_text("shirt", space="instance")


# ------------------------------------------------------------------------------------------------------- FAISS
def test_approximate_indexes_recall_against_exact():
    """HNSW and IVF on 4,000 clustered unit vectors: recall@10 measured against an exact scan, high but real."""
    from eclip.training.search.faiss_index import build_index, exact_top_k, recall_at_k, resolve_kind

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    vectors = centres[rng.integers(0, 40, 4000)] + 0.6 * rng.normal(size=(4000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = vectors[:100] + 0.1 * rng.normal(size=(100, 32)).astype(np.float32)
    exact, _ = build_index(vectors, "exact")
    assert recall_at_k(exact, vectors, queries) == 1.0
    scores, ids = exact_top_k(vectors, queries, 10)
    np.testing.assert_allclose(scores, np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    for kind in ("hnsw", "ivf"):
        index, params = build_index(vectors, kind, seed=0)
        recall = recall_at_k(index, vectors, queries)
        assert 0.8 <= recall <= 1.0, (kind, recall)
    assert params["nlist"] == 102 and params["nprobe"] == 7
    assert resolve_kind("auto", 99_999) == "exact" and resolve_kind("auto", 100_000) == "hnsw"


# ------------------------------------------------------------------------------------------------- the Python API
def brute_force(vectors, query, allowed=None, k=10):
    scores = vectors @ query if vectors.ndim == 2 else (vectors @ query).max(axis=1)
    rows = np.arange(len(scores)) if allowed is None else np.asarray(allowed)
    order = rows[np.argsort(-scores[rows], kind="stable")][:k]
    return order.tolist(), scores[order]


def test_text_and_image_search_match_a_brute_force_scan(catalogue_index, monkeypatch):
    import eclip.training.search.api as api

    index = catalogue_index
    image, instances = np.load(os.path.join(index.folder, "embeddings", "image.npy")), index.vectors("instance")
    query = "Nike Men Blue Polo Tshirts"
    vector = index.embed_text(query)
    result = index.search_text(query, k=5)
    expected, scores = brute_force(image, vector, k=5)
    assert [hit.index_row for hit in result.hits] == expected
    np.testing.assert_allclose([hit.score for hit in result.hits], scores, atol=1e-5)
    assert set(result.timings) == {"embed_ms", "search_ms", "total_ms"}
    # The instance space scores a product by its best instance: the model's own max_k score.
    result = index.search_text(query, k=5, space="instance")
    assert [hit.index_row for hit in result.hits] == brute_force(np.asarray(instances), vector, k=5)[0]

    # Filters: fields ANDed, values of one field ORed. In both spaces the same rows as a brute-force scan of the
    # allowed products, through both routes: an exact index searched with FAISS' ID selector, and an approximate one
    # (its kind in the manifest stands in for it here) with fewer than EXACT_FILTER_BELOW allowed vectors, which
    # scans them (numpy).
    women = index.products.index[(index.products["gender"] == "Women")].tolist()
    for space, vectors in (("image", image), ("instance", np.asarray(instances))):
        expected = brute_force(vectors, vector, women, k=5)[0]
        filtered = index.search_text(query, k=5, filters={"gender": "Women"}, space=space)
        assert [hit.index_row for hit in filtered.hits] == expected, space
        assert all(hit.fields["gender"] == "Women" for hit in filtered.hits)
        per_product = vectors.shape[1] if vectors.ndim == 3 else 1
        assert len(women) * per_product <= api.EXACT_FILTER_BELOW
        with monkeypatch.context() as patch:
            patch.setitem(index.manifest["indexes"][space], "kind", "hnsw")
            rows = [h.index_row for h in index.search_text(query, k=5, filters=["gender=Women"], space=space).hits]
        assert rows == expected, space
    both = index.search_text(query, k=10, filters=["gender=Women,gender=Men", "articleType=Tshirts"])
    assert both.hits and all(h.fields["articleType"] == "Tshirts" and h.fields["gender"] in ("Men", "Women")
                             for h in both.hits)
    assert len(index.search_text(query, k=10, filters={"articleType": "Caps"}).hits) == \
        int((index.products["articleType"] == "Caps").sum())

    # A catalogue photo finds itself first.
    photo = index.products["_image"].iloc[7]
    hits = index.search_image(photo, k=3).hits
    assert hits[0].index_row == 7 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].product_id == index.products["_id"].iloc[7] and hits[0].image == photo


def test_scene_search_keeps_distinct_instances_with_their_attention(catalogue_index):
    from eclip.training.compositor import compose_scene
    from eclip.training.evaluation.scenes import attention_grid
    from eclip.training.search.api import render_highlight
    from modeling_eclip import open_image

    index = catalogue_index
    photos = [open_image(index.products["_image"].iloc[i]) for i in (2, 9, 14)]
    scene, box = compose_scene(photos[0], photos[1:], random.Random(0))
    result = index.search_scene(scene, k=4, max_instances=4, min_selection=0.0, duplicate_cosine=1.01)
    assert len(result.instances) == 4 and not result.skipped  # nothing filtered: all K queries
    shares = [instance.selection for instance in result.instances]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0, abs=1e-5)

    pixel_values = index.processor(images=scene, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = index.model.get_instance_features(pixel_values=pixel_values, output_attentions=True)
    attention = out.cross_attentions[-1][0].mean(dim=0).numpy()
    for instance in result.instances:
        expected = attention_grid(attention[instance.query])
        np.testing.assert_allclose(instance.heatmap, expected / expected.max(), atol=1e-5)
        assert instance.heatmap.shape == (4, 4) and instance.heatmap.max() == pytest.approx(1.0)
        x0, y0, x1, y1 = instance.box
        assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
        np.testing.assert_allclose(instance.embedding, out.instance_embeds[0, instance.query].numpy(), atol=1e-5)
        expected_rows = brute_force(index.vectors("image"), instance.embedding, k=4)[0]
        assert [hit.index_row for hit in instance.hits] == expected_rows
    np.testing.assert_allclose(result.image_embedding, out.image_embeds[0].numpy(), atol=1e-5)
    assert render_highlight(scene, result.instances[0].heatmap, result.instances[0].box,
                            index.processor.image_processor).size == (224, 224)

    # Near-duplicates are skipped (any two instances are "duplicates" at cosine -1), the best is always kept.
    single = index.search_scene(scene, k=3, min_selection=0.0, duplicate_cosine=-1.0)
    assert len(single.instances) == 1 and single.instances[0].query == result.instances[0].query
    assert all("near-duplicate" in s["reason"] for s in single.skipped)
    capped = index.search_scene(scene, k=3, max_instances=2, min_selection=0.0, duplicate_cosine=1.01)
    assert [i.query for i in capped.instances] == [i.query for i in result.instances[:2]]
    json.dumps(capped.to_dict())  # JSON-ready (what eclip-search --json prints)


def test_bad_queries_are_clear_errors(catalogue_index, tmp_path):
    from PIL import Image

    from eclip.training.search import MAX_QUERY_CHARS, CatalogueIndex, QueryError

    index = catalogue_index
    for query, message in (("", "empty"), ("   \n", "empty"), ("x" * (MAX_QUERY_CHARS + 1), "1,001 characters")):
        with pytest.raises(QueryError, match=message):
            index.search_text(query)
    assert index.search_text("y" * MAX_QUERY_CHARS, k=1).hits  # the limit itself is accepted
    with pytest.raises(QueryError, match="k must be"):
        index.search_text("shirt", k=0)
    with pytest.raises(QueryError, match=r"unknown filter field 'gendr' \(did you mean 'gender'\?\)"):
        index.search_text("shirt", filters=["gendr=Women"])
    with pytest.raises(QueryError, match=r"no product has gender='Wmen' \(did you mean 'Women'\?\)"):
        index.search_text("shirt", filters={"gender": "Wmen"})
    with pytest.raises(QueryError, match="must read FIELD=VALUE"):
        index.search_text("shirt", filters=["gender"])

    photo = open(index.products["_image"].iloc[0], "rb").read()
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "cut.jpg").write_bytes(photo[: len(photo) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("1", (10_000, 10_000)).save(tmp_path / "huge.png")  # 100 megapixels, a few kilobytes
    for source, message in ((tmp_path / "notes.jpg", "is not an image"), (tmp_path / "cut.jpg", "truncated"),
                            (tmp_path / "empty.png", "empty"), (tmp_path / "missing.jpg", "no such file"),
                            (tmp_path, "is a folder"), (tmp_path / "huge.png", "100.0 megapixels")):
        with pytest.raises(QueryError, match=message):
            index.search_image(source)
        with pytest.raises(QueryError, match=message):
            index.search_scene(source)
    with pytest.raises(QueryError, match="is not an image"):
        index.search_image(b"GIF89a-not-really", name="upload.gif")

    # 50 megapixels (a phone's full-resolution mode): accepted, decoded at reduced scale and downscaled.
    from eclip.training.search.inputs import MAX_IMAGE_SIDE, read_query_image

    Image.new("L", (8660, 5774), 200).save(tmp_path / "50mp.jpg", quality=50)
    picture = read_query_image(tmp_path / "50mp.jpg")
    assert max(picture.size) == MAX_IMAGE_SIDE and picture.mode == "RGB"
    assert index.search_image(tmp_path / "50mp.jpg", k=2).hits

    for folder, message in ((tmp_path / "nothing", "does not exist"), (tmp_path, "is not an index folder")):
        with pytest.raises(ValueError, match=message):
            CatalogueIndex.load(folder)


def test_concurrent_text_queries_embed_as_one_at_a_time(catalogue_index):
    """Threads sharing one CatalogueIndex (eclip-serve's thread pool): the tokenizer runs under the model's lock too,
    so concurrent queries neither fail ("Already borrowed") nor differ from the same queries one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    index = catalogue_index
    queries = [f"{colour} {item} for {who}" for colour in ("blue", "black red striped") for item in ("shirt", "bag")
               for who in ("men", "women and girls")]
    alone = [index.embed_text(query) for query in queries]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            np.testing.assert_allclose(np.stack(list(pool.map(index.embed_text, queries))), np.stack(alone),
                                       atol=1e-6, rtol=0)


def test_the_model_check_covers_bin_weights_and_hub_ids(built, tmp_path):
    from eclip.training.search import CatalogueIndex
    from eclip.training.search.index import model_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    before = model_fingerprint(str(folder))
    (folder / "pytorch_model.bin").write_bytes(b"other weights")
    assert model_fingerprint(str(folder)) != before
    assert model_fingerprint("org/eclip-a") == "hub:org/eclip-a"

    # An index built from a Hub id refuses another id (checked before anything is downloaded).
    index = CatalogueIndex.load(built["index"], load_model=False)
    index.manifest = {**index.manifest, "model": {**index.manifest["model"], "path": "org/eclip-a",
                                                  "fingerprint": "hub:org/eclip-a"}}
    with pytest.raises(ValueError, match="built with the Hub model 'org/eclip-a', not 'org/eclip-b'"):
        index._load_model("org/eclip-b")
    with pytest.raises(ValueError, match="is not the one that built the index"):
        index._load_model(built["model"])


# ---------------------------------------------------------------------------------------------- eclip-search
def test_search_command_prints_tables_json_and_one_line_errors(built, catalogue_index, capsys, tmp_path):
    from eclip.training.compositor import compose_scene
    from eclip.training.search.search import main
    from modeling_eclip import open_image

    index = built["index"]
    assert main([index, "--text", "blue skirt", "--k", "3", "--filter", "articleType=Skirts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["rank", "score", "product_id", "title", "articleType"]
    assert len(lines) == 5 and all("Skirts" in line for line in lines[2:])

    photo = catalogue_index.products["_image"].iloc[5]
    assert main([index, "--image", photo, "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["index_row"] == 5 and len(hits) == 2

    scene, _ = compose_scene(open_image(photo), [open_image(catalogue_index.products["_image"].iloc[11])],
                             random.Random(1))
    scene.save(tmp_path / "scene.png")
    assert main([index, "--scene", str(tmp_path / "scene.png"), "--k", "2", "--json",
                 "--highlights", str(tmp_path / "highlights")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 1 <= len(result["instances"]) <= 4 and result["image_size"] == [224, 224]
    assert sorted(os.listdir(tmp_path / "highlights")) == sorted(
        f"instance-{i['query']}.png" for i in result["instances"])

    (tmp_path / "notes.txt").write_text("hello")
    for argv, message in (([str(tmp_path / "nothing"), "--text", "x"], "does not exist"),
                          ([index, "--text", " "], "the text query is empty"),
                          ([index, "--image", str(tmp_path / "notes.txt")], "is not an image"),
                          ([index, "--image", str(tmp_path / "nope.jpg")], "no such file"),
                          ([index, "--text", "x", "--filter", "colour=Red"], "unknown filter field 'colour'"),
                          ([index, "--text", "x", "--highlights", str(tmp_path)], "needs --scene")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("eclip-search: error: ")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)


# ------------------------------------------------------------------------------------------- several processes
@pytest.mark.slow
def test_two_torchrun_processes_embed_their_own_shards_and_process_0_merges(built, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU): process 1 of 2 embeds shards 0 and 2, process 2 shard 1, process
    0 merges; the index equals the one-process index."""
    import subprocess
    import sys

    from benchmarks.search_load import free_port
    from conftest import REPO_ROOT

    out = tmp_path / "index"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "eclip.training.search.index",
               *index_argv(built["model"], out, "--device", "cpu", catalogue=built["small"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("[eclip-index] (process")]
    written = sorted((line.split(")")[0][-3:], line.split("shard ")[1].split(":")[0]) for line in lines)
    assert written == [("1/2", "1/3"), ("1/2", "3/3"), ("2/2", "2/3")]
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["embedding"]["processes"] == 2 and manifest["products"] == PHOTOS
    for name in ("image", "text", "instance", "selection"):
        np.testing.assert_allclose(np.load(out / "embeddings" / f"{name}.npy"),
                                   np.load(os.path.join(built["index"], "embeddings", f"{name}.npy")), atol=ATOL,
                                   rtol=0)

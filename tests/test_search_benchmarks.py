"""
The search studies' short runs on a tiny model: `benchmarks.search_load` (a real `eclip-serve` process on 127.0.0.1,
concurrent clients, zero errors) and `benchmarks.search`'s smoke mode (`--limit`), whose JSON the full run writes.
"""

import json

import pytest
import torch

from _search_helpers import build_index, one_thread, save_tiny_model, small_catalogue

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    threads = one_thread()
    root = tmp_path_factory.mktemp("search-bench")
    model = save_tiny_model(root / "model")
    catalogue = small_catalogue(root / "catalogue")
    yield {"root": root, "model": model, "catalogue": catalogue,
           "index": build_index(model, root / "index", catalogue=catalogue)}
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_load_against_a_server_process_has_no_errors(tiny, tmp_path, monkeypatch, capsys):
    from benchmarks.search_load import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the server process: one thread, as the tests' models run
    out = tmp_path / "load.json"
    result = main(["--index", tiny["index"], "--clients", "4", "--seconds", "2", "--image-share", "0.3",
                   "--output", str(out)])
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] >= 8 and result["server"] == "subprocess"
    assert set(result["by_kind"]) == {"text", "image"} and all(v["errors"] == 0 for v in result["by_kind"].values())
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert json.loads(out.read_text())["requests"] == result["requests"]
    assert json.loads(capsys.readouterr().out)["errors"] == 0


def test_load_in_process_server_counts_bad_answers_as_errors(tiny):
    """The in-thread server variant, and the error accounting: a request the server refuses is an error of the run."""
    import asyncio

    from benchmarks.search_load import run_load, summarize, thread_server

    with thread_server(tiny["index"]) as url:
        records, wall = asyncio.run(run_load(url, 3, 1.0, ["white t-shirt", ""], [], max_requests=12))
    summary = summarize(records, wall)
    assert summary["requests"] == 12 and 0 < summary["errors"] < 12
    assert "HTTP 400" in summary["first_errors"][0] and "empty" in summary["first_errors"][0]


def test_search_study_smoke_mode(tiny, tmp_path, data_dir):
    from benchmarks.search import main

    result = main(["--model", tiny["model"], "--data-dir", data_dir, "--limit", "40", "--queries", "6",
                   "--scenes", "5", "--workers", "0", "--batch-size", "8", "--index-dir", str(tmp_path / "index"),
                   "--results-dir", str(tmp_path / "results")])
    written = json.loads((tmp_path / "results" / "search.json").read_text())
    assert written["products"] == 40 == result["products"]
    assert written["index_throughput"]["images_this_run"] == 40 and written["index_throughput"]["images_per_second"] > 0
    assert written["text_queries"] == 6
    for name in ("embed_ms", "search_ms", "total_ms"):
        entry = written["text_query_latency_ms"][name]
        assert entry["count"] == 6 and 0 < entry["p50"] <= entry["p95"]
    for space in ("image", "instance"):
        for kind in ("hnsw", "ivf"):
            assert 0.0 <= written["approximate_recall"][space][kind]["recall_at_10"] <= 1.0
        assert set(written["approximate_recall"][space]["exact"]) == {"build_seconds", "search_ms_per_query"}
    scenes = written["scenes"]
    assert scenes["count"] >= 2 and set(scenes["hit_rate"]) == {"instance", "instance_any", "instance_index", "global"}
    assert set(scenes["vs_global"]) == {"instance", "instance_any", "instance_index"}
    # Any kept instance's results include its own instance's: never fewer hits.
    assert scenes["hit_rate"]["instance_any"] >= scenes["hit_rate"]["instance"]
    assert written["command"].startswith("python -m benchmarks.search --model")


def test_the_server_answers_bad_requests_with_one_json_message_and_keeps_serving(tiny, tmp_path):
    import httpx

    from benchmarks.search_load import thread_server
    from eclip.training.search.inputs import MAX_IMAGE_BYTES
    from eclip.training.search.serve import main as serve

    with thread_server(tiny["index"]) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/").headers["content-type"].startswith("text/html")
        info = client.get("/api/info").json()
        assert info["products"] == 24 and info["max_query_chars"] == 1000 and info["scene"] is True
        assert "Women" in info["fields"]["gender"]
        for params, message in (({"q": ""}, "empty"), ({"q": "x" * 1001}, "1,001 characters"),
                                ({"q": "shirt", "k": "many"}, "invalid request (k:"),
                                ({"q": "shirt", "k": 0}, "k must be"),
                                ({"q": "shirt", "filter": "gender=Wmen"}, "did you mean 'Women'")):
            answer = client.get("/api/search", params=params)
            assert answer.status_code == 400 and message in answer.json()["error"], answer.text
        answer = client.post("/api/search/image", files={"file": ("big.jpg", b"\0" * (MAX_IMAGE_BYTES + 100_000))})
        assert answer.status_code == 413 and "MB" in answer.json()["error"]
        # Without a Content-Length (a chunked upload) the body is counted as it is read and refused past the limit.
        boundary = "eclip-test-boundary"

        def chunked_upload(size):
            yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
                   "Content-Type: image/jpeg\r\n\r\n").encode()
            for _ in range(size // 2**20):
                yield b"\0" * 2**20
            yield f"\r\n--{boundary}--\r\n".encode()

        answer = client.post("/api/search/image", content=chunked_upload(MAX_IMAGE_BYTES + 2**21),
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert answer.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in answer.request.headers
        assert answer.status_code == 413 and "MB" in answer.json()["error"], answer.text
        answer = client.post("/api/search/scene", files={"file": ("notes.txt", b"hello")})
        assert answer.status_code == 400 and "notes.txt is not an image" in answer.json()["error"]
        assert client.get("/api/image/999").status_code == 404
        thumbnail = client.get("/api/image/0")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert len(client.get("/api/search", params={"q": "white shirt", "k": 3}).json()["hits"]) == 3
        assert client.get("/api/nothing").json() == {"error": "Not Found"}  # every refusal in the same shape
    assert serve([str(tmp_path / "nothing")]) == 2


def test_a_server_process_that_exits_early_shows_its_log(tmp_path):
    from benchmarks.search_load import subprocess_server

    with pytest.raises(RuntimeError, match=r"eclip-serve exited with status 2: .*does not exist"):
        with subprocess_server(str(tmp_path / "nothing"), startup_timeout=120):
            pass


def test_recall_study_without_product_texts_has_nothing_to_query():
    import numpy as np

    from benchmarks.search import approximate_recall

    class NoTexts:
        manifest = {"indexes": {"image": {}}}

        def vectors(self, space):
            return np.zeros((5, 4), np.float32) if space == "text" else np.eye(5, 4, dtype=np.float32)

    assert approximate_recall(NoTexts(), np.random.default_rng(0), 3, seed=0) == {"queries": 0}

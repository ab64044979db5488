"""
The search page of `eclip-serve`, in a real headless browser: Debian's chromium (/usr/bin/chromium; `.ci/run`
installs it) driven by playwright (no browser download), against the real app served by uvicorn on 127.0.0.1 over a
tiny model's index of 24 real fashion photos. Screenshots go to each test's pytest tmp folder.
"""

import os
import random
import shutil

import pytest
import torch

from _search_helpers import build_index, one_thread, save_tiny_model, small_catalogue

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

CHROMIUM = os.environ.get("ECLIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it when missing)")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    """The app over a fresh tiny index, served from a thread of this process; yields (url, CatalogueIndex)."""
    from eclip.training.search import CatalogueIndex
    from eclip.training.search.serve import create_app, serve_in_thread

    threads = one_thread()
    root = tmp_path_factory.mktemp("search-page")
    model = save_tiny_model(root / "model")
    index = CatalogueIndex.load(build_index(model, root / "index", catalogue=small_catalogue(root / "catalogue")))
    with serve_in_thread(create_app(index)) as url:
        yield url, index
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # Root in a container: chromium's sandbox needs user namespaces it may not have.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[0])
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()


def shown_products(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.productId)")


def wait_for_thumbnails(page) -> None:
    page.wait_for_function("""() => {
        const images = [...document.querySelectorAll('#results img')];
        return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
    }""")


def search(page, wait_for="#results .card"):
    page.click("#search")
    page.wait_for_selector(wait_for)


def test_a_text_query_shows_the_products_the_api_finds(page, server, tmp_path):
    url, index = server
    assert page.title() == "ECLIP catalogue search"
    assert "24 products" in page.inner_text("#status")
    page.fill("#query", "Palm Tree blue skirt for girls")
    page.fill("#k", "6")
    search(page)
    wait_for_thumbnails(page)
    expected = [hit.product_id for hit in index.search_text("Palm Tree blue skirt for girls", k=6).hits]
    assert shown_products(page) == expected
    first = page.inner_text("#results .card >> nth=0")
    assert index.search_text("Palm Tree blue skirt for girls", k=1).hits[0].title in first
    page.screenshot(path=str(tmp_path / "text-query.png"), full_page=True)

    # With a filter: only the products that match it.
    page.fill("#filters", "gender=Men, articleType=Tshirts")
    search(page)
    expected = [hit.product_id for hit in index.search_text("Palm Tree blue skirt for girls", k=6,
                                                            filters=["gender=Men", "articleType=Tshirts"]).hits]
    page.wait_for_function("ids => [...document.querySelectorAll('#results .card')].map(c => c.dataset.productId)"
                           ".join() === ids.join()", arg=expected)
    page.screenshot(path=str(tmp_path / "text-query-filtered.png"), full_page=True)


def test_an_uploaded_photo_finds_its_own_product_first(page, server, tmp_path):
    _, index = server
    photo = index.products["_image"].iloc[13]
    page.check("#mode-image")
    assert page.is_visible("#file") and not page.is_visible("#query")
    page.set_input_files("#file", photo)
    search(page)
    wait_for_thumbnails(page)
    shown = shown_products(page)
    assert shown[0] == index.products["_id"].iloc[13]
    assert shown == [hit.product_id for hit in index.search_image(photo, k=10).hits]
    page.screenshot(path=str(tmp_path / "image-query.png"), full_page=True)


def test_a_scene_shows_one_row_per_instance_with_its_highlight(page, server, tmp_path):
    from eclip.training.compositor import compose_scene
    from modeling_eclip import open_image

    _, index = server
    photos = [open_image(index.products["_image"].iloc[i]) for i in (3, 16)]
    scene, _ = compose_scene(photos[0], photos[1:], random.Random(3))
    scene.save(tmp_path / "scene.png")
    page.check("#mode-scene")
    page.set_input_files("#file", str(tmp_path / "scene.png"))
    page.fill("#k", "4")
    search(page, "#results .instance")
    wait_for_thumbnails(page)
    expected = index.search_scene(str(tmp_path / "scene.png"), k=4)
    rows = page.query_selector_all("#results .instance")
    assert len(rows) == len(expected.instances)
    for row, instance in zip(rows, expected.instances):
        assert row.get_attribute("data-query") == str(instance.query)
        assert row.eval_on_selector("img.highlight", "i => i.naturalWidth") > 0
        ids = row.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.productId)")
        assert ids == [hit.product_id for hit in instance.hits]
    page.screenshot(path=str(tmp_path / "scene-query.png"), full_page=True)


def test_bad_input_shows_a_clear_message_and_the_server_keeps_serving(page, server, tmp_path):
    _, index = server
    page.fill("#query", "   ")
    page.click("#search")
    page.wait_for_selector("#error:not(.hidden)")
    assert "empty" in page.inner_text("#error")
    page.fill("#query", "x" * 1001)
    page.click("#search")
    page.wait_for_function("document.getElementById('error').textContent.includes('1,001 characters')")

    page.check("#mode-image")
    page.click("#search")  # no file chosen
    page.wait_for_function("document.getElementById('error').textContent.includes('Choose a photo')")
    (tmp_path / "notes.jpg").write_text("not a photo")
    page.set_input_files("#file", str(tmp_path / "notes.jpg"))
    page.click("#search")
    page.wait_for_function("document.getElementById('error').textContent.includes('is not an image')")
    data = open(index.products["_image"].iloc[0], "rb").read()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    page.set_input_files("#file", str(tmp_path / "cut.jpg"))
    page.click("#search")
    page.wait_for_function("document.getElementById('error').textContent.includes('truncated')")
    assert shown_products(page) == []
    page.screenshot(path=str(tmp_path / "bad-input.png"), full_page=True)

    # Still serving: a good query right after.
    page.check("#mode-text")
    page.fill("#query", "black track pants")
    search(page)
    assert page.is_hidden("#error") and len(shown_products(page)) == 10

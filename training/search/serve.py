# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-serve INDEX [--port 8000]`: a search page over an index folder, and its JSON API.

    eclip-serve fashion-index --port 8000     # then open http://127.0.0.1:8000

A FastAPI app (served by uvicorn) with one plain HTML page (`page.PAGE`: no build step, no front-end framework):
a text box, a photo upload and a scene mode; results are product thumbnails with titles and scores, a scene gives one
row per instance with its attention highlight. FastAPI rather than Gradio: the page and the API it calls are a few
hundred lines we control (stable element ids for the browser tests, plain JSON for the load test and for other
clients), and the dependency set is small (fastapi, uvicorn, python-multipart).

Routes:

- `GET /`: the page;
- `GET /api/info`: products, filterable fields with their values, limits;
- `GET /api/search?q=TEXT&k=10&filter=FIELD=VALUE&space=image`: a text query;
- `POST /api/search/image`, `POST /api/search/scene`: a photo (multipart field `file`) with `k`, `filter`, `space`;
- `GET /api/image/{row}`: a product's thumbnail (JPEG, at most 256 pixels).

A bad query (see `eclip.training.search.inputs`) answers 400 with `{"error": message}`, a request body over the size
limit 413 (refused from its `Content-Length` before it is read, or, for a chunked upload without one, as soon as the
bytes read pass the limit: nothing past it is read or spooled), an unexpected failure 500 with the same shape (and a
log line with the traceback); the server keeps serving.
Model forwards run one at a time (`CatalogueIndex`'s lock), requests in uvicorn's thread pool.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at run time, and
# `UploadFile` is imported inside `create_app` (so that `--help` does not import FastAPI).
import base64
import contextlib
import functools
import io
import logging
import sys
import threading
import time

from .inputs import MAX_IMAGE_BYTES, MAX_QUERY_CHARS, QueryError

PROG = "eclip-serve"
THUMBNAIL_SIDE = 256
FILTER_FIELD_MAX_VALUES = 60  # a field with more distinct values (titles, ids) is not offered as a filter
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 65_536  # an image upload and its multipart framing
logger = logging.getLogger("eclip.search.serve")


def _too_large_message(size: int, exact: bool = True) -> str:
    return (f"the upload is {'' if exact else 'over '}{size / 2**20:.0f} MB; images of at most "
            f"{MAX_IMAGE_BYTES // 2**20} MB are accepted.")


class BodyLimit:
    """
    ASGI middleware bounding every request body to `limit` bytes: a `Content-Length` above it is answered 413 before
    the body is read; a body without one (`Transfer-Encoding: chunked`) is counted as the app reads it, and the read
    that passes the limit raises a 413 `HTTPException` (see `_upload_too_large`), which the app answers as JSON.
    Nothing past the limit is read or spooled to disk.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi.responses import JSONResponse

        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"error": _too_large_message(int(length))}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _upload_too_large(received)
            return message

        await self.app(scope, bounded_receive, send)


def _upload_too_large(size: int):
    """The exception `BodyLimit` raises mid-body (FastAPI's `HTTPException`: FastAPI re-raises those from a body
    read, where any other exception would become a 400 "error parsing the body")."""
    from fastapi import HTTPException

    return HTTPException(status_code=413, detail=_too_large_message(size, exact=False))


def _hit_json(hit) -> dict:
    return {"rank": hit.rank, "score": round(hit.score, 5), "product_id": hit.product_id, "title": hit.title,
            "image_url": f"/api/image/{hit.index_row}", "fields": hit.fields}


def _filters(values: list[str] | None) -> list[str]:
    return [value for value in (values or []) if value and value.strip()]


def create_app(index):
    """The FastAPI app serving `index` (a loaded `CatalogueIndex`)."""
    from fastapi import FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .api import MAX_K, render_highlight
    from .page import PAGE

    app = FastAPI(title="ECLIP catalogue search", docs_url="/api/docs", openapi_url="/api/openapi.json")
    scene_ready = index.manifest["model"].get("instance_decoder", False)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, error: QueryError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                             for e in error.errors())
        return JSONResponse({"error": f"invalid request ({problems})."}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"the search failed ({type(error).__name__}); try another query"},
                            status_code=500)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE)

    @app.get("/api/info")
    def info():
        fields = {}
        for name in index.fields:
            values = index.field_values(name, FILTER_FIELD_MAX_VALUES + 1)
            if 1 < len(values) <= FILTER_FIELD_MAX_VALUES:
                fields[name] = sorted(values)
        return {"products": len(index), "fields": fields, "max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K,
                "max_image_mb": MAX_IMAGE_BYTES // 2**20, "scene": bool(scene_ready),
                "spaces": list(index.manifest["indexes"])}

    @app.get("/api/search")
    def search_text(q: str = Query(""), k: int = Query(10), filter: list[str] | None = Query(None),
                    space: str = Query("image")):
        result = index.search_text(q, k=k, filters=_filters(filter), space=space)
        return {"kind": "text", "hits": [_hit_json(hit) for hit in result.hits], "timings": result.timings}

    def _upload(file: UploadFile | None) -> tuple[bytes, str]:
        if file is None or not file.filename:
            raise QueryError("choose a photo to upload first.")
        data = file.file.read(MAX_IMAGE_BYTES + 1)
        return data, file.filename

    @app.post("/api/search/image")
    def search_image(file: UploadFile | None = File(None), k: int = Form(10), filter: str = Form(""),
                     space: str = Form("image")):
        data, name = _upload(file)
        result = index.search_image(data, k=k, filters=_filters([filter]), space=space, name=name)
        return {"kind": "image", "hits": [_hit_json(hit) for hit in result.hits], "timings": result.timings}

    @app.post("/api/search/scene")
    def search_scene(file: UploadFile | None = File(None), k: int = Form(10), filter: str = Form(""),
                     space: str = Form("image"), max_instances: int = Form(4)):
        data, name = _upload(file)
        result = index.search_scene(data, k=k, filters=_filters([filter]), space=space,
                                    max_instances=max_instances, name=name)
        instances = []
        for instance in result.instances:
            picture = render_highlight(result.image, instance.heatmap, instance.box, index.processor.image_processor)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            instances.append({"query": instance.query, "selection": round(instance.selection, 4),
                              "box": instance.box,
                              "highlight": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
                              "hits": [_hit_json(hit) for hit in instance.hits]})
        return {"kind": "scene", "instances": instances, "skipped": result.skipped, "timings": result.timings}

    @functools.lru_cache(maxsize=4096)
    def thumbnail(row: int) -> bytes | None:
        from PIL import Image

        path = index.products["_image"].iloc[row]
        if path is None:
            return None
        try:
            with Image.open(path) as image:
                image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                picture = image.convert("RGB")
        except (OSError, ValueError):
            return None
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    @app.get("/api/image/{row}")
    def image(row: int):
        if not 0 <= row < len(index):
            return JSONResponse({"error": f"no product at row {row}"}, status_code=404)
        data = thumbnail(row)
        if data is None:
            return JSONResponse({"error": f"product {row}'s image cannot be read"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    return app


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """
    Serve `app` with uvicorn in a background thread of this process (tests, notebooks); yields the base URL and
    stops the server on exit. `port=0` picks a free port.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="eclip-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the search server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)


def main(argv=None) -> int:
    from eclip.training.cli import ArgumentParser, UsageError, fail

    parser = ArgumentParser(prog=PROG, description="Serve a search page (text, photo and scene queries) over an "
                            "index folder written by eclip-index.")
    parser.add_argument("index", metavar="INDEX", help="an index folder written by eclip-index")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--model", default=None, help="the model folder (default: the one the index records)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default info)")
    args = parser.parse_args(argv)
    try:
        if not 0 <= args.port < 65536:
            raise UsageError(f"--port {args.port} is not a port number.")
        from .layout import read_manifest

        read_manifest(args.index)
        from eclip.training.progress import disable_progress_bars_off_terminal

        disable_progress_bars_off_terminal()
        from .api import CatalogueIndex

        index = CatalogueIndex.load(args.index, model=args.model, device=args.device)
    except (UsageError, ValueError) as error:
        return fail(PROG, error)
    import uvicorn

    logging.basicConfig(level=logging.INFO, format=f"[{PROG}] %(message)s")
    print(f"[{PROG}] {len(index):,} products from {args.index}; serving on http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(index), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())

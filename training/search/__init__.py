# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Search a catalogue with ECLIP (DESIGN.md, "Serving and search"; `pip install "eclip[search]"`):

- `eclip-index MODEL CATALOGUE OUT` (`index`): embed a catalogue into resumable shards, then FAISS indexes;
- `CatalogueIndex` (`api`): text, image and scene ("shop the look") queries in Python;
- `eclip-search INDEX --text ... | --image PATH | --scene PATH` (`search`): the same on the command line;
- `eclip-serve INDEX` (`serve`): a search page and its JSON API.

The modules beneath: `catalogue` (reading a catalogue), `shards` (resumable embedding shards, one slice per
process), `faiss_index` (exact / HNSW / IVF indexes and their recall), `inputs` (what a query may be), `layout` (the
index folder). Importing this package imports none of torch, transformers or faiss.
"""

_EXPORTS = {
    "CatalogueIndex": "api", "Hit": "api", "SceneInstance": "api", "SceneResult": "api", "SearchResult": "api",
    "QueryError": "inputs", "MAX_QUERY_CHARS": "inputs",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)

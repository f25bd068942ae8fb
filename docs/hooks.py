"""MkDocs hook: the generated pages (`docs/gen_pages.py`) are added to the site in memory, so that
`mkdocs build` alone regenerates them from the installed code, the plugins and
benchmarks/results/ (nothing is written into docs/); and the stored-result markers of the
hand-written pages are rendered as tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("sds_docs_gen_pages", Path(__file__).with_name("gen_pages.py"))
assert _spec is not None and _spec.loader is not None
gen_pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_pages)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path, content in gen_pages.pages().items():
        stale = files.get_file_from_path(path)  # a copy written into docs/ by hand: the code wins
        if stale is not None:
            files.remove(stale)
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """A page's stored-result markers (`<!-- result NAME -->`) become the result's table."""
    depth = page.file.src_uri.count("/")
    return gen_pages.render_results(markdown, depth=depth)

"""MkDocs hooks of the documentation site (loaded from ``mkdocs.yml``: ``hooks:``)."""

from __future__ import annotations

from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

#: docs/README.md, the index of the results, is published as this page: MkDocs would otherwise make it the
#: site's home page and drop it beside docs/index.md (it is excluded in mkdocs.yml and added back here).
RESULTS_INDEX = "README.md"


def on_files(files: Files, *, config: MkDocsConfig, **kwargs: Any) -> Files:
    dest = "results/index.html" if config.use_directory_urls else "results.html"
    files.append(
        File(
            RESULTS_INDEX, config.docs_dir, config.site_dir, config.use_directory_urls,
            dest_uri=dest, inclusion=InclusionLevel.INCLUDED,
        )
    )  # fmt: skip
    return files

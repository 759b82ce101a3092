"""A compile cache of a test's own that does not start from nothing.

Tests that build one network twice, with a rewrite of the plan and without it, put the
second build in a cache folder of its own: the cache's index, keyed by the network, would
otherwise hand it the first build's module.  An empty folder also measured the machine
again and compiled the shared matrix driver and cffi's wrapper again, 4-8 s a test on a
2-core machine.  ``own_cache`` seeds the folder with the session cache's files (the
machine's record, the planner's timings, the driver, the wrapper) and none of its networks
(the index folder and the ``_symnet_*`` modules), as ``symnet.bench.paired`` does, so both
builds also run their products where the same measurements put them."""

import os
import shutil
from pathlib import Path


def own_cache(path) -> str:
    """``path`` made a compile cache seeded from the current ``SYMNET_CACHE_DIR`` (call it
    before pointing the variable at the result); returns it as ``str`` for setenv."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    source = Path(os.environ["SYMNET_CACHE_DIR"])
    if source.resolve() != path.resolve() and source.is_dir():
        for f in source.iterdir():
            if f.is_file() and not f.name.startswith("_symnet_"):
                shutil.copy2(f, path / f.name)
    return str(path)

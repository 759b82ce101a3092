"""The documentation runs: every ```python block of README.md and docs/*.md is
executed, page by page, so that no example in the docs can go stale.

The blocks of one page run in order in one namespace (a later block may use
what an earlier one defined), in a fresh temporary working directory, with
matplotlib on its file-only backend.  A block that is deliberately not
runnable (it needs MPI processes, say) carries the line ``<!-- no-run -->``
right above its fence; such blocks are listed by ``test_no_run_blocks_are_rare``
and must stay rare.  Blocks of other languages (```sh, ```text, ```c) are not run.

A ```text block with the line ``<!-- output -->`` right above its fence is what
the ```python block before it prints: the test compares the two (trailing
spaces and blank lines aside), so a printed derivation or table in the docs is
the one the code prints today.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NO_RUN = "<!-- no-run -->"
OUTPUT = "<!-- output -->"
MAX_NO_RUN = 4          # blocks marked NO_RUN in all pages together

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$")


@dataclass
class Block:
    page: Path
    line: int           # 1-based line of the opening fence
    code: str
    run: bool
    expect: str | None = None     # what the block prints, when the page shows it


def blocks(text: str, page: Path = Path("<page>")) -> list[Block]:
    """The ```python blocks of a Markdown text, in order (indented fences, as in
    list items, included; the indentation is removed)."""
    found, lines, k = [], text.splitlines(), 0
    while k < len(lines):
        m = _FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = k
        k += 1
        body = []
        while k < len(lines) and not (lines[k].strip().startswith(fence)
                                      and lines[k].strip().strip(fence[0]) == ""):
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
            k += 1
        k += 1
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()),
                      "")
        text = "\n".join(body) + "\n"
        if before == OUTPUT:
            if not found or found[-1].expect is not None:
                raise ValueError(f"{page}:{start + 1}: an {OUTPUT} block must follow "
                                 "a python block")
            found[-1].expect = text          # as printed: leading spaces count
        elif lang == "python":
            found.append(Block(page, start + 1, textwrap.dedent(text), before != NO_RUN))
    return found


def _lines(text: str) -> list[str]:
    out = [line.rstrip() for line in text.splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def run_page(page_blocks: list[Block], workdir: Path) -> dict:
    """Run the runnable blocks in order in one namespace, inside ``workdir``."""
    namespace: dict = {"__name__": "__docs__"}
    here = os.getcwd()
    os.chdir(workdir)
    try:
        for b in page_blocks:
            if not b.run:
                continue
            name = f"{b.page.name}, block at line {b.line}"
            code = compile(b.code, name, "exec")
            if b.expect is None:
                exec(code, namespace)
                continue
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(code, namespace)
            assert _lines(printed.getvalue()) == _lines(b.expect), (
                f"{name} prints something other than the output shown below it:\n"
                f"{printed.getvalue()}")
    finally:
        os.chdir(here)
        try:
            import matplotlib.pyplot as plt
            plt.close("all")
        except ImportError:
            pass
    return namespace


def _pages_with_code():
    return [p for p in PAGES if any(b.run for b in blocks(p.read_text(), p))]


@pytest.fixture(autouse=True)
def _agg_backend(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_runs(page, tmp_path):
    run_page(blocks(page.read_text(), page), tmp_path)


def test_the_pages_have_code():
    """The parametrized test above covers the README and the docs pages."""
    names = {str(p.relative_to(ROOT)) for p in _pages_with_code()}
    assert "README.md" in names
    assert {"docs/getting-started.md", "docs/training.md", "docs/layers.md"} <= names


def test_no_run_blocks_are_rare():
    skipped = [f"{b.page.relative_to(ROOT)}:{b.line}" for p in PAGES
               for b in blocks(p.read_text(), p) if not b.run]
    assert len(skipped) <= MAX_NO_RUN, f"too many blocks marked {NO_RUN}: {skipped}"


def test_a_broken_block_fails(tmp_path):
    """The runner does fail: a block that raises, a block that uses a name no
    earlier block defined, and a block after a no-run block that needed it."""
    page = textwrap.dedent("""\
        # A page

        ```python
        x = 2
        ```

        Some text.

          ```python
          assert x + 1 == 3
          ```

        ```python
        assert x == 3, "x is 2"
        ```
        """)
    bs = blocks(page)
    assert [b.line for b in bs] == [3, 9, 13]
    with pytest.raises(AssertionError, match="x is 2"):
        run_page(bs, tmp_path)
    run_page(bs[:2], tmp_path)          # the first two alone pass

    skipped = blocks("<!-- no-run -->\n```python\ny = 1\n```\n```python\nprint(y)\n```\n")
    assert [b.run for b in skipped] == [False, True]
    with pytest.raises(NameError):
        run_page(skipped, tmp_path)


def test_shown_output_is_compared(tmp_path):
    page = ("```python\nprint('  a')\nprint('  b ')\n```\n<!-- output -->\n"
            "```text\n  a\n  b\n```\n")
    bs = blocks(page)
    assert len(bs) == 1 and bs[0].expect == "  a\n  b\n"
    run_page(bs, tmp_path)
    with pytest.raises(AssertionError, match="prints something other"):
        run_page(blocks(page.replace("print('  b ')", "print('  c')")), tmp_path)
    with pytest.raises(AssertionError, match="prints something other"):   # indentation counts
        run_page(blocks(page.replace("print('  b ')", "print('b')")), tmp_path)
    with pytest.raises(ValueError, match="must follow"):
        blocks("<!-- output -->\n```text\na\n```\n")


def test_blocks_run_in_a_temporary_folder(tmp_path):
    """Files a block writes land in the temporary folder, not the repository."""
    bs = blocks("```python\nopen('written.txt', 'w').write('x')\n```\n")
    run_page(bs, tmp_path)
    assert (tmp_path / "written.txt").read_text() == "x"
    assert not (ROOT / "written.txt").exists()


def test_other_languages_and_longer_fences():
    text = "```sh\npython -c 'raise SystemExit(1)'\n```\n````python\nz = '```'\n````\n"
    bs = blocks(text)
    assert [b.code for b in bs] == ["z = '```'\n"]


def test_the_rendered_formula_is_the_derivation(tmp_path):
    """docs/img/formula.png is drawn from ``net.formulas().latex()`` by mathtext:
    the lines it takes are the backward pass, and mathtext can draw every one."""
    pytest.importorskip("matplotlib")
    import runpy
    figures = runpy.run_path(str(ROOT / "docs" / "make_figures.py"), run_name="docs_test")
    lines = figures["formula_lines"](figures["small_network"]())
    assert len(lines) == 16           # 8 steps: chain rule and index form each
    assert lines[0] == (r"$\frac{\partial L}{\partial O} = "
                        r"\frac{1}{B} \frac{\partial \ell}{\partial o}$")
    assert all(line.startswith("$") and "&" not in line and not line.endswith(r"\\$")
               for line in lines)
    figures["draw_formulas"](lines, tmp_path / "formula.png")
    assert (tmp_path / "formula.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_doctest_examples_become_code_blocks_in_the_api_reference():
    """docs/_ext/doctest_fences.py (a griffe extension of the mkdocs build)."""
    pytest.importorskip("griffe")
    import runpy
    ext = runpy.run_path(str(ROOT / "docs" / "_ext" / "doctest_fences.py"))
    doc = ("Text.\n>>> x = 1\n>>> x\n1\n\nMore.\n```python\n>>> kept\n```\n"
           "    >>> indented\n    2\n")
    assert ext["fence_doctests"](doc).splitlines() == [
        "Text.", "", "```pycon", ">>> x = 1", ">>> x", "1", "```", "", "More.",
        "```python", ">>> kept", "```", "",
        "    ```pycon", "    >>> indented", "    2", "    ```"]


def test_every_page_is_in_the_site_navigation():
    """mkdocs.yml's nav lists exactly the pages of docs/ (the build checks this too,
    with MkDocs installed; this test runs without it)."""
    nav = re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(),
                     re.M)
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages


def test_the_readme_links_resolve():
    """README.md is not part of the site, so its links to docs/ and its pictures are
    checked here."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert "docs/index.md" in local and any(t.endswith(".png") for t in local)
    missing = [t for t in local if not (ROOT / t).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_api_reference_covers_the_public_names():
    """Every name in symnet.__all__ has an entry (``::: path``) in docs/api.md."""
    import symnet
    entries = re.findall(r"^::: (\S+)", (ROOT / "docs" / "api.md").read_text(), re.M)
    documented = {e.rsplit(".", 1)[-1] for e in entries}
    missing = sorted(set(symnet.__all__) - documented - {"__version__"})
    assert not missing, f"docs/api.md has no entry for: {missing}"


def test_the_module_map_names_every_module():
    """docs/design.md's module map names every module of the package (a new module
    gets a line there, in the folder of its stage)."""
    text = (ROOT / "docs" / "design.md").read_text()
    text = text[text.index("## Module map"):]
    text = text[:text.index("\n```\n")]
    missing = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "symnet").rglob("*.py")
                     if not p.name.startswith("__") and p.name not in text)
    assert not missing, f"docs/design.md's module map does not name: {missing}"

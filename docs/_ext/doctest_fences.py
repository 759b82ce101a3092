"""A griffe extension for the API reference: the docstrings' doctest examples
(``>>>`` lines and the output after them) become ```pycon code blocks, which
Markdown would otherwise read as nested quotes; a class that takes its docstring
from its base (``__doc__ = dsl.Network.__doc__``, which static analysis does not
run) shows the base's."""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    out, lines, k = [], text.splitlines(), 0
    in_fence = False
    while k < len(lines):
        line = lines[k]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.lstrip().startswith(">>>"):
            out.append(line)
            k += 1
            continue
        indent = line[:len(line) - len(line.lstrip())]
        block = []
        while k < len(lines) and lines[k].strip():
            block.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
            k += 1
        if out and out[-1].strip():
            out.append("")
        out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)

    def on_package(self, *, pkg, **kwargs) -> None:
        def walk(obj):
            for member in list(obj.members.values()):
                if member.is_alias:
                    continue
                if member.is_class and member.docstring is None and "__doc__" in member.members:
                    for base in member.resolved_bases:
                        if base.docstring is not None:
                            member.docstring = griffe.Docstring(
                                fence_doctests(base.docstring.value), parent=member)
                            break
                if member.is_module or member.is_class:
                    walk(member)
        walk(pkg)

"""C identifiers for the network's own names.

Layers, inputs and parameters may be named with any plain ASCII identifier:
``out``, ``X``, ``loss``, ``lr``, ``exp``, ``int``, ``t0`` included.  In the
generated C a name stays as it is where it cannot mean anything else there,
and is otherwise written ``sn_u_<name>``: that happens to every name the
kernel's translation unit already uses (a C keyword, a <math.h> or
<string.h> name, any identifier in the template, a loop index b, i, j, k, a CSE
temporary ``t<n>``, a hoisted sum ``acc<n>``, an arg-max position ``<index>_at``)
and to names starting with ``_``, ``sn_`` or ``symnet``.  The rule is
one-to-one (a mangled name starts with ``sn_u_``, a kept one never starts
with ``sn_``), so two different names never meet in the C.

>>> c_name("H1"), c_name("loss"), c_name("exp"), c_name("t3"), c_name("sn_u_x")
('H1', 'sn_u_loss', 'sn_u_exp', 'sn_u_t3', 'sn_u_sn_u_x')
"""

from __future__ import annotations

import functools
import keyword
import re

from .build import template_dir
from ...guards import C_NAMES

PREFIX = "sn_u_"
_C_KEYWORDS = frozenset((
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while _Bool _Complex _Imaginary").split())
_TEMP = re.compile(r"t\d+|acc\d+|\w+_at")  # cse temporaries, hoisted sums, arg-max positions
_INDICES = frozenset("bijk")      # the loop indices of the emitted loops (symnet.ir.nodes)


@functools.lru_cache(maxsize=1)
def template_words() -> frozenset:
    """Every identifier the templates' C (and their Jinja) mentions outside comments:
    a superset of the locals, arguments, helpers and macros of the kernel."""
    words = set()
    for path in sorted(template_dir().glob("*.j2")):
        text = path.read_text()
        text = re.sub(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", " ", text, flags=re.DOTALL)
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
        text = re.sub(r"//[^\n]*", " ", text)
        words.update(re.findall(r"[A-Za-z_]\w*", text))
    return frozenset(words)


def needs_mangling(name: str) -> bool:
    """True when ``name`` could mean something else in the generated C."""
    return (name in _C_KEYWORDS or name in C_NAMES or keyword.iskeyword(name)
            or name in template_words() or name in _INDICES or _TEMP.fullmatch(name) is not None
            or name.startswith(("_", "sn_", "symnet")))


def c_name(name: str) -> str:
    """The C identifier of a network name (see the module docstring)."""
    return PREFIX + name if needs_mangling(name) else name

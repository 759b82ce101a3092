"""A network's kernel C cut into two translation units that compile side by side.

The C compiler runs on one core per file, and a network's C is one file: on a
2-core machine the second core idles while the first compiles the network.  For
the in-process build (``symnet.backend.c.build``) the same text is cut into two
parts that two compiler processes compile at once and the linker joins; the C a
user reads or exports stays the one file.

Each part keeps every preprocessor line, type, prototype and inline function of
the whole text (they cost little: only what a part uses is compiled), and the
function definitions are shared out between the parts by size.  A ``static``
function or variable that the other part also names loses ``static`` for
hidden visibility (``__attribute__((visibility("hidden")))``: one definition
for both parts, invisible outside the module) and the other part declares it
(``extern`` for a variable, the prototype for a function); one that only its own
part names stays ``static``, where the compiler may still inline it.

``split`` reads the top level of the text (comments, string literals,
preprocessor lines, braces) and returns None for anything it does not recognise
with certainty (a brace inside a preprocessor branch, a declaration it cannot
classify, ...): the caller then compiles the whole text as one file, as before.

>>> c = '''static int n = 2;
... static int twice(int x) { return 2 * x; }
... static int once(int x) { return x; }
... int f(int x) { return twice(x) + n; }
... int g(int x) { return twice(once(x)); }
... '''
>>> a, b = split(c, weights={"f": 10, "twice": 5, "once": 3, "g": 1})
>>> print(a)
#define SN_HIDDEN __attribute__((visibility("hidden")))
<BLANKLINE>
SN_HIDDEN int twice(int x) { return 2 * x; }
static int once(int x) { return x; }
int g(int x) { return twice(once(x)); }
<BLANKLINE>
>>> print(b)
#define SN_HIDDEN __attribute__((visibility("hidden")))
static int n = 2;
SN_HIDDEN int twice(int x);
int f(int x) { return twice(x) + n; }
<BLANKLINE>
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: the share of the whole text's weight above which the forward pass's own functions
#: go to the second part (see _split)
BIG = 0.15

#: the first line of each part
PREAMBLE = '#define SN_HIDDEN __attribute__((visibility("hidden")))\n'

_IDENT = re.compile(r"[A-Za-z_]\w*")
_KEYWORDS = {"static", "inline", "const", "volatile", "restrict", "extern", "typedef",
             "struct", "union", "enum", "unsigned", "signed", "int", "long", "short",
             "char", "float", "double", "void", "_Bool", "__attribute__", "return",
             "sizeof", "if", "else", "for", "while", "do", "switch", "case", "default",
             "break", "continue", "goto", "register", "auto", "_Thread_local", "__thread"}


class _Unknown(ValueError):
    """Text the splitter does not read with certainty."""


@dataclass
class Item:
    """One top-level piece of the text: ``pp`` (preprocessor lines), ``decl`` (a
    declaration, up to its semicolon), ``func`` (a function definition) or ``tail``
    (comments and space after the last piece).  ``text`` holds the comments and
    space before it; ``code`` is where its code starts within ``text``, ``brace``
    where a function's body starts."""
    kind: str
    text: str
    code: int = 0
    brace: int = -1
    name: str = ""
    names: set = field(default_factory=set)

    @property
    def head(self) -> str:
        """A function's declarator (what stands before its body)."""
        return self.text[self.code:self.brace].rstrip()


def _skip_literal(text: str, i: int) -> int:
    quote, i = text[i], i + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        if text[i] == "\n":
            break
        i += 1
    raise _Unknown("an unterminated literal")


def _line_end(text: str, i: int) -> int:
    """The end of the preprocessor line at ``i`` (after its newline), continuations
    included; a comment that starts on it and goes on is taken whole."""
    while True:
        j = text.find("\n", i)
        k = text.find("/*", i)
        if k != -1 and (j == -1 or k < j):
            e = text.find("*/", k + 2)
            if e == -1:
                raise _Unknown("an unterminated comment")
            i = e + 2
            continue
        if j == -1:
            return len(text)
        if text[j - 1] == "\\":
            i = j + 1
            continue
        return j + 1


def _at_line_start(text: str, i: int) -> bool:
    j = text.rfind("\n", 0, i)
    return not text[j + 1:i].strip()


def _cplusplus_end(text: str, i: int) -> int:
    """The end of an ``#ifdef __cplusplus`` ... ``#endif`` block that starts at ``i``."""
    m = re.compile(r"^[ \t]*#[ \t]*endif\b.*\n?", re.M).search(text, i)
    if m is None or re.search(r"^[ \t]*#[ \t]*if", text[_line_end(text, i):m.start()], re.M):
        raise _Unknown("a nested #if in a __cplusplus block")
    return m.end()


def items(text: str) -> list[Item]:
    """The top level of C ``text`` as a list of :class:`Item` (their texts join to
    ``text``); raises ValueError where it is not read with certainty."""
    out: list[Item] = []
    i, n, start = 0, len(text), 0
    depth, code, brace = 0, -1, -1
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            e = text.find("*/", i + 2)
            if e == -1:
                raise _Unknown("an unterminated comment")
            i = e + 2
            continue
        if c == "/" and text.startswith("//", i):
            e = text.find("\n", i)
            i = n if e == -1 else e
            continue
        if c in "\"'":
            if code == -1:
                code = i
            i = _skip_literal(text, i)
            continue
        if c == "#" and _at_line_start(text, i):
            if depth > 0:           # inside a body or an initializer: part of it
                i = _line_end(text, i)
                continue
            if code != -1:
                raise _Unknown("a preprocessor line inside a declaration")
            end = _cplusplus_end(text, i) if re.match(r"#[ \t]*ifdef[ \t]+__cplusplus\b",
                                                     text[i:]) else _line_end(text, i)
            out.append(Item("pp", text[start:end], i - start))
            i = start = end
            continue
        if c.isspace():
            i += 1
            continue
        if code == -1:
            code = i
        if c == "{":
            if depth == 0 and brace == -1:
                brace = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise _Unknown("an unbalanced brace")
            if depth == 0 and _is_function(text[code:brace]):
                out.append(Item("func", text[start:i + 1], code - start, brace - start))
                i = start = i + 1
                code = brace = -1
                continue
        elif c == ";" and depth == 0:
            out.append(Item("decl", text[start:i + 1], code - start))
            i = start = i + 1
            code = brace = -1
            continue
        i += 1
    if depth != 0 or code != -1:
        raise _Unknown("text after the last declaration")
    if start < n:
        out.append(Item("tail", text[start:], n - start))
    for it in out:
        body = _strip(it.text)
        it.names = set(_IDENT.findall(body)) - _KEYWORDS
        if it.kind == "func":
            it.name = _declared_name(it.head)
    return out


def _is_function(head: str) -> bool:
    head = _strip(head).strip()
    return head.endswith(")") and "=" not in head


def _strip(text: str) -> str:
    """C text without comments, literals and preprocessor lines (for finding names)."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', '""', text)
    return re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)


def _declared_name(head: str) -> str:
    """The name a function declarator declares: the identifier before the opening
    parenthesis of its (last) parameter list."""
    head = _strip(head).rstrip()
    depth = 0
    for j in range(len(head) - 1, -1, -1):
        if head[j] == ")":
            depth += 1
        elif head[j] == "(":
            depth -= 1
            if depth == 0:
                m = re.search(r"([A-Za-z_]\w*)\s*$", head[:j])
                if m is None or m.group(1) in _KEYWORDS:
                    raise _Unknown(f"no function name in {head!r}")
                return m.group(1)
    raise _Unknown(f"no parameter list in {head!r}")


def _words(text: str) -> list[str]:
    return _IDENT.findall(_strip(text))


def _without_initializers(decl: str) -> str:
    """``static int a = 1, b[2] = {0};`` → ``static int a, b[2];``."""
    out, depth, skipping = [], 0, False
    for c in decl:
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        if depth == 0 and c == "=":
            skipping = True
            continue
        if depth == 0 and c in ",;":
            skipping = False
        if not skipping:
            out.append(c)
    return re.sub(r"[ \t]+([,;])", r"\1", "".join(out))


def _hidden(text: str) -> str:
    """``static`` (the first one, which the code of ``text`` starts with) → SN_HIDDEN."""
    return re.sub(r"\bstatic\b", "SN_HIDDEN", text, count=1)


def _weights(parts: list[Item], funcs: dict) -> dict:
    """Characters of code per function, the inline functions it calls counted at
    each call (they are compiled there: the loops of a small product, unrolled)."""
    code = {it.name: _strip(it.text[it.code:]) for it in parts if it.kind == "inline"}
    memo: dict = {}

    def cost(text: str, seen: frozenset) -> int:
        total = len(re.sub(r"\s+", " ", text))
        for name, body in code.items():
            if name not in seen:
                calls = len(re.findall(r"\b" + name + r"\s*\(", text))
                if calls:
                    if name not in memo:
                        memo[name] = cost(body, seen | {name})
                    total += calls * memo[name]
        return total
    return {name: sum(cost(_strip(it.text[it.code:]), frozenset({name})) for it in its)
            for name, its in funcs.items()}


def split(text: str, weights: dict | None = None) -> tuple[str, str] | None:
    """The two parts of a network's C (see the module's docstring), or None where
    the text is not read with certainty or does not divide (fewer than two
    functions to share).  ``weights``: a function's share of the compile time by
    name (default: the length of its text)."""
    try:
        return _split(text, weights)
    except _Unknown:
        return None


def _split(text: str, weights: dict | None):
    parts = items(text)
    funcs = {}                  # name -> the items defining it (an #if may hold two)
    for it in parts:
        if it.kind == "func":
            words = _words(it.head)
            if "inline" in words or "SN_INLINE" in words:
                it.kind = "inline"
                # a static variable of an inline function would be one per part
                if "static" in _words(it.text[it.brace:]):
                    raise _Unknown(f"a static variable in the inline function {it.name}")
            else:
                funcs.setdefault(it.name, []).append(it)
    variables = {}              # static variables: name -> the items declaring them
    for it in parts:
        if it.kind != "decl":
            continue
        words = _words(it.text[it.code:])
        if words[:1] == ["typedef"] or "extern" in words or "inline" in words or \
                words[:1] in (["struct"], ["union"], ["enum"]) and "=" not in it.text:
            it.kind = "shared"
            continue
        code = _strip(it.text[it.code:])
        proto = re.match(r"\s*(?:static\s+)?[^=;{(]*?\b([A-Za-z_]\w*)\s*\(", code)
        if proto is not None and proto.group(1) not in _KEYWORDS and \
                "(*" not in code[:proto.end()]:
            it.kind, it.name = "proto", proto.group(1)
            continue
        if words[:1] != ["static"] or "(" in _without_initializers(code):
            raise _Unknown(f"a declaration not read: {code.strip()!r}")
        it.kind = "var"
        declared = _without_initializers(code)
        for name in re.findall(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*[,;]", declared):
            variables.setdefault(name, []).append(it)
    if len(funcs) < 2:
        raise _Unknown("fewer than two functions")
    # share the functions out: the largest first, each to the lighter part; a
    # function weighs its code and that of the inline functions it calls, once a call
    weight = _weights(parts, funcs)
    if weights:
        weight.update({k: v for k, v in weights.items() if k in weight})
    # The functions of one training step and of the forward pass (the entry points
    # ``..._step``, ``..._loss_grad``, ``..._forward`` and every function they call)
    # stay together in the first part, where the compiler inlines across them as in the
    # whole text (apart, a small network's step took 2-3 % longer); the rest is shared
    # out around them.
    calls = {name: {n for it in its for n in it.names if n in funcs and n != name}
             for name, its in funcs.items()}

    def closure(pattern: str) -> set:
        found, todo = set(), [name for name, its in funcs.items()
                              if re.search(pattern, name) and "static" not in _words(its[0].head)]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(calls[name])
        return found
    hot = closure(r"_(step|loss_grad)$")
    # The forward pass's own functions (those the step does not call) go together into
    # the second part where they weigh more than BIG of the whole: an unrolled
    # recurrence's forward pass, which the step runs through functions of its own (the
    # benchmark's GRU: gcc 13.8 s on the first part and 0.55 s on the second before)
    forward = closure(r"_forward$") - hot
    owner = {name: 0 for name in hot}
    load = [float(sum(weight[name] for name in hot)), 0.0]
    k = 1 if sum(weight[n] for n in forward) > BIG * sum(weight.values()) else 0
    owner.update({name: k for name in forward})
    load[k] += sum(weight[name] for name in forward)
    hot |= forward
    for name in sorted(set(funcs) - hot, key=lambda k: (-weight[k], k)):
        k = 0 if load[0] < load[1] else 1
        owner[name] = k
        load[k] += weight[name]
    if 0.0 in load:
        raise _Unknown("one part would be empty")
    # the names each part's own code uses (what both hold counts for both)
    used = [set(), set()]
    for it in parts:
        if it.kind == "func":
            used[owner[it.name]] |= it.names
        elif it.kind in ("inline", "shared", "pp", "tail"):
            used[0] |= it.names
            used[1] |= it.names
        elif it.kind == "var":
            pass        # its initializer's names: where the variable is defined
    var_owner = {}
    for name in variables:
        users = [k for k in (0, 1) if name in used[k]]
        var_owner[name] = users[0] if len(users) == 1 else 0
    for name, its in variables.items():
        for it in its:
            used[var_owner[name]] |= it.names
    both = {name for name in [*funcs, *variables] if name in used[0] and name in used[1]}
    out = [[PREAMBLE], [PREAMBLE]]
    for it in parts:
        lead = it.text[:it.code]
        if it.kind == "func":
            k = owner[it.name]
            static = "static" in _words(it.head)
            out[k].append(_hidden(it.text) if static and it.name in both else it.text)
            if it.name in both:
                head = it.text[it.code:it.brace].rstrip()
                out[1 - k].append(lead + (_hidden(head) if static else head) + ";")
        elif it.kind == "proto":
            static = _words(it.text[it.code:])[:1] == ["static"]
            if not static or it.name not in funcs:
                out[0].append(it.text)
                out[1].append(it.text)
            elif it.name in both:
                out[0].append(_hidden(it.text))
                out[1].append(_hidden(it.text))
            else:
                out[owner[it.name]].append(it.text)
        elif it.kind == "var":
            names = [n for n in variables if it in variables[n]]
            shared = [n for n in names if n in both]
            k = var_owner[shared[0] if shared else names[0]]
            if not shared:
                out[k].append(it.text)
                continue
            out[k].append(_hidden(it.text))
            decl = _without_initializers(it.text[it.code:])
            out[1 - k].append(lead + "extern " + _hidden(decl))
        else:
            out[0].append(it.text)
            out[1].append(it.text)
    return "".join(out[0]), "".join(out[1])

"""The templates' compiled code is kept (symnet/backend/c/emit.py): the C text
rendered from it is the same as from the templates compiled afresh, and a broken
entry is compiled anew."""

import symnet as sn
from symnet.backend.c import emit
from symnet.plan.lower import plan as make_plan


def _render():
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2), loss="mse")
    return emit.emit(make_plan(net.graph()), "float64", hooks=True)


def test_cached_template_code_renders_the_same_c(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(emit, "_TEMPLATE_CODE", emit._TemplateCode())
    fresh = _render()                          # compiled from the templates
    files = sorted((tmp_path / "jinja").glob("*.cache"))
    assert len(files) >= 2 and set(emit._TEMPLATE_CODE.code) == {f.stem for f in files}
    assert _render() == fresh                   # from this process's copy
    monkeypatch.setattr(emit, "_TEMPLATE_CODE", emit._TemplateCode())
    assert _render() == fresh                   # from the cache directory
    # a garbled entry: compiled anew, and the entry replaced
    monkeypatch.setattr(emit, "_TEMPLATE_CODE", emit._TemplateCode())
    for f in files:
        f.write_bytes(b"not marshalled code")
    assert _render() == fresh
    assert all(f.read_bytes() != b"not marshalled code" for f in files)

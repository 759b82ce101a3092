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


def test_entry_garbled_in_its_code_is_compiled_anew(tmp_path):
    """Bytes flipped inside the marshalled code (the header and the template's checksum
    intact, as a bad disk sector leaves them) are not run: Jinja would execute them
    ("SystemError: unknown opcode", or a crash).  In a child process, so that a crash
    shows as its exit status."""
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    render = (f"import sys; sys.path.insert(0, {here!r}); "
              "from test_template_cache import _render; "
              "sys.stdout.write(chr(10).join(_render()))")
    env = dict(os.environ, SYMNET_CACHE_DIR=str(tmp_path))

    def run():
        return subprocess.run([sys.executable, "-c", render], env=env, capture_output=True,
                              text=True, timeout=300)
    fresh = run()
    assert fresh.returncode == 0, fresh.stderr
    files = sorted((tmp_path / "jinja").glob("*.cache"))
    assert len(files) >= 2
    for f in files:
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0x5A
        f.write_bytes(bytes(data))
    again = run()
    assert again.returncode == 0, f"rendering from garbled {files[0].parent} failed:\n" \
        f"{again.stderr[-2000:]}"
    assert again.stdout == fresh.stdout

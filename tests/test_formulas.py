"""The derivation for people: golden text, sympy expressions against the
compiled gradients, LaTeX that renders, the command line, the tie to the C."""

import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from conftest import targets_for

import symnet as sn
from symnet.ir import nodes as ir
from symnet.__main__ import c_source
from symnet.scalar.notation import text


def notes_network():
    """The network of the source notes: I → H1 → H2 → O, ReLU, no biases, mse."""
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "relu", bias=False, name="H1"),
                      sn.Dense(4, "relu", bias=False, name="H2"),
                      sn.Dense(2, "relu", bias=False, name="O"), loss="mse")


# Written by hand from the notes' chain rule; mse averages over the 2 outputs,
# so ℓ(o, t) = (o − t)²/2 and ∂ℓ/∂o = o − t.
NOTES_TEXT = """\
Network I → H1 → H2 → O, loss mse
  I: (B, 3)   W1: (4, 3)   H1: (B, 4)   W2: (4, 4)   H2: (B, 4)   W3: (2, 4)   O: (B, 2)   T: (B, 2)
  B examples in a batch, one per row b; W is (out, in); inv_batch = 1/B.
  Indented lines use the names of the generated C, whose loop comments show the same formulas.

Forward
  H1 = relu(W1·I)
    z_H1[b,i] = Σ_j W1[i,j]·I[b,j]
    H1[b,i] = (z_H1[b,i] if z_H1[b,i] > 0 else 0)
  H2 = relu(W2·H1)
    z_H2[b,i] = Σ_j W2[i,j]·H1[b,j]
    H2[b,i] = (z_H2[b,i] if z_H2[b,i] > 0 else 0)
  O = relu(W3·H2)
    z_O[b,i] = Σ_j W3[i,j]·H2[b,j]
    O[b,i] = (z_O[b,i] if z_O[b,i] > 0 else 0)
  L = 𝓛(O, T) = inv_batch·Σ_b Σ_i ℓ(O[b,i], T[b,i])
    ℓ(o, t) = (o - t)²/2

Local derivatives (sympy.diff)
  relu(z) = (z if z > 0 else 0)
  relu′(z) = (1 if z > 0 else 0)
  ∂ℓ/∂o = o - t

Backward, from the output down
  ∂L/∂O = inv_batch·∂ℓ/∂o
    dL_dO[b,i] = inv_batch·(O[b,i] - T[b,i])   (not stored: fused into delta_O below)
  δ_O = ∂L/∂z_O = ∂L/∂O ⊙ relu′(z_O)   (loss fused with the output activation)
    delta_O[b,i] = inv_batch·(O[b,i] - T[b,i])·(1 if O[b,i] > 0 else 0)
  ∂L/∂W3 = ∂L/∂O · ∂O/∂W3 = δ_Oᵀ·H2
    g_W3[i,j] = Σ_b delta_O[b,i]·H2[b,j]
  ∂L/∂H2 = ∂L/∂O · ∂O/∂H2 = δ_O·W3
    dL_dH2[b,j] = Σ_i delta_O[b,i]·W3[i,j]
  δ_H2 = ∂L/∂z_H2 = ∂L/∂H2 ⊙ relu′(z_H2) = (δ_O·W3) ⊙ relu′(z_H2)
    delta_H2[b,i] = dL_dH2[b,i]·(1 if H2[b,i] > 0 else 0)
  ∂L/∂W2 = ∂L/∂H2 · ∂H2/∂W2 = δ_H2ᵀ·H1
    g_W2[i,j] = Σ_b delta_H2[b,i]·H1[b,j]
  ∂L/∂H1 = ∂L/∂H2 · ∂H2/∂H1 = δ_H2·W2
    dL_dH1[b,j] = Σ_i delta_H2[b,i]·W2[i,j]
  δ_H1 = ∂L/∂z_H1 = ∂L/∂H1 ⊙ relu′(z_H1) = (δ_H2·W2) ⊙ relu′(z_H1)
    delta_H1[b,i] = dL_dH1[b,i]·(1 if H1[b,i] > 0 else 0)
  ∂L/∂W1 = ∂L/∂H1 · ∂H1/∂W1 = δ_H1ᵀ·I
    g_W1[i,j] = Σ_b delta_H1[b,i]·I[b,j]"""


def mish(z):
    return z * sp.tanh(sp.log(1 + sp.exp(z)))


class RBF(sn.Layer):
    """A general (non-Dense) layer: h_i = exp(−β_i Σ_j (x_j − C_ij)²)."""

    def __init__(self, units, name=None):
        self.units, self.name = units, name

    def describe(self):
        return {"kind": "rbf", "units": self.units, "name": self.name}

    def to_node(self, index, name, input_name, n_in):
        syms = {}
        c_ij = ir.element(syms, f"C{index}", ir.OUT, ir.IN)
        x_j = ir.element(syms, input_name, ir.BATCH, ir.IN)
        r = ir.element(syms, f"r_{name}", ir.BATCH, ir.OUT)
        beta = ir.element(syms, f"beta{index}", ir.OUT)
        params = [ir.ParamSpec(f"C{index}", ("out", "in"), (self.units, n_in), "glorot"),
                  ir.ParamSpec(f"beta{index}", ("out",), (self.units,), "ones", role="bias")]
        red = ir.Reduction(f"r_{name}", r, (x_j - c_ij) ** 2, (ir.IN,))
        return ir.Node(name, index, input_name, n_in, self.units, params, [red],
                       sp.exp(-beta * r), syms, kind="layer")


# Every activation and loss kind at least once, sympy-defined ones included.
NETWORKS = {
    "notes": notes_network,
    "mish_bce": lambda: sn.Network(sn.Input(2), sn.Dense(3, mish), sn.Dense(3, "tanh"),
                                   sn.Dense(2, "sigmoid"), loss="bce"),
    "softmax": lambda: sn.Network(sn.Input(2), sn.Dense(3, "gelu"), sn.Dense(3, "elu"),
                                  sn.Dense(3, "linear"), loss="softmax_cross_entropy"),
    "custom_loss": lambda: sn.Network(sn.Input(2), sn.Dense(3, "softplus"),
                                      sn.Dense(3, "swish"), sn.Dense(2, "leaky_relu"),
                                      loss=(sp.Symbol("o") - sp.Symbol("t")) ** 4),
    "general_layer": lambda: sn.Network(sn.Input(2, name="I"), RBF(3, name="H1"),
                                        sn.Dense(2, "tanh", name="O"), loss="mse"),
}


@pytest.fixture(scope="module")
def notes():
    net = notes_network()
    return net, net.formulas(), net.compile(dtype="float64")


def test_golden_text_of_the_notes_network(notes):
    _, f, _ = notes
    assert str(f) == NOTES_TEXT


@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_sympy_gradients_equal_the_compiled_ones(kind):
    net = NETWORKS[kind]()
    model = net.compile(dtype="float64", seed=3)
    f = net.formulas()
    rng = np.random.default_rng(7)
    batch = 3
    X = rng.normal(size=(batch, net.n_in))
    loss = net.loss_name if isinstance(net.loss_spec, str) else "mse"
    T = targets_for(loss, rng, batch, net.n_out)
    L, grads = model.loss_and_grad(X, T)
    values = list(model.params.values())
    for name, g in grads.items():
        got = f.lambdify(f"g_{name}", batch)(X, T, *values)
        assert got.shape == g.shape
        np.testing.assert_allclose(got, g, rtol=1e-10, atol=1e-13, err_msg=f"{kind}: {name}")
    assert f.lambdify("L", batch)(X, T, *values) == pytest.approx(L, rel=1e-12)


def test_plain_sympy_lambdify_of_a_gradient():
    """The documented route for a user: sympy.lambdify(f.arguments(), f.gradient())."""
    net = sn.Network(sn.Input(2, name="I"), sn.Dense(3, "tanh"), sn.Dense(1, "sigmoid"),
                     loss="bce")
    model = net.compile(dtype="float64")
    f = net.formulas()
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(2, 2)), rng.uniform(0.1, 0.9, (2, 1))
    _, grads = model.loss_and_grad(X, T)
    expr = f.gradient("W1", batch=2)
    assert isinstance(expr, sp.NDimArray) and expr.shape == (3, 2)
    fn = sp.lambdify(f.arguments(2), expr, cse=True)
    np.testing.assert_allclose(fn(X, T, *model.params.values()), grads["W1"], rtol=1e-10)
    # the expression is sympy's: it can be differentiated again
    d = sp.diff(f.gradient("b2", batch=2)[0], f.arguments(2)[0][0, 0])
    assert d.free_symbols


def test_deltas_equal_the_hand_written_backward_pass(notes):
    _, f, model = notes
    rng = np.random.default_rng(11)
    X, T = rng.normal(size=(2, 3)), rng.normal(size=(2, 2))
    W1, W2, W3 = (model.params[k] for k in ("W1", "W2", "W3"))
    z1 = X @ W1.T
    z2 = np.maximum(z1, 0) @ W2.T
    z3 = np.maximum(z2, 0) @ W3.T
    d3 = (np.maximum(z3, 0) - T) / 2 * (z3 > 0)      # (1/B)·(O − T)·relu′, B = 2
    d2 = (d3 @ W3) * (z2 > 0)
    d1 = (d2 @ W2) * (z1 > 0)
    for name, want in (("O", d3), ("H2", d2), ("H1", d1)):
        assert f.delta(name, batch=2) == f.expression(f"delta_{name}", batch=2)
        fn = f.lambdify(f"delta_{name}", batch=2)
        np.testing.assert_allclose(fn(X, T, W1, W2, W3), want, rtol=1e-12, atol=1e-15)


def _mathtext_lines(latex):
    from matplotlib.mathtext import MathTextParser
    parser = MathTextParser("path")
    body = latex.strip().splitlines()
    assert body[0] == r"\begin{aligned}" and body[-1] == r"\end{aligned}"
    for line in body[1:-1]:
        line = line.rstrip()
        line = line.removesuffix("\\\\")
        parser.parse("$" + line.replace("&", "") + "$")   # raises on invalid TeX
    return body[1:-1]


@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_latex_renders_line_by_line(kind):
    f = NETWORKS[kind]().formulas()
    lines = _mathtext_lines(f.latex())
    assert len(lines) == sum(1 for line in f.lines if line.latex is not None)
    assert f._repr_latex_().startswith("$$") and r"\begin{aligned}" in f._repr_latex_()


def test_latex_uses_the_notes_notation(notes):
    tex = notes[1].latex()
    assert (r"\frac{\partial L}{\partial W_{2}} &= \frac{\partial L}{\partial H_{2}} \cdot "
            r"\frac{\partial H_{2}}{\partial W_{2}} = \delta_{H_{2}}^{\top} \cdot H_{1}") in tex
    assert r"\mathcal{L}\left(O, T\right)" in tex


def test_mish_shows_the_derivative_sympy_gives():
    """Mish is declared as z·tanh(log(1 + e^z)); symnet first rewrites log(1 + e^z)
    to the stable softplus(z) (whose derivative is σ(z)), then sympy differentiates."""
    f = NETWORKS["mish_bce"]().formulas()
    z = sp.Symbol("z", real=True)
    stable = z * sp.tanh(sn.softplus(z))
    assert sp.simplify(stable.rewrite(sp.log) - mish(z)) == 0
    lines = str(f).splitlines()
    assert f"  f_H1(z) = {text(stable)}" in lines
    assert f"  f_H1′(z) = {text(sp.diff(stable, z))}" in lines


def test_index_lines_are_the_loop_comments_of_the_c():
    """Each derived formula of the text is printed, identically, above its C loop."""
    net = sn.Network(sn.Input(2, name="I"), sn.Dense(8, "tanh", name="H1"),
                     sn.Dense(8, "tanh", name="H2"), sn.Dense(1, "sigmoid", name="O"),
                     loss="bce")
    f, src = net.formulas(), c_source(net)
    for grad in f.grads:
        for term in grad.outer:
            assert f"{term.target}[{','.join(term.index)}]" in src
            assert text(term.expr) in src, term
    for line in ("g_W2[i,j] = Σ_b delta_H2[b,i]·H1[b,j]",
                 "dL_dH1[b,j] = Σ_i delta_H2[b,i]·W2[i,j]",
                 "delta_H2[b,i] = dL_dH2[b,i]·(1 - H2[b,i]²)",
                 "H1[b,i] = tanh(b1[i] + z_H1[b,i])"):
        assert line in str(f) and f"/* {line}" in src


def test_general_layer_shows_its_element_formulas():
    lines = str(NETWORKS["general_layer"]().formulas()).splitlines()
    for line in ("  H1 = H1(C1, beta1, I)",
                 "    r_H1[b,i] = Σ_j (-C1[i,j] + I[b,j])²",
                 "    H1[b,i] = exp(-beta1[i]·r_H1[b,i])",
                 "  δ_H1 = ∂L/∂r_H1 = ∂L/∂H1 ⊙ ∂H1/∂r_H1",
                 "    delta_H1[b,i] = -H1[b,i]·beta1[i]·dL_dH1[b,i]",
                 "    g_C1[i,j] = Σ_b delta_H1[b,i]·(2·C1[i,j] - 2·I[b,j])"):
        assert line in lines


def test_rule_is_the_element_formula_the_compiler_uses(notes):
    f = notes[1]
    assert text(f.rule("delta_H1")) == "dL_dH1[b,i]·(1 if H1[b,i] > 0 else 0)"
    with pytest.raises(ValueError, match="no element rule for 'H7'"):
        f.rule("H7")


def test_bad_names_and_batches_are_refused(notes):
    f = notes[1]
    with pytest.raises(ValueError, match=r"no parameter 'b1'; parameters: W1, W2, W3"):
        f.gradient("b1")
    with pytest.raises(ValueError, match=r"no delta for 'H9'; deltas: delta_H1"):
        f.delta("H9")
    with pytest.raises(ValueError, match=r"no array 'nope' in the derivation"):
        f.expression("nope")
    with pytest.raises(ValueError, match="batch must be a positive integer, got 0"):
        f.gradient("W1", batch=0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "symnet", *args], check=False,
                          capture_output=True,
                          text=True, timeout=120, cwd=sn.__path__[0] + "/..")


def test_command_line_prints_the_derivation_and_the_c():
    out = _cli("formulas", "examples/xor.py")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Network I → H1 → H2 → O, loss bce\n")
    assert "  ∂L/∂W1 = ∂L/∂H1 · ∂H1/∂W1 = δ_H1ᵀ·I\n" in out.stdout
    tex = _cli("formulas", "examples/xor.py", "--latex")
    assert tex.returncode == 0 and tex.stdout.startswith(r"\begin{aligned}")
    c = _cli("c", "examples/xor.py")
    assert c.returncode == 0 and "g_W1[i,j] = Σ_b delta_H1[b,i]·I[b,j]" in c.stdout


def test_command_line_missing_file_is_one_line():
    out = _cli("formulas", "no/such/file.py")
    assert out.returncode == 2
    assert out.stderr.strip() == "python -m symnet: error: no such file: no/such/file.py"


def test_command_line_closed_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "symnet", "c", "examples/digits.py"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=sn.__path__[0] + "/..")
    proc.stdout.readline()          # like `| head -1`: read a little, then go away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def _graph_networks():
    from test_graph import rnn_net, shared_net, two_output_net
    A, Bi = sn.Input(2, name="A"), sn.Input(3, name="Bi")
    G = sn.Dense(3, "tanh", name="G")(A)
    C = sn.Concatenate(name="C")([G, Bi])
    S = sn.Add(name="S")([sn.Dense(4, "relu", name="P")(C), sn.Dense(4, name="Q")(C)])
    merged = sn.Network([A, Bi], sn.Dense(3, name="O")(S), loss="softmax_cross_entropy")
    return {"two_outputs": two_output_net(), "shared": shared_net(), "rnn": rnn_net(),
            "merges": merged}


@pytest.mark.parametrize("kind", ["two_outputs", "shared", "rnn", "merges"])
def test_graphs_use_the_chains_renderer(kind):
    """One walk writes the derivation of chains and graphs (symnet.read.lines): a
    graph gets the notes' chain-rule steps too, every term derive made appears as its
    index line, and the LaTeX renders line by line."""
    net = _graph_networks()[kind]
    f = net.formulas()
    text_ = str(f)
    assert "Local derivatives (sympy.diff)" in text_
    assert "∂L/∂" in text_ and " · ∂" in text_          # ∂L/∂W = ∂L/∂H · ∂H/∂W
    for g in f.grads:
        for t in g.outer + [t for ts in g.summands.values() for t in ts]:
            if t.target != f"dL_d{f.graph.input_name}" and not f.graph.is_input(
                    t.target[len("dL_d"):]):
                assert text(t.expr) in text_, (kind, t.target, text(t.expr))
        if g.coupled is not None:
            assert g.coupled.grad_text().split(" = ", 1)[1] in text_
    lines = _mathtext_lines(f.latex())
    assert len(lines) == sum(1 for line in f.lines if line.latex is not None)


def test_a_chain_written_as_a_graph_reads_as_the_chain():
    """The functional form of a chain is the same graph with one path: the same text."""
    I = sn.Input(3, name="I")
    O = sn.Dense(2, name="O")(sn.Dense(4, "tanh", name="H")(I))
    functional = sn.Network(I, O, loss="mse")
    sequential = sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh", name="H"),
                            sn.Dense(2, name="O"), loss="mse")
    assert str(functional.formulas()) == str(sequential.formulas())
    assert str(functional.formulas()).startswith("Network I → H → O, loss mse")

"""opgraph.nn against micrograd.nn: same weights and inputs give the same loss and gradients.

The opgraph MLP's initial weights are copied into a micrograd MLP of the same shape; both then
compute the moons demo's loss (max-margin plus L2) and the mean squared error, written the way
micrograd's demo writes them, and backpropagate. Losses and every parameter gradient must agree
to 1e-12 relative. Then micrograd's semantics one by one, and bad sizes.
"""

from __future__ import annotations

import math
import random

import micrograd.engine
import micrograd.nn
import pytest

from opgraph import Value
from opgraph.datasets import make_moons
from opgraph.nn import MLP, SGD, Layer, Module, Neuron, l2, mse_loss, svm_loss

REL = 1e-12


def close(a: float, b: float, rel: float = REL) -> bool:
    """``a`` and ``b`` agree to ``rel`` relative (exactly, when one of them is 0)."""
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def twin(model: MLP, sizes: tuple[int, list[int]]) -> micrograd.nn.MLP:
    """A micrograd MLP of the same shape holding ``model``'s current weights."""
    mg = micrograd.nn.MLP(*sizes)
    ours, theirs = model.parameters(), mg.parameters()
    assert len(ours) == len(theirs)
    for p, q in zip(ours, theirs, strict=True):
        q.data = p.data
    return mg


def assert_same_grads(model: MLP, mg: micrograd.nn.MLP) -> None:
    ours = [p.grad for p in model.parameters()]
    theirs = [float(q.grad) for q in mg.parameters()]
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
           if not close(a, b)]
    assert not bad, f"{len(bad)} of {len(ours)} gradients differ, first: {bad[:3]}"
    assert any(g != 0 for g in ours)  # the comparison is not between two lists of zeros


# --- against micrograd ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_demo_loss_and_gradients_match_micrograd(seed: int) -> None:
    points, labels = make_moons(8, noise=0.1, seed=seed)
    model = MLP(2, [16, 16, 1], seed=seed)
    mg = twin(model, (2, [16, 16, 1]))

    scores = [model([Value(x), Value(y)]) for x, y in points]
    loss = svm_loss(scores, labels) + l2(model.parameters(), 1e-4)
    model.zero_grad()
    loss.backward()

    # micrograd's demo, as its notebook writes it
    mg_scores = [mg([micrograd.engine.Value(x), micrograd.engine.Value(y)]) for x, y in points]
    losses = [(1 + -yi * si).relu() for yi, si in zip(labels, mg_scores, strict=True)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in mg.parameters())
    mg_loss = data_loss + reg_loss
    mg.zero_grad()
    mg_loss.backward()

    for s, t in zip(scores, mg_scores, strict=True):
        assert close(s.data, t.data)
    assert close(loss.data, mg_loss.data), (loss.data, mg_loss.data)
    assert_same_grads(model, mg)


def test_mse_loss_and_gradients_match_micrograd() -> None:
    rng = random.Random(5)
    inputs = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(6)]
    targets = [rng.uniform(-1, 1) for _ in range(6)]
    model = MLP(3, [4, 4, 1], seed=7)
    mg = twin(model, (3, [4, 4, 1]))

    loss = mse_loss([model(x) for x in inputs], targets)
    loss.backward()
    predictions = [mg(x) for x in inputs]
    mg_loss = sum((p - t) ** 2 for p, t in zip(predictions, targets, strict=True)) * (
        1.0 / len(predictions))
    mg_loss.backward()

    assert close(loss.data, mg_loss.data), (loss.data, mg_loss.data)
    assert_same_grads(model, mg)


def test_a_training_run_matches_micrograd_step_by_step() -> None:
    points, labels = make_moons(6, noise=0.1, seed=3)
    model = MLP(2, [8, 1], seed=3)
    mg = twin(model, (2, [8, 1]))
    optimizer = SGD(model.parameters())
    for k in range(5):
        loss = svm_loss([model(list(p)) for p in points], labels) + l2(model.parameters(), 1e-4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(1.0 - 0.9 * k / 100)

        scores = [mg(list(p)) for p in points]
        mg_loss = sum((1 + -y * s).relu() for y, s in zip(labels, scores, strict=True)) * (
            1.0 / len(scores)) + 1e-4 * sum(p * p for p in mg.parameters())
        mg.zero_grad()
        mg_loss.backward()
        for p in mg.parameters():
            p.data -= (1.0 - 0.9 * k / 100) * p.grad
        assert close(loss.data, mg_loss.data), (k, loss.data, mg_loss.data)
    for p, q in zip(model.parameters(), mg.parameters(), strict=True):
        assert close(p.data, q.data)


def test_unseeded_weights_come_from_the_random_module_like_micrograds() -> None:
    random.seed(1234)
    mg = micrograd.nn.MLP(2, [4, 3, 1])
    random.seed(1234)
    model = MLP(2, [4, 3, 1])
    assert [p.data for p in model.parameters()] == [q.data for q in mg.parameters()]
    assert repr(model) == repr(mg)


# --- micrograd's semantics ---------------------------------------------------------------------


def test_initial_weights_uniform_in_minus_one_one_and_biases_zero() -> None:
    model = MLP(3, [16, 16, 1], seed=11)
    neurons = [n for layer in model.layers for n in layer.neurons]
    weights = [w.data for n in neurons for w in n.w]
    assert len(weights) == 3 * 16 + 16 * 16 + 16
    assert all(-1 <= w <= 1 for w in weights)
    assert min(weights) < -0.9 and max(weights) > 0.9  # spread over the interval, not a corner
    assert all(n.b.data == 0 for n in neurons)
    assert len(model.parameters()) == len(weights) + len(neurons)
    assert all(p.is_leaf for p in model.parameters())


def test_parameters_are_weights_then_bias_per_neuron_in_order() -> None:
    model = MLP(2, [3, 1], seed=0)
    expected = [p for layer in model.layers for n in layer.neurons for p in (*n.w, n.b)]
    assert model.parameters() == expected
    assert model.layers[0].parameters() == expected[:9]


def test_hidden_layers_use_relu_and_the_output_is_linear() -> None:
    model = MLP(2, [4, 3, 1], seed=2)
    assert [n.nonlin for n in model.layers[0].neurons] == [True] * 4
    assert [n.nonlin for n in model.layers[1].neurons] == [True] * 3
    assert [n.nonlin for n in model.layers[2].neurons] == [False]
    assert repr(model.layers[2]) == "Layer of [LinearNeuron(3)]"

    hidden = Neuron(2, seed=0)
    hidden.w[0].data, hidden.w[1].data = -1.0, 0.5
    out = hidden([3.0, 1.0])  # b + w.x = -2.5
    assert out.data == 0.0 and out.op == "relu"
    linear = Neuron(2, nonlin=False, seed=0)
    linear.w[0].data, linear.w[1].data = -1.0, 0.5
    out = linear([3.0, 1.0])
    assert out.data == -2.5 and out.op == "add"


def test_neuron_computes_bias_plus_products_in_micrograds_order() -> None:
    neuron = Neuron(3, nonlin=False, seed=4)
    neuron.b.data = 0.25
    x = [Value(1.5), Value(-2.0), Value(0.75)]
    out = neuron(x)
    expected = 0.25
    for w, xi in zip(neuron.w, x, strict=True):
        expected = expected + w.data * xi.data
    assert out.data == expected  # the same additions in the same order: equal to the last bit
    out.backward()
    assert [xi.grad for xi in x] == [w.data for w in neuron.w]
    assert [w.grad for w in neuron.w] == [xi.data for xi in x]
    assert neuron.b.grad == 1.0


def test_a_layer_of_one_neuron_returns_a_value_and_wider_layers_a_list() -> None:
    one = Layer(2, 1, seed=0)([1.0, 2.0])
    assert isinstance(one, Value)
    many = Layer(2, 3, seed=0)([1.0, 2.0])
    assert isinstance(many, list) and len(many) == 3
    assert all(isinstance(v, Value) for v in many)
    assert isinstance(MLP(2, [3, 1], seed=0)([1.0, 2.0]), Value)
    assert len(MLP(2, [3, 2], seed=0)([1.0, 2.0])) == 2


def test_seeds_are_reproducible() -> None:
    def weights(model: Module) -> list[float]:
        return [p.data for p in model.parameters()]

    assert weights(MLP(2, [16, 16, 1], seed=5)) == weights(MLP(2, [16, 16, 1], seed=5))
    assert weights(MLP(2, [16, 16, 1], seed=5)) != weights(MLP(2, [16, 16, 1], seed=6))
    # an int seed is a random.Random of that seed
    assert weights(MLP(2, [4, 1], seed=9)) == weights(MLP(2, [4, 1], seed=random.Random(9)))
    # a seeded model leaves the random module alone
    random.seed(3)
    before = random.random()
    random.seed(3)
    MLP(2, [4, 1], seed=1)
    assert random.random() == before
    # and the data set is reproducible too
    assert make_moons(20, seed=4) == make_moons(20, seed=4)
    assert make_moons(20, seed=4) != make_moons(20, seed=5)


def test_zero_grad_resets_every_parameter() -> None:
    model = MLP(2, [4, 1], seed=0)
    out = model([1.0, -1.0])
    out.backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())
    # and gradients accumulate between zero_grads, as in micrograd
    model([1.0, -1.0]).backward()
    once = [p.grad for p in model.parameters()]
    model([1.0, -1.0]).backward()
    assert [p.grad for p in model.parameters()] == [2 * g for g in once]


def test_sgd_step_moves_each_parameter_against_its_gradient() -> None:
    model = MLP(2, [3, 1], seed=0)
    optimizer = SGD(model.parameters(), lr=0.5)
    loss = mse_loss([model([1.0, 2.0]), model([-1.0, 0.5])], [1.0, -1.0])
    loss.backward()
    before = [(p.data, p.grad) for p in model.parameters()]
    optimizer.step()
    assert [p.data for p in model.parameters()] == [d - 0.5 * g for d, g in before]
    optimizer.step(lr=0.1)  # a schedule's rate overrides the optimiser's own
    assert [p.data for p in model.parameters()] == [d - 0.5 * g - 0.1 * g for d, g in before]
    optimizer.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def test_a_few_sgd_steps_reduce_the_loss() -> None:
    model = MLP(1, [8, 1], seed=0)
    xs, ys = [[-1.0], [-0.5], [0.0], [0.5], [1.0]], [1.0, 0.25, 0.0, 0.25, 1.0]
    optimizer = SGD(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        loss = mse_loss([model(x) for x in xs], ys)
        first = loss.data if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.data < first / 2


def test_losses_compute_what_they_say() -> None:
    scores = [Value(2.0), Value(-0.5), Value(0.25)]
    loss = svm_loss(scores, [1, 1, -1])
    # relu(1 - 2) = 0, relu(1 + 0.5) = 1.5, relu(1 + 0.25) = 1.25
    assert math.isclose(loss.data, (0 + 1.5 + 1.25) / 3, rel_tol=1e-15)
    loss.backward()
    assert [s.grad for s in scores] == [0.0, -1 / 3, 1 / 3]

    mse = mse_loss([Value(1.0), Value(3.0)], [0.0, 1.0])
    assert mse.data == (1.0 + 4.0) / 2
    reg = l2([Value(3.0), Value(-4.0)], 0.5)
    assert reg.data == 0.5 * 25.0


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "error", "words"), [
    (lambda: MLP(0, [4, 1]), ValueError, "number of inputs must be a positive int, got 0"),
    (lambda: MLP(2, []), ValueError, "at least one layer"),
    (lambda: MLP(2, [4, 0]), ValueError, "size of layer 1 must be a positive int, got 0"),
    (lambda: MLP(2, [-3]), ValueError, "size of layer 0 must be a positive int, got -3"),
    (lambda: MLP(2, [4.5, 1]), TypeError, "size of layer 0 must be a positive int, got float"),
    (lambda: MLP(2, 16), TypeError, "nouts must be a list of layer sizes, got int"),
    (lambda: MLP("2", [1]), TypeError, "number of inputs must be a positive int, got str"),
    (lambda: MLP(True, [1]), TypeError, "must be a positive int, got bool"),
    (lambda: MLP(2, [1], seed=1.5), TypeError, "seed must be an int"),
    (lambda: Layer(2, 0), ValueError, "number of neurons must be a positive int, got 0"),
    (lambda: Layer(0, 3), ValueError, "number of inputs must be a positive int, got 0"),
    (lambda: Neuron(-1), ValueError, "number of inputs must be a positive int, got -1"),
])
def test_bad_sizes_are_refused_with_a_clear_error(make, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_wrong_number_of_inputs_is_refused() -> None:
    model = MLP(2, [3, 1], seed=0)
    with pytest.raises(ValueError, match=r"ReLUNeuron\(2\) takes 2 inputs, got 3"):
        model([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        model([1.0])


def test_losses_refuse_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 scores and 3 labels"):
        svm_loss([Value(1.0), Value(2.0)], [1, -1, 1])
    with pytest.raises(ValueError, match="as many labels as scores"):
        svm_loss([], [])
    with pytest.raises(ValueError, match="got 1 and 2"):
        mse_loss([Value(1.0)], [1.0, 2.0])

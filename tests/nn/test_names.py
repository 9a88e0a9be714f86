"""opgraph.nn names what it creates: parameters by their place in the model, the two nodes of
each neuron call by role, the losses' terms; with a prefix or without one."""

from __future__ import annotations

import pytest

from opgraph import Value, topological_order
from opgraph.nn import MLP, Layer, Neuron, l2, mse_loss, svm_loss


def test_parameters_are_named_by_their_attribute_path() -> None:
    model = MLP(2, [16, 16, 1], seed=0)
    for i, layer in enumerate(model.layers):
        for j, neuron in enumerate(layer.neurons):
            for k, w in enumerate(neuron.w):
                assert w.label == f"layer{i}.neuron{j}.w{k}"
            assert neuron.b.label == f"layer{i}.neuron{j}.b"
    labels = [p.label for p in model.parameters()]
    assert len(set(labels)) == len(labels) == 337
    assert labels[:3] == ["layer0.neuron0.w0", "layer0.neuron0.w1", "layer0.neuron0.b"]
    assert labels[-1] == "layer2.neuron0.b"


def test_each_call_names_the_sum_and_the_activation_of_every_neuron() -> None:
    model = MLP(2, [3, 1], seed=1)
    out = model([Value(0.5), Value(-1.0)])
    assert out.label == "layer1.neuron0.sum"  # the last layer is linear: its output is the sum
    nodes = topological_order(out)
    named = [v.label for v in nodes if v.label and not v.is_leaf]
    assert named == [
        "layer0.neuron0.sum", "layer0.neuron0.act", "layer0.neuron1.sum", "layer0.neuron1.act",
        "layer0.neuron2.sum", "layer0.neuron2.act", "layer1.neuron0.sum"]
    acts = [v for v in nodes if v.label.endswith(".act")]
    assert all(v.op == "relu" and v.inputs[0].label.endswith(".sum") for v in acts)
    # the products and partial sums stay unlabelled (see the module's docstring for why)
    # (a neuron of n inputs makes n products and n sums, the last of them labelled)
    assert sum(1 for v in nodes if not v.label) == 3 * (2 * 2 - 1) + (2 * 3 - 1) + 2  # + x


def test_a_prefix_and_modules_made_on_their_own() -> None:
    critic = MLP(1, [2, 1], seed=2, name="critic")
    assert critic.parameters()[0].label == "critic.layer0.neuron0.w0"
    assert critic([1.0]).label == "critic.layer1.neuron0.sum"
    neuron = Neuron(2, seed=3)
    assert [p.label for p in neuron.parameters()] == ["w0", "w1", "b"]
    assert neuron([1.0, 2.0]).label == "act"
    layer = Layer(1, 2, nonlin=False, seed=4, name="head")
    assert [p.label for p in layer.parameters()] == [
        "head.neuron0.w0", "head.neuron0.b", "head.neuron1.w0", "head.neuron1.b"]
    assert [v.label for v in layer([1.0])] == ["head.neuron0.sum", "head.neuron1.sum"]
    with pytest.raises(TypeError, match="name must be a string, got int 3"):
        MLP(2, [1], name=3)  # type: ignore[arg-type]


def test_losses_name_their_terms_and_results() -> None:
    scores = [Value(0.5), Value(-2.0)]
    loss = svm_loss(scores, [1, -1])
    assert loss.label == "svm_loss.mean"
    hinges = [v for v in topological_order(loss) if v.label == "svm_loss.hinge"]
    assert len(hinges) == 2 and all(v.op == "relu" for v in hinges)
    mse = mse_loss(scores, [0.0, 1.0])
    assert mse.label == "mse_loss.mean"
    assert sum(v.label == "mse_loss.sq" for v in topological_order(mse)) == 2
    reg = l2(scores, 0.1)
    assert reg.label == "l2.total"
    assert sum(v.label == "l2.square" for v in topological_order(reg)) == 2
    assert l2([], 0.1) == 0  # no parameters: the number 0, as before

"""softplus(x) = log(1 + e^x), a smooth ReLU: an example opgraph op plugin."""

import math

from opgraph import OpDef, hookimpl


def softplus(x):
    # log1p(exp(x)) overflows for large x, where softplus(x) is x to double precision.
    return x if x > 30 else math.log1p(math.exp(x))


def softplus_grad(x, out):
    # d/dx log(1 + e^x) = sigmoid(x); one number per input.
    return (1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0,)


def softplus_vector(x):
    import numpy as np  # optional: lets the compiled executor run this op vectorised

    return np.logaddexp(0.0, x)


def softplus_vector_grad(x, out):
    import numpy as np

    return (0.5 * (1.0 + np.tanh(0.5 * x)),)


@hookimpl
def opgraph_register_ops():
    return [
        OpDef(
            "softplus", 1, softplus, softplus_grad,
            doc="log(1 + e ** x), a smooth relu",
            domain=((-5.0, 5.0),),          # where `opgraph ops check` samples it
            vforward=softplus_vector, vgrad=softplus_vector_grad,
        )
    ]

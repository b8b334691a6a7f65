"""rnngen: write a recurrent cell once as a YAML spec; get NumPy and TensorFlow code
with a symbolically derived backward pass, verified against Keras.

Pipeline: :mod:`rnngen.spec` (parse) -> :mod:`rnngen.symbolic` (derive) ->
:mod:`rnngen.codegen` (render) -> :mod:`rnngen.verify` (check) -> :mod:`rnngen.cli`.
"""

__version__ = "0.1.0"

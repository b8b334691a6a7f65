"""The seed note's example, unchanged except for the import: rnngen's generated Keras layer
(``generated.simple_rnn_tf.SimpleRNN``) where the note used ``tf.keras.layers.SimpleRNN``.

    python examples/seed_example.py        (``--tiny`` is accepted: the example is tiny)
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # generated/ from any folder

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402, F401  (the seed imports it)

from generated.simple_rnn_tf import SimpleRNN  # noqa: E402  (was: tf.keras.layers.SimpleRNN)

# fmt: off  (the seed's code, verbatim)
inputs = np.random.random([4, 4, 8]).astype(np.float32)
print(inputs)
simple_rnn = SimpleRNN(4)
output = simple_rnn(inputs)
print("output:", output)
simple_rnn1 = SimpleRNN(4, return_sequences=True, return_state=True)
whole_sequence_output, final_state = simple_rnn1(inputs)
print("whole_sequence_output:", whole_sequence_output)
print("final_state:", final_state)
# fmt: on

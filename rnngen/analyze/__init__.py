"""``rnngen analyze``: gradient flow, spectra, memory and truncation of generated cells.

Modules, one job each:

- :mod:`.cells`: load a spec's generated NumPy layer, make layers in the compared
  configurations (recurrent initializer, activation, gain);
- :mod:`.gradients`: ‖∂L/∂h_t‖ and ‖∂h_T/∂h_t‖ at initialisation, fitted decay rates,
  truncated-BPTT error (parts 1 and 4);
- :mod:`.spectra`: eigenvalues and singular values of the recurrent kernel per gate (part 2);
- :mod:`.tasks`, :mod:`.optim`, :mod:`.training`: the adding and copy tasks, Adam and SGD,
  training runs and the clipping experiment (parts 3 and 4);
- :mod:`.run`: runs every part; :mod:`.figures`, :mod:`.report`: PNG, HTML, JSON;
- :mod:`.cli`: the ``rnngen analyze`` command.

Only NumPy is needed for the analysis and matplotlib for the figures; never TensorFlow.
"""

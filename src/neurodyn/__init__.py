"""neurodyn: infer the hidden dynamics of neural populations and single neurons.

Layers, in data-flow order (a module imports only the layers before it):
``errors``/``device`` -> ``data`` -> ``synth`` -> ``observation`` -> ``lfads`` / ``gfr``
-> ``train`` -> ``pbt`` -> ``evaluate`` -> ``cli``.
"""

__version__ = "0.1.0"

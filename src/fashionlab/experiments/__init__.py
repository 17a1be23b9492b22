"""The four experiments of the study, one package each, of the same shape.

Each package keeps its settings and pure functions at the bottom and its ``stage.py`` (the
function that runs the experiment into a stage directory) on top. Experiments import the core
(``fashionlab.data``, ``models``, ``train``, ``checkpoint``, ``runtime``, ``atomic``, ``figures``,
...) and never each other.
"""

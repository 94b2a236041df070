"""Experiments that demonstrate CALM, each with its data, base models, run and report:

* :mod:`calm_mini.experiments.kv` — key-value arithmetic (the paper's Table 1) and its ablations;
* :mod:`calm_mini.experiments.facts` — SmolLM2 learns fictional facts from a small model (offline);
* :mod:`calm_mini.experiments.keys_chars` — SmolLM2 reads a character-level model's memory, across
  tokenizers (offline).
"""

"""Training methods as compositions of registered parts (docs/design.md, "Methods as compositions").

Where a method lives:

- :mod:`~calibadv.methods.registry` — the registries (one per part kind), :class:`Knob` and the
  defaults a preset gets when it names no entry;
- :mod:`~calibadv.methods.catalog` — the filled registries: a preset's parts and knobs checked,
  what a method needs from a backend;
- :mod:`~calibadv.methods.presets` — named presets (``config/methods.yaml``), ``base:``
  inheritance, :func:`get_method`;
- one module per part kind: :mod:`~calibadv.methods.advantage` (GRPO and CalibAdv's calibration),
  :mod:`~calibadv.methods.estimators` (advantage estimators: CalibAdv, GiGPO, MT-GRPO,
  Tree-GRPO, GAE), :mod:`~calibadv.methods.losses`, :mod:`~calibadv.methods.filters`,
  :mod:`~calibadv.methods.token_rewards` (with StepSearch's rewards in
  :mod:`~calibadv.methods.stepsearch_reward`) and :mod:`~calibadv.methods.rollout_shapes`.

The package's own import is torch-free and light (Snakemake validates presets while it parses
the DAG): it re-exports the preset API only.
"""

from calibadv.methods.presets import ENV_VAR, default_methods_path, get_method, list_methods, load_presets

__all__ = ["ENV_VAR", "default_methods_path", "get_method", "list_methods", "load_presets"]

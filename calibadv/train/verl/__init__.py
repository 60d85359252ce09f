"""The verl backend: hydra overrides from a RunSpec, the launcher, and what the plugin registers.

Modules importing verl (``estimator``, ``trainer``, ``agent_loop``) are imported lazily by
:mod:`calibadv.verl_plugin`, so ``import verl`` stays as cheap as verl itself.
"""

#: Names under which the plugin registers our parts in verl's registries.
ESTIMATOR_NAME = "calibadv"
TRAINER_MODE = "calibadv"
AGENT_LOOP_NAME = "calibadv_search"

"""The verl backend: hydra overrides from a RunSpec, the launcher, and what the plugin registers.

Modules importing verl (``estimator``, ``trainer``, ``agent_loop``, ``checkpoints``) are
imported lazily (by :mod:`calibadv.train.verl.plugin`, or by verl when it loads the checkpoint
callback), so ``import verl`` stays as cheap as verl itself; ``overrides``, ``settings``,
``signals``, ``search_rollout`` and ``smoke`` do not import verl.
"""

#: Names under which the plugin registers our parts in verl's registries.
ESTIMATOR_NAME = "calibadv"
TRAINER_MODE = "calibadv"
AGENT_LOOP_NAME = "calibadv_search"

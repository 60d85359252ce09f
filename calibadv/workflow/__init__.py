"""The workflow config, resolved: what the Snakefile and ``calibadv spec`` both read.

The DAG's file names and the RunSpecs its jobs read come from this one package, so they can
never drift apart. Everything here is pure (dicts in, dicts/paths out), imports neither
Snakemake nor torch (Snakemake imports it on every start), and sits above the method presets,
the judge's settings and the RunSpec it composes — none of those import it.

* :mod:`~calibadv.workflow.schema` — the config's JSON schema: defaults filled, errors in words
* :mod:`~calibadv.workflow.validation` — :func:`~calibadv.workflow.validation.load_config` /
  :func:`~calibadv.workflow.validation.validate_config` and the cross-field checks the schema
  cannot express
* :mod:`~calibadv.workflow.layout` — where every file lives (:class:`~calibadv.workflow.layout.Layout`)
  and which rule writes it
* :mod:`~calibadv.workflow.runs` — which runs exist: each model's methods, seeds and start point
* :mod:`~calibadv.workflow.sources` — where each model comes from (hub download, local
  directory, built tiny model, SFT warm start) and the config as offline jobs see it
* :mod:`~calibadv.workflow.run_specs` — the RunSpec of one (model, method, seed) run
* :mod:`~calibadv.workflow.resources` — per-stage resources and their Snakemake/SLURM names
* :mod:`~calibadv.workflow.judge` — the workflow's ``judge`` section: endpoint, runs, labels
* :mod:`~calibadv.workflow.job_inputs` — a job's missing input, named with the rule that writes it
"""

# The CalibAdv reproduction workflow: corpus -> models -> index -> datasets -> RunSpecs ->
# training -> evaluation -> proxy validation -> tables, figures and the HTML report.
#
#   snakemake -c2                                  # embedded default: config/tiny.yaml
#   snakemake --configfile config/config.yaml --profile slurm   # the paper, on a cluster
#
# Wiring only: every rule calls one `calibadv` subcommand (see docs/workflow.md).
import os

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another config (a plain `configfile:` would
# deep-merge the two, mixing the tiny model into the paper's runs).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "tiny.yaml")


# rules/common.smk validates the config against workflow/schemas/config.schema.yaml (through
# calibadv.workflow.validation, whose errors name the key, the value and the allowed range)
# before any rule is defined.
include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/models.smk"
include: "rules/index.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/proxy.smk"
include: "rules/judge.smk"
include: "rules/report.smk"
include: "rules/counterfactual.smk"


rule all:
    default_target: True
    input:
        all_targets(),

# Agent-FLAN reproduction: download -> convert -> ablations -> train -> evaluate -> tables/figures.
#   snakemake --cores all                                   offline miniature (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml    the paper preset (real data, Llama-2)
# Stage targets: data, ablations, train, evaluate, tables, figures (e.g. `snakemake -n ablations`).
#   snakemake bundle                                        results bundle: what the tables are computed from
#   snakemake --cores all --config from_bundle=PATH         tables and figures from a bundle (CPU, no data/models)
# Where things live: rules in workflow/rules/<stage>.smk; each calls one function of
# src/agentflan/stages.py, which calls the stage module; config keys: workflow/schemas/config.schema.yaml.
from snakemake.utils import min_version, validate

min_version("8.0")


# The embedded default, unless a preset was given with --configfile (no deep merge of the two).
if "run" not in config:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.tables.input,
        rules.figures.input,
        f"{TABLES}/diff_vs_paper.md",
        # the tables as one HTML page with per-cell provenance (`snakemake --report` shows it)
        [] if FROM_BUNDLE else HTML_TABLES,
        # from_bundle (tables and figures from a results bundle): nothing upstream of the summaries
        [] if FROM_BUNDLE else rules.data.input,
        [] if FROM_BUNDLE else rules.ablations.input,

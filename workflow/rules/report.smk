# Result summaries, one rule per paper table and figure, and the diff against the paper.
# Code: agentflan.stages.summarize, agentflan.reporting; reported numbers: paper/paper_reported.yaml.

REPORTED = str(Path(workflow.basedir) / "paper" / "paper_reported.yaml")
TABLE_IDS = [f"table{i}" for i in range(1, 7)]
FIGURE_IDS = [f"fig{i}" for i in range(1, 9)]
SUMMARY = f"{RESULTS}/summary"
SUMMARY_FILES = ["scores.csv", "models.csv", "ablation_stats.csv", "train_curves.csv", "train_config.csv",
                 "data_card.json", "experiments.json", "examples.json", "scoring.json", "bootstrap.csv"]


TRAIN_LOGGED = [m for m in OWN_IDS if not (m.startswith("base-") and not config["models"]["pretrain"]["enabled"])]
# the run records of the API models' predictions (served model, dates): Table 1's notes
API_RECORDS = {m: [f"{RESULTS}/eval/{m}/{b}.predictions.jsonl.api.json" for mm, b in PREDICTED if mm == m]
               for m in sorted(API_MODELS)}
SUMMARY_OUTPUTS = [f"{SUMMARY}/{name}" for name in SUMMARY_FILES]
# the tables as one HTML page with per-cell provenance (not in paper_tables/: a from_bundle rebuild has
# no score files, and paper_tables/ must rebuild byte for byte from a bundle)
HTML_TABLES = f"{RESULTS}/report/tables.html"


if FROM_BUNDLE:

    rule unbundle:
        """--config from_bundle=PATH: the summaries come from a results bundle (agentflan.bundle),
        checked against its manifest; nothing upstream of the tables runs."""
        conda:
            "../../envs/workflow.yaml"
        input:
            FROM_BUNDLE,
        output:
            SUMMARY_OUTPUTS,
        params:
            args=as_params(bundle=FROM_BUNDLE, summary_dir=SUMMARY, expected=SUMMARY_FILES, run=RUN),
        log:
            f"{LOGS}/report/unbundle.log",
        benchmark:
            f"{BENCH}/report/unbundle.tsv"
        shell:
            stage("unbundle")

else:

    rule bundle:
        """`snakemake bundle`: one archive of what the tables and figures are computed from (no weights)."""
        conda:
            "../../envs/workflow.yaml"
        input:
            summary=SUMMARY_OUTPUTS,
            scores=eval_files("scores.json"),
            predictions=eval_files("predictions.jsonl", PREDICTED),
            per_sample=eval_files("per_sample.jsonl"),
            metrics=expand(f"{RESULTS}/train/{{model}}/metrics.jsonl", model=TRAIN_LOGGED),
            configs=expand(f"{RESULTS}/train/{{model}}/train_config.json", model=TRAIN_LOGGED),
            stats=expand(f"{DATA}/ablations/{{dataset}}/stats.json", dataset=sorted(DATASETS)),
            card=f"{DATA}/card.json",
        output:
            f"{RESULTS}/bundle/{RUN}-results.tar.gz",
        params:
            args=lambda wc, input: as_params(
                roots={"summary": SUMMARY, "eval": f"{RESULTS}/eval", "train": f"{RESULTS}/train", "data": DATA},
                files=[*input.summary, *input.scores, *input.per_sample, *input.predictions, *input.metrics,
                       *input.configs, *input.stats, input.card],
                config=config,
                out=f"{RESULTS}/bundle/{RUN}-results.tar.gz",
            ),
        log:
            f"{LOGS}/report/bundle.log",
        benchmark:
            f"{BENCH}/report/bundle.tsv"
        shell:
            stage("bundle")


if not FROM_BUNDLE:

    rule summarize:
        """The summary files every table and figure reads (not defined with from_bundle: see unbundle)."""
        conda:
            "../../envs/workflow.yaml"
        input:
            scores=eval_files("scores.json"),
            per_sample=eval_files("per_sample.jsonl"),
            stats=expand(f"{DATA}/ablations/{{dataset}}/stats.json", dataset=sorted(DATASETS)),
            metrics=expand(f"{RESULTS}/train/{{model}}/metrics.jsonl", model=TRAIN_LOGGED),
            configs=expand(f"{RESULTS}/train/{{model}}/train_config.json", model=TRAIN_LOGGED),
            card=f"{DATA}/card.json",
            examples=[f"{DATA}/converted/toolbench_react_10p.jsonl", f"{DATA}/converted/toolbench_tflan_60p_r10r5u7.jsonl"],
            api_records=[p for paths in API_RECORDS.values() for p in paths],
        output:
            [f"{SUMMARY}/{name}" for name in SUMMARY_FILES],
        params:
            args=lambda wc, input: as_params(
                scores=list(input.scores),
                per_sample=list(input.per_sample),
                models=_models_meta(),
                ablation_stats=list(input.stats),
                metrics=list(input.metrics),
                train_configs=list(input.configs),
                card_json=input.card,
                experiments=cfg.experiments(config),
                example_source={"react_path": input.examples[0], "chat_path": input.examples[1]},
                out_dir=SUMMARY,
                **({"api_records": API_RECORDS} if API_RECORDS else {}),
            ),
        log:
            f"{LOGS}/report/summarize.log",
        benchmark:
            f"{BENCH}/report/summarize.tsv"
        shell:
            stage("summarize")


rule table:
    conda:
        "../../envs/report.yaml"
    input:
        SUMMARY_OUTPUTS,
        REPORTED,
    output:
        csv=f"{TABLES}/{{table}}.csv",
        md=report(f"{TABLES}/{{table}}.md", caption="../report/table.rst", category="Tables"),
    wildcard_constraints:
        table="table[1-6]",
    params:
        args=lambda wc: as_params(table_id=wc.table, summary_dir=SUMMARY, reported=REPORTED,
                                  out_csv=f"{TABLES}/{wc.table}.csv", out_md=f"{TABLES}/{wc.table}.md",
                                  **({"from_bundle": True} if FROM_BUNDLE else {})),
    log:
        f"{LOGS}/report/{{table}}.log",
    benchmark:
        f"{BENCH}/report/{{table}}.tsv"
    shell:
        stage("table")


rule figure:
    conda:
        "../../envs/report.yaml"
    input:
        SUMMARY_OUTPUTS,
        REPORTED,
    output:
        report(f"{FIGURES}/{{fig}}.png", caption="../report/figure.rst", category="Figures"),
    wildcard_constraints:
        fig="fig[1-8]",
    params:
        args=lambda wc: as_params(fig_id=wc.fig, summary_dir=SUMMARY, reported=REPORTED,
                                  out_png=f"{FIGURES}/{wc.fig}.png"),
    log:
        f"{LOGS}/report/{{fig}}.log",
    benchmark:
        f"{BENCH}/report/{{fig}}.tsv"
    shell:
        stage("figure")


rule diff_vs_paper:
    conda:
        "../../envs/report.yaml"
    input:
        expand(f"{TABLES}/{{table}}.csv", table=TABLE_IDS),
        REPORTED,
    output:
        md=report(f"{TABLES}/diff_vs_paper.md", caption="../report/diff.rst", category="Tables"),
        csv=f"{TABLES}/diff_vs_paper.csv",
    params:
        args=as_params(summary_dir=SUMMARY, reported=REPORTED, tables_dir=TABLES,
                       out_md=f"{TABLES}/diff_vs_paper.md", out_csv=f"{TABLES}/diff_vs_paper.csv"),
    log:
        f"{LOGS}/report/diff.log",
    benchmark:
        f"{BENCH}/report/diff.tsv"
    shell:
        stage("diff")


rule html_tables:
    """The paper tables as one HTML page (in `snakemake --report`): each cell's value, the paper's,
    its interval and, as a tooltip and a list under the table, the scores and predictions files, the
    config subset and the code hash behind it. Reads only tables, summaries and score files."""
    conda:
        "../../envs/report.yaml"
    input:
        tables=expand(f"{TABLES}/{{table}}.csv", table=TABLE_IDS),
        summary=SUMMARY_OUTPUTS,
        scores=[] if FROM_BUNDLE else eval_files("scores.json"),
        # the harness's answers (no predictions file): linked from its cells
        answers=[] if FROM_BUNDLE else eval_files("per_sample.jsonl", [(m, b) for m, b in SCORE_FILES
                                                                      if b in HARNESS_BENCHMARKS]),
    output:
        report(HTML_TABLES, caption="../report/html_tables.rst", category="Tables"),
    params:
        args=lambda wc, input: as_params(tables_dir=TABLES, summary_dir=SUMMARY, scores=list(input.scores),
                                         out=HTML_TABLES, table_ids=TABLE_IDS,
                                         **({"from_bundle": True} if FROM_BUNDLE else {})),
    log:
        f"{LOGS}/report/html_tables.log",
    benchmark:
        f"{BENCH}/report/html_tables.tsv"
    shell:
        stage("html_tables")


rule tables:
    input:
        expand(f"{TABLES}/{{table}}.{{ext}}", table=TABLE_IDS, ext=["csv", "md"]),


rule figures:
    input:
        expand(f"{FIGURES}/{{fig}}.png", fig=FIGURE_IDS),

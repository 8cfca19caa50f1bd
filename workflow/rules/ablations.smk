# Ablation datasets of the paper (Table 2 formats and capability weights, Table 3 negative
# samples, ShareGPT concatenation, Figure 7 fractions). Code: agentflan.ablations;
# config keys: ablations.* (datasets, capability_mode, sharegpt_mode, fractions).
#
# One job builds every data set (stage `ablations`): it reads the records and their token counts
# once and builds the data sets in `threads` forked processes (12 jobs that each read the same
# files again took longer than tokenising them, docs/benchmarks.md). Each data set keeps its own
# directory, outputs and provenance stamp, its own log (logs/<run>/ablations/<dataset>.log) and
# benchmark file (benchmarks/<run>/ablations/<dataset>.tsv: its time within the job, written by
# the stage); the job's own log and Snakemake benchmark are ablations/all-datasets.{log,tsv} (a
# hyphen, which no data set name can contain).


rule ablation:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        rules.tokenizer.output,
        token_counts=rules.token_counts.output,
    output:
        data=expand(f"{DATA}/ablations/{{dataset}}/train.jsonl", dataset=sorted(DATASETS)),
        stats=expand(f"{DATA}/ablations/{{dataset}}/stats.json", dataset=sorted(DATASETS)),
        audit=[report(f"{DATA}/ablations/{dataset}/audit.md", caption="../report/audit.rst",
                      category="Ablation datasets", subcategory=dataset) for dataset in sorted(DATASETS)],
    params:
        args=lambda wildcards, threads: as_params(
            datasets=DATASETS,
            outputs={d: {"data": f"{DATA}/ablations/{d}/train.jsonl", "stats": f"{DATA}/ablations/{d}/stats.json",
                         "audit": f"{DATA}/ablations/{d}/audit.md"} for d in DATASETS},
            logs={d: f"{LOGS}/ablations/{d}.log" for d in DATASETS},
            benchmarks={d: f"{BENCH}/ablations/{d}.tsv" for d in DATASETS},
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            tokenizer_dir=f"{DATA}/tokenizer",
            max_length=config["data"]["max_length"],
            seed=config["seed"],
            capability_mode=config["ablations"]["capability_mode"],
            sharegpt_mode=config["ablations"]["sharegpt_mode"],
            sharegpt_ratio=config["ablations"]["sharegpt_ratio"],
            audit_samples=config["ablations"]["audit_samples"],
            token_counts=f"{DATA}/token_counts.jsonl",
            workers=threads,
        ),
    threads: max(1, len(DATASETS))
    priority: 50  # every core, before the long jobs (see token_counts)
    log:
        f"{LOGS}/ablations/all-datasets.log",
    benchmark:
        f"{BENCH}/ablations/all-datasets.tsv"
    shell:
        stage("ablations")


rule ablations:
    input:
        expand(f"{DATA}/ablations/{{dataset}}/stats.json", dataset=sorted(DATASETS)),

# Ablation datasets of the paper (Table 2 formats and capability weights, Table 3 negative
# samples, ShareGPT concatenation, Figure 7 fractions). Code: agentflan.ablations;
# config keys: ablations.* (datasets, capability_mode, sharegpt_mode, fractions).


rule ablation:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        rules.tokenizer.output,
        token_counts=rules.token_counts.output,
    output:
        data=f"{DATA}/ablations/{{dataset}}/train.jsonl",
        stats=f"{DATA}/ablations/{{dataset}}/stats.json",
        audit=report(f"{DATA}/ablations/{{dataset}}/audit.md", caption="../report/audit.rst",
                     category="Ablation datasets", subcategory="{dataset}"),
    params:
        args=lambda wc: as_params(
            dataset_id=wc.dataset,
            spec=DATASETS[wc.dataset],
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            tokenizer_dir=f"{DATA}/tokenizer",
            max_length=config["data"]["max_length"],
            seed=config["seed"],
            capability_mode=config["ablations"]["capability_mode"],
            sharegpt_mode=config["ablations"]["sharegpt_mode"],
            sharegpt_ratio=config["ablations"]["sharegpt_ratio"],
            audit_samples=config["ablations"]["audit_samples"],
            out_data=f"{DATA}/ablations/{wc.dataset}/train.jsonl",
            out_stats=f"{DATA}/ablations/{wc.dataset}/stats.json",
            out_audit=f"{DATA}/ablations/{wc.dataset}/audit.md",
            token_counts=f"{DATA}/token_counts.jsonl",
        ),
    log:
        f"{LOGS}/ablations/{{dataset}}.log",
    benchmark:
        f"{BENCH}/ablations/{{dataset}}.tsv"
    shell:
        stage("ablation")


rule ablations:
    input:
        expand(f"{DATA}/ablations/{{dataset}}/stats.json", dataset=sorted(DATASETS)),

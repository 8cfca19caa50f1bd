# Data: raw sources (generated in the miniature, downloaded in the paper preset) -> canonical
# records, evaluation items, tokenizer and data card. Code: agentflan.{miniworld,download,convert,
# sharegpt,evaluation.registry}; config keys: data.*, tokenizer.*, evaluation.benchmarks.*


if config["data"]["source"] == "miniworld":

    rule miniworld:
        conda:
            "../../envs/workflow.yaml"
        output:
            manifests=expand(f"{DATA}/raw/{{source}}.manifest.json", source=SOURCES),
        params:
            args=as_params(
                raw_dir=f"{DATA}/raw",
                seed=config["data"]["miniworld"]["seed"],
                scale=config["data"]["miniworld"]["scale"],
                manifests={s: f"{DATA}/raw/{s}.manifest.json" for s in SOURCES},
            ),
        log:
            f"{LOGS}/data/miniworld.log",
        benchmark:
            f"{BENCH}/data/miniworld.tsv"
        shell:
            stage("miniworld")

else:

    rule fetch:
        conda:
            "../../envs/workflow.yaml"
        output:
            manifest=f"{DATA}/raw/{{source}}.manifest.json",
        params:
            args=lambda wc: as_params(
                source=wc.source,
                spec=config["data"]["sources"][wc.source],
                raw_dir=f"{DATA}/raw",
                lock=f"{DATA}/sources.lock.json",
                mirror=config["data"]["mirror"],
                update_lock=config["data"]["update_lock"],
                manifest=f"{DATA}/raw/{wc.source}.manifest.json",
            ),
        log:
            f"{LOGS}/data/fetch_{{source}}.log",
        benchmark:
            f"{BENCH}/data/fetch_{{source}}.tsv"
        retries: 2
        resources:
            downloads=1,
        shell:
            stage("fetch")


rule convert:
    conda:
        "../../envs/workflow.yaml"
    input:
        f"{DATA}/raw/agentflan.manifest.json",
    output:
        expand(f"{DATA}/converted/{{stem}}.jsonl", stem=AGENTFLAN_STEMS),
        skipped=f"{DATA}/converted/skipped.json",
    params:
        args=as_params(raw_dir=f"{DATA}/raw", out_dir=f"{DATA}/converted"),
    log:
        f"{LOGS}/data/convert.log",
    benchmark:
        f"{BENCH}/data/convert.tsv"
    shell:
        stage("convert")


rule sharegpt:
    conda:
        "../../envs/workflow.yaml"
    input:
        f"{DATA}/raw/sharegpt.manifest.json",
    output:
        records=f"{DATA}/general/sharegpt.jsonl",
        stats=f"{DATA}/general/sharegpt.stats.json",
    params:
        args=as_params(
            raw_dir=f"{DATA}/raw",
            out=f"{DATA}/general/sharegpt.jsonl",
            stats=f"{DATA}/general/sharegpt.stats.json",
            english_only=config["data"]["sharegpt"]["english_only"],
            max_conversations=config["data"]["sharegpt"]["max_conversations"],
            seed=config["seed"],
        ),
    log:
        f"{LOGS}/data/sharegpt.log",
    benchmark:
        f"{BENCH}/data/sharegpt.tsv"
    shell:
        stage("sharegpt")


EVAL_SOURCE = {"teval": "teval", "agenth": "glaive", "hotpotqa": "hotpotqa", "mmlu": "mmlu",
               "gsm8k": "gsm8k", "humaneval": "humaneval"}


rule eval_items:
    conda:
        "../../envs/workflow.yaml"
    input:
        # ScienceWorld's tasks ship in the scienceworld package: no download
        lambda wc: [f"{DATA}/raw/{EVAL_SOURCE[wc.benchmark]}.manifest.json"] if wc.benchmark in EVAL_SOURCE else [],
    output:
        f"{DATA}/eval/{{benchmark}}.jsonl",
    params:
        args=lambda wc: as_params(
            benchmark=wc.benchmark,
            raw_dir=f"{DATA}/raw",
            options=config["evaluation"]["benchmarks"].get(wc.benchmark, {}),
            out=f"{DATA}/eval/{wc.benchmark}.jsonl",
        ),
    log:
        f"{LOGS}/data/eval_items_{{benchmark}}.log",
    benchmark:
        f"{BENCH}/data/eval_items_{{benchmark}}.tsv"
    shell:
        stage("eval_items")


if _hotpot_wiki_source() is not None:

    rule hotpotqa_wiki:
        """HotpotQA's local Wikipedia for AgentTuning's protocol: the pinned page corpus
        (evaluation.benchmarks.hotpotqa.wiki.source, a data.sources entry) indexed in SQLite FTS5
        (agentflan.evaluation.wikistore); refuses a corpus with another record count."""
        conda:
            "../../envs/workflow.yaml"
        input:
            f"{DATA}/raw/{_hotpot_wiki_source()}.manifest.json",
        output:
            HOTPOT_WIKI_DB,
        params:
            args=lambda wc: as_params(
                raw_dir=f"{DATA}/raw/{config['data']['sources'][_hotpot_wiki_source()]['repo_id']}",
                files=config["data"]["sources"][_hotpot_wiki_source()]["files"],
                expected_pages=(config["evaluation"]["benchmarks"]["hotpotqa"].get("wiki") or {}).get(
                    "expected_pages"),
                out=HOTPOT_WIKI_DB,
            ),
        log:
            f"{LOGS}/data/hotpotqa_wiki.log",
        benchmark:
            f"{BENCH}/data/hotpotqa_wiki.tsv"
        shell:
            stage("wiki_store")


rule tokenizer:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        pretrain=[f"{DATA}/raw/pretrain.manifest.json"] if PRESET == "miniature" else [],
    output:
        directory(f"{DATA}/tokenizer"),
    params:
        args=as_params(
            kind=config["tokenizer"]["kind"],
            out_dir=f"{DATA}/tokenizer",
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            pretrain_path=f"{DATA}/raw/miniworld/pretrain/pretrain.jsonl" if PRESET == "miniature" else None,
            vocab_size=config["tokenizer"]["vocab_size"],
            name_or_path=hub_or_mirror(config["tokenizer"]["name_or_path"] or ""),
            revision=config["tokenizer"]["revision"],
        ),
    log:
        f"{LOGS}/data/tokenizer.log",
    benchmark:
        f"{BENCH}/data/tokenizer.tsv"
    shell:
        stage("tokenizer")


rule token_counts:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        rules.tokenizer.output,
    output:
        f"{DATA}/token_counts.jsonl",
    params:
        args=lambda wildcards, threads: as_params(
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            tokenizer_dir=f"{DATA}/tokenizer",
            max_length=config["data"]["max_length"],
            out=f"{DATA}/token_counts.jsonl",
            workers=threads,
        ),
    # every core: the records are shared among `threads` forked workers (agentflan.tokcache).
    # Before the long jobs (priority): a job that needs every core otherwise waits until nothing
    # runs, and the fine-tunes behind it with it (a core idled 90 s of the default run for that).
    threads: 64
    priority: 50
    log:
        f"{LOGS}/data/token_counts.log",
    benchmark:
        f"{BENCH}/data/token_counts.tsv"
    shell:
        stage("token_counts")


rule data_card:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        rules.tokenizer.output,
        token_counts=rules.token_counts.output,
    output:
        json=f"{DATA}/card.json",
        md=report(f"{DATA}/card.md", caption="../report/data_card.rst", category="Data"),
    params:
        args=as_params(
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            tokenizer_dir=f"{DATA}/tokenizer",
            max_length=config["data"]["max_length"],
            out_json=f"{DATA}/card.json",
            out_md=f"{DATA}/card.md",
            token_counts=f"{DATA}/token_counts.jsonl",
            provenance={"run": RUN, "preset": PRESET, "source": config["data"]["source"],
                        "description": ("offline miniature generated by agentflan.miniworld"
                                        if PRESET == "miniature" else
                                        "internlm/Agent-FLAN at the revision recorded in sources.lock.json")},
        ),
    log:
        f"{LOGS}/data/card.log",
    benchmark:
        f"{BENCH}/data/card.tsv"
    shell:
        stage("card")




rule decontamination:
    conda:
        "../../envs/workflow.yaml"
    input:
        rules.convert.output,
        rules.sharegpt.output.records,
        expand(f"{DATA}/eval/{{benchmark}}.jsonl", benchmark=BENCHMARKS),
    output:
        json=f"{DATA}/decontamination.json",
        md=report(f"{DATA}/decontamination.md", caption="../report/decontamination.rst", category="Data"),
    params:
        args=as_params(
            converted_dir=f"{DATA}/converted",
            sharegpt_path=f"{DATA}/general/sharegpt.jsonl",
            eval_files={b: f"{DATA}/eval/{b}.jsonl" for b in BENCHMARKS},
            ngram=config["data"]["decontamination"]["ngram"],
            action=config["data"]["decontamination"]["action"],
            max_overlap_ratio=config["data"]["decontamination"]["max_overlap_ratio"],
            out_json=f"{DATA}/decontamination.json",
            out_md=f"{DATA}/decontamination.md",
        ),
    log:
        f"{LOGS}/data/decontamination.log",
    benchmark:
        f"{BENCH}/data/decontamination.tsv"
    shell:
        stage("decontaminate")


rule data:
    input:
        rules.data_card.output,
        rules.decontamination.output,
        expand(f"{DATA}/eval/{{benchmark}}.jsonl", benchmark=BENCHMARKS + EXTRA_BENCHMARKS),

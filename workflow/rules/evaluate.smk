# Evaluation: generation and scoring are separate jobs, so re-scoring never re-runs generation.
# Code: agentflan.generate, agentflan.evaluation; config keys: evaluation.generation,
# evaluation.benchmarks.<benchmark>.


rule generate:
    input:
        eval_items=f"{DATA}/eval/{{benchmark}}.jsonl",
        model=lambda wc: local_model_input(wc.model),
    output:
        f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl",
    params:
        args=lambda wc: as_params(
            model=model_path(wc.model),
            benchmark=wc.benchmark,
            items=f"{DATA}/eval/{wc.benchmark}.jsonl",
            out=f"{RESULTS}/eval/{wc.model}/{wc.benchmark}.predictions.jsonl",
            generation=config["evaluation"]["generation"],
            options=config["evaluation"]["benchmarks"].get(wc.benchmark, {}),
            threads=THREADS,
        ),
    threads: THREADS
    resources:
        gpus=lambda wc: 0 if PRESET == "miniature" else 1,
    log:
        f"{LOGS}/eval/{{model}}/{{benchmark}}.generate.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/{{benchmark}}.generate.tsv"
    shell:
        stage("generate")


rule score:
    input:
        eval_items=f"{DATA}/eval/{{benchmark}}.jsonl",
        predictions=f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl",
    output:
        scores=f"{RESULTS}/eval/{{model}}/{{benchmark}}.scores.json",
        per_sample=f"{RESULTS}/eval/{{model}}/{{benchmark}}.per_sample.jsonl",
    params:
        args=lambda wc: as_params(
            benchmark=wc.benchmark,
            model_id=wc.model,
            items=f"{DATA}/eval/{wc.benchmark}.jsonl",
            predictions=f"{RESULTS}/eval/{wc.model}/{wc.benchmark}.predictions.jsonl",
            options=config["evaluation"]["benchmarks"].get(wc.benchmark, {}),
            out=f"{RESULTS}/eval/{wc.model}/{wc.benchmark}.scores.json",
            per_sample=f"{RESULTS}/eval/{wc.model}/{wc.benchmark}.per_sample.jsonl",
        ),
    log:
        f"{LOGS}/eval/{{model}}/{{benchmark}}.score.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/{{benchmark}}.score.tsv"
    shell:
        stage("score")


rule evaluate:
    input:
        expand(f"{RESULTS}/eval/{{model}}/{{benchmark}}.scores.json", model=MODEL_IDS, benchmark=BENCHMARKS),

# Evaluation: generation and scoring are separate jobs, so re-scoring never re-runs generation.
# One generation job per model (the model is loaded once for all benchmarks): our models, the
# external checkpoints (evaluation.external_models, with their chat format) and, in generate_api,
# the API models (evaluation.api_models). Code: agentflan.generate, agentflan.api_backend,
# agentflan.evaluation; config keys: evaluation.generation, evaluation.benchmarks.<benchmark>.
import re as _re

_API_ALTS = "|".join(_re.escape(m) for m in sorted(API_MODELS))


rule generate:
    conda:
        "../../envs/train-gpu.yaml"
    input:
        eval_items=expand(f"{DATA}/eval/{{benchmark}}.jsonl", benchmark=BENCHMARKS),
        model=lambda wc: local_model_input(wc.model),
        wiki=[HOTPOT_WIKI_DB] if _hotpot_wiki_source() else [],
    output:
        [f"{RESULTS}/eval/{{model}}/{b}.predictions.jsonl" for b in BENCHMARKS],
    params:
        args=lambda wc: as_params(
            model=model_path(wc.model),
            items={b: f"{DATA}/eval/{b}.jsonl" for b in BENCHMARKS},
            out=_eval_paths(wc.model, "predictions.jsonl"),
            generation=config["evaluation"]["generation"],
            options=_generate_options(),
            threads=THREADS,
            **({"chat_format": chat_format(wc.model)} if chat_format(wc.model) else {}),
        ),
    threads: THREADS
    resources:
        nodes=generate_resource("nodes"),
        tasks=generate_resource("tasks"),
        gres=generate_resource("gres"),
        tasks_per_gpu=generate_resource("tasks_per_gpu"),
        cpus_per_task=generate_resource("cpus_per_task"),
        mem_mb=generate_resource("mem_mb"),
        runtime=generate_resource("runtime"),
    log:
        f"{LOGS}/eval/{{model}}/generate.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/generate.tsv"
    shell:
        stage("generate")


if API_MODELS:

    ruleorder: generate_api > generate

    rule generate_api:
        """An API model's predictions (agentflan.api_backend): no model input, the endpoint and key
        from $OPENAI_BASE_URL / $OPENAI_API_KEY only; also writes each benchmark's run record
        (<predictions>.api.json: served model, dates) and keeps the reply cache next to it."""
        conda:
            "../../envs/workflow.yaml"
        wildcard_constraints:
            model=_API_ALTS,
        input:
            eval_items=expand(f"{DATA}/eval/{{benchmark}}.jsonl", benchmark=BENCHMARKS),
            wiki=[HOTPOT_WIKI_DB] if _hotpot_wiki_source() else [],
        output:
            predictions=[f"{RESULTS}/eval/{{model}}/{b}.predictions.jsonl" for b in BENCHMARKS],
            records=[f"{RESULTS}/eval/{{model}}/{b}.predictions.jsonl.api.json" for b in BENCHMARKS],
        params:
            args=lambda wc: as_params(
                model=wc.model,
                items={b: f"{DATA}/eval/{b}.jsonl" for b in BENCHMARKS},
                out=_eval_paths(wc.model, "predictions.jsonl"),
                generation=config["evaluation"]["generation"],
                options=_generate_options(),
                threads=THREADS,
                backend=api_backend(wc.model),
            ),
        log:
            f"{LOGS}/eval/{{model}}/generate.log",
        benchmark:
            f"{BENCH}/eval/{{model}}/generate.tsv"
        shell:
            stage("generate")


rule score:
    conda:
        "../../envs/workflow.yaml"
    input:
        eval_items=expand(f"{DATA}/eval/{{benchmark}}.jsonl", benchmark=BENCHMARKS),
        predictions=[f"{RESULTS}/eval/{{model}}/{b}.predictions.jsonl" for b in BENCHMARKS],
        similarity_model=[f"{DATA}/raw/{_teval_model_source()}.manifest.json"] if _teval_model_source() else [],
    output:
        scores=[f"{RESULTS}/eval/{{model}}/{b}.scores.json" for b in BENCHMARKS],
        per_sample=[f"{RESULTS}/eval/{{model}}/{b}.per_sample.jsonl" for b in BENCHMARKS],
    params:
        args=lambda wc: as_params(
            # a training seed's model scores as its table's model, with its seed (bootstrap pools them)
            model_id=of_seed(wc.model)[0],
            **({"seed": score_seed(wc.model)} if score_seed(wc.model) is not None else {}),
            items={b: f"{DATA}/eval/{b}.jsonl" for b in BENCHMARKS},
            predictions=_eval_paths(wc.model, "predictions.jsonl"),
            options=_score_options(),
            out=_eval_paths(wc.model, "scores.json"),
            per_sample=_eval_paths(wc.model, "per_sample.jsonl"),
        ),
    log:
        f"{LOGS}/eval/{{model}}/score.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/score.tsv"
    shell:
        stage("score")


# ScienceWorld (EXTRA_BENCHMARKS): its own generate and score jobs, for the models of Table 1 and
# Figure 1 only (agentflan.config.extra_benchmark_models); the same stages as above.
_EXTRA_ALTS = "|".join(_re.escape(b) for b in EXTRA_BENCHMARKS) or "^$"


rule generate_extra:
    """One extra benchmark's predictions (ScienceWorld episodes) of one model."""
    conda:
        "../../envs/train-gpu.yaml"
    wildcard_constraints:
        benchmark=_EXTRA_ALTS,
    input:
        eval_items=f"{DATA}/eval/{{benchmark}}.jsonl",
        model=lambda wc: local_model_input(extra_model(wc)),
    output:
        f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl",
    params:
        args=lambda wc: as_params(
            model=model_path(wc.model),
            items={wc.benchmark: f"{DATA}/eval/{wc.benchmark}.jsonl"},
            out=_eval_paths(wc.model, "predictions.jsonl", [wc.benchmark]),
            generation=config["evaluation"]["generation"],
            options=_generate_options(),
            threads=THREADS,
            **({"chat_format": chat_format(wc.model)} if chat_format(wc.model) else {}),
        ),
    threads: THREADS
    resources:
        nodes=generate_resource("nodes"),
        tasks=generate_resource("tasks"),
        gres=generate_resource("gres"),
        tasks_per_gpu=generate_resource("tasks_per_gpu"),
        cpus_per_task=generate_resource("cpus_per_task"),
        mem_mb=generate_resource("mem_mb"),
        runtime=generate_resource("runtime"),
    log:
        f"{LOGS}/eval/{{model}}/generate_{{benchmark}}.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/generate_{{benchmark}}.tsv"
    shell:
        stage("generate")


if API_MODELS:

    ruleorder: generate_extra_api > generate_extra

    rule generate_extra_api:
        """An API model's predictions on one extra benchmark, with its run record (as generate_api)."""
        conda:
            "../../envs/workflow.yaml"
        wildcard_constraints:
            model=_API_ALTS,
            benchmark=_EXTRA_ALTS,
        input:
            eval_items=f"{DATA}/eval/{{benchmark}}.jsonl",
        output:
            predictions=f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl",
            records=f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl.api.json",
        params:
            args=lambda wc: as_params(
                model=extra_model(wc),
                items={wc.benchmark: f"{DATA}/eval/{wc.benchmark}.jsonl"},
                out=_eval_paths(wc.model, "predictions.jsonl", [wc.benchmark]),
                generation=config["evaluation"]["generation"],
                options=_generate_options(),
                threads=THREADS,
                backend=api_backend(wc.model),
            ),
        log:
            f"{LOGS}/eval/{{model}}/generate_{{benchmark}}.log",
        benchmark:
            f"{BENCH}/eval/{{model}}/generate_{{benchmark}}.tsv"
        shell:
            stage("generate")


rule score_extra:
    """One extra benchmark's scores of one model (never re-generates)."""
    conda:
        "../../envs/workflow.yaml"
    wildcard_constraints:
        benchmark=_EXTRA_ALTS,
    input:
        eval_items=f"{DATA}/eval/{{benchmark}}.jsonl",
        predictions=f"{RESULTS}/eval/{{model}}/{{benchmark}}.predictions.jsonl",
    output:
        scores=f"{RESULTS}/eval/{{model}}/{{benchmark}}.scores.json",
        per_sample=f"{RESULTS}/eval/{{model}}/{{benchmark}}.per_sample.jsonl",
    params:
        args=lambda wc: as_params(
            model_id=of_seed(wc.model)[0],
            **({"seed": score_seed(wc.model)} if score_seed(wc.model) is not None else {}),
            items={wc.benchmark: f"{DATA}/eval/{wc.benchmark}.jsonl"},
            predictions=_eval_paths(wc.model, "predictions.jsonl", [wc.benchmark]),
            options=_score_options(),
            out=_eval_paths(wc.model, "scores.json", [wc.benchmark]),
            per_sample=_eval_paths(wc.model, "per_sample.jsonl", [wc.benchmark]),
        ),
    log:
        f"{LOGS}/eval/{{model}}/score_{{benchmark}}.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/score_{{benchmark}}.tsv"
    shell:
        stage("score")


# Table 4's general benchmarks through lm-evaluation-harness (agentflan.evaluation.harness): one job
# per Table 4 model, reading the locked raw files; it writes score files like the score jobs'
# (lmeval_<benchmark>.scores.json / .per_sample.jsonl) and lm-eval's own results object.
HARNESS_RAW = ["mmlu", "gsm8k", "humaneval"]


rule harness:
    conda:
        "../../envs/train-gpu.yaml"
    input:
        raw=[f"{DATA}/raw/{b}.manifest.json" for b in HARNESS_RAW],
        model=lambda wc: local_model_input(wc.model),
    output:
        scores=[f"{RESULTS}/eval/{{model}}/{b}.scores.json" for b in HARNESS_BENCHMARKS],
        per_sample=[f"{RESULTS}/eval/{{model}}/{b}.per_sample.jsonl" for b in HARNESS_BENCHMARKS],
        results=f"{RESULTS}/eval/{{model}}/lmeval.results.json",
    params:
        args=lambda wc: as_params(
            model=model_path(wc.model),
            model_id=of_seed(wc.model)[0],
            **({"seed": score_seed(wc.model)} if score_seed(wc.model) is not None else {}),
            raw_dir=f"{DATA}/raw",
            options={k: v for k, v in config["evaluation"]["harness"].items() if k != "enabled"},
            out=_eval_paths(wc.model, "scores.json", HARNESS_BENCHMARKS),
            per_sample=_eval_paths(wc.model, "per_sample.jsonl", HARNESS_BENCHMARKS),
            results=f"{RESULTS}/eval/{wc.model}/lmeval.results.json",
            threads=THREADS,
        ),
    threads: THREADS
    resources:
        nodes=generate_resource("nodes"),
        tasks=generate_resource("tasks"),
        gres=generate_resource("gres"),
        tasks_per_gpu=generate_resource("tasks_per_gpu"),
        cpus_per_task=generate_resource("cpus_per_task"),
        mem_mb=generate_resource("mem_mb"),
        runtime=generate_resource("runtime"),
    log:
        f"{LOGS}/eval/{{model}}/harness.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/harness.tsv"
    shell:
        stage("harness")


rule evaluate:
    input:
        eval_files("scores.json"),

# Models: tiny Llama initialisation and pretraining (miniature only), then one fine-tuning job per
# (dataset, size, training seed). Code: agentflan.{modeling,train}; config keys: models.*, training.*


rule init_model:
    conda:
        "../../envs/train-gpu.yaml"
    input:
        rules.tokenizer.output,
    output:
        directory(f"{RESULTS}/models/init-{{size}}"),
    params:
        args=lambda wc: as_params(
            arch=config["models"]["sizes"][wc.size]["arch"],
            tokenizer_dir=f"{DATA}/tokenizer",
            seed=config["seed"],
            out_dir=f"{RESULTS}/models/init-{wc.size}",
        ),
    log:
        f"{LOGS}/models/init-{{size}}.log",
    benchmark:
        f"{BENCH}/models/init-{{size}}.tsv"
    shell:
        stage("init_model")


if config["models"]["pretrain"]["enabled"]:

    rule pretrain:
        """Miniature only: turn the random tiny model into a base LM (the stand-in for Llama-2)."""
        conda:
            "../../envs/train-gpu.yaml"
        input:
            model=f"{RESULTS}/models/init-{{size}}",
            data=f"{DATA}/raw/pretrain.manifest.json",
        output:
            model=directory(f"{RESULTS}/models/base-{{size}}"),
            metrics=f"{RESULTS}/train/base-{{size}}/metrics.jsonl",
            config=f"{RESULTS}/train/base-{{size}}/train_config.json",
        params:
            args=lambda wc: as_params(
                base_model=f"{RESULTS}/models/init-{wc.size}",
                data=f"{DATA}/raw/miniworld/pretrain/pretrain.jsonl",
                out_dir=f"{RESULTS}/models/base-{wc.size}",
                metrics=f"{RESULTS}/train/base-{wc.size}/metrics.jsonl",
                config_out=f"{RESULTS}/train/base-{wc.size}/train_config.json",
                recipe=cfg.training_recipe(config, wc.size, pretrain=True),
                model_id=f"base-{wc.size}",
                checkpoint_dir=f"{RESULTS}/checkpoints/base-{wc.size}",
                threads=THREADS,
            ),
        threads: THREADS
        log:
            f"{LOGS}/train/base-{{size}}.log",
        benchmark:
            f"{BENCH}/train/base-{{size}}.tsv"
        shell:
            stage("train")


STANDINS = {m: spec["standin_of"] for m, spec in EXTERNAL.items() if spec.get("standin_of")}

if STANDINS:

    rule standin_checkpoint:
        """Miniature: the stand-in for a published checkpoint (evaluation.external_models.<id>
        with standin_of), a byte copy of one of the run's models saved under data/<run>/external/."""
        conda:
            "../../envs/workflow.yaml"
        wildcard_constraints:
            model="|".join(sorted(STANDINS)),
        input:
            lambda wc: local_model_input(STANDINS[wc.model]),
        output:
            directory(f"{DATA}/external/{{model}}"),
        params:
            args=lambda wc: as_params(model=model_path(STANDINS[wc.model]), out_dir=f"{DATA}/external/{wc.model}"),
        log:
            f"{LOGS}/models/standin-{{model}}.log",
        benchmark:
            f"{BENCH}/models/standin-{{model}}.tsv"
        shell:
            stage("standin_checkpoint")


rule finetune:
    """One fine-tune per (data set, size, training seed): the seed (training.seeds) replaces the
    recipe's seed and shows in train_config.json; a seed after the first is in the model id."""
    conda:
        "../../envs/train-gpu.yaml"
    wildcard_constraints:
        dataset="(?!(?:base|init)-)[a-z0-9_]+",
    input:
        data=lambda wc: f"{DATA}/ablations/{finetune_dataset(wc)}/train.jsonl",
        base=lambda wc: local_model_input(f"base-{wc.size}"),
    output:
        model=directory(f"{RESULTS}/models/{{dataset}}-{{size}}"),
        metrics=f"{RESULTS}/train/{{dataset}}-{{size}}/metrics.jsonl",
        config=f"{RESULTS}/train/{{dataset}}-{{size}}/train_config.json",
    params:
        args=lambda wc: as_params(
            base_model=base_model(wc.size),
            data=f"{DATA}/ablations/{finetune_dataset(wc)}/train.jsonl",
            out_dir=f"{RESULTS}/models/{wc.dataset}-{wc.size}",
            metrics=f"{RESULTS}/train/{wc.dataset}-{wc.size}/metrics.jsonl",
            config_out=f"{RESULTS}/train/{wc.dataset}-{wc.size}/train_config.json",
            recipe=cfg.training_recipe(config, wc.size, seed=of_seed(f"{wc.dataset}-{wc.size}")[1]),
            model_id=f"{wc.dataset}-{wc.size}",
            checkpoint_dir=f"{RESULTS}/checkpoints/{wc.dataset}-{wc.size}",
            threads=THREADS,
        ),
        launcher=train_launcher,
    threads: THREADS
    resources:
        nodes=train_resource("nodes"),
        tasks=train_resource("tasks"),
        gres=train_resource("gres"),
        tasks_per_gpu=train_resource("tasks_per_gpu"),
        mpi=train_resource("mpi"),
        cpus_per_task=train_resource("cpus_per_task"),
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    log:
        f"{LOGS}/train/{{dataset}}-{{size}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}-{{size}}.tsv"
    shell:
        launcher_stage("train")


rule train:
    input:
        expand(f"{RESULTS}/train/{{model}}/train_config.json", model=TRAINED_IDS),

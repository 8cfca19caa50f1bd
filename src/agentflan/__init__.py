"""Agent-FLAN reproducibility package.

Stages (each a module; the Snakemake rules in workflow/rules/ only wire files to these):
  miniworld   offline synthetic stand-in for every public source (embedded default)
  download    pinned, sha256-verified snapshots of the real sources (paper preset)
  convert     released records -> canonical records, loss policy, data card
  capability  capability tagging of assistant turns
  ablations   the paper's ablation datasets, stats.json, audit dumps
  template    the Agent-FLAN chat template, tokenisation, label masks
  modeling    tokenizer training and tiny Llama models (miniature)
  train       fine-tuning (full or LoRA; optional DeepSpeed)
  generate    batched greedy generation
  evaluation  benchmark loaders, harnesses and scorers
  reporting   paper tables, figures, diff against the paper
"""

__version__ = "0.1.0"

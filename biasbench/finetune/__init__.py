"""Debiasing fine-tunes: balanced spoken SFT with LoRA, then DPO, with before/after proof on unseen voices.

One module per concern (heavy libraries are imported inside functions, so importing this
package costs nothing):

- config.py   `FinetuneConfig`, the validated YAML (LoRA, training, counterfactual, DPO settings)
- data.py     instruction rows, training/evaluation pools (balanced, disjoint), spoken examples
              keyed by audio-cache key, the counterfactual sampler, evaluation-run tables
- collate.py  chat formatting, lazy audio, right padding, prompt/completion masks
- adapter.py  base model loading, LoRA on the language model only, atomic adapter saving,
              adapter loading for evaluation (refused on another base model)
- sft.py      `run_sft`: HF Trainer with counterfactual batches and a consistency loss
- dpo.py      `mine_pairs` from an evaluation run, `run_dpo` with trl's DPOTrainer
- compare.py  `compare_runs`: change in group gaps and accuracy, voice-level CIs and tests
- cli.py      `biasbench finetune sft|dpo|mine-pairs|compare`, `biasbench compare`
"""

"""The network: CLIP's towers, ActionCLIP's visual prompts and video model, WTI, the KL loss, prompts, tokenizer.

The ground floor of the package: these modules import each other, jax, flax and numpy, nothing else of the project
(docs/code_map.md).
"""

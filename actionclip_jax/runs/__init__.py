"""What `launch.py` runs: the trainers (`train`, `pretrain`), evaluation (`evaluate`, `fewshot`), and the pieces they
share, each below the runs that use it (docs/code_map.md).
"""

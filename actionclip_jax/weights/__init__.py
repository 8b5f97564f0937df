"""Checkpoints in and out: the conversion tables (OpenAI, Hugging Face, official ActionCLIP) and `load_pretrained`.

Above the model (it converts into the model's params), below the runs (docs/code_map.md).
"""

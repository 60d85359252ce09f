"""Policy models: the tiny tokenizer + Qwen2 builder and the hub download."""

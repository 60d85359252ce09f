"""Dataset preparation shared by real and synthetic data: prompt, Parquet, FlashRAG download."""

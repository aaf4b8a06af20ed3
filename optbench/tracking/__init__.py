"""What a run leaves behind: TensorBoard events, metrics.jsonl, results.json, the console."""

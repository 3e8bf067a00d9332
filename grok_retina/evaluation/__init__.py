"""The Grounded Ophthalmic Understanding benchmark's metrics as plain functions (no Hub metric scripts).

- `classification`: diagnosis macro-F1 / per-class / confusion matrix, binary ROC AUC and F1;
- `text_metrics`: corpus BLEU-4, ROUGE-L and MiniLM embedding similarity;
- `rubric` + `judge`: the 8-item clinical rubric graded by any OpenAI-compatible endpoint;
- `grounding`: the deterministic verifier's scores over a set of reports;
- `regression`: MAE / RMSE / R² (shared with the Stage II probe);
- `benchmark.evaluate_reports`: all of the above that the inputs allow, in one call;
- `report`: the JSON results file, markdown table and model-index block; `ablation`: CFP+OCT / OCT / CFP.
"""

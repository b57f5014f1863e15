"""Evaluation harness: perplexity, MMLU, GSM8K, HumanEval and long-context passkey retrieval.

    python -m training.evaluate --checkpoint runs/demo/train/final --out runs/demo/eval \\
        [--tasks ppl,mmlu,gsm8k,humaneval,passkey] [--limit N] [--recipe training/recipes/eval.toml]

One module per task (``perplexity``, ``multiple_choice``, ``gsm8k``, ``humaneval``, ``long_context``),
the model-facing helpers they share (``scoring``), the results writer (``report``) and the command line
(``__main__``). Task logic that needs no model (prompt formats, answer parsing, program assembly) is
plain Python, tested without torch work.
"""

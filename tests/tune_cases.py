"""What the tuning tests share: a study of tiny trials."""

from __future__ import annotations

# Rungs of 1 and 2 epochs on 300 examples, one trial at a time (ASHA).
TINY = {
    "max_train": 300,
    "epochs": (1, 2),
    "heartbeat_s": 1,
    "reference": False,
    "pruner": "asha",  # the per-trial worker path; brackets (sha): test_brackets.py
}

"""Talking to trained models: ``DialogueModel`` (Python), ``nd-chat`` (terminal) and the
``nd_prepare`` tokenizer that gives ``fairseq-interactive`` the data's text preparation."""

"""Prompt text -> token ids, through the chat template when the model has one."""

from __future__ import annotations


def encode_prompt(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    """Token ids for `prompt`.

    Instruct models were trained on their chat template; feeding them raw
    text gives off-distribution continuations, so use it whenever it exists.
    """
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer.encode(prompt))

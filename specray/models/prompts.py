"""Prompt text -> token ids, through the chat template when the model has one.

Prompt text is data, never control: a prompt that contains the text of a special token (`<|im_end|>`,
`</s>`, ...) gets that text's ordinary tokens, not the control token, which would end the user turn
early or forge an assistant turn. The template's own special tokens stay control tokens. Prompts
without special-token text are encoded exactly as before (one pass over the rendered template).
"""

from __future__ import annotations

class PromptError(ValueError):
    """A prompt that cannot be encoded safely; the job turns it into an error row."""


PLACEHOLDER = "\u2063SPECRAY-PROMPT\u2063"  # stands in for the prompt while the template is rendered


def special_texts(tokenizer) -> list[str]:
    """The strings a tokenizer turns into special (control) tokens."""
    texts = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token))
    return sorted(t for t in texts if t)


def _input_ids(encoded) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def encode_prompt(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    """Token ids for `prompt`.

    Instruct models were trained on their chat template; feeding them raw
    text gives off-distribution continuations, so use it whenever it exists.
    """
    has_special_text = any(text in prompt for text in special_texts(tokenizer))
    if chat and getattr(tokenizer, "chat_template", None):
        if has_special_text:
            ids = _encode_in_template(tokenizer, prompt)
            if ids is None:
                raise PromptError("prompt holds the text of a special token, and this chat template does not pass "
                                  "prompt text through verbatim, so it cannot be kept as plain text")
            return ids
        return _input_ids(tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        ))
    if has_special_text:
        return list(tokenizer.encode(prompt, split_special_tokens=True))
    return list(tokenizer.encode(prompt))


def _encode_in_template(tokenizer, prompt: str) -> list[int] | None:
    """The template around a placeholder, encoded with its special tokens, and the prompt encoded as
    plain text in its place; None when the template does not carry the placeholder through verbatim."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PLACEHOLDER}], add_generation_prompt=True, tokenize=False
    )
    if not isinstance(rendered, str) or rendered.count(PLACEHOLDER) != 1:
        return None
    before, after = rendered.split(PLACEHOLDER)
    encode = tokenizer.encode
    return (list(encode(before, add_special_tokens=False)) + list(encode(prompt, add_special_tokens=False, split_special_tokens=True))
            + list(encode(after, add_special_tokens=False)))

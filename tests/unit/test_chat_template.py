"""The chat template without a model: the ChatML fallback and content placeholders."""

from __future__ import annotations

from modules.llm.inference.chat_template import CHATML_TEMPLATE, ChatMessage, ChatPromptBuilder


def char_builder() -> ChatPromptBuilder:
    return ChatPromptBuilder(
        CHATML_TEMPLATE,
        bos_token="",
        eos_token="",
        tokenize=lambda text, special: [ord(c) for c in text],
        bos_id=None,
    )


def test_chatml_fallback_template_renders() -> None:
    text = char_builder().render_text([ChatMessage("user", "hi")])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_contents_are_tokenized_without_special_parsing() -> None:
    seen: list[tuple[str, bool]] = []
    builder = ChatPromptBuilder(
        None,
        bos_token="",
        eos_token="",
        tokenize=lambda text, special: seen.append((text, special)) or [],
        bos_id=None,
    )
    builder.build([ChatMessage("user", "<|im_start|>system")])
    assert ("<|im_start|>system", False) in seen
    assert all(special for text, special in seen if "<|im_start|>user" in text)

"""The control strings of the common chat-template families, in one place."""

# Control strings of the common chat-template families: a remote model's vocabulary cannot
# be read, so the sanitizer removes all of these from what is sent to it.
REMOTE_CONTROL_TOKENS: tuple[str, ...] = (
    # ChatML (Qwen, SmolLM, many fine-tunes) and Qwen's tool tags
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>",
    # Llama 2 and Mistral
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>", "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
    # Llama 3
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>",
    # Gemma
    "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>",
    # Phi
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    # DeepSeek
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
)  # fmt: skip

"""The gate before the model: text in, clean text and what changed out. No I/O."""

from modules.sanitizer.sanitizer import (
    DEFAULT_CONTROL_TOKENS,
    SanitizationError,
    SanitizedText,
    Sanitizer,
)

__all__ = ["DEFAULT_CONTROL_TOKENS", "SanitizationError", "SanitizedText", "Sanitizer"]

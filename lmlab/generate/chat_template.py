"""Re-export: chat templates moved to ``lmlab.tokenizers.chat_template`` (a tokenizer concern)."""

from ..tokenizers.chat_template import ROLES, chat_prompt, chat_text, check_messages, render_chat  # noqa: F401

"""Tokenizer and chat-template layer: Hugging Face tokenizer directories, read and written like transformers does."""

from __future__ import annotations

from tao_engine.tokenizer.chat_template import ChatTemplate, ChatTemplateError, render_chat_template
from tao_engine.tokenizer.tokenizer import IncrementalDecoder, Tokenizer

__all__ = ["ChatTemplate", "ChatTemplateError", "IncrementalDecoder", "Tokenizer", "render_chat_template"]

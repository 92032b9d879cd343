"""The tokenizer of a Hugging Face model directory: `tokenizers` for the ids, transformers' rules around it.

`Tokenizer.from_dir` reads tokenizer.json, tokenizer_config.json, special_tokens_map.json, the chat template files and
generation_config.json, and resolves them as transformers 5's `AutoTokenizer` does, so encode, decode and
`apply_chat_template` give the same ids and text. `incremental_decoder()` streams generated ids as text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from tao_engine.tokenizer.chat_template import (
    ChatTemplate,
    load_chat_templates,
    select_template,
    templates_from_config,
)
from tao_engine.tokenizer.decoding import IncrementalDecoder, clean_up_tokenization, token_id_list
from tao_engine.tokenizer.special_tokens import (
    SpecialTokens,
    apply_added_tokens,
    read_added_tokens_decoder,
    read_generation_eos_ids,
    read_json,
    read_special_tokens,
)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# Keys transformers keeps in memory but never writes back: local paths of the files it loaded
_UNSAVED_CONFIG_KEYS = ("name_or_path", "tokenizer_file", "special_tokens_map_file", "vocab_file", "merges_file")


class Tokenizer:
    """Text <-> token ids for one model, plus its chat template and stop tokens.

    The backend `tokenizers.Tokenizer` is owned by this object: configured added tokens are registered on it and
    its truncation and padding are switched off (as transformers' `encode` does).
    """

    def __init__(
        self,
        backend: BackendTokenizer,
        config: Mapping[str, Any] | None = None,
        *,
        special_tokens_map: Mapping[str, Any] | None = None,
        chat_template: str | Mapping[str, str] | None = None,
        generation_eos_token_ids: Iterable[int] = (),
    ) -> None:
        self._backend = backend
        self._config = dict(config or {})
        self.special_tokens: SpecialTokens = read_special_tokens(self._config, special_tokens_map, backend)
        apply_added_tokens(backend, read_added_tokens_decoder(self._config), self.special_tokens)
        backend.no_truncation()
        backend.no_padding()
        self._clean_up_spaces = _config_bool(self._config, "clean_up_tokenization_spaces")
        self._clean_up_bpe = _config_bool(
            self._config, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
        )
        backend.encode_special_tokens = _config_bool(self._config, "split_special_tokens")
        templates = templates_from_config(self._config) if chat_template is None else chat_template
        self._chat_template = dict(templates) if isinstance(templates, Mapping) else templates
        self._compiled: dict[str, ChatTemplate] = {}
        self._generation_eos_ids = tuple(generation_eos_token_ids)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load the tokenizer files of a Hugging Face model directory."""
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory {directory} does not exist or is not a directory")
        tokenizer_file = directory / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise FileNotFoundError(
                f"{tokenizer_file} not found: tao_engine reads the fast-tokenizer file tokenizer.json. Write one with "
                f"`transformers.AutoTokenizer.from_pretrained(<model>).save_pretrained('{directory}')` (it converts "
                "slow sentencepiece tokenizers), or import a GGUF file with tao_engine.gguf_import."
            )
        try:
            backend = BackendTokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise ValueError(f"{tokenizer_file} could not be read by the tokenizers library: {exc}") from exc
        config = read_json(directory / CONFIG_FILE) or {}
        return cls(
            backend,
            config,
            special_tokens_map=read_json(directory / SPECIAL_TOKENS_MAP_FILE),
            chat_template=load_chat_templates(directory, config),
            generation_eos_token_ids=read_generation_eos_ids(directory / GENERATION_CONFIG_FILE),
        )

    # ---- vocabulary and special tokens -------------------------------------------------------------------------

    @property
    def backend(self) -> BackendTokenizer:
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (`len(AutoTokenizer)`)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def _special_id(self, name: str) -> int | None:
        content = self.special_tokens.content(name)
        return None if content is None else self._backend.token_to_id(content)

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.content("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.content("eos_token")

    @property
    def pad_token(self) -> str | None:
        return self.special_tokens.content("pad_token")

    @property
    def unk_token(self) -> str | None:
        return self.special_tokens.content("unk_token")

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every id that ends generation: the tokenizer's eos token and generation_config.json's eos ids."""
        eos = self.eos_token_id
        return frozenset(self._generation_eos_ids) | (frozenset() if eos is None else frozenset((eos,)))

    @property
    def special_token_ids(self) -> frozenset[int]:
        """Ids of the added tokens flagged special: the ones `skip_special_tokens` drops."""
        return frozenset(i for i, token in self._backend.get_added_tokens_decoder().items() if token.special)

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        """The chat template, or {name: template} when the model has several, or None."""
        return self._chat_template

    # ---- encode / decode --------------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; tokenizer.json's post-processor decides which special tokens (e.g. BOS) to add."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; use encode_batch for a list of texts")
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_batch takes a list of str; use encode for a single text")
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(
        self, ids: Sequence[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of `ids`, as transformers' `decode` gives it."""
        text = self._backend.decode(token_id_list(ids), skip_special_tokens=skip_special_tokens)
        if self._cleans_up(clean_up_tokenization_spaces):
            text = clean_up_tokenization(text)
        return text

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    def incremental_decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder:
        return IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)

    @property
    def clean_up_tokenization_spaces(self) -> bool:
        """Whether `decode` applies transformers' clean-up of spaces by default (never for BPE unless forced)."""
        return self._cleans_up(None)

    def _cleans_up(self, requested: bool | None) -> bool:
        enabled = self._clean_up_spaces if requested is None else requested
        # transformers skips the clean-up for BPE models: it deletes real spaces before punctuation there
        is_bpe = type(self._backend.model).__name__ == "BPE"
        return bool(enabled) and (not is_bpe or self._clean_up_bpe)

    # ---- chat ---------------------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        chat_template: str | None = None,
        continue_final_message: bool | str = False,
        **kwargs: Any,
    ) -> list[int] | str:
        """Render a conversation with the chat template; ids when `tokenize` (no special tokens added on top).

        `chat_template` overrides the model's template (or names one of several); `continue_final_message` leaves
        the last message open for the model to continue; `kwargs` become template variables and override the
        special-token variables (`bos_token`, ...).
        """
        source = select_template(self._chat_template, chat_template, has_tools=tools is not None)
        compiled = self._compiled.get(source)
        if compiled is None:
            compiled = self._compiled[source] = ChatTemplate(source)
        variables = {**self.special_tokens.strings(), **kwargs}
        text = compiled.render(
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            continue_final_message=continue_final_message,
            **variables,
        )
        # The template already wrote every control token, so the post-processor must not add BOS again
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ---- saving -------------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        config = {key: value for key, value in self._config.items() if key not in _UNSAVED_CONFIG_KEYS}
        config.update(self.special_tokens.strings())
        added = self._backend.get_added_tokens_decoder()
        config["added_tokens_decoder"] = {str(i): _added_token_json(added[i]) for i in sorted(added)}
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        if isinstance(self._chat_template, dict):
            config["chat_template"] = [{"name": k, "template": v} for k, v in self._chat_template.items()]
        elif self._chat_template is not None:
            config["chat_template"] = self._chat_template
        else:
            config.pop("chat_template", None)
        special_map: dict[str, Any] = dict(self.special_tokens.strings())
        if self.special_tokens.extra:
            special_map["additional_special_tokens"] = [spec.content for spec in self.special_tokens.extra]

        _write_atomic(directory / TOKENIZER_FILE, self._backend.to_str(pretty=True))
        _write_atomic(directory / CONFIG_FILE, _json_text(config))
        _write_atomic(directory / SPECIAL_TOKENS_MAP_FILE, _json_text(special_map))
        # Template files take priority over the config on load; stale ones would shadow the template just written
        stale = [directory / "chat_template.jinja", *sorted((directory / "additional_chat_templates").glob("*.jinja"))]
        for file in stale:
            file.unlink(missing_ok=True)
        return directory

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens.strings()})"


def _config_bool(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"tokenizer_config.json[{key!r}] must be true or false, got {value!r}")
    return value


def _added_token_json(token: Any) -> dict[str, Any]:
    flags = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    return {flag: getattr(token, flag) for flag in flags}


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    # Write beside the target and rename, so a crash never leaves a half-written tokenizer file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

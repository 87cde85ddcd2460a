"""`builtin:tiny`: a small random Llama-architecture model that needs no download.

It exists so that every code path (loading, templating, masking, LoRA, saving,
generation) can run offline on a laptop CPU and in CI. The tokenizer is
byte-level (every UTF-8 byte is a token), so any text in any language encodes
without a trained vocabulary; chat special tokens for ChatML- and Llama-3-style
templates are part of the vocabulary so tests can exercise both.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

NAME = "builtin:tiny"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# ChatML with tools in the Hermes / Qwen2.5 layout: tool definitions in the system turn, calls as
# <tool_call> JSON in the assistant turn, results as <tool_response> in a user turn.
CHATML_TOOLS_TEMPLATE = (
    "{%- set system = messages[0].content if messages and messages[0].role == 'system' else none -%}"
    "{%- if tools -%}"
    "{{ '<|im_start|>system\n' }}{% if system %}{{ system + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n'"
    " + 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}"
    "{%- for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\n</tools>\n\nFor each function call, return a json object with function name and arguments '"
    " + 'within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, '"
    " + '\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n' }}"
    "{%- elif system -%}{{ '<|im_start|>system\n' + system + '<|im_end|>\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' and loop.first -%}"
    "{%- elif message.role == 'tool' -%}"
    "{{ '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message.role + '\n' }}{% if message.content %}{{ message.content }}{% endif %}"
    "{%- for call in message.tool_calls or [] -%}"
    "{% if message.content or not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": \"' + call.function.name + '\", \"arguments\": '"
    " + (call.function.arguments | tojson) + '}\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif -%}"
)

SPECIAL_TOKENS = [
    "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
]


def _byte_vocab() -> dict[str, int]:
    """GPT-2's byte-to-unicode table: token id == byte value, printable stand-ins."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    vocab = {chr(b): b for b in printable}
    shifted = 256
    for b in range(256):
        if b not in vocab.values():
            vocab[chr(shifted)] = b
            shifted += 1
    return vocab


def build_tokenizer(chat_template: str = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens plus chat special tokens."""
    core = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        eos_token="<|im_end|>" if "<|im_end|>" in chat_template else "<|eot_id|>",
        bos_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|pad|>"],
    )
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    tok.chat_template = chat_template
    tok.model_max_length = 2048
    return tok


def build_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        # Frozen random weights at the usual 0.02 leave the output head too weak
        # for LoRA to ever make a confident prediction (logits stay within ~2.5);
        # 0.1 gives the adapter room to learn within a CPU-minute.
        initializer_range=0.1,
    )


def build(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Model and tokenizer; the same seed always gives the same weights."""
    tok = build_tokenizer()
    config = build_config(len(tok))
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    config.bos_token_id = None
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok

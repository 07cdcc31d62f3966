"""Which model family (maker and lineage) a declared model belongs to, from its names.

Used by the checker to warn when a verification's judge comes from the same family as a
model it judges (W254): models of one lineage share training data and blind spots, so one
is a weak referee of the other. The family is read from the model's `model_id` when it has
one (`meta.llama3-70b-instruct-v1:0`, `Qwen/Qwen2.5-72B-Instruct`), else from its policy
name (`qwen-72b`). An unrecognised name has no family (None), and nothing is warned.
"""

from __future__ import annotations

import re

# a word of the name (letters; the digits of `llama3`, `qwen2` are dropped) -> family
_FAMILY_WORDS: dict[str, str] = {
    "qwen": "Qwen (Alibaba)", "qwq": "Qwen (Alibaba)",
    "gemma": "Gemma/Gemini (Google)", "gemini": "Gemma/Gemini (Google)", "palm": "Gemma/Gemini (Google)",
    "llama": "Llama (Meta)", "codellama": "Llama (Meta)",
    "mistral": "Mistral", "mixtral": "Mistral", "codestral": "Mistral", "ministral": "Mistral",
    "magistral": "Mistral", "pixtral": "Mistral",
    "claude": "Claude (Anthropic)",
    "gpt": "GPT (OpenAI)", "chatgpt": "GPT (OpenAI)",
    "deepseek": "DeepSeek",
    "kimi": "Kimi (Moonshot)", "moonshot": "Kimi (Moonshot)",
    "phi": "Phi (Microsoft)",
    "command": "Command (Cohere)", "cohere": "Command (Cohere)", "aya": "Command (Cohere)",
    "titan": "Titan/Nova (Amazon)", "nova": "Titan/Nova (Amazon)",
    "granite": "Granite (IBM)",
    "glm": "GLM (Zhipu)", "chatglm": "GLM (Zhipu)",
    "yi": "Yi (01.AI)",
    "falcon": "Falcon (TII)",
    "grok": "Grok (xAI)",
    "olmo": "OLMo (AI2)",
    "nemotron": "Nemotron (NVIDIA)",
}
_OPENAI_REASONING = re.compile(r"o[1-9]")  # o1, o3, o4-mini
_WORD = re.compile(r"[A-Za-z]+[0-9]*")


def model_family(name: str, model_id: str | None = None) -> str | None:
    """The family of a model (e.g. "Llama (Meta)"), from `model_id` when given, else `name`;
    None when neither names a known family. The first word that names one wins (so a provider
    prefix such as `meta.` or `Qwen/` and size suffixes do not matter)."""
    for text in (model_id, name):
        if not text:
            continue
        for w in _WORD.findall(text):
            low = w.lower()
            if _OPENAI_REASONING.fullmatch(low):
                return "GPT (OpenAI)"
            fam = _FAMILY_WORDS.get(low.rstrip("0123456789"))
            if fam is not None:
                return fam
    return None

"""The language-model families and what they share: `base.py` (LanguageModel, TextConfig), `gpt.py`
and `rnn.py` (the networks), `tokenizers.py`, `generation.py` (the sampling loop), `decode.py` (the
GPT's one-token paths), `lora.py` (low-rank adapters)."""

"""The language-model families and what they share: `base.py` (LanguageModel, TextConfig), `gpt.py`
and `rnn.py` (the networks), `generation.py` (the sampling loop), `decode.py` (the
GPT's one-token paths), `lora.py` (low-rank adapters). The tokenizers are data: genlab.data.tokenizers."""

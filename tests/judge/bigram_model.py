"""A tiny, fully deterministic chat model for judge tests, built locally in a second.

A one-layer Llama whose attention and MLP write nothing (their output projections are zero),
so the hidden state is the embedding of the current token; one-hot embeddings and a chosen
``lm_head`` then make greedy decoding a table of "next token after this token" (a bigram
machine). The chat template ends the prompt with a control word — the first word after
``Question:`` in the first user message (else its last word), plus ``_again`` once the
conversation holds a re-ask — so a test picks the judge's reply by how it words the question:

* ``yes …``  → ``VERDICT: 1``      * ``half …`` → ``VERDICT: 0.5``   * ``no …`` → ``VERDICT: 0``
* ``junk …`` → ``maybe`` (also after the re-ask: recorded unparsable)
* ``flaky …`` → ``perhaps``, then ``VERDICT: 0.5`` after the re-ask
* anything else → ``VERDICT: 1``

It is served by a real ``transformers serve`` like any HF directory.
"""

from __future__ import annotations

from pathlib import Path

EOS = "</s>"
OUTPUTS = ["VERDICT: 1", "VERDICT: 0.5", "VERDICT: 0", "maybe", "perhaps"]
CONTROL = {
    "yes": "VERDICT: 1",
    "half": "VERDICT: 0.5",
    "no": "VERDICT: 0",
    "junk": "maybe",
    "junk_again": "maybe",
    "flaky": "perhaps",
    "flaky_again": "VERDICT: 0.5",
}
TEMPLATE = (
    "{%- set users = messages | selectattr('role', 'equalto', 'user') | list -%}"
    "{%- set u = users[0]['content'] -%}"
    "{%- if 'Question: ' in u -%}{%- set w = u.split('Question: ')[1].split()[0] -%}"
    "{%- else -%}{%- set w = u.split()[-1] -%}{%- endif -%}"
    "{%- for m in messages %}{{ m['content'] }} {% endfor -%}"
    "{{ w }}{% if users | length > 1 %}_again{% endif %}"
)


def build_bigram_judge(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", EOS, *OUTPUTS, *CONTROL]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token=EOS, bos_token=None)
    fast.chat_template = TEMPLATE
    nxt = {w: "VERDICT: 1" for w in vocab}  # default: anything → VERDICT: 1
    nxt.update(CONTROL)
    for w in OUTPUTS:
        nxt[w] = EOS
    nxt[EOS] = EOS
    n = len(vocab)
    hidden = 64
    assert n <= hidden
    config = LlamaConfig(vocab_size=n, hidden_size=hidden, intermediate_size=16,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=vocab[EOS], pad_token_id=vocab["<pad>"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for w, i in vocab.items():
            model.model.embed_tokens.weight[i, i] = 1.0
            model.lm_head.weight[vocab[nxt[w]], i] = 1.0
    model.generation_config.eos_token_id = vocab[EOS]
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out

"""Trains the project's byte-level BPE tokenizer on the training corpus.

The pre-tokenizer (three Split regexes + ByteLevel without its own regex),
the decoder, the post-processor and the spellings of the special tokens are
DeepSeek-V3's (copied from its tokenizer.json); only the vocabulary and the
merges are ours. Ids 0..6 are the added tokens, in this order:

  0 <｜begin▁of▁sentence｜>  1 <｜end▁of▁sentence｜>  2 <｜fim▁hole｜>
  3 <｜fim▁begin｜>  4 <｜fim▁end｜>  5 <｜User｜>  6 <｜Assistant｜>

bos 0 / eos 1 as in DeepSeek-V3. Like DeepSeek's tokenizer.json, the
post-processor adds no BOS: callers (and transformers, via add_bos_token in
tokenizer_config.json) add it.

Writes tokenizer.json and tokenizer_config.json into --out.
"""
import argparse
import copy
import json
import os

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
FIM_HOLE = "<｜fim▁hole｜>"
FIM_BEGIN = "<｜fim▁begin｜>"
FIM_END = "<｜fim▁end｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
ADDED = [BOS, EOS, FIM_HOLE, FIM_BEGIN, FIM_END, USER, ASSISTANT]
SPECIAL = {BOS, EOS}  # DeepSeek marks only these two special=True

# DeepSeek-V3 tokenizer.json, "pre_tokenizer" (verbatim).
DEEPSEEK_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"},
         "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"},
         "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"Regex":
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
            "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False},
    ],
}
DEEPSEEK_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True}
DEEPSEEK_POST_PROCESSOR = {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True}
DEEPSEEK_NORMALIZER = {"type": "Sequence", "normalizers": []}

CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{%- endif %}{%- endfor %}"
    "{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'" + USER + "' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{{'" + ASSISTANT + "' + message['content'] + '"
    + EOS + "'}}{%- endif %}"
    "{%- endfor -%}{% if add_generation_prompt %}{{'" + ASSISTANT + "'}}{% endif %}")


def _added_token(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False,
            "normalized": True, "rstrip": False, "single_word": False}


def tokenizer_config(model_max_length):
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": _added_token(BOS),
        "eos_token": _added_token(EOS),
        "pad_token": _added_token(EOS),
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": model_max_length,
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def train(texts, vocab_size=8192, min_frequency=2):
    """Trains on an iterable of strings; returns the tokenizer.json dict."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    pats = [p["pattern"]["Regex"] for p in DEEPSEEK_PRE_TOKENIZER["pretokenizers"][:3]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in pats]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=ADDED, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    j = json.loads(tok.to_str())
    # Make the pipeline byte-for-byte DeepSeek's, not just equivalent.
    j["normalizer"] = copy.deepcopy(DEEPSEEK_NORMALIZER)
    j["pre_tokenizer"] = copy.deepcopy(DEEPSEEK_PRE_TOKENIZER)
    j["post_processor"] = copy.deepcopy(DEEPSEEK_POST_PROCESSOR)
    j["decoder"] = copy.deepcopy(DEEPSEEK_DECODER)
    for a in j["added_tokens"]:
        special = a["content"] in SPECIAL
        a["special"] = special
        a["normalized"] = not special
    assert [a["content"] for a in j["added_tokens"]] == ADDED
    assert [a["id"] for a in j["added_tokens"]] == list(range(len(ADDED)))
    return j


def load(path):
    """tokenizers.Tokenizer from a tokenizer.json path."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path)


def token_id(tok, content):
    i = tok.token_to_id(content)
    if i is None:
        raise KeyError(content)
    return i


def save(j, out_dir, model_max_length=4096):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(model_max_length), f, ensure_ascii=False, indent=1)


def main(argv=None):
    from tools.train import corpus
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=".work/train/corpus")
    ap.add_argument("--out", default=".work/train/tokenizer")
    ap.add_argument("--vocab-size", type=int, default=8192)
    a = ap.parse_args(argv)
    docs = corpus.read_jsonl(os.path.join(a.corpus, "train.jsonl"))
    j = train((d["text"] for d in docs), a.vocab_size)
    save(j, a.out)
    print(f"tokenizer: {len(j['model']['vocab'])} vocab entries, "
          f"{len(j['model']['merges'])} merges -> {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the tokenizer parity goldens with Hugging Face `tokenizers`.

    python3 tools/tok_goldens.py            # everything available
    python3 tools/tok_goldens.py --only deepseek-v3

Outputs (committed; the parity test needs no pip package):
  tests/tokenizer/golden/corpus.jsonl.gz  the test strings, one JSON string
                                          per line (index = line number)
  tests/tokenizer/fixtures/*.json         small tokenizers trained here to
                                          cover tokenizer.json features the
                                          real ones do not use
  tests/tokenizer/golden/<name>.jsonl.gz  per tokenizer: a header line, then
    {"i", "ids", ["ids_ns"], ["dec"], ["dec_skip"]}  per corpus string
        ids      Tokenizer.encode(text).ids
        ids_ns   with encode_special_tokens=True, add_special_tokens=False
                 (only when different from ids)
        dec      decode(ids, skip_special_tokens=False) when != text
        dec_skip decode(ids, skip_special_tokens=True) when != that
    {"rand", "dec", "dec_skip"}  random id sequences (lossy UTF-8 decoding)
    {"chat", "ids"}              apply_chat_template(..., tokenize=False),
                                 encoded with add_special_tokens=False
    {"fim", "ids"}               [bos] <fim_begin>p<fim_hole>s<fim_end>
    {"sweep", "sha", "n"}        tools/tok_sweep.py texts, sha of the ids

Tokenizers: ../shared/tokenizers/deepseek-v3, ../shared/models/
pycode-mtp-tiny, models/mtpd-code-small (each when present) and the
fixtures. The corpus is built from files of this machine (Python's stdlib,
C headers) once and then kept: it is only rebuilt with --new-corpus.
"""
import argparse
import gzip
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.tok_sweep import ids_sha, sweeps  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "tokenizer", "golden")
FIXTURES = os.path.join(ROOT, "tests", "tokenizer", "fixtures")
CORPUS = os.path.join(GOLDEN, "corpus.jsonl.gz")

# name -> directory (relative to the repo root) holding tokenizer.json
REAL = {
    "deepseek-v3": "../shared/tokenizers/deepseek-v3",
    "pycode-mtp-tiny": "../shared/models/pycode-mtp-tiny",
    "mtpd-code-small": "models/mtpd-code-small",
}

SOURCE_TREES = ["json", "wsgiref", "tomllib", "zoneinfo", "sqlite3"]
C_HEADERS = ["stdio.h", "string.h", "stdlib.h"]

SPECIAL_STRINGS = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>",
    "<｜User｜>", "<｜Assistant｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
    "<｜fim▁end｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>",
    "<｜tool▁output▁end｜>", "<think>", "</think>", "<s>", "</s>",
    "<mask>", "[RS]", "word", "<|x|>", "<|x|>y", "<|xy|>",
]

CJK = [
    "我们今天去公园散步，天气非常好。",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "这个函数返回一个列表，其中包含所有满足条件的元素。",
    "請問這個程式碼為什麼會出現錯誤？我已經檢查了三次。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "数据库连接失败：请检查用户名和密码是否正确（错误代码 1045）。",
    "今日は良い天気ですね。散歩に行きましょうか。",
    "このプログラムはファイルを読み込んで、結果を標準出力に書き出します。",
    "東京タワーは高さ333メートルの電波塔です。",
    "ひらがなとカタカナと漢字が混ざった文章：わたしはコーヒーを飲みます。",
    "エラーが発生しました。もう一度お試しください。",
    "吾輩は猫である。名前はまだ無い。",
    "オブジェクト指向プログラミングでは、クラスとインスタンスを使います。",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "한국어 텍스트와 English text가 섞여 있는 문장입니다.",
    "ｆｕｌｌｗｉｄｔｈ　ＡＳＣＩＩ　１２３４５　ｔｅｘｔ！",
    "半角ｶﾀｶﾅとＡＢＣ全角英字、①②③と㈱と〒100-0001。",
    "中文标点：“引号”、《书名》、【括号】……——！？",
    "漢字の後に数字123と英語wordが続く。3.14159は円周率。",
    "𠀀𠀁𠮷野家と𩸽（ほっけ）は補助平面の文字です。",
]

OTHER_SCRIPTS = [
    "Привет, мир! Как дела? Ёлка и ёжик.",
    "Γειά σου κόσμε· αβγδε ΑΒΓΔΕ.",
    "مرحبا بالعالم، هذه جملة عربية مع تشكيل: مُحَمَّدٌ.",
    "שלום עולם, זה טקסט בעברית.",
    "नमस्ते दुनिया, यह हिंदी पाठ है। क्षत्रिय",
    "สวัสดีชาวโลก นี่คือภาษาไทย",
    "ሰላም ለዓለም",
    "Tiếng Việt có dấu: Việt Nam, Hà Nội, phở bò.",
    "Zażółć gęślą jaźń. Ærøskøbing. Straße. naïve café résumé.",
    "ᚠᚢᚦᚨᚱᚲ ᚷᚹ ᚺᚾᛁᛃ",
    "ꦲꦏ꧀ꦱꦫꦗꦮ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒜𝐁𝑪 ∀x∈ℝ: x²≥0, ∑ᵢ aᵢ ≤ ∞",
]

EMOJI = [
    "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴‍☠️", "👍🏽", "👩🏿‍💻", "🇯🇵🇺🇸🇩🇪", "1️⃣#️⃣",
    "❤️‍🔥", "🧑‍🤝‍🧑", "😀😃😄😁", "🙂 ok 🙃", "☺︎ vs ☺️", "🫠🫡🪿",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "👁️‍🗨️", "a😀b", "emoji at end 🎉", "🎉emoji at start",
]

COMBINING = [
    "e\u0301", "e\u0301\u0302\u0303\u0304", "Z\u0351\u036b\u0343\u036a"
    "\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f"
    "\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L"
    "\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341"
    "\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328"
    "\u0335\u0339\u033b\u031d\u0333!", "a\u0308o\u0308u\u0308",
    "\u1100\u1161\u11a8", "n\u0303o\u0303", "\u0915\u094d\u0937",
    "x\u20dd y\u20e3", "\u0301start with mark", "i\u0307\u0301",
    "\u00e9 vs e\u0301 (NFC vs NFD)", "\u212b \u00c5 A\u030a",
]

WHITESPACE = [
    "\t", "\t\t", "\t \t", "\r\n", "\r\n\r\n", "a\r\nb\r\n", "\n", "\n\n\n",
    " \n", "  \n  ", "\r", "a\rb", "line1\nline2\n\nline4", "\u00a0",
    "a\u00a0b", "\u3000", "a\u3000b", "\u2028", "a\u2029b", "\u0085",
    "a\u0085b", "\u180e", "a\u180eb", "\u200b", "a\u200bb", "\ufeff",
    "\ufeffBOM", "\x0b\x0c", "a\x0b\x0cb", "\u2000\u2001\u200a", "\u202f",
    "\u205f", "\u1680", "trailing   ", "   leading", "   both   ",
    "\t\tdef f():\n\t\treturn 1\n", "x = 1  # comment   \n",
]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def source_files():
    files = []
    base = "/usr/lib/python3.%d" % sys.version_info[1]
    if not os.path.isdir(base):
        base = "/usr/lib/python3.11"
    for d in SOURCE_TREES:
        p = os.path.join(base, d)
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                if name.endswith(".py"):
                    files.append(os.path.join(p, name))
    for h in C_HEADERS:
        p = os.path.join("/usr/include", h)
        if os.path.exists(p):
            files.append(p)
    return files


def chunks(text, rng):
    """Cuts text into pieces of 1..1500 characters (log-uniform)."""
    out, i = [], 0
    while i < len(text):
        n = int(2 ** rng.uniform(0, 10.55))
        out.append(text[i:i + n])
        i += n
    return out


def build_corpus():
    rng = random.Random(20240611)
    c = [""]
    for path in source_files():
        c.extend(chunks(read(path), rng))
    c += CJK + OTHER_SCRIPTS + EMOJI + COMBINING + WHITESPACE
    c.append("".join(CJK))
    c.append("\n".join(CJK + OTHER_SCRIPTS + EMOJI))
    # CJK / kana / ASCII mixtures
    pools = ["的一是不了人我在有他这为之大来以个中上们", "あいうえおかきくけこさしすせそ",
             "アイウエオカキクケコサシスセソー", "abc xyz ", "0123456789", "、。「」！？ ",
             "漢字語彙辞書", "가나다라마바사"]
    for _ in range(120):
        n = rng.randint(1, 60)
        c.append("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    # digit runs of every length 1..20, alone and in context
    for k in range(1, 21):
        digits = "".join(rng.choice("0123456789") for _ in range(k))
        c += ["1" * k, digits, "x" + digits + "y", " " + digits + " ",
              "v" + digits + ".0", digits + "\n" + digits,
              "-" + digits + "e" + str(k), "١٢٣٤٥٦٧٨٩٠"[:k % 10 + 1] + digits,
              "１２３４５６７８９０"[:k % 10 + 1], "Ⅻ" * (k % 4 + 1) + digits]
    # whitespace runs
    for k in list(range(1, 41)) + [64, 100, 257]:
        c += [" " * k, "a" + " " * k + "b", "\t" * k, " " * k + "\n",
              "x" + "\n" * (k % 7 + 1) + " " * k + "y"]
    # special tokens inside text
    for s in SPECIAL_STRINGS:
        c += [s, "a" + s + "b", " " + s + " ", s + s, "x " + s + "\ny",
              s[:-1], s[1:], "<" + s + ">", s + " word " + s]
    c += ["<｜User｜>hello<｜Assistant｜>hi<｜end▁of▁sentence｜>",
          "<｜fim▁begin｜>def f(x):\n    <｜fim▁hole｜>\n    return y"
          "<｜fim▁end｜>",
          "<|x|><|xy|><|x|>y<|x|>yy", "a word, swordfish; word! words",
          "<mask> x  <mask>  y <mask>", "[RS]   z [RS]\n\nq",
          "<s></s><s>", "<<s>>", "<｜<｜User｜>｜>"]
    # code-ish and punctuation stress
    c += ["if(a&&b||!c){return x->y[i]++;}", "a.b.c.d", "...", "!!!???",
          "'s 't 're 've 'm 'll 'd", "I'm can't we'll they've",
          "x=='y'", "#include <stdio.h>", "std::vector<int>",
          "https://example.com/path?q=1&r=2#frag", "user@example.com",
          "$HOME/.config", "C:\\Windows\\System32", "λx.x", "→ ← ↑ ↓",
          "©®™", "°C", "½ ¼ ¾", "¥€£$", "```python\nprint(1)\n```"]
    # random Unicode fuzz (valid scalar values from every plane)
    for _ in range(250):
        n = rng.randint(1, 30)
        s = []
        for _ in range(n):
            r = rng.random()
            if r < 0.4:
                cp = rng.randint(0x20, 0x7e)
            elif r < 0.7:
                cp = rng.randint(0x80, 0xffff)
            elif r < 0.9:
                cp = rng.randint(0x10000, 0x3ffff)
            else:
                cp = rng.randint(0, 0x10ffff)
            if 0xD800 <= cp < 0xE000:
                cp = 0x41
            s.append(chr(cp))
        c.append("".join(s))
    # ASCII fuzz including controls
    for _ in range(150):
        n = rng.randint(1, 40)
        c.append("".join(chr(rng.randint(0, 127)) for _ in range(n)))
    # long lines: 100 kB without spaces, long digit and letter runs
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    c.append("".join(rng.choice(b64) for _ in range(100_000)))
    c.append("a" * 100_000)
    c.append("".join(rng.choice("0123456789") for _ in range(20_000)))
    c.append("ab" * 30_000)
    c.append("世界" * 10_000)
    c.append(" " * 20_000 + "x")
    return c


def load_corpus():
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_corpus(corpus):
    os.makedirs(GOLDEN, exist_ok=True)
    with gzip.GzipFile(CORPUS, "wb", mtime=0) as g:
        for s in corpus:
            g.write((json.dumps(s, ensure_ascii=False) + "\n").encode())


# ---------------------------------------------------------------- fixtures

def train_texts():
    out = []
    for path in source_files()[:12]:
        out.append(read(path))
    out += CJK + OTHER_SCRIPTS + EMOJI
    return out


def added(id_, content, special=False, lstrip=False, rstrip=False,
          single_word=False, normalized=None):
    return {"id": id_, "content": content, "single_word": single_word,
            "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized,
            "special": special}


def split(pattern, behavior, invert=False, literal=False):
    return {"type": "Split",
            "pattern": {"String" if literal else "Regex": pattern},
            "behavior": behavior, "invert": invert}


def bytelevel(aps, use_regex):
    return {"type": "ByteLevel", "add_prefix_space": aps,
            "trim_offsets": True, "use_regex": use_regex}


def build_fixtures():
    """Trains two small BPEs and derives variants; returns {name: dict}."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import processors, trainers

    texts = train_texts()
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    bl.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    base = json.loads(bl.to_str())
    nv = max(base["model"]["vocab"].values()) + 1

    def variant(pre, post=None, added_tokens=(), **model_kw):
        d = json.loads(json.dumps(base))
        d["pre_tokenizer"] = pre
        d["post_processor"] = post
        d["added_tokens"] = list(added_tokens)
        d["model"].update(model_kw)
        return d

    toks = [added(nv, "<s>", special=True), added(nv + 1, "</s>", special=True),
            added(nv + 2, "<mask>", special=True, lstrip=True, rstrip=True),
            added(nv + 3, "[RS]", rstrip=True),
            added(nv + 4, "word", single_word=True),
            added(nv + 5, "<|x|>", normalized=False),
            added(nv + 6, "<|x|>y"),
            added(nv + 7, "<|xy|>", special=True)]
    tp = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>",
        special_tokens=[("<s>", nv), ("</s>", nv + 1)])
    post = json.loads(Tokenizer(models.BPE()).to_str())  # placeholder shape
    tmp = Tokenizer(models.BPE())
    tmp.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=False), tp])
    post = json.loads(tmp.to_str())["post_processor"]

    fx = {}
    fx["bl_gpt2"] = variant(bytelevel(True, True), post, toks)
    fx["bl_splits_a"] = variant({"type": "Sequence", "pretokenizers": [
        split("\\s+", "Removed"), split("\\p{P}", "MergedWithPrevious"),
        bytelevel(True, False)]})
    fx["bl_splits_b"] = variant({"type": "Sequence", "pretokenizers": [
        split(" ", "MergedWithNext", literal=True),
        split("\\d", "Contiguous"), bytelevel(False, False)]})
    fx["bl_splits_c"] = variant({"type": "Sequence", "pretokenizers": [
        split("\\p{L}+", "Isolated", invert=True),
        split("x*", "MergedWithNext"), split("y*", "MergedWithPrevious"),
        bytelevel(False, False)]})
    fx["bl_splits_d"] = variant({"type": "Sequence", "pretokenizers": [
        split("^[ \\t]+|[ \\t]+$", "Isolated"),
        split("\\w+|[^\\w\\s]+", "Removed", invert=True),
        split("\\h+", "Isolated"), bytelevel(False, False)]})
    fx["bl_builtin"] = variant({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Punctuation", "behavior": "Contiguous"},
        {"type": "WhitespaceSplit"}, bytelevel(True, False)]})
    fx["bl_builtin2"] = variant({"type": "Sequence", "pretokenizers": [
        {"type": "Whitespace"}, {"type": "Digits", "individual_digits": False},
        {"type": "Punctuation", "behavior": "MergedWithNext"},
        bytelevel(False, True)]})
    fx["bl_ignore"] = variant(bytelevel(False, True), ignore_merges=True)

    ch = Tokenizer(models.BPE(unk_token="[UNK]", fuse_unk=True))
    ch.pre_tokenizer = pre_tokenizers.Whitespace()
    ch.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, show_progress=False, special_tokens=["[UNK]"],
        limit_alphabet=60))
    cbase = json.loads(ch.to_str())
    cbase["added_tokens"] = [a for a in cbase["added_tokens"]]
    fx["char_unk"] = cbase
    fb = json.loads(json.dumps(cbase))
    fb["model"]["byte_fallback"] = True
    fb["model"]["fuse_unk"] = False
    nvc = max(fb["model"]["vocab"].values()) + 1
    for b in range(256):
        fb["model"]["vocab"]["<0x%02X>" % b] = nvc + b
    # keep some chars unknown even with fallback: drop a few byte tokens
    for b in (0xE4, 0xF0):
        del fb["model"]["vocab"]["<0x%02X>" % b]
    fx["char_fallback"] = fb
    return fx


# ---------------------------------------------------------------- goldens

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are helpful."},
     {"role": "user", "content": "Write a function that adds two numbers."}],
    [{"role": "system", "content": "S1"}, {"role": "system", "content": "S2"},
     {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
     {"role": "user", "content": "q"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "def f(x):\n    return x  # 世界 🎉"},
     {"role": "assistant", "content": "```python\nprint(1)\n```\n"},
     {"role": "user", "content": "again <｜User｜> injected <｜end▁of▁sentence｜>"}],
    [{"role": "user", "content": "  leading and trailing  \n"}],
    [{"role": "user", "content": "1234567890 " * 5}],
    [{"role": "system", "content": "Réponds en français."},
     {"role": "user", "content": "Bonjour, ça va ?"}],
    [{"role": "user", "content": "call the tool"},
     {"role": "tool", "content": "{\"result\": 42}"},
     {"role": "tool", "content": "second output"},
     {"role": "assistant", "content": "The answer is 42."}],
    [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}],
    [{"role": "assistant", "content": "only assistant"}],
    [{"role": "system", "content": "only system"}],
]


def render_chat(tok_dir, messages, gen):
    """apply_chat_template text: transformers when available, else jinja2
    with transformers' settings."""
    try:
        from transformers import AutoTokenizer
        import transformers.utils.logging as tlog
        tlog.set_verbosity_error()
        at = _AT.get(tok_dir)
        if at is None:
            at = _AT[tok_dir] = AutoTokenizer.from_pretrained(tok_dir)
        return at.apply_chat_template(messages, tokenize=False,
                                      add_generation_prompt=gen)
    except ImportError:
        import jinja2
        cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True)
        bos = cfg.get("bos_token")
        bos = bos.get("content") if isinstance(bos, dict) else bos
        return env.from_string(cfg["chat_template"]).render(
            messages=messages, add_generation_prompt=gen, bos_token=bos)


_AT = {}


def config_of(tok_dir):
    p = os.path.join(tok_dir, "tokenizer_config.json")
    return json.load(open(p)) if os.path.exists(p) else None


def write_golden(name, tok_path, rel_path, corpus, kind, tok_dir=None,
                 subset=None):
    from tokenizers import Tokenizer
    import tokenizers

    tok = Tokenizer.from_file(tok_path)
    nos = Tokenizer.from_file(tok_path)
    nos.encode_special_tokens = True
    rng = random.Random(hash(name) & 0xffff)
    out = os.path.join(GOLDEN, name + ".jsonl.gz")
    n_ids = tok.get_vocab_size(with_added_tokens=True)
    header = {"header": {"name": name, "kind": kind, "path": rel_path,
                         "tokenizers": tokenizers.__version__,
                         "n_corpus": len(corpus)}}
    lines = [header]
    for i, text in enumerate(corpus):
        if subset is not None and not subset(i, text):
            continue
        ids = tok.encode(text).ids
        rec = {"i": i, "ids": ids}
        ns = nos.encode(text, add_special_tokens=False).ids
        if ns != ids:
            rec["ids_ns"] = ns
        dec = tok.decode(ids, skip_special_tokens=False)
        if dec != text:
            rec["dec"] = dec
        skip = tok.decode(ids, skip_special_tokens=True)
        if skip != dec:
            rec["dec_skip"] = skip
        lines.append(rec)
    vocab_ids = sorted(set(tok.get_vocab(with_added_tokens=True).values()))
    for _ in range(300):
        ids = [rng.choice(vocab_ids) for _ in range(rng.randint(1, 30))]
        lines.append({"rand": ids,
                      "dec": tok.decode(ids, skip_special_tokens=False),
                      "dec_skip": tok.decode(ids, skip_special_tokens=True)})
    if kind == "real":
        cfg = config_of(tok_dir)
        if cfg and cfg.get("chat_template"):
            plain = "tool" not in cfg["chat_template"]
            for msgs in CHATS:
                if plain and any(m["role"] == "tool" for m in msgs):
                    continue
                for gen in (True, False):
                    text = render_chat(tok_dir, msgs, gen)
                    ids = tok.encode(text, add_special_tokens=False).ids
                    lines.append({"chat": {"messages": msgs,
                                           "add_generation_prompt": gen},
                                  "ids": ids})
        fim = ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]
        if cfg and all(tok.token_to_id(t) is not None for t in fim):
            bos = cfg.get("bos_token")
            bos = bos.get("content") if isinstance(bos, dict) else bos
            pre = bos if cfg.get("add_bos_token") and bos else ""
            srcs = [s for s in corpus[1:400] if 20 < len(s) < 1500]
            for k in range(40):
                s = srcs[(k * 7) % len(srcs)]
                cut1 = rng.randint(0, len(s))
                cut2 = rng.randint(cut1, len(s))
                p, sfx = s[:cut1], s[cut2:]
                if k == 0:
                    p, sfx = "", ""
                text = pre + fim[0] + p + fim[1] + sfx + fim[2]
                ids = tok.encode(text, add_special_tokens=False).ids
                lines.append({"fim": {"prefix": p, "suffix": sfx},
                              "ids": ids})
        for sname, text in sweeps():
            ids = tok.encode(text).ids
            lines.append({"sweep": sname, "sha": ids_sha(ids),
                          "n": len(ids)})
    with gzip.GzipFile(out, "wb", mtime=0) as g:
        for rec in lines:
            g.write((json.dumps(rec, ensure_ascii=False,
                                separators=(",", ":")) + "\n").encode())
    print("%-18s %6d records  %8.0f kB" % (name, len(lines),
                                          os.path.getsize(out) / 1e3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="one tokenizer name (or 'fixtures')")
    ap.add_argument("--new-corpus", action="store_true",
                    help="rebuild corpus.jsonl.gz from this machine's files")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.new_corpus or not os.path.exists(CORPUS):
        write_corpus(build_corpus())
    corpus = load_corpus()
    print("corpus: %d strings, %.0f kB" % (
        len(corpus), sum(len(s.encode()) for s in corpus) / 1e3))

    if args.only in (None, "fixtures"):
        os.makedirs(FIXTURES, exist_ok=True)
        if not os.listdir(FIXTURES) or args.only == "fixtures":
            for name, d in build_fixtures().items():
                with open(os.path.join(FIXTURES, name + ".json"), "w") as f:
                    json.dump(d, f, ensure_ascii=False, indent=1)
                    f.write("\n")
        for fn in sorted(os.listdir(FIXTURES)):
            if not fn.endswith(".json"):
                continue
            name = fn[:-5]
            write_golden(name, os.path.join(FIXTURES, fn),
                         "tests/tokenizer/fixtures/" + fn, corpus, "fixture",
                         subset=lambda i, s: len(s) < 2000 and
                         (i % 6 == 0 or len(s) < 60))
    for name, rel in REAL.items():
        if args.only not in (None, name):
            continue
        d = os.path.normpath(os.path.join(ROOT, rel))
        p = os.path.join(d, "tokenizer.json")
        if not os.path.exists(p):
            print("%-18s skipped (no %s)" % (name, p))
            continue
        write_golden(name, p, rel, corpus, "real", tok_dir=d)


if __name__ == "__main__":
    main()

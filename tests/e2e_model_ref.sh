#!/bin/sh
# tests/e2e_model_ref.sh: pulse's forward against an independent pure-Python LLaVA
# (tests/ref_llava.py) on a tiny random checkpoint with an image, GQA, and penultimate
# vision features: the log-probs of `pulse score` must agree within 1e-4.
# Skipped (0 passed, 0 failed) when python3 is missing.
set -u
pass=0; fail=0
if ! command -v python3 >/dev/null 2>&1; then echo "python3 missing: skipped"; echo "0 passed, 0 failed"; exit 0; fi
dir=$(mktemp -d /tmp/pulse-e2e-ref-XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/tiny.json" <<'JSON'
{"model_type":"llava","image_token_index":3,"vision_feature_layer":-2,"projector_hidden_act":"gelu",
 "text_config":{"model_type":"llama","vocab_size":300,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,
  "num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false,
  "initializer_range":0.3},
 "vision_config":{"model_type":"clip_vision_model","hidden_size":8,"intermediate_size":16,"num_hidden_layers":2,
  "num_attention_heads":2,"image_size":8,"patch_size":4,"num_channels":3,"hidden_act":"quick_gelu",
  "layer_norm_eps":1e-5,"initializer_range":0.5}}
JSON
# an 8x8 RGB image as raw bytes and as a PNG (zlib-compressed, as other tools write them)
python3 - "$dir" <<'PY'
import zlib, struct, sys
d = sys.argv[1]; S = 8
rgb = bytes(((i * 37 + 11) * 7) % 256 for i in range(S * S * 3))
open(d + '/img.rgb', 'wb').write(rgb)
def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b) & 0xffffffff)
rows = b''.join(b'\x00' + rgb[y * S * 3:(y + 1) * S * 3] for y in range(S))
open(d + '/img.png', 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', S, S, 8, 2, 0, 0, 0))
                                 + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
PY
if ./pulse init --config "$dir/tiny.json" --out "$dir/ck" --seed 9 >/dev/null &&
   ./pulse score --model "$dir/ck" --image "$dir/img.png" --prompt "Who is this person?" --answer "A baker from Oslo." > "$dir/out.json"; then
  pass=$((pass + 1))
else
  echo "FAIL e2e_model_ref: pulse init / score failed"; fail=$((fail + 1))
fi
if [ -s "$dir/out.json" ] && python3 - "$dir" <<'PY'
import json, subprocess, sys
d = sys.argv[1]
o = json.load(open(d + '/out.json'))
r = json.loads(subprocess.check_output(['python3', 'tests/ref_llava.py', d + '/ck', d + '/img.rgb',
                                        json.dumps(o['input_ids']), str(o['answer_start'])]))
diff = max(abs(a - b) for a, b in zip(r, o['logprobs']))
print('max |pulse - reference| log-prob: %.3g over %d tokens' % (diff, len(r)))
sys.exit(0 if len(r) == len(o['logprobs']) and diff < 1e-4 else 1)
PY
then pass=$((pass + 1)); else echo "FAIL e2e_model_ref: pulse and the Python reference disagree"; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

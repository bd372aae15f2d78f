# tests/ref_llava.py: an independent pure-Python LLaVA forward (no numpy, no torch), written
# from the math of HF transformers' CLIPVisionModel, LlavaMultiModalProjector and
# LlamaForCausalLM, to check pulse's C forward (tests/e2e_model_ref.sh).
# usage: ref_llava.py CKPT_DIR RAW_RGB_FILE INPUT_IDS_JSON ANSWER_START
#   INPUT_IDS_JSON: the merged ids as `pulse score` prints them (image id once per patch);
#   prints the log-probs of the tokens from ANSWER_START on, as a JSON list.
import json, struct, math, sys, zlib, array
ck = sys.argv[1]
cfg = json.load(open(ck + '/config.json'))
tc, vc = cfg['text_config'], cfg['vision_config']
raw = open(ck + '/model.safetensors', 'rb').read()
hl = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8+hl])
W = {}
for k, v in hdr.items():
    if k == '__metadata__': continue
    b, e = v['data_offsets']
    a = array.array('f'); a.frombytes(raw[8+hl+b:8+hl+e])
    W[k] = (list(a), v['shape'])
def mat(name):
    d, s = W[name]; return [d[i*s[1]:(i+1)*s[1]] for i in range(s[0])]
def vec(name): return W[name][0]
def linear(x, w, b=None):
    Wm = mat(w); bb = vec(b) if b else None
    return [[sum(xi*wi for xi, wi in zip(row, wr)) + (bb[j] if bb else 0.0) for j, wr in enumerate(Wm)] for row in x]
def layernorm(x, w, b, eps):
    ww, bb = vec(w), vec(b); out = []
    for r in x:
        mu = sum(r)/len(r); var = sum((t-mu)**2 for t in r)/len(r)
        out.append([(t-mu)/math.sqrt(var+eps)*ww[i]+bb[i] for i, t in enumerate(r)])
    return out
def rmsnorm(x, w, eps):
    ww = vec(w)
    return [[ww[i]*(t/math.sqrt(sum(u*u for u in r)/len(r)+eps)) for i, t in enumerate(r)] for r in x]
def add(a, b): return [[x+y for x, y in zip(r, s)] for r, s in zip(a, b)]
def attn(q, k, v, H, Hkv, causal):
    T = len(q); hd = len(q[0])//H; out = [[0.0]*(H*hd) for _ in range(T)]
    for h in range(H):
        g = h // (H//Hkv)
        for i in range(T):
            sc = []
            for j in range(T):
                if causal and j > i: sc.append(-1e30); continue
                sc.append(sum(q[i][h*hd+d]*k[j][g*hd+d] for d in range(hd))/math.sqrt(hd))
            mx = max(sc); p = [math.exp(s-mx) for s in sc]; z = sum(p)
            for d in range(hd): out[i][h*hd+d] = sum(p[j]/z*v[j][g*hd+d] for j in range(T))
    return out
# image: read the raw RGB we wrote
S, P = vc['image_size'], vc['patch_size']
rgb = open(sys.argv[2], 'rb').read()
mean = [0.48145466, 0.4578275, 0.40821073]; std = [0.26862954, 0.26130258, 0.27577711]
pix = [[[(rgb[(y*S+x)*3+c]/255.0 - mean[c])/std[c] for x in range(S)] for y in range(S)] for c in range(3)]
g = S//P; Dv = vc['hidden_size']
cw = W['vision_tower.vision_model.embeddings.patch_embedding.weight'][0]
patches = []
for py in range(g):
    for px in range(g):
        o = []
        for od in range(Dv):
            s = 0.0
            for c in range(3):
                for i in range(P):
                    for j in range(P):
                        s += cw[((od*3+c)*P+i)*P+j]*pix[c][py*P+i][px*P+j]
            o.append(s)
        patches.append(o)
V = 'vision_tower.vision_model.'
x = [vec(V+'embeddings.class_embedding')] + patches
pos = mat(V+'embeddings.position_embedding.weight')
x = add(x, pos)
x = layernorm(x, V+'pre_layrnorm.weight', V+'pre_layrnorm.bias', vc['layer_norm_eps'])
hs = [x]
for l in range(vc['num_hidden_layers']):
    p = V+'encoder.layers.%d.' % l
    h = layernorm(x, p+'layer_norm1.weight', p+'layer_norm1.bias', vc['layer_norm_eps'])
    q = linear(h, p+'self_attn.q_proj.weight', p+'self_attn.q_proj.bias')
    k = linear(h, p+'self_attn.k_proj.weight', p+'self_attn.k_proj.bias')
    v = linear(h, p+'self_attn.v_proj.weight', p+'self_attn.v_proj.bias')
    a = attn(q, k, v, vc['num_attention_heads'], vc['num_attention_heads'], False)
    x = add(x, linear(a, p+'self_attn.out_proj.weight', p+'self_attn.out_proj.bias'))
    h = layernorm(x, p+'layer_norm2.weight', p+'layer_norm2.bias', vc['layer_norm_eps'])
    h = linear(h, p+'mlp.fc1.weight', p+'mlp.fc1.bias')
    h = [[t/(1+math.exp(-1.702*t)) for t in r] for r in h]
    x = add(x, linear(h, p+'mlp.fc2.weight', p+'mlp.fc2.bias'))
    hs.append(x)
feat = hs[cfg['vision_feature_layer']][1:]
f = linear(feat, 'multi_modal_projector.linear_1.weight', 'multi_modal_projector.linear_1.bias')
f = [[0.5*t*(1+math.erf(t/math.sqrt(2))) for t in r] for r in f]
f = linear(f, 'multi_modal_projector.linear_2.weight', 'multi_modal_projector.linear_2.bias')
ids = json.loads(sys.argv[3]); astart = int(sys.argv[4])
E = mat('language_model.model.embed_tokens.weight')
x = []; k_img = 0
for t in ids:
    if t == cfg['image_token_index']: x.append(f[k_img]); k_img += 1
    else: x.append(E[t])
T = len(x); D = tc['hidden_size']; H = tc['num_attention_heads']; Hkv = tc['num_key_value_heads']; hd = D//H
def rope(m, nh):
    out = []
    for t, r in enumerate(m):
        rr = list(r)
        for h in range(nh):
            for i in range(hd//2):
                inv = 1.0/(tc['rope_theta']**(2*i/hd)); ang = t*inv
                x1, x2 = r[h*hd+i], r[h*hd+hd//2+i]
                rr[h*hd+i] = x1*math.cos(ang) - x2*math.sin(ang)
                rr[h*hd+hd//2+i] = x2*math.cos(ang) + x1*math.sin(ang)
        out.append(rr)
    return out
L = 'language_model.model.'
for l in range(tc['num_hidden_layers']):
    p = L+'layers.%d.' % l
    h = rmsnorm(x, p+'input_layernorm.weight', tc['rms_norm_eps'])
    q = rope(linear(h, p+'self_attn.q_proj.weight'), H)
    k = rope(linear(h, p+'self_attn.k_proj.weight'), Hkv)
    v = linear(h, p+'self_attn.v_proj.weight')
    x = add(x, linear(attn(q, k, v, H, Hkv, True), p+'self_attn.o_proj.weight'))
    h = rmsnorm(x, p+'post_attention_layernorm.weight', tc['rms_norm_eps'])
    gg = linear(h, p+'mlp.gate_proj.weight'); u = linear(h, p+'mlp.up_proj.weight')
    m = [[a/(1+math.exp(-a))*b for a, b in zip(r, s)] for r, s in zip(gg, u)]
    x = add(x, linear(m, p+'mlp.down_proj.weight'))
h = rmsnorm(x, L+'norm.weight', tc['rms_norm_eps'])
logits = linear(h, 'language_model.lm_head.weight')
lps = []
for t in range(astart, T):
    z = logits[t-1]; mx = max(z); lse = mx + math.log(sum(math.exp(a-mx) for a in z))
    lps.append(z[ids[t]] - lse)
print(json.dumps(lps))

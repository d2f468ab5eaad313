#!/usr/bin/python3
"""The PyTorch reference of relora: the same LLaMA, LoRA adapters and ReLoRA step, written
plainly, as the yardstick for correctness (fixtures) and speed (bench).

Runs under Debian's own interpreter, /usr/bin/python3: Debian's python3-torch (with
python3-numpy and python3-yaml, which it depends on) imports only there, and the `python3`
first on PATH may be another one.

  llama_ref.py --fixtures
      Computes a small model's forward, gradients, AdamW steps and one merge-and-restart in
      float64, checks that a float32 run of the same code stays within the tolerances, and
      writes tests/reference/fixtures/llama_small.{txt,bin}, which tests/test_reference.cpp
      compares the C++ model against (ctest needs no PyTorch).
  llama_ref.py --bench --config configs/tiny.yaml [--phase full|relora] [--steps N]
               [--warmup N] [--threads N] [--blas-threads N] [--set section.key=value]...
      Times the training step `relora bench` times (one micro-batch of train.micro_batch
      synthetic sequences, clipping and AdamW at optimizer.lr) on the same shapes and prints
      the same JSON line, plus blas_threads: `threads` is torch.set_num_threads, while
      OpenBLAS keeps its own pool, of every core unless --blas-threads says otherwise.

Conventions, as in the C++ (src/model, src/backend/ops.h, src/optim, src/relora): weights
(out,in), no biases, untied lm_head; RMSNorm x * rsqrt(mean(x^2) + eps) * w; RoPE
rotate-half, dimension i paired with i + D/2 at angle t * theta^(-2i/D); causal softmax
attention scaled by 1/sqrt(D); SwiGLU MLP; mean next-token cross-entropy. LoRA y = x W^T +
s (x A^T) B^T with s = alpha/r; the embedding's adapter has PEFT's shapes, out[n] = E[tok] +
s (B A)[:, tok]. AdamW with bias correction and decoupled weight decay (none on norm
weights), clipping by the global gradient norm (scale max/norm when norm > max).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml

EMBEDDING = "model.embed_tokens"

# ---- model structure ------------------------------------------------------------------


def layer_linears(cfg, layer):
    """(module, out, in) of the seven projections of block `layer`, in HF order."""
    C, mlp_width = cfg["hidden_size"], cfg["intermediate_size"]
    pre = f"model.layers.{layer}."
    attention = [(pre + "self_attn." + p, C, C) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    mlp = [(pre + "mlp.gate_proj", mlp_width, C), (pre + "mlp.up_proj", mlp_width, C),
           (pre + "mlp.down_proj", C, mlp_width)]
    return attention + mlp


def base_shapes(cfg):
    """HF name -> shape of every weight and norm, in the model's parameter order."""
    V, C = cfg["vocab_size"], cfg["hidden_size"]
    shapes = {EMBEDDING + ".weight": (V, C)}
    for layer in range(cfg["num_layers"]):
        for module, out, inp in layer_linears(cfg, layer):
            shapes[module + ".weight"] = (out, inp)
        shapes[f"model.layers.{layer}.input_layernorm.weight"] = (C,)
        shapes[f"model.layers.{layer}.post_attention_layernorm.weight"] = (C,)
    shapes["model.norm.weight"] = (C,)
    shapes["lm_head.weight"] = (V, C)
    return shapes


def adapted_linears(cfg):
    """(module, out, in) of every linear that gets adapters in the ReLoRA phase."""
    linears = [(module, out, inp)
               for layer in range(cfg["num_layers"])
               for module, out, inp in layer_linears(cfg, layer)
               if module.rsplit(".", 1)[1] in cfg["targets"]]
    if cfg["embeddings"] == "lora":
        linears.append(("lm_head", cfg["vocab_size"], cfg["hidden_size"]))
    return linears


def is_norm(name):
    return name.endswith("norm.weight")


def relora_trainable(cfg, params):
    """Names that train in the ReLoRA phase: adapters, norms, and embedding and lm_head
    when relora.embeddings is full."""
    full = {EMBEDDING + ".weight", "lm_head.weight"} if cfg["embeddings"] == "full" else set()
    return [n for n in params if "/" in n or is_norm(n) or n in full]


# ---- forward --------------------------------------------------------------------------


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, params, module, scale):
    y = F.linear(x, params[module + ".weight"])
    if module + "/A" in params:
        y = y + scale * F.linear(F.linear(x, params[module + "/A"]), params[module + "/B"])
    return y


def embed(tokens, params, scale):
    """tokens(N) -> (N,C)."""
    out = params[EMBEDDING + ".weight"][tokens]
    if EMBEDDING + "/A" in params:
        a_columns = params[EMBEDDING + "/A"][:, tokens].t()  # (N,r)
        out = out + scale * F.linear(a_columns, params[EMBEDDING + "/B"])
    return out


def rope_tables(T, D, theta, dtype):
    """cos, sin (T, D/2): angle(t, i) = t * theta^(-2i/D), computed in float64."""
    inverse_frequency = theta ** (-2.0 * torch.arange(D // 2, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inverse_frequency[None, :]
    return angle.cos().to(dtype), angle.sin().to(dtype)


def rope(x, cos, sin):
    """x(B,T,H,D): each pair (i, i + D/2) rotated, (a, b) -> (a cos - b sin, b cos + a sin)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def attention(q, k, v):
    """q, k, v(B,T,H,D) -> (B,T,H*D): causal softmax(q k^T / sqrt(D)) v per head."""
    B, T, H, D = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B,H,T,D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    probabilities = scores.masked_fill(future, float("-inf")).softmax(-1)
    return (probabilities @ v).transpose(1, 2).reshape(B, T, H * D)


def forward(params, inputs, cfg, rope_cos, rope_sin):
    """inputs(B,T) -> logits(B*T,V)."""
    B, T = inputs.shape
    C, H, eps = cfg["hidden_size"], cfg["num_heads"], cfg["rms_norm_eps"]
    scale = cfg["alpha"] / cfg["rank"]
    x = embed(inputs.reshape(-1), params, scale).view(B, T, C)
    for layer in range(cfg["num_layers"]):
        pre = f"model.layers.{layer}."
        n = rmsnorm(x, params[pre + "input_layernorm.weight"], eps)
        q, k, v = (linear(n, params, pre + "self_attn." + p, scale).view(B, T, H, C // H)
                   for p in ("q_proj", "k_proj", "v_proj"))
        y = attention(rope(q, rope_cos, rope_sin), rope(k, rope_cos, rope_sin), v)
        x = x + linear(y, params, pre + "self_attn.o_proj", scale)
        n = rmsnorm(x, params[pre + "post_attention_layernorm.weight"], eps)
        gate = linear(n, params, pre + "mlp.gate_proj", scale)
        up = linear(n, params, pre + "mlp.up_proj", scale)
        x = x + linear(F.silu(gate) * up, params, pre + "mlp.down_proj", scale)
    x = rmsnorm(x, params["model.norm.weight"], eps)
    return linear(x, params, "lm_head", scale).view(B * T, cfg["vocab_size"])


# ---- optimizer and ReLoRA -------------------------------------------------------------


def clip_gradients(grads, max_norm):
    """Global L2 norm of grads (before clipping); scales them by max_norm/norm in place when
    max_norm > 0 and the norm exceeds it."""
    squares = sum(torch.linalg.vector_norm(g, dtype=torch.float64).item() ** 2 for g in grads)
    norm = math.sqrt(squares)
    if max_norm > 0 and norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


class AdamState:
    def __init__(self, like):
        self.exp_avg = torch.zeros_like(like)
        self.exp_avg_sq = torch.zeros_like(like)
        self.step = 0


class AdamW:
    """AdamW with state per tensor name, created at a tensor's first update."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.states = {}

    @torch.no_grad()
    def step(self, params, grads, lr):
        """params: name -> tensor, updated in place; grads: name -> gradient."""
        b1, b2, eps = self.cfg["beta1"], self.cfg["beta2"], self.cfg["eps"]
        for name, p in params.items():
            g = grads[name]
            s = self.states.setdefault(name, AdamState(p))
            s.step += 1
            s.exp_avg.mul_(b1).add_(g, alpha=1 - b1)
            s.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = s.exp_avg / (1 - b1 ** s.step)
            v_hat = s.exp_avg_sq / (1 - b2 ** s.step)
            decay = 0.0 if is_norm(name) else self.cfg["weight_decay"]
            p.sub_(lr * (m_hat / (v_hat.sqrt() + eps) + decay * p))

    def retain_only(self, names):
        self.states = {n: s for n, s in self.states.items() if n in names}


def prune_moments(state, fraction):
    """Zeroes both moments at the floor(fraction * n) smallest |exp_avg| (ties: lower index
    first); keeps the step. Returns the relative gap between the largest pruned and the
    smallest kept magnitude (1 when that is 0: the pruned ones are 0 too, so the mask does
    not matter)."""
    n = state.exp_avg.numel()
    pruned = round(fraction * 1e6) * n // 1000000  # the fraction as written, e.g. 0.99
    magnitude = state.exp_avg.abs().reshape(-1).numpy()
    order = np.argsort(magnitude, kind="stable")
    gap = 1.0
    if 0 < pruned < n and magnitude[order[pruned]] > 0:
        largest_pruned, smallest_kept = magnitude[order[pruned - 1]], magnitude[order[pruned]]
        gap = (smallest_kept - largest_pruned) / smallest_kept
    zero = torch.from_numpy(order[:pruned])
    state.exp_avg.view(-1)[zero] = 0
    state.exp_avg_sq.view(-1)[zero] = 0
    return gap


@torch.no_grad()
def merge_adapters(params, cfg):
    """W += s B A for every adapted linear; the embedding E += s (B A)^T."""
    scale = cfg["alpha"] / cfg["rank"]
    for module, _, _ in adapted_linears(cfg):
        params[module + ".weight"] += scale * params[module + "/B"] @ params[module + "/A"]
    if cfg["embeddings"] == "lora":
        delta = params[EMBEDDING + "/B"] @ params[EMBEDDING + "/A"]  # (C,V)
        params[EMBEDDING + ".weight"] += scale * delta.t()


def adapter_shapes(cfg):
    """Adapter name -> shape: A(r,in), B(out,r); the embedding's A(r,V), B(C,r)."""
    r = cfg["rank"]
    shapes = {}
    for module, out, inp in adapted_linears(cfg):
        shapes[module + "/A"] = (r, inp)
        shapes[module + "/B"] = (out, r)
    if cfg["embeddings"] == "lora":
        shapes[EMBEDDING + "/A"] = (r, cfg["vocab_size"])
        shapes[EMBEDDING + "/B"] = (cfg["hidden_size"], r)
    return shapes


def fresh_adapters(cfg, generator):
    """Adapters as the C++ (re-)initialises them: A ~ U(+-1/sqrt(in)), B = 0 for linears;
    PEFT's A = 0, B ~ N(0,1) for the embedding. Float32."""
    adapters = {}
    for name, shape in adapter_shapes(cfg).items():
        if name.startswith(EMBEDDING):
            adapters[name] = (torch.zeros(shape) if name.endswith("/A")
                              else torch.randn(shape, generator=generator))
        elif name.endswith("/A"):
            bound = 1 / math.sqrt(shape[1])
            adapters[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        else:
            adapters[name] = torch.zeros(shape)
    return adapters


# ---- fixtures -------------------------------------------------------------------------

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FIXTURE_NAME = "llama_small"
FIXTURE_SEED = 20240620
# Every target but k_proj, so a frozen projection without adapters is covered too.
FIXTURE_CONFIG = {
    "vocab_size": 37, "hidden_size": 16, "num_layers": 2, "num_heads": 2,
    "intermediate_size": 24, "seq_len": 8, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "batch": 2, "rank": 4, "alpha": 8.0, "embeddings": "lora",
    "targets": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "optimizer_prune": 0.99, "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
    "weight_decay": 0.1, "grad_clip": 3.5,
}
# |cpp - ref| <= RTOL |ref| + ATOL * max|ref over the array|: the absolute part scales with
# the array, so a gradient of order 1e-3 is held as tightly as a logit of order 1.
RTOL, ATOL = 1e-4, 1e-5
# The pruning mask must not depend on float32 rounding: the kept and pruned |exp_avg| of
# every adapter are at least this far apart (relative).
PRUNE_GAP = 1e-3


def float32_config(cfg):
    """The config with every float rounded to float32, the values the C++ computes with."""
    return {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in cfg.items()}


def fixture_inputs(cfg):
    """The float32 inputs the fixture supplies: tokens, every initial weight, the adapters
    of the ReLoRA phase (B != 0 and the embedding's A != 0) and those after the restart."""
    g = torch.Generator().manual_seed(FIXTURE_SEED)
    B, T = cfg["batch"], cfg["seq_len"]
    windows = torch.randint(cfg["vocab_size"], (B, T + 1), generator=g)
    given = {"inputs": windows[:, :-1].contiguous(), "targets": windows[:, 1:].contiguous()}
    for name, shape in base_shapes(cfg).items():
        if is_norm(name):
            given["init/" + name] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            given["init/" + name] = 0.3 * torch.randn(shape, generator=g)
    for name, shape in adapter_shapes(cfg).items():
        if name.endswith("/A") and not name.startswith(EMBEDDING):
            bound = 1 / math.sqrt(shape[1])
            given["relora/init/" + name] = (torch.rand(shape, generator=g) * 2 - 1) * bound
        else:
            given["relora/init/" + name] = 0.2 * torch.randn(shape, generator=g)
    for name, value in fresh_adapters(cfg, g).items():
        if value.any():  # the drawn halves; the C++ zeroes the others itself
            given["restart/fresh/" + name] = value
    return given


def loss_and_gradients(params, trainable, given, cfg, rope_cos, rope_sin):
    """Mean loss, logits and the gradient of every trainable tensor on the fixture batch."""
    leaves = {n: params[n].detach().requires_grad_(n in trainable) for n in params}
    logits = forward(leaves, given["inputs"], cfg, rope_cos, rope_sin)
    loss = F.cross_entropy(logits, given["targets"].reshape(-1))
    grads = torch.autograd.grad(loss, [leaves[n] for n in trainable])
    return loss.detach(), logits.detach(), dict(zip(trainable, grads))


def run_timeline(cfg, given, dtype):
    """The fixture's timeline computed in dtype. Returns (arrays by name, checks): the
    arrays the C++ test compares, and the facts the fixture relies on."""
    out, checks = {}, {}
    rope_cos, rope_sin = rope_tables(cfg["seq_len"], cfg["hidden_size"] // cfg["num_heads"],
                                     cfg["rope_theta"], dtype)
    params = {n: given["init/" + n].to(dtype, copy=True) for n in base_shapes(cfg)}
    adam = AdamW(cfg)

    def update(stage, trainable, record_gradients):
        """One AdamW update of the trainable tensors: records the loss, the gradient norm
        and, if asked, the logits and the gradients before clipping."""
        loss, logits, grads = loss_and_gradients(params, trainable, given, cfg, rope_cos, rope_sin)
        out[stage + "/loss"] = loss
        if record_gradients:
            out[stage + "/logits"] = logits
            out.update({stage + "/grad/" + n: g.clone() for n, g in grads.items()})
        norm = clip_gradients(list(grads.values()), cfg["grad_clip"])
        out[stage + "/grad_norm"] = torch.tensor(norm, dtype=torch.float64)
        checks[stage + " clipped"] = norm > cfg["grad_clip"]
        adam.step({n: params[n] for n in trainable}, grads, cfg["lr"])

    # full-rank phase: every tensor trains
    update("full", list(params), record_gradients=True)
    out.update({"full/after_step/" + n: params[n].clone() for n in params})

    # ReLoRA phase with the given adapters; frozen tensors drop their Adam state
    params.update({n: given["relora/init/" + n].to(dtype, copy=True)
                   for n in adapter_shapes(cfg)})
    trainable = relora_trainable(cfg, params)
    adam.retain_only(trainable)
    update("relora", trainable, record_gradients=True)
    update("relora/step2", trainable, record_gradients=False)
    for n in trainable:
        out["relora/after_steps/" + n] = params[n].clone()
        out["relora/exp_avg/" + n] = adam.states[n].exp_avg.clone()
        out["relora/exp_avg_sq/" + n] = adam.states[n].exp_avg_sq.clone()

    # merge-and-restart: merged weights, the supplied fresh adapters, pruned moments
    merge_adapters(params, cfg)
    for name in adapter_shapes(cfg):
        fresh = given.get("restart/fresh/" + name)
        params[name] = (fresh.to(dtype, copy=True) if fresh is not None
                        else torch.zeros_like(params[name]))
        state = adam.states[name]
        checks["prune gap " + name] = prune_moments(state, cfg["optimizer_prune"])
        out["restart/exp_avg/" + name] = state.exp_avg.clone()
        out["restart/exp_avg_sq/" + name] = state.exp_avg_sq.clone()
        out["restart/adam_step/" + name] = torch.tensor(state.step, dtype=torch.int32)
    merged = [m + ".weight" for m, _, _ in adapted_linears(cfg)]
    if cfg["embeddings"] == "lora":
        merged.append(EMBEDDING + ".weight")
    out.update({"restart/weight/" + n: params[n].clone() for n in merged})
    update("restart", trainable, record_gradients=False)
    out.update({"restart/after_step/" + n: params[n].clone() for n in trainable})
    return out, checks


def worst_error(actual, expected):
    """(worst |a-b| / (RTOL |b| + ATOL scale), its index, a, b) over an array."""
    a, b = actual.double().reshape(-1), expected.double().reshape(-1)
    allowed = RTOL * b.abs() + ATOL * b.abs().max().clamp(min=1e-30)
    ratio = (a - b).abs() / allowed
    i = int(ratio.argmax())
    return float(ratio[i]), i, float(a[i]), float(b[i])


def write_fixtures():
    torch.set_num_threads(1)
    cfg = float32_config(FIXTURE_CONFIG)
    given = fixture_inputs(cfg)
    truth, checks = run_timeline(cfg, given, torch.float64)
    float32_run, _ = run_timeline(cfg, given, torch.float32)

    problems = []
    if not checks["relora clipped"] or checks["relora/step2 clipped"]:
        problems.append("grad_clip must clip the first ReLoRA update and not the second")
    problems += [f"{k} = {v:.2e} < {PRUNE_GAP}" for k, v in checks.items()
                 if k.startswith("prune gap") and v < PRUNE_GAP]
    worst = max((worst_error(float32_run[n], truth[n]) + (n,) for n in truth
                 if truth[n].is_floating_point()), key=lambda w: w[0])
    print(f"float32 PyTorch vs float64 reference: worst error {worst[0]:.3f} of the tolerance "
          f"at {worst[4]}[{worst[1]}] ({worst[2]:.9g} vs {worst[3]:.9g})")
    if worst[0] > 1:
        problems.append("a float32 run exceeds the tolerance: the fixture is ill-conditioned")
    if problems:
        sys.exit("llama_ref.py: " + "; ".join(problems))

    arrays = {**given, **truth}
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    index_lines = [
        "# Fixtures written by tests/reference/llama_ref.py --fixtures (PyTorch, float64,",
        "# stored as float32), compared by tests/test_reference.cpp. Lines:",
        "#   config <key> <value>",
        "#   array <name> <f32|i32> <byte offset in llama_small.bin> <dims...> (none: a scalar)",
        "# Arrays are little-endian and row-major; names are <stage>/<what>/<HF tensor name>.",
        f"# Tolerance: |cpp - ref| <= {RTOL} |ref| + {ATOL} max|ref over the array|.",
    ]
    for key, value in cfg.items():
        text = ",".join(value) if isinstance(value, list) else str(
            np.float32(value) if isinstance(value, float) else value)
        index_lines.append(f"config {key} {text}")
    offset = 0
    with open(os.path.join(FIXTURE_DIR, FIXTURE_NAME + ".bin"), "wb") as blob:
        for name, tensor in arrays.items():
            is_float = tensor.is_floating_point()
            data = tensor.detach().numpy().astype("<f4" if is_float else "<i4")
            blob.write(data.tobytes())
            dtype = "f32" if is_float else "i32"
            fields = [name, dtype, str(offset)] + [str(d) for d in data.shape]
            index_lines.append("array " + " ".join(fields))
            offset += data.nbytes
    with open(os.path.join(FIXTURE_DIR, FIXTURE_NAME + ".txt"), "w") as index:
        index.write("\n".join(index_lines) + "\n")
    print(f"wrote {len(arrays)} arrays ({offset} bytes) to {FIXTURE_DIR}/{FIXTURE_NAME}.txt/.bin")


# ---- benchmark ------------------------------------------------------------------------


def model_flops_per_token(cfg, relora_phase):
    """Matrix-product FLOPs of one training step per token, as `relora bench` counts them
    (src/model/llama.cpp): 2*m*n*k per forward product, as much again for the gradient of
    each of its inputs, and again for the weight gradient when the weight trains (a frozen
    W0 has none; adapters always train). Per token, a linear in->out costs 6*in*out trained
    or 4*in*out frozen, plus 6*r*(in+out) with adapters; attention's q k^T and att v count
    in full, 12*T*C per layer; the embedding is a gather, its adapter's product 6*r*C."""
    V, C, T, r = cfg["vocab_size"], cfg["hidden_size"], cfg["seq_len"], cfg["rank"]
    adapters_on = relora_phase and r > 0

    def linear_flops(inp, out, weight_trains, adapted):
        return 2 * inp * out * (3 if weight_trains else 2) + (6 * r * (inp + out) if adapted else 0)

    total = cfg["num_layers"] * 12 * T * C
    for layer in range(cfg["num_layers"]):
        for module, out, inp in layer_linears(cfg, layer):
            adapted = adapters_on and module.rsplit(".", 1)[1] in cfg["targets"]
            total += linear_flops(inp, out, not adapters_on, adapted)
    embeddings_adapted = adapters_on and cfg["embeddings"] == "lora"
    head_trains = not adapters_on or cfg["embeddings"] == "full"
    total += linear_flops(C, V, head_trains, embeddings_adapted)
    return total + (6 * r * C if embeddings_adapted else 0)


# The config keys the benchmark reads, with their types (PyYAML reads 1e-6 as a string).
BENCH_KEYS = {
    "model": {"vocab_size": int, "hidden_size": int, "num_layers": int, "num_heads": int,
              "intermediate_size": int, "seq_len": int, "rms_norm_eps": float,
              "rope_theta": float, "init_std": float},
    "relora": {"rank": int, "alpha": float, "targets": list, "embeddings": str},
    "optimizer": {"lr": float, "beta1": float, "beta2": float, "eps": float,
                  "weight_decay": float, "grad_clip": float},
    "train": {"micro_batch": int, "seed": int, "threads": int},
}


def load_bench_config(path, overrides):
    """The benchmark's keys of a relora config file, with `section.key=value` overrides
    applied (values parsed as YAML, as relora's --set does), flattened to one dict."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    for override in overrides:
        key, _, value = override.partition("=")
        section, _, name = key.partition(".")
        doc.setdefault(section, {})[name] = yaml.safe_load(value)
    cfg = {}
    for section, keys in BENCH_KEYS.items():
        for key, kind in keys.items():
            if key not in doc.get(section, {}):
                sys.exit(f"llama_ref.py: {path}: {section}.{key} is missing")
            cfg[key] = kind(doc[section][key])
    return cfg


def cpu_device_name():
    """"cpu (<model name>)" from /proc/cpuinfo, as relora bench writes it, or "cpu"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    name = "".join(c for c in line.split(":", 1)[1] if c >= " " and c not in '"\\')
                    return f"cpu ({name.strip()})" if name.strip() else "cpu"
    except OSError:
        pass
    return "cpu"


def peak_matmul_gflops():
    """GFLOP/s of a 2048^3 float32 torch.matmul: one untimed call, then the best of three."""
    size = 2048
    a, b = torch.rand(size, size) * 2 - 1, torch.rand(size, size) * 2 - 1
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def pin_blas_threads(blas_threads):
    """Re-executes this script with OPENBLAS_NUM_THREADS=blas_threads unless it is set so.
    Debian's PyTorch calls the pthreads build of OpenBLAS, whose thread pool
    torch.set_num_threads leaves alone (after set_num_threads(1) a large matmul still runs
    on every core); OpenBLAS reads the variable once, when numpy or torch loads it. Pinned,
    the count is known and can be printed."""
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(blas_threads):
        os.environ["OPENBLAS_NUM_THREADS"] = str(blas_threads)
        os.execv(sys.executable, [sys.executable] + sys.argv)


def bench(args):
    cfg = load_bench_config(args.config, args.set)
    relora_phase = args.phase == "relora"
    if relora_phase and cfg["rank"] == 0:
        sys.exit(f"llama_ref.py: {args.config}: relora.rank is 0, so there is no ReLoRA phase")
    threads = args.threads or cfg["threads"] or len(os.sched_getaffinity(0))
    blas_threads = args.blas_threads or len(os.sched_getaffinity(0))
    pin_blas_threads(blas_threads)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(cfg["seed"])
    params = {n: torch.ones(shape) if is_norm(n)
              else torch.randn(shape, generator=g) * cfg["init_std"]
              for n, shape in base_shapes(cfg).items()}
    if relora_phase:
        params.update(fresh_adapters(cfg, g))
    trainable = relora_trainable(cfg, params) if relora_phase else list(params)
    for n in trainable:
        params[n].requires_grad_(True)
    B, T, V = cfg["micro_batch"], cfg["seq_len"], cfg["vocab_size"]
    rope_cos, rope_sin = rope_tables(T, cfg["hidden_size"] // cfg["num_heads"], cfg["rope_theta"],
                                     torch.float32)
    adam = AdamW(cfg)

    stage_seconds = [0.0, 0.0, 0.0]  # forward, backward, optimizer

    def train_step(timed):
        windows = torch.randint(V, (B, T + 1), generator=g)
        for n in trainable:
            params[n].grad = None
        start = time.perf_counter()
        logits = forward(params, windows[:, :-1], cfg, rope_cos, rope_sin)
        loss = F.cross_entropy(logits, windows[:, 1:].reshape(-1))
        after_forward = time.perf_counter()
        loss.backward()
        after_backward = time.perf_counter()
        grads = {n: params[n].grad for n in trainable}
        clip_gradients(list(grads.values()), cfg["grad_clip"])
        adam.step({n: params[n] for n in trainable}, grads, cfg["lr"])
        end = time.perf_counter()
        if timed:
            stage_seconds[0] += after_forward - start
            stage_seconds[1] += after_backward - after_forward
            stage_seconds[2] += end - after_backward

    for _ in range(args.warmup):
        train_step(False)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(True)
    wall = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the matmul
    peak = peak_matmul_gflops()

    tokens_per_step = B * T
    tokens_per_s = tokens_per_step * args.steps / wall
    flops = model_flops_per_token(cfg, relora_phase)
    achieved = flops * tokens_per_s / 1e9
    result = {
        "phase": args.phase, "tokens_per_step": tokens_per_step,
        "tokens_per_s": round(tokens_per_s, 1), "step_ms": round(1e3 * wall / args.steps, 2),
        "forward_ms": round(1e3 * stage_seconds[0] / args.steps, 2),
        "backward_ms": round(1e3 * stage_seconds[1] / args.steps, 2),
        "optimizer_ms": round(1e3 * stage_seconds[2] / args.steps, 2), "comm_ms": 0.0,
        "model_flops_per_token": flops, "achieved_gflops": round(achieved, 2),
        "peak_gflops": round(peak, 2), "mfu": round(achieved / peak, 4),
        "threads": torch.get_num_threads(), "blas_threads": blas_threads, "world_size": 1,
        "device": cpu_device_name(),
        "peak_mem_bytes": peak_rss,
    }
    print(json.dumps(result, separators=(",", ":")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fixtures", action="store_true", help="write tests/reference/fixtures/")
    mode.add_argument("--bench", action="store_true", help="time training steps, print JSON")
    parser.add_argument("--config", help="relora config file (--bench)")
    parser.add_argument("--phase", choices=("full", "relora"), default="full")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: train.threads, else the affinity mask)")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="OpenBLAS threads (default: the affinity mask, as OpenBLAS "
                        "does by itself)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    if args.fixtures:
        write_fixtures()
    elif not args.config:
        parser.error("--bench needs --config")
    elif args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    else:
        bench(args)


if __name__ == "__main__":
    main()

// LLaMA forward and backward over the op set, parameter registry, ReLoRA phase changes.
#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/errors.h"
#include "core/rng.h"

namespace relora {

namespace {
const char* const kAttnProjs[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
const char* const kMlpProjs[] = {"gate_proj", "up_proj", "down_proj"};
}  // namespace

// One transformer block: its parameters (through LoraLinear) and its saved activations.
struct Llama::Block {
  Param* norm1 = nullptr;  // input_layernorm (C)
  Param* norm2 = nullptr;  // post_attention_layernorm (C)
  std::unique_ptr<LoraLinear> q, k, v, o, gate, up, down;
  // saved for backward, N = max_batch * T rows. With recompute, only x is the block's own:
  // the others share one set of buffers with every block and are recomputed in backward.
  // With bf16 storage, x and the other (N,C) and (N,F) tensors are one fp32 working set
  // shared by every block, and the block keeps bf16 words of what backward needs.
  Tensor x;           // (N,C) block input
  Tensor rstd1;       // (N)
  Tensor n1;          // (N,C) rmsnorm1(x)
  Tensor q_act, k_act, v_act;  // (N,C) q, k after RoPE; v
  Tensor att;         // attention_saved_floats(B,T,H): what attention backward needs
  Tensor y;           // (N,C) attention output (input of o_proj)
  Tensor h;           // (N,C) x + o_proj(y)
  Tensor rstd2;       // (N)
  Tensor n2;          // (N,C) rmsnorm2(h)
  Tensor g, u, act;   // (N,F) gate, up, silu(g) * u
  // bf16 storage: words[i] (bf16, the shape of *kept[i]) keeps *kept[i] for backward
  std::vector<Tensor*> kept;
  std::vector<Tensor> words;

  // the (N,C) and (N,F) tensors besides x, and the small ones
  std::vector<Tensor*> wide() { return {&n1, &q_act, &k_act, &v_act, &y, &h, &n2, &g, &u, &act}; }
  std::vector<Tensor*> narrow() { return {&rstd1, &rstd2, &att}; }
  std::vector<LoraLinear*> linears() {
    return {q.get(), k.get(), v.get(), o.get(), gate.get(), up.get(), down.get()};
  }
};

TrainableCounts count_trainable(const ModelConfig& model, const ReloraConfig& relora) {
  const int64_t V = model.vocab_size, C = model.hidden_size, F = model.intermediate_size,
                L = model.num_layers, r = relora.rank;
  TrainableCounts counts;
  const int64_t norms = (2 * L + 1) * C;
  counts.full_phase = 2 * V * C + L * (4 * C * C + 3 * C * F) + norms;
  if (r == 0) {
    counts.relora_phase = counts.full_phase;  // no adapters: full-rank throughout
    return counts;
  }
  int64_t adapters_per_layer = 0;
  for (const std::string& t : relora.targets) {
    const bool to_mlp = t == "gate_proj" || t == "up_proj";
    const bool from_mlp = t == "down_proj";
    const int64_t in = from_mlp ? F : C, out = to_mlp ? F : C;
    adapters_per_layer += r * (in + out);
  }
  counts.relora_phase = norms + L * adapters_per_layer;
  if (relora.embeddings == "lora") counts.relora_phase += 2 * r * (V + C);
  if (relora.embeddings == "full") counts.relora_phase += 2 * V * C;
  return counts;
}

int64_t model_flops_per_token(const ModelConfig& model, const ReloraConfig& relora,
                              bool relora_phase) {
  const int64_t V = model.vocab_size, C = model.hidden_size, F = model.intermediate_size,
                L = model.num_layers, T = model.seq_len, r = relora.rank;
  const bool adapters_on = relora_phase && r > 0;
  // One linear in->out: the forward product, its input gradient, and the weight gradient
  // when the weight trains; adapters add x A^T and (x A^T) B^T with all three products.
  auto linear = [&](int64_t in, int64_t out, bool weight_trains, bool adapted) {
    return 2 * in * out * (weight_trains ? 3 : 2) + (adapted ? 3 * 2 * r * (in + out) : 0);
  };
  auto is_target = [&](const std::string& projection) {
    return std::find(relora.targets.begin(), relora.targets.end(), projection) !=
           relora.targets.end();
  };
  int64_t per_layer = 3 * (2 + 2) * T * C;  // attention: q k^T and att v, each 2*T*C per head row
  for (const char* p : kAttnProjs) per_layer += linear(C, C, !adapters_on, adapters_on && is_target(p));
  for (const char* p : kMlpProjs) {
    const bool down = std::string(p) == "down_proj";
    per_layer += linear(down ? F : C, down ? C : F, !adapters_on, adapters_on && is_target(p));
  }
  const std::string& embeddings = relora.embeddings;
  const bool head_trains = !adapters_on || embeddings == "full";
  const bool embeddings_adapted = adapters_on && embeddings == "lora";
  const int64_t head = linear(C, V, head_trains, embeddings_adapted);
  const int64_t embedding = embeddings_adapted ? 3 * 2 * r * C : 0;
  return L * per_layer + head + embedding;
}

int64_t product_scratch_words(const ModelConfig& model, const Ops& ops, int max_batch, int rank) {
  const int N = max_batch * model.seq_len, C = model.hidden_size, F = model.intermediate_size,
            V = model.vocab_size;
  if (!ops.products_on_words()) return 0;
  int64_t most = 0;
  // every LoraLinear in -> out, with adapters of the rank (any may have them: the most)
  const std::pair<int, int> linears[] = {{C, C}, {C, F}, {F, C}, {C, V}};
  for (const auto& [in, out] : linears)
    most = std::max(most, LoraLinear::words_for_products(N, in, out, rank));
  return most;
}

Llama::Llama(const ModelConfig& model, const ReloraConfig& relora, Ops& ops, int max_batch,
             ActivationStorage storage)
    : cfg_(model), relora_(relora), ops_(ops), max_batch_(max_batch), activation_storage_(storage) {
  const int64_t V = cfg_.vocab_size, C = cfg_.hidden_size, F = cfg_.intermediate_size,
                T = cfg_.seq_len, H = cfg_.num_heads, B = max_batch, N = B * T;
  RELORA_CHECK(C % H == 0 && (C / H) % 2 == 0, "hidden " << C << " heads " << H);
  // masters on the host merge on the CPU backend: make it now, so that a problem with it
  // shows at start-up, not at the first restart hours later
  if (relora_.master_on_host && ops_.device() != Device::cpu) host_ops();
  const int rows = static_cast<int>(N);
  const Device dev = ops_.device();
  // A block's activations: its own, or one set shared by all blocks (a Tensor copy shares
  // the storage). With recompute all but the input are shared; with bf16 storage the input
  // and the wide ones are, and the block keeps bf16 words of them.
  const bool recompute = storage.recompute, bf16 = storage.bf16;
  Block shared;
  auto place = [&](Block& blk, bool share_x, bool share_wide, bool share_narrow) {
    blk.x = share_x ? shared.x : Tensor::zeros({N, C}, dev);
    const std::vector<Tensor*> wide = blk.wide(), narrow = blk.narrow();
    const std::vector<Tensor*> shared_wide = shared.wide(), shared_narrow = shared.narrow();
    for (size_t i = 0; i < wide.size(); ++i)  // 7 (N,C), then 3 (N,F)
      *wide[i] = share_wide ? *shared_wide[i] : Tensor::zeros({N, i < 7 ? C : F}, dev);
    const int64_t saved = ops_.attention_saved_floats(max_batch, cfg_.seq_len, cfg_.num_heads);
    for (size_t i = 0; i < narrow.size(); ++i)  // rstd1, rstd2 (N); att
      *narrow[i] = share_narrow ? *shared_narrow[i] : Tensor::zeros({i < 2 ? N : saved}, dev);
  };
  if (recompute || bf16) place(shared, false, false, false);

  const int64_t words = product_scratch_words(cfg_, ops_, max_batch, relora.rank);
  if (words > 0) product_words_ = Tensor::zeros({words}, dev, DType::bf16);
  uint16_t* product_words = words > 0 ? product_words_.bf16() : nullptr;
  embed_ = add_param("model.embed_tokens.weight", {V, C}, false);
  embedding_ = std::make_unique<LoraEmbedding>(embed_, rows);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    auto blk = std::make_unique<Block>();
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto linear = [&](const std::string& module, int64_t out, int64_t in) {
      Param* w = add_param(module + ".weight", {out, in}, false);
      return std::make_unique<LoraLinear>(module, w, rows, product_words);
    };
    blk->q = linear(pre + "self_attn.q_proj", C, C);
    blk->k = linear(pre + "self_attn.k_proj", C, C);
    blk->v = linear(pre + "self_attn.v_proj", C, C);
    blk->o = linear(pre + "self_attn.o_proj", C, C);
    blk->gate = linear(pre + "mlp.gate_proj", F, C);
    blk->up = linear(pre + "mlp.up_proj", F, C);
    blk->down = linear(pre + "mlp.down_proj", C, F);
    blk->norm1 = add_param(pre + "input_layernorm.weight", {C}, true);
    blk->norm2 = add_param(pre + "post_attention_layernorm.weight", {C}, true);
    place(*blk, bf16, recompute || bf16, recompute);
    if (bf16) {
      blk->kept = {&blk->x};
      if (!recompute)
        for (Tensor* t : blk->wide()) blk->kept.push_back(t);
      for (Tensor* t : blk->kept) blk->words.push_back(Tensor::zeros(t->shape(), dev, DType::bf16));
    }
    blocks_.push_back(std::move(blk));
  }
  final_norm_ = add_param("model.norm.weight", {C}, true);
  lm_head_w_ = add_param("lm_head.weight", {V, C}, false);
  lm_head_ = std::make_unique<LoraLinear>("lm_head", lm_head_w_, rows, product_words);
  for (auto& p : storage_) p->set_role(Role::full);
  rebuild_param_list();

  std::vector<float> cos(static_cast<size_t>(T * (C / H / 2))), sin(cos.size());
  rope_tables(cos.data(), sin.data(), static_cast<int>(T), static_cast<int>(C / H), cfg_.rope_theta);
  rope_cos_ = Tensor::zeros({T, C / H / 2}, dev);
  rope_sin_ = Tensor::zeros({T, C / H / 2}, dev);
  rope_cos_.copy_from_host(cos.data());
  rope_sin_.copy_from_host(sin.data());
  inputs_ = Tensor::zeros({N}, dev, DType::i32);
  targets_ = Tensor::zeros({N}, dev, DType::i32);
  token_order_ = Tensor::zeros({N}, dev, DType::i32);
  token_order_host_.resize(static_cast<size_t>(N));
  final_rstd_ = Tensor::zeros({N}, dev);
  final_norm_out_ = Tensor::zeros({N, C}, dev);
  residual_out_ = Tensor::zeros({N, C}, dev);
  logits_ = Tensor::zeros({N, V}, dev);
  losses_ = Tensor::zeros({N}, dev);
  for (Tensor* t : {&d_res_, &d_tmp_, &d_q_, &d_k_, &d_v_, &d_attn_}) *t = Tensor::zeros({N, C}, dev);
  for (Tensor* t : {&d_g_, &d_u_, &d_act_}) *t = Tensor::zeros({N, F}, dev);
  att_scratch_ = Tensor::zeros({attention_scratch_floats()}, dev);
}

Llama::~Llama() = default;

Param* Llama::add_param(const std::string& name, std::vector<int64_t> shape, bool is_norm) {
  auto p = std::make_unique<Param>();
  p->name = name;
  p->value = Tensor::zeros(std::move(shape), ops_.device());
  p->is_norm = is_norm;
  storage_.push_back(std::move(p));
  return storage_.back().get();
}

void Llama::rebuild_param_list() {
  // HF state-dict order; each adapter pair right after its module's weight.
  params_.clear();
  auto add_linear = [&](LoraLinear* lin) {
    params_.push_back(lin->weight());
    if (lin->has_adapters()) {
      params_.push_back(lin->lora_a());
      params_.push_back(lin->lora_b());
    }
  };
  params_.push_back(embed_);
  if (embedding_->has_adapters()) {
    params_.push_back(embedding_->lora_a());
    params_.push_back(embedding_->lora_b());
  }
  for (auto& blk : blocks_) {
    for (LoraLinear* lin : blk->linears()) add_linear(lin);
    params_.push_back(blk->norm1);
    params_.push_back(blk->norm2);
  }
  params_.push_back(final_norm_);
  add_linear(lm_head_.get());
}

Param* Llama::find(const std::string& name) const {
  for (Param* p : params_)
    if (p->name == name) return p;
  return nullptr;
}

std::vector<Param*> Llama::trainable() const {
  std::vector<Param*> out;
  for (Param* p : params_)
    if (p->trainable()) out.push_back(p);
  return out;
}

std::vector<Param*> Llama::adapter_params() const {
  std::vector<Param*> out;
  for (Param* p : params_)
    if (p->role == Role::adapter) out.push_back(p);
  return out;
}

int64_t Llama::num_parameters() const {
  int64_t n = 0;
  for (Param* p : params_)
    if (p->role != Role::adapter) n += p->value.numel();
  return n;
}

void Llama::init_weights(uint64_t seed) {
  std::vector<float> host;  // drawn on the host: the same numbers on every backend
  for (Param* p : params_) {
    if (p->role == Role::adapter) continue;
    if (p->is_norm) {
      p->value.fill(1.0f);
    } else {
      host.resize(static_cast<size_t>(p->value.numel()));
      fill_normal(host.data(), p->value.numel(), 0.0f, cfg_.init_std,
                  RngKey{seed, RngPurpose::init, tensor_id(p->name), 0});
      p->value.copy_from_host(host.data());
    }
  }
}

void Llama::enter_relora_phase(const AdapterInit& init) {
  RELORA_CHECK(relora_.rank > 0, "enter_relora_phase with rank 0");
  RELORA_CHECK(!relora_phase_, "already in the ReLoRA phase");
  const int64_t r = relora_.rank;
  const float scale = relora_.alpha / static_cast<float>(relora_.rank);
  auto is_target = [&](const std::string& module) {
    for (const std::string& t : relora_.targets)
      if (module.size() >= t.size() && module.compare(module.size() - t.size(), t.size(), t) == 0)
        return true;
    return false;
  };
  // relora.master_on_host on a device: every block projection is frozen from here on; each
  // one's fp32 master moves to pinned host memory and a bf16 copy stays for the products.
  // Before the adapters arrive: the device memory this frees is there for them.
  if (relora_.master_on_host && ops_.device() != Device::cpu) {
    const int64_t widest = std::max(cfg_.hidden_size, cfg_.intermediate_size);
    weight_words_scratch_ = Tensor::zeros({static_cast<int64_t>(max_batch_) * cfg_.seq_len * widest},
                                          ops_.device(), DType::bf16);
    for (auto& blk : blocks_)
      for (LoraLinear* lin : blk->linears()) {
        lin->weight()->set_role(Role::frozen);
        lin->keep_master_on_host(ops_, weight_words_scratch_.bf16());
      }
  }
  auto adapt = [&](LoraLinear* lin) {
    lin->weight()->set_role(Role::frozen);
    Param* a = add_param(lin->module() + "/A", {r, lin->in_features()}, false);
    Param* b = add_param(lin->module() + "/B", {lin->out_features(), r}, false);
    a->set_role(Role::adapter);
    b->set_role(Role::adapter);
    lin->attach(a, b, scale);
    lin->init_adapters(init);
  };
  // Projections: targets get adapters; the others freeze too (only adapters, norms and,
  // with embeddings: full, the embedding and lm_head train in the ReLoRA phase).
  for (auto& blk : blocks_)
    for (LoraLinear* lin : blk->linears()) {
      if (is_target(lin->module()))
        adapt(lin);
      else
        lin->weight()->set_role(Role::frozen);
    }
  if (relora_.embeddings == "lora") {
    adapt(lm_head_.get());
    embed_->set_role(Role::frozen);
    Param* a = add_param("model.embed_tokens/A", {r, cfg_.vocab_size}, false);
    Param* b = add_param("model.embed_tokens/B", {cfg_.hidden_size, r}, false);
    a->set_role(Role::adapter);
    b->set_role(Role::adapter);
    embedding_->attach(a, b, scale);
    embedding_->init_adapters(init);
  } else if (relora_.embeddings == "frozen") {
    embed_->set_role(Role::frozen);
    lm_head_w_->set_role(Role::frozen);
  }  // "full": both keep training full-rank
  lora_scratch_ = Tensor::zeros({static_cast<int64_t>(max_batch_) * cfg_.seq_len, r}, ops_.device());
  relora_phase_ = true;
  rebuild_param_list();
}

void Llama::refresh_bf16_weights() {
  for (auto& blk : blocks_)
    for (LoraLinear* lin : blk->linears()) lin->refresh_bf16_weight();
}

void Llama::merge_and_reinit(const AdapterInit& init) {
  RELORA_CHECK(relora_phase_, "merge outside the ReLoRA phase");
  auto redo = [&](LoraLinear* lin) {
    if (!lin->has_adapters()) return;
    lin->merge(ops_);
    lin->init_adapters(init);
  };
  for (auto& blk : blocks_)
    for (LoraLinear* lin : blk->linears()) redo(lin);
  redo(lm_head_.get());
  if (embedding_->has_adapters()) {
    embedding_->merge(ops_);
    embedding_->init_adapters(init);
  }
}

void Llama::block_forward(Block& b, int B, float* out, bool keep) {
  const int T = cfg_.seq_len, C = cfg_.hidden_size, H = cfg_.num_heads, D = C / H, N = B * T;
  const int64_t NC = static_cast<int64_t>(N) * C, NF = static_cast<int64_t>(N) * cfg_.intermediate_size;
  ops_.rmsnorm_forward(b.n1.data(), b.rstd1.data(), b.x.data(), b.norm1->value.data(), N, C,
                       cfg_.rms_norm_eps);
  b.q->forward(ops_, b.n1.data(), b.q_act.data(), N);
  b.k->forward(ops_, b.n1.data(), b.k_act.data(), N);
  b.v->forward(ops_, b.n1.data(), b.v_act.data(), N);
  ops_.rope_forward(b.q_act.data(), rope_cos_.data(), rope_sin_.data(), B, T, H, D);
  ops_.rope_forward(b.k_act.data(), rope_cos_.data(), rope_sin_.data(), B, T, H, D);
  ops_.attention_forward(b.y.data(), b.att.data(), b.q_act.data(), b.k_act.data(), b.v_act.data(),
                         att_scratch_.data(), B, T, H, D);
  b.o->forward(ops_, b.y.data(), b.h.data(), N);
  ops_.axpy(b.h.data(), b.x.data(), NC, 1.0f);
  ops_.rmsnorm_forward(b.n2.data(), b.rstd2.data(), b.h.data(), b.norm2->value.data(), N, C,
                       cfg_.rms_norm_eps);
  b.gate->forward(ops_, b.n2.data(), b.g.data(), N);
  b.up->forward(ops_, b.n2.data(), b.u.data(), N);
  ops_.swiglu_forward(b.act.data(), b.g.data(), b.u.data(), NF);
  if (out == nullptr) return;  // recomputing for backward: the block's output is not needed
  if (keep)
    for (size_t i = 0; i < b.kept.size(); ++i)  // the first B sequences' rows
      ops_.to_bf16(b.words[i].bf16(), b.kept[i]->data(), b.kept[i]->numel() / max_batch_ * B);
  b.down->forward(ops_, b.act.data(), out, N);
  ops_.axpy(out, b.h.data(), NC, 1.0f);
}

double Llama::forward(const int32_t* inputs, const int32_t* targets, int B, bool for_backward,
                      float d_loss_scale) {
  RELORA_CHECK(B >= 1 && B <= max_batch_, "batch " << B << " outside [1, " << max_batch_ << "]");
  const int T = cfg_.seq_len, C = cfg_.hidden_size, N = B * T, V = cfg_.vocab_size;
  // the embedding gradient's walk over the tokens, sorted while a device may still be busy
  // with the previous micro-batch (each upload below waits for it)
  if (for_backward) token_order(token_order_host_.data(), inputs, N);
  inputs_.view(0, {N}).copy_from_host(inputs);
  targets_.view(0, {N}).copy_from_host(targets);
  if (for_backward) token_order_.view(0, {N}).copy_from_host(token_order_host_.data());
  embedding_->forward(ops_, inputs_.i32(), blocks_.empty() ? residual_out_.data() : blocks_[0]->x.data(), N);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    float* out = (l + 1 < blocks_.size()) ? blocks_[l + 1]->x.data() : residual_out_.data();
    block_forward(*blocks_[l], B, out, for_backward);
  }
  ops_.rmsnorm_forward(final_norm_out_.data(), final_rstd_.data(), residual_out_.data(),
                       final_norm_->value.data(), N, C, cfg_.rms_norm_eps);
  lm_head_->forward(ops_, final_norm_out_.data(), logits_.data(), N);
  return ops_.cross_entropy(for_backward ? logits_.data() : nullptr, losses_.data(),
                            logits_.data(), targets_.i32(), N, V, d_loss_scale);
}

void Llama::backward(int B, const GradReadyFn& on_ready) {
  auto ready = [&](std::initializer_list<Param*> ps) {
    if (!on_ready) return;
    for (Param* p : ps)
      if (p && p->trainable()) on_ready(p);
  };
  auto ready_linear = [&](LoraLinear* lin) { ready({lin->weight(), lin->lora_a(), lin->lora_b()}); };
  const int T = cfg_.seq_len, C = cfg_.hidden_size, H = cfg_.num_heads, D = C / H, N = B * T;
  const int64_t NC = static_cast<int64_t>(N) * C, NF = static_cast<int64_t>(N) * cfg_.intermediate_size;
  float* scratch = lora_scratch_.data();
  if (att_scratch_.numel() < attention_scratch_floats())  // the thread count grew
    att_scratch_ = Tensor::zeros({attention_scratch_floats()}, ops_.device());
  auto grad_of = [](Param* p) { return p->trainable() ? p->grad.data() : nullptr; };
  // logits(N,V) -> d final_norm_out (d_tmp_) -> d residual stream (d_res_)
  lm_head_->backward(ops_, final_norm_out_.data(), logits_.data(), d_tmp_.data(), false, scratch, N);
  ops_.rmsnorm_backward(d_res_.data(), grad_of(final_norm_), d_tmp_.data(), residual_out_.data(),
                        final_norm_->value.data(), final_rstd_.data(), N, C);
  ready_linear(lm_head_.get());
  ready({final_norm_});
  float* d_norm = d_q_.data();  // reused once d_q_ is free: d of a norm's output
  for (size_t l = blocks_.size(); l-- > 0;) {
    Block& b = *blocks_[l];
    for (size_t i = 0; i < b.kept.size(); ++i)  // bf16 storage: widen what the block kept
      ops_.from_bf16(b.kept[i]->data(), b.words[i].bf16(), b.kept[i]->numel() / max_batch_ * B);
    if (activation_storage_.recompute) block_forward(b, B, nullptr, false);
    // MLP: out = h + down(silu(g) * u)
    b.down->backward(ops_, b.act.data(), d_res_.data(), d_act_.data(), false, scratch, N);
    ops_.swiglu_backward(d_g_.data(), d_u_.data(), d_act_.data(), b.g.data(), b.u.data(), NF);
    b.gate->backward(ops_, b.n2.data(), d_g_.data(), d_tmp_.data(), false, scratch, N);
    b.up->backward(ops_, b.n2.data(), d_u_.data(), d_tmp_.data(), true, scratch, N);
    ops_.rmsnorm_backward(d_norm, grad_of(b.norm2), d_tmp_.data(), b.h.data(),
                          b.norm2->value.data(), b.rstd2.data(), N, C);
    ops_.axpy(d_res_.data(), d_norm, NC, 1.0f);  // d_res = dL/dh
    // attention: h = x + o(attn(rope(q), rope(k), v))
    b.o->backward(ops_, b.y.data(), d_res_.data(), d_attn_.data(), false, scratch, N);
    ops_.attention_backward(d_q_.data(), d_k_.data(), d_v_.data(), d_attn_.data(), b.y.data(),
                            b.att.data(),
                            b.q_act.data(), b.k_act.data(), b.v_act.data(), att_scratch_.data(), B,
                            T, H, D);
    ops_.rope_backward(d_q_.data(), rope_cos_.data(), rope_sin_.data(), B, T, H, D);
    ops_.rope_backward(d_k_.data(), rope_cos_.data(), rope_sin_.data(), B, T, H, D);
    b.q->backward(ops_, b.n1.data(), d_q_.data(), d_tmp_.data(), false, scratch, N);
    b.k->backward(ops_, b.n1.data(), d_k_.data(), d_tmp_.data(), true, scratch, N);
    b.v->backward(ops_, b.n1.data(), d_v_.data(), d_tmp_.data(), true, scratch, N);
    ops_.rmsnorm_backward(d_norm, grad_of(b.norm1), d_tmp_.data(), b.x.data(),
                          b.norm1->value.data(), b.rstd1.data(), N, C);
    ops_.axpy(d_res_.data(), d_norm, NC, 1.0f);  // d_res = dL/dx
    for (LoraLinear* lin : b.linears()) ready_linear(lin);
    ready({b.norm1, b.norm2});
  }
  embedding_->backward(ops_, inputs_.i32(), token_order_.i32(), d_res_.data(), scratch, N);
  ready({embed_, embedding_->lora_a(), embedding_->lora_b()});
}

}  // namespace relora

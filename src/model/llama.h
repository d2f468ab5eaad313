// The LLaMA model: token embedding (V,C); L blocks of
//   h = x + o_proj(attn(rope(q,k), v)(rmsnorm1(x)))
//   out = h + down_proj(silu(gate_proj(n)) * up_proj(n)),  n = rmsnorm2(h)
// a final RMSNorm and an untied lm_head (V,C); loss = mean next-token cross-entropy.
// All activations for one micro-batch of up to max_batch sequences are allocated once, at
// construction; forward and backward allocate nothing. Phases: full-rank (every tensor
// trains) and ReLoRA (targets frozen as W0 and adapted by LoRA; norms train; embedding and
// lm_head per relora.embeddings).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "model/lora_linear.h"
#include "model/params.h"

namespace relora {

// Called by backward with each trainable tensor as soon as its gradient for this
// micro-batch is complete (used to start gradient communication early).
using GradReadyFn = std::function<void(const Param*)>;

// Elements of the tensors that train in each phase, from the config's shapes alone
// (nothing allocated), so the communication volume of any size can be predicted.
struct TrainableCounts {
  int64_t full_phase = 0;    // every tensor
  int64_t relora_phase = 0;  // adapters, norms, and embedding/head when embeddings = full
};
TrainableCounts count_trainable(const ModelConfig& model, const ReloraConfig& relora);

// Matrix-product FLOPs of one training step per token, the numerator of MFU: 2*m*n*k for
// every forward product, as much again for the gradient of each of its inputs, and as
// much again for the weight gradient when the weight trains (a frozen W0 has none; A and B
// always train). Attention's q k^T and att v count in full (T x T, as PaLM's MFU does,
// though the causal half is all that is computed). Per layer and token, with r the adapter
// rank, for a linear in->out: 6*in*out trained, 4*in*out frozen, + 6*r*(in+out) with
// adapters; attention 12*T*C. lm_head likewise; the embedding is a gather (0), its
// adapter's product s*A[:,tok]^T B^T costs 6*r*C.
int64_t model_flops_per_token(const ModelConfig& model, const ReloraConfig& relora,
                              bool relora_phase);

// bf16 words of scratch the model's linears share for their products' copies: the most
// LoraLinear::words_for_products gives for any of them (lm_head's with its adapter, of
// `rank`, the largest: its input gradient). The same in both phases; 0 where the backend's
// products take no copies (!Ops::products_on_words).
int64_t product_scratch_words(const ModelConfig& model, const Ops& ops, int max_batch, int rank);

// What each block keeps for backward, and how (train.recompute, train.activation_dtype).
struct ActivationStorage {
  bool recompute = false;  // only the block's input; the rest is recomputed in backward
  bool bf16 = false;       // kept as bf16 words (rounded when kept, widened for backward)
};
inline ActivationStorage activation_storage(const TrainConfig& train) {
  return {train.recompute, train.activation_dtype == "bf16"};
}

class Llama {
 public:
  // Parameters and activations live in ops' memory. storage.recompute: keep only each
  // block's input and recompute the rest of its activations in backward (one shared set of
  // buffers). storage.bf16: blocks compute in one shared fp32 working set and keep what
  // backward needs as bf16 words (the (N,C) and (N,F) tensors; rstd and attention's saved
  // state stay fp32), widened into the working set again in backward.
  Llama(const ModelConfig& model, const ReloraConfig& relora, Ops& ops, int max_batch,
        ActivationStorage storage = {});
  ~Llama();
  Llama(const Llama&) = delete;
  Llama& operator=(const Llama&) = delete;

  // Every linear and embedding weight ~ N(0, init_std), norm weights 1; keyed by
  // (seed, init, tensor name), so independent of everything else.
  void init_weights(uint64_t seed);

  // Every parameter in a fixed order (HF order; adapters after their module's weight).
  const std::vector<Param*>& params() const { return params_; }
  Param* find(const std::string& name) const;  // nullptr if absent
  std::vector<Param*> trainable() const;
  int64_t num_parameters() const;  // base weights and norms, adapters excluded
  bool relora_phase() const { return relora_phase_; }

  // Full-rank -> ReLoRA: freeze the targets (and embedding/lm_head per config), attach
  // adapters initialised with init. Requires relora.rank > 0. With relora.master_on_host on
  // a device, the block projections' fp32 values move to pinned host memory (Param::value)
  // and bf16 copies on the device serve the products.
  void enter_relora_phase(const AdapterInit& init);
  // Merge every adapter into its weight (fp32), then re-initialise all adapters with init.
  void merge_and_reinit(const AdapterInit& init);
  // With relora.master_on_host: rounds the host masters into the device's bf16 copies
  // again, after something wrote the masters (a checkpoint load, a broadcast).
  void refresh_bf16_weights();
  // Adapters of the current phase (empty in the full-rank phase), in parameter order.
  std::vector<Param*> adapter_params() const;

  // inputs, targets(B,T) in host memory -> sum of the B*T token losses. With for_backward,
  // the logits buffer is replaced by d_loss/d_logits scaled by d_loss_scale, ready for
  // backward().
  double forward(const int32_t* inputs, const int32_t* targets, int B, bool for_backward,
                 float d_loss_scale);
  // Adds this micro-batch's gradients into every trainable tensor's grad (needs the
  // preceding forward(..., for_backward = true) with the same B). on_ready, if given, hears
  // of each tensor as its gradient completes: head, final norm, blocks from last to first,
  // embedding.
  void backward(int B, const GradReadyFn& on_ready = nullptr);

  const ModelConfig& config() const { return cfg_; }
  // logits(B*T, V) of the last forward(..., for_backward = false), in ops' memory.
  const Tensor& logits() const { return logits_; }

 private:
  struct Block;
  Param* add_param(const std::string& name, std::vector<int64_t> shape, bool is_norm);
  // One block from its input b.x: every saved activation, and with out the block's output
  // (N,C); without (recomputation in backward) it stops before the down projection. keep:
  // round what the block keeps into its bf16 words (storage.bf16), before out is written
  // (out may be b.x's buffer: the working set's input, the next block's).
  void block_forward(Block& b, int B, float* out, bool keep);
  void rebuild_param_list();
  // Attention's scratch for micro-batches of max_batch_ sequences (Ops::attention_scratch_floats).
  int64_t attention_scratch_floats() const {
    return ops_.attention_scratch_floats(max_batch_, cfg_.seq_len, cfg_.num_heads,
                                         cfg_.hidden_size / cfg_.num_heads);
  }

  ModelConfig cfg_;
  ReloraConfig relora_;
  Ops& ops_;
  int max_batch_;
  ActivationStorage activation_storage_;
  bool relora_phase_ = false;

  std::vector<std::unique_ptr<Param>> storage_;
  std::vector<Param*> params_;
  Param* embed_ = nullptr;
  Param* final_norm_ = nullptr;
  Param* lm_head_w_ = nullptr;
  std::unique_ptr<LoraEmbedding> embedding_;
  std::unique_ptr<LoraLinear> lm_head_;
  std::vector<std::unique_ptr<Block>> blocks_;

  // activations shared by all blocks
  Tensor rope_cos_, rope_sin_;  // (T, D/2)
  Tensor inputs_, targets_;     // (N) i32: the micro-batch's tokens in ops' memory
  Tensor token_order_;          // (N) i32: token_order() of inputs_, for backward
  std::vector<int32_t> token_order_host_;  // (N) its host copy
  Tensor final_rstd_;           // (N)
  Tensor final_norm_out_;       // (N,C)
  Tensor logits_;               // (N,V); d_logits after forward(for_backward)
  Tensor losses_;               // (N)
  Tensor residual_out_;         // (N,C) output of the last block
  // backward scratch
  Tensor d_res_, d_tmp_, d_q_, d_k_, d_v_, d_attn_, d_g_, d_u_, d_act_, att_scratch_, lora_scratch_;
  // (N * max(C, F)) bf16: a product's fp32 input rounded for a bf16 weight (master_on_host)
  Tensor weight_words_scratch_;
  // (product_scratch_words) bf16: copies of its linears' product operands, or empty
  Tensor product_words_;
};

}  // namespace relora

// Evaluation: mean next-token loss over a token set, in file order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/ops.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "model/llama.h"

namespace relora {

struct EvalResult {
  double loss = 0.0;        // mean over every target token evaluated
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;
};

// The model to evaluate: cfg's model freshly initialised, or, when `checkpoint` is not
// empty, the one it holds (its phase from `state`, weights and adapters). Reserves the
// device arena first (eval_peak_bytes): built as training builds it, with gradients, and
// the checkpoint's optimizer state is read too.
std::unique_ptr<Llama> model_for_eval(const Config& cfg, Ops& ops, const std::string& checkpoint,
                                      const RunState& state);

// Every window of `data` in order (max_batches <= 0), or only the first max_batches
// batches of batch_size windows. Rank r evaluates batches r, r + W, ...; the sums are
// all-reduced, so every rank returns the same result. The loader's cursor is unchanged.
EvalResult evaluate(Llama& model, Loader& data, int batch_size, int64_t max_batches, Communicator& comm);

}  // namespace relora

// Evaluation: mean next-token loss over a token set, in file order.
#pragma once
#include <cstdint>

#include "data/loader.h"
#include "model/llama.h"

namespace relora {

struct EvalResult {
  double loss = 0.0;        // mean over every target token evaluated
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;
};

// Every window of `data` in order (max_batches <= 0), or only the first max_batches
// batches of batch_size windows. The loader's cursor is left unchanged.
EvalResult evaluate(Llama& model, Loader& data, int batch_size, int64_t max_batches);

}  // namespace relora

// Adapter start and merge-and-restart.
#include "relora/restart.h"

namespace relora {

void start_adapters(Llama& model, AdamW& optimizer, uint64_t seed, int64_t step) {
  model.enter_relora_phase(AdapterInit{seed, step});
  optimizer.retain_only(model.trainable());
}

void merge_and_restart(Llama& model, AdamW& optimizer, const ReloraConfig& cfg, uint64_t seed,
                       int64_t step) {
  model.merge_and_reinit(AdapterInit{seed, step});
  for (Param* p : model.adapter_params())
    if (AdamState* s = optimizer.state(p->name)) optimizer.prune(*s, cfg.optimizer_prune);
}

}  // namespace relora

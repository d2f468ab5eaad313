// Parameter registry: every tensor of the model with its Hugging Face name and its role.
// Roles: frozen (no gradient), full (trained full-rank), adapter (a LoRA A or B, trained).
// Adapter names are "<module>/A" and "<module>/B" (module = HF name without ".weight"),
// matching the checkpoint schema. A gradient buffer exists only while a tensor trains.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace relora {

enum class Role { frozen, full, adapter };

const char* role_name(Role role);

struct Param {
  std::string name;
  Tensor value;
  Tensor grad;  // same shape as value while role != frozen, else empty
  Role role = Role::frozen;
  bool is_norm = false;  // norm weights: never weight-decayed, always trained

  bool trainable() const { return role != Role::frozen; }
  // Sets the role and allocates (zeroed) or frees the gradient to match.
  void set_role(Role r);
};

}  // namespace relora

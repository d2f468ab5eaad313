// Parameter roles and their gradient buffers.
#include "model/params.h"

namespace relora {

const char* role_name(Role role) {
  switch (role) {
    case Role::frozen: return "frozen";
    case Role::full: return "full";
    case Role::adapter: return "adapter";
  }
  return "?";
}

void Param::set_role(Role r) {
  role = r;
  if (r == Role::frozen) {
    grad = Tensor();
  } else if (grad.numel() != value.numel()) {
    grad = Tensor::zeros(value.shape(), value.device());
  }
}

}  // namespace relora

// Causal self-attention on the CPU: per (batch, head) OpenBLAS products over causal row
// blocks, softmax in between. CpuOps forwards its attention_* methods here.
#pragma once
#include <cstdint>

namespace relora::cpu {

// q,k,v(B,T,H,D) -> out(B,T,H,D), att(B,H,T,T) probabilities (0 above the diagonal)
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int H, int D);

// dq,dk,dv(B,T,H,D) written from d_out(B,T,H,D) and forward's att; scratch holds
// attention_scratch_floats(T) floats
void attention_backward(float* dq, float* dk, float* dv, const float* d_out, const float* att,
                        const float* q, const float* k, const float* v, float* scratch, int B,
                        int T, int H, int D);

// One (T,T) matrix per OpenMP thread, for the threads a parallel region started now gets.
int64_t attention_scratch_floats(int T);

}  // namespace relora::cpu

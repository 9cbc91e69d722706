// SparseLLM elementwise updates (ALGORITHMS.md §1.4 step 5, §1.5 step 5). Host arrays in and out.
#include <cmath>
#include <initializer_list>

#include "cuda/common.cuh"
#include "cuda/cuda_api.h"

namespace sparsellm {
namespace cuda {

namespace {
// OPT (ReLU): z = argmin over the two cases of f(v) = gamma (p - relu(v))^2 + alpha (v - m)^2.
__global__ void ReluZ(float* z, const float* p, const float* m, size_t n, float alpha, float gamma) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float pi = p[i], mi = m[i];
  const float sol1 = (gamma * pi + alpha * mi) / (gamma + alpha);
  const float z1 = sol1 >= 0.0f ? sol1 : 0.0f;
  const float z2 = mi <= 0.0f ? mi : 0.0f;
  const float r1 = pi - fmaxf(z1, 0.0f), r2 = pi - fmaxf(z2, 0.0f);
  const float f1 = gamma * r1 * r1 + alpha * (z1 - mi) * (z1 - mi);
  const float f2 = gamma * r2 * r2 + alpha * (z2 - mi) * (z2 - mi);
  z[i] = f1 <= f2 ? z1 : z2;
}

// LLaMA (SiLU gate): z = (alpha m + gamma sigma p) / (alpha + gamma sigma^2), sigma = silu(s).
__global__ void SiluZ(float* z, const float* p, const float* m, const float* s, size_t n, float alpha, float gamma) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float si = s[i];
  const float sg = si / (1.0f + expf(-si));
  z[i] = (alpha * m[i] + gamma * sg * p[i]) / (alpha + gamma * sg * sg);
}

template <typename Launch>
void Run(size_t n, std::initializer_list<const float*> inputs, float* z, Launch launch) {
  Probe();
  std::lock_guard<std::mutex> lock(GpuMutex());
  Context& c = Acquire();
  DeviceBuffer<float> dz(n), d0(n), d1(n), d2(inputs.size() > 2 ? n : 0);
  DeviceBuffer<float>* ins[3] = {&d0, &d1, &d2};
  int k = 0;
  for (const float* h : inputs) {
    Check(cudaMemcpyAsync(ins[k]->get(), h, n * sizeof(float), cudaMemcpyHostToDevice, c.stream), "upload");
    ++k;
  }
  launch(c.stream, dz.get(), d0.get(), d1.get(), d2.get());
  Check(cudaGetLastError(), "z update launch");
  Check(cudaMemcpyAsync(z, dz.get(), n * sizeof(float), cudaMemcpyDeviceToHost, c.stream), "download z");
  Check(cudaStreamSynchronize(c.stream), "z update");
}
}  // namespace

void ReluZUpdate(float* z, const float* p, const float* m, size_t n, float alpha, float gamma) {
  if (n == 0) return;
  Run(n, {p, m}, z, [=](cudaStream_t s, float* dz, const float* dp, const float* dm, const float*) {
    ReluZ<<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(dz, dp, dm, n, alpha, gamma);
  });
}

void SiluZUpdate(float* z, const float* p, const float* m, const float* s, size_t n, float alpha, float gamma) {
  if (n == 0) return;
  Run(n, {p, m, s}, z, [=](cudaStream_t st, float* dz, const float* dp, const float* dm, const float* ds) {
    SiluZ<<<static_cast<unsigned>((n + 255) / 256), 256, 0, st>>>(dz, dp, dm, ds, n, alpha, gamma);
  });
}

}  // namespace cuda
}  // namespace sparsellm

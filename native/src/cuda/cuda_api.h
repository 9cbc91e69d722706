// Host-side interface of the CUDA path. Plain C++ (no CUDA headers), so the N-API binding
// (compiled by the C++ compiler) can call it; the implementation lives in the *.cu files here.
// Every function that touches the GPU throws std::runtime_error with a one-line message when the
// GPU is unusable, a CUDA call fails or the input is not positive definite; it never aborts.
#pragma once
#include "solvers/sparsegpt.h"
#include <cstddef>
#include <string>
#include <vector>

namespace sparsellm {
namespace cuda {

struct Device {
  std::string name;
  size_t memory = 0;  // bytes
  int major = 0, minor = 0;
};

struct Info {
  bool available = false;  // a GPU is present and a CUDA context can be created
  std::string reason;      // why not (empty when available)
  std::vector<Device> devices;
  bool cublas = false, cusolver = false;  // loaded at run time with dlopen
  std::string cublasPath, cusolverPath;   // where they were found
  std::string cublasReason, cusolverReason;  // why not found
  int runtimeVersion = 0, driverVersion = 0;  // e.g. 13000; driver 0 = no libcuda.so
};

// Probes the devices and loads cuBLAS / cuSOLVER (once; cheap afterwards). Never throws.
Info Probe();

struct HessianStats {
  double seconds = 0;
  bool cublas = false;  // SSYRK through cuBLAS, else the built-in tiled kernel
};
// H <- H * nOld/nNew + (2/nNew) X^T X; H [cols, cols] row-major, full symmetric; X [rows, cols] row-major.
HessianStats HessianAccumulate(float* H, const float* X, size_t rows, size_t cols, double nOld, double nNew);

// The CPU solver's options (solvers/sparsegpt.h); doublePrecision is the CPU's alone (the GPU path picks its own).
using SparseGptOptions = ::sparsellm::SparseGptOptions;
struct SparseGptResult {
  double loss = 0;     // sum over rows of the OBS losses / 2, as SparseGPT prints it
  double damping = 0;  // absolute damping finally added to diag(H)
  int retries = 0;     // Cholesky failures recovered by 10x damping
  size_t pruned = 0;   // entries that are zero after the call
  double seconds = 0;  // wall time of the whole call (uploads included)
  std::string cholesky;  // "cusolver" (fp32 on the GPU) or "cpu-lapack" (fp64 on the CPU, uploaded)
  std::string gemm;      // "cublas" or "kernel"
};
// Prunes W [rows, cols] row-major in place with SparseGPT (ALGORITHMS.md §2.3). H is only read, unless
// opts.accumulateDamping. Same options and result as the CPU solver (solvers/sparsegpt.h).
SparseGptResult SparseGptPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& opts);

// SparseLLM elementwise updates (ALGORITHMS.md §1.4 step 5 and §1.5 step 5), n elements each.
void ReluZUpdate(float* z, const float* p, const float* m, size_t n, float alpha, float gamma);
void SiluZUpdate(float* z, const float* p, const float* m, const float* s, size_t n, float alpha, float gamma);

}  // namespace cuda
}  // namespace sparsellm

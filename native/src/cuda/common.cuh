// Internals shared by the CUDA translation units: error checks, the per-process GPU context
// (device, stream, cuBLAS / cuSOLVER handles), an RAII device buffer and the fallback kernels.
#pragma once
#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/dynlibs.h"

namespace sparsellm {
namespace cuda {

inline void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
inline void CheckBlas(int status, const char* what) {
  if (status != 0) throw std::runtime_error(std::string("cuBLAS ") + what + " failed with status " + std::to_string(status));
}
inline void CheckSolver(int status, const char* what) {
  if (status != 0) throw std::runtime_error(std::string("cuSOLVER ") + what + " failed with status " + std::to_string(status));
}

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  const CublasApi* blas = nullptr;  // null: use the built-in kernels
  CublasHandle blasHandle = nullptr;
  const CusolverApi* solver = nullptr;  // null: Cholesky on the CPU (LAPACK)
  CusolverHandle solverHandle = nullptr;
};

// All GPU work is serialised by this lock (the libuv pool runs several workers at once, and the
// cuBLAS / cuSOLVER handles are not meant for concurrent use).
std::mutex& GpuMutex();
// Creates the context on first use and makes its device current in the calling thread.
// Call with GpuMutex() held. Throws std::runtime_error("CUDA unavailable: ...") when there is no GPU.
Context& Acquire();

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n == 0) return;
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T));
    if (e != cudaSuccess) {
      p_ = nullptr;
      throw std::runtime_error("CUDA out of memory: cudaMalloc of " + std::to_string((n * sizeof(T)) >> 20) +
                               " MiB failed (" + cudaGetErrorName(e) + ")");
    }
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// C[M,N] = alpha * A[M,K] B[K,N] + beta * C (beta == 0: C is not read). Elements are addressed through
// strides: A(i,k) = A[i*sai + k*sak], B(k,j) = B[k*sbk + j*sbj], C(i,j) = C[i*ldc + j]. With upperOnly,
// tiles strictly below the diagonal are skipped (for SYRK; mirror afterwards).
void GemmKernel(cudaStream_t s, int M, int N, int K, float alpha, const float* A, long long sai, long long sak,
                const float* B, long long sbk, long long sbj, float beta, float* C, long long ldc, bool upperOnly);
// Row-major square A[n,n]: copies the upper triangle onto the lower one (zeroLower: writes zeros instead).
void MirrorUpper(cudaStream_t s, float* A, int n, bool zeroLower);

}  // namespace cuda
}  // namespace sparsellm

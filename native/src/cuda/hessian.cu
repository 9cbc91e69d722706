// Streaming Hessian on the GPU: H <- H*nOld/nNew + (2/nNew) X^T X, same contract as the CPU
// HessianAccumulate (solvers/hessian.cc). H and X live in host memory (the JS Float32Arrays); this
// first version uploads both, runs one SSYRK (cuBLAS, or the tiled kernel) and downloads H.
#include <chrono>

#include "cuda/common.cuh"
#include "cuda/cuda_api.h"

namespace sparsellm {
namespace cuda {

HessianStats HessianAccumulate(float* H, const float* X, size_t rows, size_t cols, double nOld, double nNew) {
  auto t0 = std::chrono::steady_clock::now();
  Probe();
  std::lock_guard<std::mutex> lock(GpuMutex());
  Context& c = Acquire();
  const int n = static_cast<int>(cols), k = static_cast<int>(rows);
  const float keep = nNew > 0 ? static_cast<float>(nOld / nNew) : 0.0f;
  const float scale = nNew > 0 ? static_cast<float>(2.0 / nNew) : 0.0f;
  HessianStats stats;
  DeviceBuffer<float> dH(cols * cols), dX(rows * cols);
  Check(cudaMemcpyAsync(dH.get(), H, cols * cols * sizeof(float), cudaMemcpyHostToDevice, c.stream), "upload H");
  if (rows > 0) {
    Check(cudaMemcpyAsync(dX.get(), X, rows * cols * sizeof(float), cudaMemcpyHostToDevice, c.stream), "upload X");
    if (c.blas) {
      // Column-major view: X is Xc = X^T [n x k] with ld n, so X^T X = Xc Xc^T (trans N). The column-major
      // lower triangle is the row-major upper one.
      CheckBlas(c.blas->Ssyrk(c.blasHandle, kFillLower, kCublasOpN, n, k, &scale, dX.get(), n, &keep, dH.get(), n),
                "Ssyrk");
      stats.cublas = true;
    } else {
      // A = X^T (A(i,r) = X[r*n + i]), B = X (B(r,j) = X[r*n + j]); upper tiles only.
      GemmKernel(c.stream, n, n, k, scale, dX.get(), 1, n, dX.get(), n, 1, keep, dH.get(), n, true);
    }
    MirrorUpper(c.stream, dH.get(), n, false);
  } else if (keep != 1.0f) {
    // No rows: only the running-average rescale.
    GemmKernel(c.stream, n, n, 0, 0.0f, dX.get(), 1, 1, dX.get(), 1, 1, keep, dH.get(), n, false);
  }
  Check(cudaMemcpyAsync(H, dH.get(), cols * cols * sizeof(float), cudaMemcpyDeviceToHost, c.stream), "download H");
  Check(cudaStreamSynchronize(c.stream), "HessianAccumulate");
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace cuda
}  // namespace sparsellm

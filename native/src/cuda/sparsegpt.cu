// SparseGPT (ALGORITHMS.md §2.3) on the GPU, fp32, TF32 off:
//   1. dead inputs (diag(H) == 0): H[d,d] = 1, W[:, d] = 0; damping percdamp * mean(diag(H)) after that;
//   2. Hinv = upper Cholesky factor of H^-1 — cuSOLVER potrf/potri/potrf in fp32 on the GPU when
//      libcusolver is found, else the CPU solver's UpperCholeskyOfInverse in fp64 on the CPU and uploaded;
//   3. per block of `blocksize` columns: the mask (unstructured: one threshold shared by the whole
//      block, from a radix sort of W1^2 / diag(Hinv1)^2; N:M: the prunen smallest of every prunem
//      columns of a row, chosen when the column loop reaches them), the OBS column loop (one warp per
//      row, the row kept in shared memory), then the lazy update W[:, i2:] -= Err1 Hinv[i1:i2, i2:]
//      (cuBLAS SGEMM, or the tiled kernel).
// W is pruned in place (host memory: uploaded, downloaded). H is not modified unless accumulateDamping.
// Options, retries (10x damping on a failed Cholesky), sparsity 0 = no-op and the result fields follow the CPU
// solver (solvers/sparsegpt.cc), so the two are interchangeable.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "common/linalg.h"
#include "cuda/common.cuh"
#include "cuda/cuda_api.h"

namespace sparsellm {
namespace cuda {

namespace {
constexpr int kWarpsPerBlock = 4;

// The saliency w^2 / d^2, rounded the same way in every kernel (no FMA contraction), so that the
// mask test `tmp <= thresh` sees exactly the values that were sorted.
__device__ __forceinline__ float Saliency1(float w, float d) { return __fdiv_rn(__fmul_rn(w, w), __fmul_rn(d, d)); }

__global__ void ZeroDeadColumns(float* W, size_t rows, int cols, const unsigned char* dead) {
  size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= rows * cols) return;
  if (dead[idx % cols]) W[idx] = 0.0f;
}

// tmp[r*B + j] = W[r, i1+j]^2 / Hinv[i1+j, i1+j]^2
__global__ void Saliency(const float* W, int rows, int cols, int i1, int B, const float* Hinv, float* tmp) {
  size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(rows) * B) return;
  int r = static_cast<int>(idx / B), j = static_cast<int>(idx % B);
  float w = W[static_cast<size_t>(r) * cols + i1 + j];
  float d = Hinv[static_cast<size_t>(i1 + j) * cols + i1 + j];
  tmp[idx] = Saliency1(w, d);
}

// One warp per row: the OBS column loop of one block [i1, i1+B).
// Shared memory per warp: B floats (the row) + B bytes (the mask).
__global__ void ObsBlock(float* W, int rows, int cols, int i1, int B, const float* __restrict__ Hinv, float* Err,
                         const float* thresh, int prunen, int prunem, double* loss) {
  extern __shared__ unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = blockIdx.x * kWarpsPerBlock + warp;
  if (r >= rows) return;
  float* row = reinterpret_cast<float*>(smem) + warp * B;
  unsigned char* mask = smem + kWarpsPerBlock * B * sizeof(float) + warp * B;
  float* Wr = W + static_cast<size_t>(r) * cols + i1;
  const float* Hb = Hinv + static_cast<size_t>(i1) * cols + i1;  // Hinv1(i, j) = Hb[i*cols + j]

  for (int j = lane; j < B; j += 32) {
    float w = Wr[j];
    row[j] = w;
    if (thresh) {
      float d = Hb[static_cast<size_t>(j) * cols + j];
      mask[j] = Saliency1(w, d) <= *thresh;
    } else {
      mask[j] = 0;
    }
  }
  __syncwarp();
  float lossAcc = 0.0f;
  for (int i = 0; i < B; ++i) {
    if (prunen > 0 && i % prunem == 0) {
      if (lane == 0) {
        // The prunen smallest saliencies among columns [i, i+prunem) of this row (ties: lower index).
        int end = min(i + prunem, B);
        for (int t = 0; t < prunen && t < end - i; ++t) {
          int best = -1;
          float bestV = 0.0f;
          for (int j = i; j < end; ++j) {
            if (mask[j]) continue;
            float d = Hb[static_cast<size_t>(j) * cols + j];
            float v = Saliency1(row[j], d);
            if (best < 0 || v < bestV) best = j, bestV = v;
          }
          mask[best] = 1;
        }
      }
      __syncwarp();
    }
    const float w = row[i];
    const float q = mask[i] ? 0.0f : w;
    const float d = Hb[static_cast<size_t>(i) * cols + i];
    const float err = (w - q) / d;
    __syncwarp();  // everyone has read row[i]
    const float* Hi = Hb + static_cast<size_t>(i) * cols;
    for (int j = i + 1 + lane; j < B; j += 32) row[j] -= err * Hi[j];
    if (lane == 0) {
      row[i] = q;
      Err[static_cast<size_t>(r) * B + i] = err;
      lossAcc += (w - q) * (w - q) / (d * d);
    }
    __syncwarp();
  }
  for (int j = lane; j < B; j += 32) Wr[j] = row[j];
  if (lane == 0) atomicAdd(loss, static_cast<double>(lossAcc) / 2.0);
}

// Upper Cholesky factor of H^-1 on the CPU in fp64 (H already fixed and damped), by the CPU solver's routine
// (common/linalg.h), lower triangle zeroed. False: not positive definite.
bool CholeskyInverseCpu(std::vector<float>& Hh, int n) {
  const size_t nn = static_cast<size_t>(n);
  std::vector<float> diag(nn), U(nn * nn);
  for (size_t i = 0; i < nn; ++i) diag[i] = Hh[i * nn + i];
  if (!UpperCholeskyOfInverse(Hh.data(), diag.data(), nn, true, U.data())) return false;
  for (size_t r = 0; r < nn; ++r)
    for (size_t c = 0; c < nn; ++c) Hh[r * nn + c] = c >= r ? U[r * nn + c] : 0.0f;
  return true;
}

// The same on the GPU with cuSOLVER, fp32 (as SparseGPT does it in torch). False: not positive definite.
bool CholeskyInverseGpu(Context& c, float* dA, int n) {
  const CusolverApi& s = *c.solver;
  DeviceBuffer<int> dInfo(1);
  auto potrf = [&]() {
    int lwork = 0;
    CheckSolver(s.PotrfBufferSize(c.solverHandle, kFillLower, n, dA, n, &lwork), "Spotrf_bufferSize");
    DeviceBuffer<float> work(static_cast<size_t>(lwork > 0 ? lwork : 1));
    CheckSolver(s.Potrf(c.solverHandle, kFillLower, n, dA, n, work.get(), lwork, dInfo.get()), "Spotrf");
    int info = 0;
    Check(cudaMemcpyAsync(&info, dInfo.get(), sizeof(int), cudaMemcpyDeviceToHost, c.stream), "potrf info");
    Check(cudaStreamSynchronize(c.stream), "potrf");
    return info == 0;
  };
  if (!potrf()) return false;
  if (s.Potri) {
    int lwork = 0;
    CheckSolver(s.PotriBufferSize(c.solverHandle, kFillLower, n, dA, n, &lwork), "Spotri_bufferSize");
    DeviceBuffer<float> work(static_cast<size_t>(lwork > 0 ? lwork : 1));
    CheckSolver(s.Potri(c.solverHandle, kFillLower, n, dA, n, work.get(), lwork, dInfo.get()), "Spotri");
    Check(cudaStreamSynchronize(c.stream), "potri");  // `work` goes out of scope
  } else {
    // No potri in this cuSOLVER: solve L L^T X = I instead.
    DeviceBuffer<float> eye(static_cast<size_t>(n) * n);
    std::vector<float> I(static_cast<size_t>(n) * n, 0.0f);
    for (int i = 0; i < n; ++i) I[static_cast<size_t>(i) * n + i] = 1.0f;
    Check(cudaMemcpyAsync(eye.get(), I.data(), I.size() * sizeof(float), cudaMemcpyHostToDevice, c.stream), "eye");
    CheckSolver(s.Potrs(c.solverHandle, kFillLower, n, n, dA, n, eye.get(), n, dInfo.get()), "Spotrs");
    Check(cudaMemcpyAsync(dA, eye.get(), I.size() * sizeof(float), cudaMemcpyDeviceToDevice, c.stream), "copy inverse");
    Check(cudaStreamSynchronize(c.stream), "potrs");  // `I` and `eye` go out of scope
  }
  MirrorUpper(c.stream, dA, n, false);  // column-major lower = row-major upper
  if (!potrf()) return false;
  MirrorUpper(c.stream, dA, n, true);  // keep U only
  return true;
}
}  // namespace

SparseGptResult SparseGptPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  Probe();
  std::lock_guard<std::mutex> lock(GpuMutex());
  Context& c = Acquire();
  SparseGptResult result;
  const int n = static_cast<int>(cols), m = static_cast<int>(rows);

  // 1. dead inputs and damping, on a host copy of H (same rounding as the CPU solver).
  std::vector<float> A(H, H + cols * cols);
  std::vector<unsigned char> dead(cols, 0);
  bool anyDead = false;
  double meanDiag = 0;
  for (size_t i = 0; i < cols; ++i) {
    if (A[i * cols + i] == 0.0f) dead[i] = 1, anyDead = true, A[i * cols + i] = 1.0f;
    meanDiag += A[i * cols + i];
  }
  meanDiag /= static_cast<double>(cols);
  double damp = std::max(0.0, o.percdamp * meanDiag);

  DeviceBuffer<float> dW(rows * cols), dHinv(cols * cols);
  Check(cudaMemcpyAsync(dW.get(), W, rows * cols * sizeof(float), cudaMemcpyHostToDevice, c.stream), "upload W");
  if (anyDead) {
    DeviceBuffer<unsigned char> dDead(cols);
    Check(cudaMemcpyAsync(dDead.get(), dead.data(), cols, cudaMemcpyHostToDevice, c.stream), "upload dead");
    size_t total = rows * cols;
    ZeroDeadColumns<<<static_cast<unsigned>((total + 255) / 256), 256, 0, c.stream>>>(dW.get(), rows, n, dDead.get());
    Check(cudaGetLastError(), "ZeroDeadColumns");
    Check(cudaStreamSynchronize(c.stream), "ZeroDeadColumns");  // dDead goes out of scope
  }

  // 2. Hinv; a failed Cholesky is retried with 10x the damping (as the CPU solver does).
  std::vector<float> Ad;
  for (;;) {
    Ad = A;
    for (size_t i = 0; i < cols; ++i) Ad[i * cols + i] = static_cast<float>(static_cast<double>(A[i * cols + i]) + damp);
    bool ok;
    if (c.solver) {
      Check(cudaMemcpyAsync(dHinv.get(), Ad.data(), cols * cols * sizeof(float), cudaMemcpyHostToDevice, c.stream),
            "upload H");
      ok = CholeskyInverseGpu(c, dHinv.get(), n);
      result.cholesky = "cusolver";
    } else {
      std::vector<float> Hh = Ad;
      ok = CholeskyInverseCpu(Hh, n);
      if (ok)
        Check(cudaMemcpyAsync(dHinv.get(), Hh.data(), cols * cols * sizeof(float), cudaMemcpyHostToDevice, c.stream),
              "upload Hinv");
      Check(cudaStreamSynchronize(c.stream), "upload Hinv");  // Hh goes out of scope
      result.cholesky = "cpu-lapack";
    }
    if (ok) break;
    if (result.retries >= kMaxCholeskyRetries)
      throw std::runtime_error("sparsegpt (cuda): Cholesky of the damped Hessian failed after " +
                               std::to_string(result.retries) + " retries (damping " + std::to_string(damp) + ")");
    ++result.retries;
    damp = damp > 0 ? damp * 10 : std::max(1e-8, 0.01 * std::fabs(meanDiag) + 1e-8);
  }
  result.damping = damp;
  result.gemm = c.blas ? "cublas" : "kernel";
  if (o.accumulateDamping) std::copy(Ad.begin(), Ad.end(), H);

  auto finish = [&] {
    Check(cudaMemcpyAsync(W, dW.get(), rows * cols * sizeof(float), cudaMemcpyDeviceToHost, c.stream), "download W");
    Check(cudaStreamSynchronize(c.stream), "SparseGptPrune");
    size_t zeros = 0;
    for (size_t i = 0; i < rows * cols; ++i) zeros += W[i] == 0.0f;
    result.pruned = zeros;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
  };
  const bool unstructured = !o.sp.nm();
  if (unstructured && o.sp.sparsity == 0) return finish();  // nothing to prune: W stays as it is (like the CPU solver)

  // 3. blocks.
  const int bs = std::max(1, std::min(o.blocksize, n));
  const size_t maxItems = rows * static_cast<size_t>(bs);
  DeviceBuffer<float> dErr(maxItems), dLoss(2);  // dLoss holds one double
  double* loss = reinterpret_cast<double*>(dLoss.get());
  Check(cudaMemsetAsync(loss, 0, sizeof(double), c.stream), "memset loss");
  DeviceBuffer<float> dTmp(unstructured ? maxItems : 0), dSorted(unstructured ? maxItems : 0);
  size_t sortBytes = 0;
  if (unstructured)
    Check(cub::DeviceRadixSort::SortKeys(nullptr, sortBytes, dTmp.get(), dSorted.get(), static_cast<int>(maxItems), 0,
                                         32, c.stream),
          "SortKeys size");
  DeviceBuffer<unsigned char> dSortTemp(unstructured ? std::max<size_t>(sortBytes, 1) : 0);

  const size_t smemPerWarp = static_cast<size_t>(bs) * (sizeof(float) + 1);
  const size_t smem = smemPerWarp * kWarpsPerBlock;
  if (smem > 48 * 1024)
    Check(cudaFuncSetAttribute(ObsBlock, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "blocksize too large for shared memory");
  const float minusOne = -1.0f, one = 1.0f;
  for (int i1 = 0; i1 < n; i1 += bs) {
    const int i2 = std::min(i1 + bs, n), B = i2 - i1;
    const size_t items = rows * static_cast<size_t>(B);
    const float* thresh = nullptr;
    if (unstructured) {
      Saliency<<<static_cast<unsigned>((items + 255) / 256), 256, 0, c.stream>>>(dW.get(), m, n, i1, B, dHinv.get(),
                                                                                 dTmp.get());
      Check(cudaGetLastError(), "Saliency");
      size_t bytes = sortBytes;
      Check(cub::DeviceRadixSort::SortKeys(dSortTemp.get(), bytes, dTmp.get(), dSorted.get(), static_cast<int>(items),
                                           0, 32, c.stream),
            "SortKeys");
      // thresh = sort(tmp)[int(numel * sparsity)]; mask = tmp <= thresh
      size_t k = static_cast<size_t>(static_cast<double>(items) * o.sp.sparsity);
      if (k >= items) k = items - 1;
      thresh = dSorted.get() + k;
    }
    unsigned grid = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    ObsBlock<<<grid, kWarpsPerBlock * 32, smem, c.stream>>>(dW.get(), m, n, i1, B, dHinv.get(), dErr.get(), thresh,
                                                            unstructured ? 0 : o.sp.prunen, unstructured ? 1 : o.sp.prunem,
                                                            loss);
    Check(cudaGetLastError(), "ObsBlock");
    if (i2 < n) {
      if (c.blas) {
        // Row-major W[:, i2:] -= Err1[rows,B] Hinv[i1:i2, i2:]  <=>  column-major C^T -= Hsub^T Err1^T.
        CheckBlas(c.blas->Sgemm(c.blasHandle, kCublasOpN, kCublasOpN, n - i2, m, B, &minusOne,
                                dHinv.get() + static_cast<size_t>(i1) * n + i2, n, dErr.get(), B, &one,
                                dW.get() + i2, n),
                  "Sgemm");
      } else {
        GemmKernel(c.stream, m, n - i2, B, -1.0f, dErr.get(), B, 1, dHinv.get() + static_cast<size_t>(i1) * n + i2, n,
                   1, 1.0f, dW.get() + i2, n, false);
      }
    }
  }
  double total = 0;
  Check(cudaMemcpyAsync(&total, loss, sizeof(double), cudaMemcpyDeviceToHost, c.stream), "download loss");
  finish();
  result.loss = total;
  return result;
}

}  // namespace cuda
}  // namespace sparsellm

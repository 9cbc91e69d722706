// Fallback kernels used when cuBLAS is not available: a shared-memory tiled SGEMM with arbitrary
// strides (covers X^T X and the SparseGPT lazy update) and the triangle mirror for SYRK results.
#include "cuda/common.cuh"

namespace sparsellm {
namespace cuda {

namespace {
constexpr int kTile = 32;   // output tile kTile x kTile
constexpr int kRows = 8;    // threads per block: kTile x kRows, each computes kTile/kRows outputs

__global__ void TiledGemm(int M, int N, int K, float alpha, const float* __restrict__ A, long long sai, long long sak,
                          const float* __restrict__ B, long long sbk, long long sbj, float beta, float* C,
                          long long ldc, bool upperOnly) {
  __shared__ float As[kTile][kTile + 1];  // As[i][k]
  __shared__ float Bs[kTile][kTile + 1];  // Bs[k][j]
  const int bi = blockIdx.y * kTile, bj = blockIdx.x * kTile;
  if (upperOnly && bj + kTile - 1 < bi) return;  // the whole tile is below the diagonal
  const int tx = threadIdx.x, ty = threadIdx.y;
  float acc[kTile / kRows] = {0};
  for (int k0 = 0; k0 < K; k0 += kTile) {
    // Load so that consecutive tx read consecutive addresses whichever stride is 1.
    for (int r = ty; r < kTile; r += kRows) {
      if (sai == 1) {  // A is column-contiguous (e.g. X^T): vary i along tx
        int i = bi + tx, k = k0 + r;
        As[tx][r] = (i < M && k < K) ? A[i * sai + k * sak] : 0.0f;
      } else {
        int i = bi + r, k = k0 + tx;
        As[r][tx] = (i < M && k < K) ? A[i * sai + k * sak] : 0.0f;
      }
      if (sbk == 1) {
        int k = k0 + tx, j = bj + r;
        Bs[tx][r] = (k < K && j < N) ? B[k * sbk + j * sbj] : 0.0f;
      } else {
        int k = k0 + r, j = bj + tx;
        Bs[r][tx] = (k < K && j < N) ? B[k * sbk + j * sbj] : 0.0f;
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTile; ++kk) {
      float b = Bs[kk][tx];
#pragma unroll
      for (int t = 0; t < kTile / kRows; ++t) acc[t] += As[ty + t * kRows][kk] * b;
    }
    __syncthreads();
  }
#pragma unroll
  for (int t = 0; t < kTile / kRows; ++t) {
    int i = bi + ty + t * kRows, j = bj + tx;
    if (i < M && j < N) {
      float* c = C + i * ldc + j;
      *c = beta == 0.0f ? alpha * acc[t] : alpha * acc[t] + beta * *c;
    }
  }
}

__global__ void MirrorUpperKernel(float* A, int n, bool zeroLower) {
  long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  long long total = static_cast<long long>(n) * n;
  if (idx >= total) return;
  int r = static_cast<int>(idx / n), c = static_cast<int>(idx % n);
  if (r > c) A[idx] = zeroLower ? 0.0f : A[static_cast<long long>(c) * n + r];
}
}  // namespace

void GemmKernel(cudaStream_t s, int M, int N, int K, float alpha, const float* A, long long sai, long long sak,
                const float* B, long long sbk, long long sbj, float beta, float* C, long long ldc, bool upperOnly) {
  if (M <= 0 || N <= 0) return;
  dim3 block(kTile, kRows), grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile);
  TiledGemm<<<grid, block, 0, s>>>(M, N, K, alpha, A, sai, sak, B, sbk, sbj, beta, C, ldc, upperOnly);
  Check(cudaGetLastError(), "TiledGemm launch");
}

void MirrorUpper(cudaStream_t s, float* A, int n, bool zeroLower) {
  long long total = static_cast<long long>(n) * n;
  int threads = 256;
  MirrorUpperKernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, s>>>(A, n, zeroLower);
  Check(cudaGetLastError(), "MirrorUpper launch");
}

}  // namespace cuda
}  // namespace sparsellm

// cuBLAS and cuSOLVER, loaded at run time with dlopen. This machine's toolkit (pip nvcc 13) ships no
// cublas_v2.h / cusolverDn.h, so the few entry points used are declared here by hand, with the C ABI
// of cuBLAS 12/13 and cuSOLVER 11/12 (all enums are plain ints; handles are opaque pointers).
#pragma once
#include <string>

namespace sparsellm {
namespace cuda {

// Values from cublas_api.h (stable since CUDA 8).
enum : int { kCublasOpN = 0, kCublasOpT = 1 };
enum : int { kFillLower = 0, kFillUpper = 1 };
enum : int { kCublasDefaultMath = 0 };

using CublasHandle = void*;
using CusolverHandle = void*;
using Stream = void*;  // cudaStream_t

struct CublasApi {
  int (*Create)(CublasHandle*) = nullptr;                 // cublasCreate_v2
  int (*Destroy)(CublasHandle) = nullptr;                 // cublasDestroy_v2
  int (*SetStream)(CublasHandle, Stream) = nullptr;       // cublasSetStream_v2
  int (*SetMathMode)(CublasHandle, int) = nullptr;        // cublasSetMathMode (optional)
  int (*Sgemm)(CublasHandle, int, int, int, int, int, const float*, const float*, int, const float*, int,
               const float*, float*, int) = nullptr;  // cublasSgemm_v2
  int (*Ssyrk)(CublasHandle, int, int, int, int, const float*, const float*, int, const float*, float*,
               int) = nullptr;  // cublasSsyrk_v2
  std::string path;
};

struct CusolverApi {
  int (*Create)(CusolverHandle*) = nullptr;            // cusolverDnCreate
  int (*Destroy)(CusolverHandle) = nullptr;            // cusolverDnDestroy
  int (*SetStream)(CusolverHandle, Stream) = nullptr;  // cusolverDnSetStream
  int (*PotrfBufferSize)(CusolverHandle, int, int, float*, int, int*) = nullptr;         // cusolverDnSpotrf_bufferSize
  int (*Potrf)(CusolverHandle, int, int, float*, int, float*, int, int*) = nullptr;      // cusolverDnSpotrf
  int (*PotriBufferSize)(CusolverHandle, int, int, float*, int, int*) = nullptr;         // cusolverDnSpotri_bufferSize (optional)
  int (*Potri)(CusolverHandle, int, int, float*, int, float*, int, int*) = nullptr;      // cusolverDnSpotri (optional)
  int (*Potrs)(CusolverHandle, int, int, int, const float*, int, float*, int, int*) = nullptr;  // cusolverDnSpotrs
  std::string path;
};

// Loaded once (thread-safe). Returns nullptr and sets *reason when the library is missing or incomplete.
const CublasApi* LoadCublas(std::string* reason);
const CusolverApi* LoadCusolver(std::string* reason);

}  // namespace cuda
}  // namespace sparsellm

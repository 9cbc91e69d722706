// Device probing (cudaInfo) and the lazily created GPU context.
#include <cstdlib>

#include "cuda/common.cuh"
#include "cuda/cuda_api.h"

namespace sparsellm {
namespace cuda {

namespace {
int RequestedDevice() {
  const char* s = std::getenv("SPARSELLM_CUDA_DEVICE");
  return s && *s ? std::atoi(s) : 0;
}

Info DoProbe() {
  Info info;
  cudaRuntimeGetVersion(&info.runtimeVersion);
  cudaDriverGetVersion(&info.driverVersion);  // 0 when libcuda.so is absent
  // Libraries first: they are reported even when there is no GPU, which helps setting a machine up.
  const CublasApi* blas = LoadCublas(&info.cublasReason);
  const CusolverApi* solver = LoadCusolver(&info.cusolverReason);
  info.cublas = blas != nullptr;
  info.cusolver = solver != nullptr;
  if (blas) info.cublasPath = blas->path;
  if (solver) info.cusolverPath = solver->path;

  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it
    info.reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    if (info.driverVersion == 0) info.reason += "; no NVIDIA driver (libcuda.so) was found";
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device found";
    return info;
  }
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    info.devices.push_back(Device{p.name, p.totalGlobalMem, p.major, p.minor});
  }
  int want = RequestedDevice();
  if (want < 0 || want >= count) {
    info.reason = "SPARSELLM_CUDA_DEVICE=" + std::to_string(want) + " but there are " + std::to_string(count) + " devices";
    return info;
  }
  if (static_cast<size_t>(want) < info.devices.size() && info.devices[want].major < 8) {
    info.reason = "device " + std::to_string(want) + " has compute capability " + std::to_string(info.devices[want].major) +
                  "." + std::to_string(info.devices[want].minor) + "; this build targets sm_80 and sm_90 (Ampere or newer)";
    return info;
  }
  // Touch the device: this creates the primary context and catches a driver that is too old for
  // the CUDA 13 runtime that is linked in.
  e = cudaSetDevice(want);
  if (e == cudaSuccess) e = cudaFree(nullptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string("cannot create a CUDA context: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return info;
  }
  info.available = true;
  return info;
}
}  // namespace

Info Probe() {
  static std::once_flag once;
  static Info cached;
  std::call_once(once, [] { cached = DoProbe(); });  // call_once serialises concurrent first calls
  return cached;
}

std::mutex& GpuMutex() {
  static std::mutex m;
  return m;
}

Context& Acquire() {
  static Context ctx;
  static bool ready = false;
  static std::string failure;
  if (!ready) {
    if (!failure.empty()) throw std::runtime_error(failure);
    Info info = Probe();
    if (!info.available) {
      failure = "CUDA unavailable: " + info.reason;
      throw std::runtime_error(failure);
    }
    ctx.device = RequestedDevice();
    Check(cudaSetDevice(ctx.device), "cudaSetDevice");
    Check(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    std::string ignored;
    if (const CublasApi* blas = LoadCublas(&ignored)) {
      CublasHandle h = nullptr;
      if (blas->Create(&h) == 0 && blas->SetStream(h, ctx.stream) == 0) {
        // fp32 everywhere, no TF32 (SparseGPT runs with TF32 off).
        if (blas->SetMathMode) blas->SetMathMode(h, kCublasDefaultMath);
        ctx.blas = blas;
        ctx.blasHandle = h;
      } else if (h) {
        blas->Destroy(h);
      }
    }
    if (const CusolverApi* solver = LoadCusolver(&ignored)) {
      CusolverHandle h = nullptr;
      if (solver->Create(&h) == 0 && solver->SetStream(h, ctx.stream) == 0) {
        ctx.solver = solver;
        ctx.solverHandle = h;
      } else if (h) {
        solver->Destroy(h);
      }
    }
    ready = true;
  }
  Check(cudaSetDevice(ctx.device), "cudaSetDevice");
  return ctx;
}

}  // namespace cuda
}  // namespace sparsellm

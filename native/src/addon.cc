// Entry point of the native addon: collects the exports every binding file registered,
// plus thread control and a reference SGEMM used by the benchmarks.
#include <napi.h>

#include <chrono>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <vector>

#include "binding/registry.h"
#include "common/async.h"
#include "common/blas.h"
#include "common/workspace.h"

namespace sparsellm {

std::vector<Registrar>& Registrars() {
  static std::vector<Registrar> registrars;
  return registrars;
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  openblas_set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}
static Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), openblas_get_num_threads());
}
// The kernel set libopenblas chose at load (e.g. "Haswell", "SkylakeX"; $OPENBLAS_CORETYPE forces one).
static Napi::Value BlasCore(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), openblas_get_corename());
}

// releaseMemory(): frees the solvers' workspace cache and gives the C heap's free pages back to the system (glibc
// malloc_trim); returns whether malloc_trim released any. onnxruntime frees a released session's weights into glibc's
// heap, and the cache keeps up to SPARSELLM_WORKSPACE_MB of solver buffers: without this both stay resident through
// the phases that follow (the solve after a block's forward pass, the next block's forward pass after a solve).
static Napi::Value ReleaseMemory(const Napi::CallbackInfo& info) {
  ReleaseWorkspaceCache();
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// sgemm(A[m,k], B[k,n], C[m,n]): Promise<number seconds>; C = A B. Reference rate for the benches.
static Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto A = ToF32(info[0], "A");
  auto B = ToF32(info[1], "B");
  auto C = ToF32(info[2], "C");
  int m = info[3].As<Napi::Number>().Int32Value(), k = info[4].As<Napi::Number>().Int32Value(),
      n = info[5].As<Napi::Number>().Int32Value();
  Require(env, A.length == size_t(m) * k && B.length == size_t(k) * n && C.length == size_t(m) * n,
          "sgemm: sizes do not match");
  auto seconds = std::make_shared<double>(0);
  auto* w = new PromiseWorker(
      env,
      [=] {
        auto t0 = std::chrono::steady_clock::now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, A.data, k, B.data, n, 0.0f, C.data, n);
        *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      },
      [seconds](Napi::Env e) { return Napi::Number::New(e, *seconds); });
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->Keep(info[2]);
  w->Queue();
  return w->Promise();
}


static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads));
  exports.Set("blasCore", Napi::Function::New(env, BlasCore));
  exports.Set("releaseMemory", Napi::Function::New(env, ReleaseMemory));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  for (auto& r : Registrars()) r(env, exports);
  return exports;
}

}  // namespace sparsellm

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sparsellm::Init(env, exports); }
NODE_API_MODULE(sparsellm_native, InitAddon)

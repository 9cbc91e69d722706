// N-API wrappers of the CUDA path (native/src/cuda). In a CPU build only cudaInfo() is exported and it
// reports {available: false, reason: 'built without CUDA'}; in a CUDA build (SPARSELLM_HAVE_CUDA) it
// probes the driver and the dlopen'ed cuBLAS / cuSOLVER, and the cuda* solver calls are exported
// (each runs on the libuv pool and returns a Promise; a missing GPU rejects, it never crashes).
#include "binding/registry.h"
#include "common/async.h"

#ifdef SPARSELLM_HAVE_CUDA
#include <memory>

#include "binding/options.h"
#include "cuda/cuda_api.h"
#include "solvers/sparsellm.h"
#endif

namespace sparsellm {

#ifndef SPARSELLM_HAVE_CUDA

static Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("built", false);
  o.Set("available", false);
  o.Set("reason", "built without CUDA");
  o.Set("devices", Napi::Array::New(env));
  o.Set("cublas", false);
  o.Set("cusolver", false);
  return o;
}

SPARSELLM_REGISTER(cuda, [](Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
});

#else

static Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cuda::Info p = cuda::Probe();
  auto o = Napi::Object::New(env);
  o.Set("built", true);
  o.Set("available", p.available);
  if (!p.available) o.Set("reason", p.reason);
  auto devices = Napi::Array::New(env, p.devices.size());
  for (size_t i = 0; i < p.devices.size(); ++i) {
    auto d = Napi::Object::New(env);
    d.Set("name", p.devices[i].name);
    d.Set("memory", static_cast<double>(p.devices[i].memory));
    d.Set("cc", std::to_string(p.devices[i].major) + "." + std::to_string(p.devices[i].minor));
    devices.Set(static_cast<uint32_t>(i), d);
  }
  o.Set("devices", devices);
  o.Set("cublas", p.cublas);
  o.Set("cusolver", p.cusolver);
  if (p.cublas) o.Set("cublasPath", p.cublasPath); else o.Set("cublasReason", p.cublasReason);
  if (p.cusolver) o.Set("cusolverPath", p.cusolverPath); else o.Set("cusolverReason", p.cusolverReason);
  o.Set("runtimeVersion", p.runtimeVersion);
  o.Set("driverVersion", p.driverVersion);
  return o;
}

static size_t SizeArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Require(info.Env(), info[i].IsNumber(), std::string(what) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  Require(info.Env(), v >= 0 && v == static_cast<double>(static_cast<size_t>(v)) && v < 2147483648.0,
          std::string(what) + " must be a non-negative integer below 2^31");
  return static_cast<size_t>(v);
}

// cudaHessianAccumulate(H, X, rows, cols, nOld, nNew): Promise<{seconds, cublas}>
static Napi::Value CudaHessianAccumulateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto H = ToF32(info[0], "H");
  auto X = ToF32(info[1], "X");
  size_t rows = SizeArg(info, 2, "rows"), cols = SizeArg(info, 3, "cols");
  double nOld = info[4].As<Napi::Number>().DoubleValue();
  double nNew = info[5].As<Napi::Number>().DoubleValue();
  Require(env, cols > 0, "cols must be positive");
  Require(env, H.length == cols * cols, "H must hold cols*cols floats");
  Require(env, X.length == rows * cols, "X must hold rows*cols floats");
  auto stats = std::make_shared<cuda::HessianStats>();
  auto* w = new PromiseWorker(
      env, [=] { *stats = cuda::HessianAccumulate(H.data, X.data, rows, cols, nOld, nNew); },
      [stats](Napi::Env e) {
        auto o = Napi::Object::New(e);
        o.Set("seconds", stats->seconds);
        o.Set("cublas", stats->cublas);
        return o;
      });
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->Queue();
  return w->Promise();
}

SparseGptOptions ParseSparseGptOptions(const Napi::Object& o, size_t cols);  // sparsegpt_binding.cc

// cudaSparseGptPrune(W, rows, cols, H, {sparsity | prunen, prunem, percdamp, blocksize, accumulateDamping, doublePrecision}):
//   Promise<{loss, damping, retries, pruned, seconds, cholesky, gemm}>; W is pruned in place, H is left as it
//   was unless accumulateDamping (the same contract as the CPU sparsegptPrune).
static Napi::Value CudaSparseGptPruneJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto W = ToF32(info[0], "W");
  size_t rows = SizeArg(info, 1, "rows"), cols = SizeArg(info, 2, "cols");
  auto H = ToF32(info[3], "H");
  Require(env, rows > 0 && cols > 0, "rows and cols must be positive");
  Require(env, W.length == rows * cols, "W must hold rows*cols floats");
  Require(env, H.length == cols * cols, "H must hold cols*cols floats");
  // the same fully specified options object as the CPU binding (a missing field is a TypeError naming it)
  const cuda::SparseGptOptions opts = ParseSparseGptOptions(ArgObject(info, 4), cols);
  Require(env, opts.blocksize <= 4096, "blocksize must be in [1, 4096]");
  auto result = std::make_shared<cuda::SparseGptResult>();
  auto* w = new PromiseWorker(
      env, [=] { *result = cuda::SparseGptPrune(W.data, rows, cols, H.data, opts); },
      [result](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("loss", result->loss);
        r.Set("damping", result->damping);
        r.Set("retries", result->retries);
        r.Set("pruned", static_cast<double>(result->pruned));
        r.Set("seconds", result->seconds);
        r.Set("cholesky", result->cholesky);
        r.Set("gemm", result->gemm);
        return r;
      });
  w->Keep(info[0]);
  w->Keep(info[3]);
  w->Queue();
  return w->Promise();
}

// cudaReluZUpdate(z, p, m, alpha, gamma) / cudaSiluZUpdate(z, p, m, s, alpha, gamma): Promise<void>, z written.
static Napi::Value CudaReluZUpdateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto z = ToF32(info[0], "z"), p = ToF32(info[1], "p"), m = ToF32(info[2], "m");
  float alpha = info[3].As<Napi::Number>().FloatValue(), gamma = info[4].As<Napi::Number>().FloatValue();
  Require(env, p.length == z.length && m.length == z.length, "z, p and m must have the same length");
  auto* w = new PromiseWorker(env, [=] { cuda::ReluZUpdate(z.data, p.data, m.data, z.length, alpha, gamma); }, nullptr);
  for (int i = 0; i < 3; ++i) w->Keep(info[i]);
  w->Queue();
  return w->Promise();
}

static Napi::Value CudaSiluZUpdateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto z = ToF32(info[0], "z"), p = ToF32(info[1], "p"), m = ToF32(info[2], "m"), s = ToF32(info[3], "s");
  float alpha = info[4].As<Napi::Number>().FloatValue(), gamma = info[5].As<Napi::Number>().FloatValue();
  Require(env, p.length == z.length && m.length == z.length && s.length == z.length,
          "z, p, m and s must have the same length");
  auto* w = new PromiseWorker(
      env, [=] { cuda::SiluZUpdate(z.data, p.data, m.data, s.data, z.length, alpha, gamma); }, nullptr);
  for (int i = 0; i < 4; ++i) w->Keep(info[i]);
  w->Queue();
  return w->Promise();
}

// SparseLLM with every SparseGPT prune inside on the GPU (fc1/up/gate with their d x d Hessians, fc2/down with the
// f x f one); the p, z, s updates, the least-squares refits and the Gram matrices stay on the CPU (BLAS).
Napi::Value SparseLlmOptCall(const Napi::CallbackInfo& info, SparseGptPruneFn prune);    // sparsellm_binding.cc
Napi::Value SparseLlmLlamaCall(const Napi::CallbackInfo& info, SparseGptPruneFn prune);  // sparsellm_binding.cc

static SparseGptResult CudaPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& o) {
  const cuda::SparseGptResult g = cuda::SparseGptPrune(W, rows, cols, H, o);
  SparseGptResult r;
  r.loss = g.loss;
  r.damping = g.damping;
  r.retries = g.retries;
  r.pruned = g.pruned;
  r.seconds = g.seconds;
  return r;
}

// cudaSparsellmOpt / cudaSparsellmLlama: the arguments of sparsellmOpt / sparsellmLlama (sparsellm_binding.cc).
static Napi::Value CudaSparseLlmOptJs(const Napi::CallbackInfo& info) { return SparseLlmOptCall(info, &CudaPrune); }
static Napi::Value CudaSparseLlmLlamaJs(const Napi::CallbackInfo& info) { return SparseLlmLlamaCall(info, &CudaPrune); }

SPARSELLM_REGISTER(cuda, [](Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
  exports.Set("cudaSparsellmOpt", Napi::Function::New(env, CudaSparseLlmOptJs));
  exports.Set("cudaSparsellmLlama", Napi::Function::New(env, CudaSparseLlmLlamaJs));
  exports.Set("cudaHessianAccumulate", Napi::Function::New(env, CudaHessianAccumulateJs));
  exports.Set("cudaSparseGptPrune", Napi::Function::New(env, CudaSparseGptPruneJs));
  exports.Set("cudaReluZUpdate", Napi::Function::New(env, CudaReluZUpdateJs));
  exports.Set("cudaSiluZUpdate", Napi::Function::New(env, CudaSiluZUpdateJs));
});

#endif

}  // namespace sparsellm

#include "binding/registry.h"
#include "common/async.h"
#include "solvers/hessian.h"

namespace sparsellm {

// hessianAccumulate(H: Float32Array, X: Float32Array, rows, cols, nOld, nNew): Promise<void>
static Napi::Value HessianAccumulateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto H = ToF32(info[0], "H");
  auto X = ToF32(info[1], "X");
  size_t rows = info[2].As<Napi::Number>().Int64Value();
  size_t cols = info[3].As<Napi::Number>().Int64Value();
  double nOld = info[4].As<Napi::Number>().DoubleValue();
  double nNew = info[5].As<Napi::Number>().DoubleValue();
  Require(env, H.length == cols * cols, "H must hold cols*cols floats");
  Require(env, X.length == rows * cols, "X must hold rows*cols floats");
  auto* w = new PromiseWorker(env, [=] { HessianAccumulate(H.data, X.data, rows, cols, nOld, nNew); }, nullptr);
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(hessian, [](Napi::Env env, Napi::Object exports) {
  exports.Set("hessianAccumulate", Napi::Function::New(env, HessianAccumulateJs));
});

}  // namespace sparsellm

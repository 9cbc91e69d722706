#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/wanda.h"

namespace sparsellm {

// wandaPrune(W, rows, cols, scaler[cols], spec): Promise<{ pruned, seconds }>
static Napi::Value WandaPruneJs(const Napi::CallbackInfo& info) {
  size_t rows = ArgSize(info, 1, "rows"), cols = ArgSize(info, 2, "cols");
  auto W = ArgF32(info, 0, "W", rows * cols);
  auto S = ArgF32(info, 3, "scaler", cols);
  Sparsity sp = ParseSparsity(ArgObject(info, 4), cols);
  return QueueMaskSolver(info, [=] {
    RequireFinite(W.data, rows * cols, "wanda: W");
    return WandaPrune(W.data, rows, cols, S.data, sp);
  }, {0, 3});
}

// wandaScalerAccumulate(scaler[cols], X[rows, cols], rows, cols, nOld, nNew): Promise<void>
static Napi::Value WandaScalerJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t rows = ArgSize(info, 2, "rows"), cols = ArgSize(info, 3, "cols");
  auto S = ArgF32(info, 0, "scaler", cols);
  auto X = ArgF32(info, 1, "X", rows * cols);
  double nOld = info[4].As<Napi::Number>().DoubleValue(), nNew = info[5].As<Napi::Number>().DoubleValue();
  auto* w = new PromiseWorker(env, [=] { WandaScalerAccumulate(S.data, X.data, rows, cols, nOld, nNew); }, nullptr);
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(wanda, [](Napi::Env env, Napi::Object exports) {
  exports.Set("wandaPrune", Napi::Function::New(env, WandaPruneJs));
  exports.Set("wandaScalerAccumulate", Napi::Function::New(env, WandaScalerJs));
});

}  // namespace sparsellm

#include <chrono>
#include <memory>

#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/magnitude.h"

namespace sparsellm {

// magnitudePrune(W, rows, cols, spec): Promise<{ pruned, seconds }>
static Napi::Value MagnitudePruneJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t rows = ArgSize(info, 1, "rows"), cols = ArgSize(info, 2, "cols");
  auto W = ArgF32(info, 0, "W", rows * cols);
  Sparsity sp = ParseSparsity(ArgObject(info, 3), cols);
  auto out = std::make_shared<std::pair<size_t, double>>(0, 0.0);
  auto* w = new PromiseWorker(
      env,
      [=] {
        auto t0 = std::chrono::steady_clock::now();
        RequireFinite(W.data, rows * cols, "magnitude: W");
        out->first = MagnitudePrune(W.data, rows, cols, sp);
        out->second = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      },
      [out](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("pruned", double(out->first));
        r.Set("seconds", out->second);
        return r;
      });
  w->Keep(info[0]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(magnitude, [](Napi::Env env, Napi::Object exports) {
  exports.Set("magnitudePrune", Napi::Function::New(env, MagnitudePruneJs));
});

}  // namespace sparsellm

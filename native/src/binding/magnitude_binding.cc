#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/magnitude.h"

namespace sparsellm {

// magnitudePrune(W, rows, cols, spec): Promise<{ pruned, seconds }>
static Napi::Value MagnitudePruneJs(const Napi::CallbackInfo& info) {
  size_t rows = ArgSize(info, 1, "rows"), cols = ArgSize(info, 2, "cols");
  auto W = ArgF32(info, 0, "W", rows * cols);
  Sparsity sp = ParseSparsity(ArgObject(info, 3), cols);
  return QueueMaskSolver(info, [=] {
    RequireFinite(W.data, rows * cols, "magnitude: W");
    return MagnitudePrune(W.data, rows, cols, sp);
  }, {0});
}

SPARSELLM_REGISTER(magnitude, [](Napi::Env env, Napi::Object exports) {
  exports.Set("magnitudePrune", Napi::Function::New(env, MagnitudePruneJs));
});

}  // namespace sparsellm

#include <memory>

#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/sparsegpt.h"

namespace sparsellm {

Napi::Object SparseGptResultToJs(Napi::Env e, const SparseGptResult& r) {
  auto o = Napi::Object::New(e);
  o.Set("loss", r.loss);
  o.Set("damping", r.damping);
  o.Set("retries", r.retries);
  o.Set("pruned", double(r.pruned));
  o.Set("seconds", r.seconds);
  return o;
}

// Every field required: { sparsity | prunen, prunem }, percdamp, blocksize, accumulateDamping, doublePrecision
// (the CPU and the CUDA binding read the same object).
SparseGptOptions ParseSparseGptOptions(const Napi::Object& o, size_t cols) {
  SparseGptOptions opt;
  opt.sp = ParseSparsity(o, cols);
  opt.percdamp = ReqNumber(o, "percdamp");
  opt.blocksize = int(ReqNumber(o, "blocksize"));
  opt.accumulateDamping = ReqBool(o, "accumulateDamping");
  opt.doublePrecision = ReqBool(o, "doublePrecision");
  Require(o.Env(), opt.blocksize > 0, "blocksize must be > 0");
  Require(o.Env(), !opt.sp.nm() || opt.blocksize % opt.sp.prunem == 0, "blocksize must be a multiple of prunem");
  Require(o.Env(), opt.percdamp >= 0, "percdamp must be >= 0");
  return opt;
}

// sparsegptPrune(W[rows, cols], rows, cols, H[cols, cols], options): Promise<{ loss, damping, retries, pruned, seconds }>
static Napi::Value SparseGptPruneJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t rows = ArgSize(info, 1, "rows"), cols = ArgSize(info, 2, "cols");
  auto W = ArgF32(info, 0, "W", rows * cols);
  auto H = ArgF32(info, 3, "H", cols * cols);
  SparseGptOptions opt = ParseSparseGptOptions(ArgObject(info, 4), cols);
  auto out = std::make_shared<SparseGptResult>();
  auto* w = new PromiseWorker(
      env, [=] { *out = SparseGptPrune(W.data, rows, cols, H.data, opt); },
      [out](Napi::Env e) { return SparseGptResultToJs(e, *out); });
  w->Keep(info[0]);
  w->Keep(info[3]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(sparsegpt, [](Napi::Env env, Napi::Object exports) {
  exports.Set("sparsegptPrune", Napi::Function::New(env, SparseGptPruneJs));
});

}  // namespace sparsellm

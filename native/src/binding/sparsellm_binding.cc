#include <memory>

#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/sparsellm.h"

namespace sparsellm {

Napi::Object SparseGptResultToJs(Napi::Env e, const SparseGptResult& r);

static SparseLlmOptions ParseOptions(const Napi::Object& o, size_t d, size_t f, bool llama) {
  SparseLlmOptions s;
  s.sp = ParseSparsity(o, d);
  ParseSparsity(o, f);
  const double def = llama ? 5.0 : 0.1;
  s.alpha = OptNumber(o, "alpha", def);
  s.beta = OptNumber(o, "beta", def);
  s.gamma = OptNumber(o, "gamma", def);
  s.epochs = int(OptNumber(o, "epochs", 4));
  s.percdamp = OptNumber(o, "percdamp", 0.01);
  s.blocksize = int(OptNumber(o, "blocksize", 128));
  std::string fc2 = OptString(o, "fc2Update", "gd");
  Require(o.Env(), fc2 == "lstsq" || fc2 == "gd", "fc2Update must be 'lstsq' or 'gd'");
  s.fc2Gd = fc2 == "gd";
  s.gdSteps = int(OptNumber(o, "gdSteps", 10));
  s.gdLr = OptNumber(o, "gdLr", 0.01);
  s.referenceQuirks = OptBool(o, "referenceQuirks", false);
  s.lstsqRidge = OptNumber(o, "lstsqRidge", 1e-6);
  s.keepBest = OptBool(o, "keepBest", true);
  s.outputRefit = OptBool(o, "outputRefit", true);
  s.refitRidge = OptNumber(o, "refitRidge", 1e-3);
  std::string su = OptString(o, "sUpdate", "newton");
  Require(o.Env(), su == "gd" || su == "newton", "sUpdate must be 'gd' or 'newton'");
  s.sNewton = su == "newton";
  s.sSteps = int(OptNumber(o, "sSteps", 2));
  s.sLr = OptNumber(o, "sLr", 0.01);
  Require(o.Env(), s.epochs >= 1, "epochs must be >= 1");
  Require(o.Env(), s.alpha > 0 && s.beta > 0 && s.gamma > 0, "alpha, beta, gamma must be > 0");
  Require(o.Env(), s.blocksize > 0 && (!s.sp.nm() || s.blocksize % s.sp.prunem == 0),
          "blocksize must be > 0 and a multiple of prunem");
  Require(o.Env(), s.percdamp >= 0 && s.lstsqRidge >= 0, "percdamp and lstsqRidge must be >= 0");
  return s;
}

static Napi::Object ResultToJs(Napi::Env e, const SparseLlmResult& r) {
  auto o = Napi::Object::New(e);
  auto eps = Napi::Array::New(e, r.epochs.size());
  for (size_t i = 0; i < r.epochs.size(); ++i) {
    const auto& s = r.epochs[i];
    auto x = Napi::Object::New(e);
    x.Set("objective", s.objective);
    x.Set("outTerm", s.outTerm);
    x.Set("actTerm", s.actTerm);
    x.Set("preTerm", s.preTerm);
    x.Set("gateTerm", s.gateTerm);
    x.Set("outputError", s.outputError);
    auto pr = Napi::Array::New(e, s.prune.size());
    for (size_t k = 0; k < s.prune.size(); ++k) pr.Set(uint32_t(k), SparseGptResultToJs(e, s.prune[k]));
    x.Set("prune", pr);
    eps.Set(uint32_t(i), x);
  }
  o.Set("epochs", eps);
  o.Set("outputError", r.outputError);
  o.Set("chosenEpoch", r.chosenEpoch);
  o.Set("seconds", r.seconds);
  return o;
}

static bool Present(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() && !info[i].IsNull();
}

// sparsellmOpt(X, W1, b1, W2, b2, H1, H2|null, N, d, f, nsamples, options)
static Napi::Value SparseLlmOptJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t N = ArgSize(info, 7, "N"), d = ArgSize(info, 8, "d"), f = ArgSize(info, 9, "ffn");
  double nsamples = info[10].As<Napi::Number>().DoubleValue();
  Require(env, nsamples > 0, "nsamples must be > 0");
  auto X = ArgF32(info, 0, "X", N * d);
  auto W1 = ArgF32(info, 1, "W1", f * d);
  auto b1 = ArgF32(info, 2, "b1", f);
  auto W2 = ArgF32(info, 3, "W2", d * f);
  auto b2 = ArgF32(info, 4, "b2", d);
  auto H1 = ArgF32(info, 5, "H1", d * d);
  F32View H2;
  if (Present(info, 6)) H2 = ArgF32(info, 6, "H2", f * f);
  SparseLlmOptions o = ParseOptions(ArgObject(info, 11), d, f, false);
  auto out = std::make_shared<SparseLlmResult>();
  auto* w = new PromiseWorker(
      env,
      [=] { *out = SparseLlmOpt(X.data, N, d, f, W1.data, b1.data, W2.data, b2.data, H1.data, H2.data, nsamples, o); },
      [out](Napi::Env e) { return ResultToJs(e, *out); });
  for (size_t i = 0; i < 7; ++i)
    if (Present(info, i)) w->Keep(info[i]);
  w->Queue();
  return w->Promise();
}

// sparsellmLlama(X, Wg, Wu, Wd, Hx, Hd|null, N, d, f, nsamples, options)
static Napi::Value SparseLlmLlamaJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t N = ArgSize(info, 6, "N"), d = ArgSize(info, 7, "d"), f = ArgSize(info, 8, "ffn");
  double nsamples = info[9].As<Napi::Number>().DoubleValue();
  Require(env, nsamples > 0, "nsamples must be > 0");
  auto X = ArgF32(info, 0, "X", N * d);
  auto Wg = ArgF32(info, 1, "Wg", f * d);
  auto Wu = ArgF32(info, 2, "Wu", f * d);
  auto Wd = ArgF32(info, 3, "Wd", d * f);
  auto Hx = ArgF32(info, 4, "Hx", d * d);
  F32View Hd;
  if (Present(info, 5)) Hd = ArgF32(info, 5, "Hd", f * f);
  SparseLlmOptions o = ParseOptions(ArgObject(info, 10), d, f, true);
  auto out = std::make_shared<SparseLlmResult>();
  auto* w = new PromiseWorker(
      env, [=] { *out = SparseLlmLlama(X.data, N, d, f, Wg.data, Wu.data, Wd.data, Hx.data, Hd.data, nsamples, o); },
      [out](Napi::Env e) { return ResultToJs(e, *out); });
  for (size_t i = 0; i < 6; ++i)
    if (Present(info, i)) w->Keep(info[i]);
  w->Queue();
  return w->Promise();
}

// sparsellmStep(name, arrays: {..}, sizes: {n, N, d, f}, params): single update steps, for tests.
//  'p':      P = (β WᵀW + γI)⁻¹(β Wᵀ(Y − b) + γ act)   arrays {P, Y, W, b?, act}, sizes {N, d, f}
//  'zRelu':  arrays {Z, P, M}, sizes {n}             'zSilu': arrays {Z, P, M, S}, sizes {n}
//  's':      arrays {S, G, P, Z}, sizes {n}, params {newton, steps, lr}
static Napi::Value SparseLlmStepJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].ToString().Utf8Value();
  Napi::Object arr = info[1].As<Napi::Object>(), sz = info[2].As<Napi::Object>(), pr = ArgObject(info, 3);
  auto get = [&](const char* k, size_t len) {
    Require(env, arr.Has(k), std::string("missing array ") + k);
    F32View v = ToF32(arr.Get(k), k);
    Require(env, v.length == len, std::string(k) + " has the wrong length");
    return v;
  };
  double alpha = OptNumber(pr, "alpha", 0.1), beta = OptNumber(pr, "beta", 0.1), gamma = OptNumber(pr, "gamma", 0.1);
  PromiseWorker::Work work;
  if (name == "p") {
    size_t N = size_t(OptNumber(sz, "N", 0)), d = size_t(OptNumber(sz, "d", 0)), f = size_t(OptNumber(sz, "f", 0));
    auto P = get("P", N * f), Y = get("Y", N * d), W = get("W", d * f), act = get("act", N * f);
    F32View b;
    if (arr.Has("b")) b = get("b", d);
    work = [=] { SparseLlmPUpdate(P.data, Y.data, W.data, b.data, act.data, N, d, f, beta, gamma); };
  } else if (name == "zRelu") {
    size_t n = size_t(OptNumber(sz, "n", 0));
    auto Z = get("Z", n), P = get("P", n), M = get("M", n);
    work = [=] { SparseLlmZUpdateRelu(Z.data, P.data, M.data, n, alpha, gamma); };
  } else if (name == "zSilu") {
    size_t n = size_t(OptNumber(sz, "n", 0));
    auto Z = get("Z", n), P = get("P", n), M = get("M", n), S = get("S", n);
    work = [=] { SparseLlmZUpdateSilu(Z.data, P.data, M.data, S.data, n, alpha, gamma); };
  } else if (name == "s") {
    size_t n = size_t(OptNumber(sz, "n", 0));
    auto S = get("S", n), G = get("G", n), P = get("P", n), Z = get("Z", n);
    bool newton = OptBool(pr, "newton", false);
    int steps = int(OptNumber(pr, "steps", 2));
    double lr = OptNumber(pr, "lr", 0.01);
    work = [=] { SparseLlmSUpdate(S.data, G.data, P.data, Z.data, n, alpha, gamma, newton, steps, lr); };
  } else {
    throw Napi::RangeError::New(env, "unknown step " + name);
  }
  auto* w = new PromiseWorker(env, work, nullptr);
  w->Keep(info[1]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(sparsellm, [](Napi::Env env, Napi::Object exports) {
  exports.Set("sparsellmOpt", Napi::Function::New(env, SparseLlmOptJs));
  exports.Set("sparsellmLlama", Napi::Function::New(env, SparseLlmLlamaJs));
  exports.Set("sparsellmStep", Napi::Function::New(env, SparseLlmStepJs));
});

}  // namespace sparsellm

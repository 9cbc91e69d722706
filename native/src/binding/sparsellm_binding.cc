#include <cmath>
#include <memory>

#include "binding/options.h"
#include "binding/registry.h"
#include "solvers/sparsellm.h"

namespace sparsellm {

Napi::Object SparseGptResultToJs(Napi::Env e, const SparseGptResult& r);

// Every field required (SparseLlmOptions in src/native/sparsellm.ts; defaults resolved in src/pipeline/options.ts).
static SparseLlmOptions ParseOptions(const Napi::Object& o, size_t d, size_t f) {
  SparseLlmOptions s;
  s.sp = ParseSparsity(o, d);
  ParseSparsity(o, f);
  s.alpha = ReqNumber(o, "alpha");
  s.beta = ReqNumber(o, "beta");
  s.gamma = ReqNumber(o, "gamma");
  s.epochs = int(ReqNumber(o, "epochs"));
  s.percdamp = ReqNumber(o, "percdamp");
  s.blocksize = int(ReqNumber(o, "blocksize"));
  std::string fc2 = ReqString(o, "fc2Update");
  Require(o.Env(), fc2 == "lstsq" || fc2 == "gd", "fc2Update must be 'lstsq' or 'gd'");
  s.fc2Gd = fc2 == "gd";
  s.gdSteps = int(ReqNumber(o, "gdSteps"));
  s.gdLr = ReqNumber(o, "gdLr");
  s.referenceQuirks = ReqBool(o, "referenceQuirks");
  s.lstsqRidge = ReqNumber(o, "lstsqRidge");
  s.keepBest = ReqBool(o, "keepBest");
  s.outputRefit = ReqBool(o, "outputRefit");
  s.refitRidge = ReqNumber(o, "refitRidge");
  std::string su = ReqString(o, "sUpdate");
  Require(o.Env(), su == "gd" || su == "newton", "sUpdate must be 'gd' or 'newton'");
  s.sNewton = su == "newton";
  s.sSteps = int(ReqNumber(o, "sSteps"));
  s.sLr = ReqNumber(o, "sLr");
  const double chunk = ReqNumber(o, "tokenChunk");
  Require(o.Env(), chunk >= 0 && chunk == double(size_t(chunk)), "tokenChunk must be a non-negative integer");
  s.tokenChunk = size_t(chunk);
  s.lastEpochObjective = ReqBool(o, "lastEpochObjective");
  Require(o.Env(), s.epochs >= 1, "epochs must be >= 1");
  Require(o.Env(), s.alpha > 0 && s.beta > 0 && s.gamma > 0, "alpha, beta, gamma must be > 0");
  Require(o.Env(), s.blocksize > 0 && (!s.sp.nm() || s.blocksize % s.sp.prunem == 0),
          "blocksize must be > 0 and a multiple of prunem");
  Require(o.Env(), s.percdamp >= 0 && s.lstsqRidge >= 0 && s.refitRidge >= 0,
          "percdamp, lstsqRidge and refitRidge must be >= 0");
  return s;
}

static Napi::Object ResultToJs(Napi::Env e, const SparseLlmResult& r) {
  auto o = Napi::Object::New(e);
  auto eps = Napi::Array::New(e, r.epochs.size());
  for (size_t i = 0; i < r.epochs.size(); ++i) {
    const auto& s = r.epochs[i];
    auto x = Napi::Object::New(e);
    // null where the solver skipped the terms (the last epoch without lastEpochObjective)
    auto term = [&](double v) { return std::isnan(v) ? e.Null() : Napi::Number::New(e, v); };
    x.Set("objective", term(s.objective));
    x.Set("outTerm", term(s.outTerm));
    x.Set("actTerm", term(s.actTerm));
    x.Set("preTerm", term(s.preTerm));
    x.Set("gateTerm", term(s.gateTerm));
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
  auto warnings = Napi::Array::New(e, r.warnings.size());
  for (size_t i = 0; i < r.warnings.size(); ++i) warnings.Set(uint32_t(i), r.warnings[i]);
  o.Set("warnings", warnings);
  return o;
}

static bool Present(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() && !info[i].IsNull();
}

// sparsellmOpt(X, W1, b1, W2, b2, H1, H2|null, N, d, f, nsamples, options); every prune inside through `prune`
// (the CPU SparseGptPrune here; the CUDA binding passes its GPU one for cudaSparsellmOpt).
Napi::Value SparseLlmOptCall(const Napi::CallbackInfo& info, SparseGptPruneFn prune) {
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
  SparseLlmOptions o = ParseOptions(ArgObject(info, 11), d, f);
  o.prune = prune;
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

// sparsellmLlama(X, Wg, Wu, Wd, Hx, Hd|null, N, d, f, nsamples, options), prunes through `prune` as above
Napi::Value SparseLlmLlamaCall(const Napi::CallbackInfo& info, SparseGptPruneFn prune) {
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
  SparseLlmOptions o = ParseOptions(ArgObject(info, 10), d, f);
  o.prune = prune;
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
//  'p':      P = (β WᵀW + γI)⁻¹(β Wᵀ(Y − b) + γ act)   arrays {P, Y, W, b?, act}, sizes {N, d, f, chunk?}
//  'zRelu':  arrays {Z, P, M}, sizes {n}             'zSilu': arrays {Z, P, M, S}, sizes {n}
//  's':      arrays {S, G, P, Z}, sizes {n}, params {newton, steps, lr}
//  'gram':   G = AᵀA as the solver accumulates it   arrays {A, G: Float64Array}, sizes {rows, n, chunk?}
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
  PromiseWorker::Work work;
  if (name == "p") {
    size_t N = size_t(ReqNumber(sz, "N")), d = size_t(ReqNumber(sz, "d")), f = size_t(ReqNumber(sz, "f"));
    const double beta = ReqNumber(pr, "beta"), gamma = ReqNumber(pr, "gamma");
    auto P = get("P", N * f), Y = get("Y", N * d), W = get("W", d * f), act = get("act", N * f);
    F32View b;
    if (arr.Has("b")) b = get("b", d);
    const size_t chunk = sz.Has("chunk") ? size_t(ReqNumber(sz, "chunk")) : 0;
    work = [=] { SparseLlmPUpdate(P.data, Y.data, W.data, b.data, act.data, N, d, f, beta, gamma, chunk); };
  } else if (name == "gram") {
    size_t rows = size_t(ReqNumber(sz, "rows")), n = size_t(ReqNumber(sz, "n"));
    const size_t chunk = sz.Has("chunk") ? size_t(ReqNumber(sz, "chunk")) : 0;
    auto A = get("A", rows * n);
    Napi::Value g = arr.Get("G");
    Require(env, g.IsTypedArray() && g.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array,
            "G must be a Float64Array");
    auto G64 = g.As<Napi::Float64Array>();
    Require(env, G64.ElementLength() == n * n, "G has the wrong length");
    double* G = G64.Data();
    work = [=] { SparseLlmGram(A.data, rows, n, chunk, G); };
  } else if (name == "zRelu") {
    size_t n = size_t(ReqNumber(sz, "n"));
    const double alpha = ReqNumber(pr, "alpha"), gamma = ReqNumber(pr, "gamma");
    auto Z = get("Z", n), P = get("P", n), M = get("M", n);
    work = [=] { SparseLlmZUpdateRelu(Z.data, P.data, M.data, n, alpha, gamma); };
  } else if (name == "zSilu") {
    size_t n = size_t(ReqNumber(sz, "n"));
    const double alpha = ReqNumber(pr, "alpha"), gamma = ReqNumber(pr, "gamma");
    auto Z = get("Z", n), P = get("P", n), M = get("M", n), S = get("S", n);
    work = [=] { SparseLlmZUpdateSilu(Z.data, P.data, M.data, S.data, n, alpha, gamma); };
  } else if (name == "s") {
    size_t n = size_t(ReqNumber(sz, "n"));
    const double alpha = ReqNumber(pr, "alpha"), gamma = ReqNumber(pr, "gamma");
    auto S = get("S", n), G = get("G", n), P = get("P", n), Z = get("Z", n);
    bool newton = ReqBool(pr, "newton");
    int steps = int(ReqNumber(pr, "steps"));
    double lr = ReqNumber(pr, "lr");
    work = [=] { SparseLlmSUpdate(S.data, G.data, P.data, Z.data, n, alpha, gamma, newton, steps, lr); };
  } else {
    throw Napi::RangeError::New(env, "unknown step " + name);
  }
  auto* w = new PromiseWorker(env, work, nullptr);
  w->Keep(info[1]);
  w->Queue();
  return w->Promise();
}

static Napi::Value SparseLlmOptJs(const Napi::CallbackInfo& info) { return SparseLlmOptCall(info, &SparseGptPrune); }
static Napi::Value SparseLlmLlamaJs(const Napi::CallbackInfo& info) { return SparseLlmLlamaCall(info, &SparseGptPrune); }

// sparsellmTokenBlockRows(tokens, ffn, requested): the solver's token-block size (0 = automatic), for the memory estimate.
static Napi::Value SparseLlmTokenBlockRowsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double v[3];
  for (size_t i = 0; i < 3; ++i) {
    Require(env, info.Length() > i && info[i].IsNumber(), "sparsellmTokenBlockRows(tokens, ffn, requested): numbers");
    v[i] = info[i].As<Napi::Number>().DoubleValue();
    Require(env, v[i] >= 0 && v[i] == double(size_t(v[i])), "sparsellmTokenBlockRows: non-negative integers");
  }
  return Napi::Number::New(env, double(SparseLlmTokenBlockRows(size_t(v[0]), size_t(v[1]), size_t(v[2]))));
}

SPARSELLM_REGISTER(sparsellm, [](Napi::Env env, Napi::Object exports) {
  exports.Set("sparsellmTokenBlockRows", Napi::Function::New(env, SparseLlmTokenBlockRowsJs));
  exports.Set("sparsellmOpt", Napi::Function::New(env, SparseLlmOptJs));
  exports.Set("sparsellmLlama", Napi::Function::New(env, SparseLlmLlamaJs));
  exports.Set("sparsellmStep", Napi::Function::New(env, SparseLlmStepJs));
});

}  // namespace sparsellm

#include "binding/registry.h"
#include "common/async.h"
#include "common/cross_entropy.h"

namespace sparsellm {

// crossEntropyRows(logits: Float32Array, rows, vocab, targets: Int32Array, nll: Float64Array): Promise<void>
static Napi::Value CrossEntropyRowsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto logits = ToF32(info[0], "logits");
  size_t rows = info[1].As<Napi::Number>().Int64Value();
  size_t vocab = info[2].As<Napi::Number>().Int64Value();
  Require(env, info[3].IsTypedArray() && info[3].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array, "targets must be an Int32Array");
  Require(env, info[4].IsTypedArray() && info[4].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array, "nll must be a Float64Array");
  auto targets = info[3].As<Napi::Int32Array>();
  auto nll = info[4].As<Napi::Float64Array>();
  Require(env, logits.length == rows * vocab, "logits must hold rows*vocab floats");
  Require(env, targets.ElementLength() == rows && nll.ElementLength() == rows, "targets and nll must hold one value per row");
  for (size_t r = 0; r < rows; ++r) Require(env, targets[r] < int32_t(vocab), "a target id is outside the vocabulary");
  const int32_t* t = targets.Data();
  double* out = nll.Data();
  auto* w = new PromiseWorker(env, [=] { CrossEntropyRows(logits.data, rows, vocab, t, out); }, nullptr);
  w->Keep(info[0]);
  w->Keep(info[3]);
  w->Keep(info[4]);
  w->Queue();
  return w->Promise();
}

// logSoftmaxRows(logits: Float32Array, rows, vocab): Promise<void> — in place
static Napi::Value LogSoftmaxRowsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto logits = ToF32(info[0], "logits");
  size_t rows = info[1].As<Napi::Number>().Int64Value();
  size_t vocab = info[2].As<Napi::Number>().Int64Value();
  Require(env, vocab > 0 && logits.length == rows * vocab, "logits must hold rows*vocab floats");
  auto* w = new PromiseWorker(env, [=] { LogSoftmaxRows(logits.data, rows, vocab); }, nullptr);
  w->Keep(info[0]);
  w->Queue();
  return w->Promise();
}

// klRows(refLogProbs: Float32Array, logits: Float32Array, rows, vocab, kl: Float64Array): Promise<void>
static Napi::Value KlRowsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ref = ToF32(info[0], "refLogProbs");
  auto logits = ToF32(info[1], "logits");
  size_t rows = info[2].As<Napi::Number>().Int64Value();
  size_t vocab = info[3].As<Napi::Number>().Int64Value();
  Require(env, info[4].IsTypedArray() && info[4].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array, "kl must be a Float64Array");
  auto kl = info[4].As<Napi::Float64Array>();
  Require(env, vocab > 0 && ref.length == rows * vocab && logits.length == rows * vocab, "refLogProbs and logits must hold rows*vocab floats");
  Require(env, kl.ElementLength() == rows, "kl must hold one value per row");
  double* out = kl.Data();
  auto* w = new PromiseWorker(env, [=] { KlRows(ref.data, logits.data, rows, vocab, out); }, nullptr);
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->Keep(info[4]);
  w->Queue();
  return w->Promise();
}

SPARSELLM_REGISTER(cross_entropy, [](Napi::Env env, Napi::Object exports) {
  exports.Set("crossEntropyRows", Napi::Function::New(env, CrossEntropyRowsJs));
  exports.Set("logSoftmaxRows", Napi::Function::New(env, LogSoftmaxRowsJs));
  exports.Set("klRows", Napi::Function::New(env, KlRowsJs));
});

}  // namespace sparsellm

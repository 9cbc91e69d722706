// Helpers for reading option objects and typed arrays in the solver bindings.
#pragma once
#include <napi.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/async.h"
#include "common/linalg.h"

namespace sparsellm {

// Option fields are all required: the bindings fall back to nothing (every default is resolved once, in
// src/pipeline/options.ts). A missing field is a TypeError naming it.
inline Napi::Value RequiredField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Has(key) ? o.Get(key) : o.Env().Undefined();
  if (v.IsUndefined() || v.IsNull()) throw Napi::TypeError::New(o.Env(), std::string("option ") + key + " is missing");
  return v;
}
inline double ReqNumber(const Napi::Object& o, const char* key) {
  Napi::Value v = RequiredField(o, key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("option ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
inline bool ReqBool(const Napi::Object& o, const char* key) {
  Napi::Value v = RequiredField(o, key);
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("option ") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}
inline std::string ReqString(const Napi::Object& o, const char* key) {
  Napi::Value v = RequiredField(o, key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("option ") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}
inline Napi::Object ArgObject(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsObject()) throw Napi::TypeError::New(info.Env(), "options must be an object");
  return info[i].As<Napi::Object>();
}
inline size_t ArgSize(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != double(size_t(d))) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a non-negative integer");
  return size_t(d);
}
// { sparsity } or { prunen, prunem } (N:M when prunen is given and not 0; a `sparsity` beside it is ignored),
// validated against `cols` (throws RangeError).
inline Sparsity ParseSparsity(const Napi::Object& o, size_t cols) {
  Sparsity sp;
  const bool nm = o.Has("prunen") && !o.Get("prunen").IsUndefined() && !o.Get("prunen").IsNull() &&
                  !(o.Get("prunen").IsNumber() && o.Get("prunen").As<Napi::Number>().DoubleValue() == 0);
  if (nm) {
    sp.prunen = int(ReqNumber(o, "prunen"));
    sp.prunem = int(ReqNumber(o, "prunem"));
  } else {
    sp.sparsity = ReqNumber(o, "sparsity");
  }
  try {
    ValidateSparsity(sp, cols);
  } catch (const std::exception& e) {
    throw Napi::RangeError::New(o.Env(), e.what());
  }
  return sp;
}
// A Float32Array argument of exactly `len` values.
inline F32View ArgF32(const Napi::CallbackInfo& info, size_t i, const char* what, size_t len) {
  if (info.Length() <= i) throw Napi::TypeError::New(info.Env(), std::string(what) + " is missing");
  F32View v = ToF32(info[i], what);
  Require(info.Env(), v.length == len,
          std::string(what) + " has " + std::to_string(v.length) + " values, expected " + std::to_string(len));
  return v;
}

// Runs a mask-only solver (magnitude, Wanda) off the JS thread: `prune` returns the number of zeros; the Promise
// resolves to { pruned, seconds }. `keep` lists the argument indices (typed arrays) to keep alive meanwhile.
inline Napi::Value QueueMaskSolver(const Napi::CallbackInfo& info, std::function<size_t()> prune, std::vector<size_t> keep) {
  auto out = std::make_shared<std::pair<size_t, double>>(0, 0.0);
  auto* w = new PromiseWorker(
      info.Env(),
      [out, prune] {
        auto t0 = std::chrono::steady_clock::now();
        out->first = prune();
        out->second = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      },
      [out](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("pruned", double(out->first));
        r.Set("seconds", out->second);
        return r;
      });
  for (size_t i : keep) w->Keep(info[i]);
  w->Queue();
  return w->Promise();
}

}  // namespace sparsellm

// A small helper that runs a C++ lambda on the libuv thread pool and settles a Promise.
// Typed arrays passed in are kept alive by references held for the duration of the work,
// so solvers read and write JS memory in place (no copies).
#pragma once
#include <napi.h>
#include <functional>
#include <string>
#include <vector>

#include "common/ftz.h"

namespace sparsellm {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  PromiseWorker(Napi::Env env, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}

  // Keep a JS value (typically a Float32Array) alive until the work settles.
  void Keep(const Napi::Value& value) { kept_.emplace_back(Napi::Persistent(value.As<Napi::Object>())); }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    deferred_.Resolve(done_ ? done_(Env()) : Env().Undefined());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  std::vector<Napi::ObjectReference> kept_;
};

// A float32 view of a JS Float32Array (no copy).
struct F32View {
  float* data = nullptr;
  size_t length = 0;
};

inline F32View ToF32(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Float32Array");
  }
  auto a = v.As<Napi::Float32Array>();
  return {a.Data(), a.ElementLength()};
}

inline void Require(Napi::Env env, bool ok, const std::string& message) {
  if (!ok) throw Napi::RangeError::New(env, message);
}


}  // namespace sparsellm

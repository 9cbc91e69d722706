// Each binding file registers its exports here, so adding a solver never touches addon.cc.
#pragma once
#include <napi.h>
#include <functional>
#include <vector>

namespace sparsellm {
using Registrar = std::function<void(Napi::Env, Napi::Object)>;
std::vector<Registrar>& Registrars();
struct AutoRegister {
  explicit AutoRegister(Registrar r) { Registrars().push_back(std::move(r)); }
};
}  // namespace sparsellm

#define SPARSELLM_REGISTER(name, fn) static ::sparsellm::AutoRegister sparsellm_register_##name(fn)

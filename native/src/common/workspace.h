// Reusable scratch memory for the solvers.
// Fresh large allocations are expensive where first-touch page faults are (on the Firecracker VMs this
// project is benchmarked on, ~5 ms per MB: a 3072² float buffer costs ~180 ms just to be written once).
// Buffers taken here go back to a small process-wide cache when the Scratch is destroyed, so repeated
// solver calls on same-sized layers reuse already-mapped memory. The cache keeps at most
// SPARSELLM_WORKSPACE_MB (default 256) MB; larger buffers are freed as before.
#pragma once
#include <cstddef>

namespace sparsellm {

class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t bytes) { Reset(bytes); }
  ~Scratch() { Release(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // (Re)acquire at least `bytes` bytes (64-byte aligned, contents unspecified).
  void Reset(size_t bytes);
  void Release();
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

// Frees every cached buffer (between blocks, so that the cache does not stay resident through the next block's forward
// passes; in use buffers are not touched).
void ReleaseWorkspaceCache();

}  // namespace sparsellm

#include "common/workspace.h"

#include <sys/mman.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace sparsellm {
namespace {
struct Cached {
  void* ptr;
  size_t cap;
};
std::mutex g_mu;
std::vector<Cached>& Pool() {
  static auto* pool = new std::vector<Cached>();  // never destroyed (no exit-order issues)
  return *pool;
}
size_t g_cached = 0;
size_t Limit() {
  static const size_t limit = [] {
    const char* e = std::getenv("SPARSELLM_WORKSPACE_MB");
    long mb = e ? std::atol(e) : 256;
    return size_t(mb < 0 ? 0 : mb) << 20;
  }();
  return limit;
}
// Buffers from 1 MiB up are mapped directly: freeing them unmaps them, so ReleaseWorkspaceCache always returns them
// to the system. From glibc's heap they could stay resident: after a large free glibc raises its mmap threshold (up
// to 32 MiB), later buffers below it come from a thread arena, and malloc_trim does not shrink those arenas' top.
constexpr size_t kMapBytes = size_t(1) << 20;
void* Allocate(size_t cap) {
  if (cap < kMapBytes) return std::aligned_alloc(64, cap);
  void* p = mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;  // page-aligned
}
void Free(void* p, size_t cap) {
  if (cap < kMapBytes) std::free(p);
  else munmap(p, cap);
}
}  // namespace

void Scratch::Reset(size_t bytes) {
  if (ptr_ && cap_ >= bytes) return;
  Release();
  if (bytes == 0) bytes = 64;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto& pool = Pool();
    size_t best = pool.size();
    for (size_t i = 0; i < pool.size(); ++i)  // smallest cached buffer that fits
      if (pool[i].cap >= bytes && (best == pool.size() || pool[i].cap < pool[best].cap)) best = i;
    if (best < pool.size()) {
      ptr_ = pool[best].ptr;
      cap_ = pool[best].cap;
      g_cached -= cap_;
      pool.erase(pool.begin() + long(best));
      return;
    }
  }
  const size_t cap = (bytes + 63) / 64 * 64;
  ptr_ = Allocate(cap);
  if (!ptr_) throw std::bad_alloc();
  cap_ = cap;
}

void Scratch::Release() {
  if (!ptr_) return;
  void* p = ptr_;
  const size_t cap = cap_;
  ptr_ = nullptr;
  cap_ = 0;
  std::vector<Cached> drop;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto& pool = Pool();
    if (cap > Limit()) {
      drop.push_back({p, cap});
    } else {
      pool.push_back({p, cap});
      g_cached += cap;
      while (g_cached > Limit()) {  // evict the oldest
        drop.push_back(pool.front());
        g_cached -= pool.front().cap;
        pool.erase(pool.begin());
      }
    }
  }
  for (auto& c : drop) Free(c.ptr, c.cap);
}

void ReleaseWorkspaceCache() {
  std::vector<Cached> drop;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    drop.swap(Pool());
    g_cached = 0;
  }
  for (auto& c : drop) Free(c.ptr, c.cap);
}

}  // namespace sparsellm

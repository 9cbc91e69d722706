#include "common/workspace.h"

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
  ptr_ = std::aligned_alloc(64, cap);
  if (!ptr_) throw std::bad_alloc();
  cap_ = cap;
}

void Scratch::Release() {
  if (!ptr_) return;
  void* p = ptr_;
  const size_t cap = cap_;
  ptr_ = nullptr;
  cap_ = 0;
  std::vector<void*> drop;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto& pool = Pool();
    if (cap > Limit()) {
      drop.push_back(p);
    } else {
      pool.push_back({p, cap});
      g_cached += cap;
      while (g_cached > Limit()) {  // evict the oldest
        drop.push_back(pool.front().ptr);
        g_cached -= pool.front().cap;
        pool.erase(pool.begin());
      }
    }
  }
  for (void* q : drop) std::free(q);
}

void ReleaseWorkspaceCache() {
  std::vector<Cached> drop;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    drop.swap(Pool());
    g_cached = 0;
  }
  for (auto& c : drop) std::free(c.ptr);
}

}  // namespace sparsellm

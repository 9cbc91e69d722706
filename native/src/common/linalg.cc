#include "common/linalg.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <exception>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/ftz.h"
#include "common/blas.h"
#include "common/workspace.h"

namespace sparsellm {

void ValidateSparsity(const Sparsity& sp, size_t cols) {
  if (sp.prunen != 0 || sp.prunem != 0) {
    if (!(sp.prunen > 0 && sp.prunen < sp.prunem))
      throw std::invalid_argument("N:M needs 0 < prunen < prunem (prunen = number pruned per group), got " +
                                  std::to_string(sp.prunen) + ":" + std::to_string(sp.prunem));
    if (cols % size_t(sp.prunem) != 0)
      throw std::invalid_argument("N:M needs the input count " + std::to_string(cols) + " to be a multiple of M = " +
                                  std::to_string(sp.prunem));
    return;
  }
  if (!(sp.sparsity >= 0 && sp.sparsity < 1))
    throw std::invalid_argument("sparsity must be in [0, 1), got " + std::to_string(sp.sparsity));
}

namespace {
// Persistent helper threads for ParallelFor (thread creation per call cost ~0.1 ms each on the loaded
// 2-core machines, paid per SparseGPT block). One job at a time; a call made while the pool is busy (another
// libuv thread, or a nested call from inside a job) falls back to spawning threads as before.
class HelperPool {
 public:
  static HelperPool& Get() {
    static HelperPool* pool = new HelperPool();  // never destroyed: helpers are detached
    return *pool;
  }
  std::mutex run;  // held by the caller for the whole job
  void Run(size_t threads, size_t n, size_t chunk, const std::function<void(size_t, size_t)>& fn) {
    EnsureWorkers(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      chunk_ = chunk;
      active_ = threads;
      pending_ = threads - 1;
      ++gen_;
    }
    cv_.notify_all();
    std::exception_ptr err;
    try {
      fn(0, std::min(n, chunk));
    } catch (...) {
      err = std::current_exception();
    }
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (err) std::rethrow_exception(err);
  }

 private:
  void EnsureWorkers(size_t k) {
    while (workers_ < k) {
      const size_t id = ++workers_;
      std::thread([this, id] { Loop(id); }).detach();
    }
  }
  void Loop(size_t id) {
    EnableFlushToZero();
    t_helper = true;
    size_t seen = 0;
    for (;;) {
      const std::function<void(size_t, size_t)>* fn;
      size_t b, e;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return gen_ != seen; });
        seen = gen_;
        if (id >= active_) continue;
        fn = fn_;
        b = std::min(n_, id * chunk_);
        e = std::min(n_, b + chunk_);
      }
      if (b < e) (*fn)(b, e);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  size_t n_ = 0, chunk_ = 0, active_ = 0, pending_ = 0, gen_ = 0, workers_ = 0;

 public:
  static thread_local bool t_helper;
};
thread_local bool HelperPool::t_helper = false;
}  // namespace

void ParallelFor(size_t n, const std::function<void(size_t, size_t)>& fn, size_t minChunk) {
  size_t hw = std::max(1u, std::thread::hardware_concurrency());
  size_t threads = std::min(hw, (n + minChunk - 1) / std::max<size_t>(1, minChunk));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  size_t chunk = (n + threads - 1) / threads;
  auto& pool = HelperPool::Get();
  if (!HelperPool::t_helper && pool.run.try_lock()) {
    std::lock_guard<std::mutex> hold(pool.run, std::adopt_lock);
    pool.Run(threads, n, chunk, fn);
    return;
  }
  std::vector<std::thread> spawned;
  for (size_t t = 1; t < threads; ++t) {
    size_t b = t * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    spawned.emplace_back([&fn, b, e] {
      EnableFlushToZero();
      fn(b, e);
    });
  }
  fn(0, std::min(n, chunk));
  for (auto& th : spawned) th.join();
}

float RoundToHalf(float x) {
  if (!std::isfinite(x)) return x;
  float a = std::fabs(x);
  if (a >= 65520.0f) return std::copysign(INFINITY, x);  // rounds to inf in fp16
  if (a < 6.103515625e-05f) {
    // subnormal range: fixed quantum 2^-24
    const float q = 5.9604644775390625e-08f;
    return std::copysign(std::nearbyint(a / q) * q, x);
  }
  int e;
  std::frexp(a, &e);                     // a = m * 2^e, m in [0.5, 1)
  float quantum = std::ldexp(1.0f, e - 11);  // 10 mantissa bits after the leading one
  return std::copysign(std::nearbyint(a / quantum) * quantum, x);
}

void RoundToHalf(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = RoundToHalf(x[i]);
}

bool AllFinite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

void RequireFinite(const float* x, size_t n, const std::string& what) {
  if (!AllFinite(x, n)) throw std::runtime_error(what + " contains NaN or Inf");
}

void MirrorUpper(float* A, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < i; ++j) A[i * n + j] = A[j * n + i];
}

namespace {
int PotrfU(int n, float* a) {
  int info = 0;
  spotrf_("U", &n, a, &n, &info);
  return info;
}
int PotrfU(int n, double* a) {
  int info = 0;
  dpotrf_("U", &n, a, &n, &info);
  return info;
}
int TrtriU(int n, float* a) {
  int info = 0;
  strtri_("U", "N", &n, a, &n, &info);
  return info;
}
int TrtriU(int n, double* a) {
  int info = 0;
  dtrtri_("U", "N", &n, a, &n, &info);
  return info;
}
// B = J A' J (A's flat array reversed, its diagonal from `diag`), then B ← Uᵦ⁻¹ in place. Returns LAPACK's info.
template <typename T>
int ReversedInverseFactor(const float* A, const float* diag, size_t n, T* B) {
  const size_t nn = n * n;
  for (size_t k = 0; k < nn; ++k) B[k] = T(A[nn - 1 - k]);
  for (size_t i = 0; i < n; ++i) B[(n - 1 - i) * (n + 1)] = T(diag[i]);
  int info = PotrfU(int(n), B);
  if (info == 0) info = TrtriU(int(n), B);
  return info;
}
}  // namespace

bool UpperCholeskyOfInverse(const float* A, const float* diag, size_t n, bool inDouble, float* U) {
  const size_t nn = n * n;
  int info;
  if (inDouble) {
    Scratch buf(nn * sizeof(double));  // reused memory: a fresh 3072² double buffer costs ~0.4 s of page faults
    double* B = buf.as<double>();
    info = ReversedInverseFactor(A, diag, n, B);
    if (info == 0)
      for (size_t k = 0; k < nn; ++k) U[k] = float(B[nn - 1 - k]);
  } else {
    info = ReversedInverseFactor(A, diag, n, U);
    if (info == 0) std::reverse(U, U + nn);
  }
  if (info != 0) return false;
  for (size_t i = 0; i < n; ++i)
    if (!(std::isfinite(U[i * n + i]) && U[i * n + i] > 0) || !AllFinite(U + i * n + i, n - i)) return false;
  return true;
}

bool SpdFactor::Factor(const double* G, size_t n_, double ridge) {
  n = n_;
  L_.Reset(n * n * sizeof(double));
  double* L = L_.as<double>();
  for (size_t i = 0; i < n * n; ++i) L[i] = G[i];
  for (size_t i = 0; i < n; ++i) L[i * n + i] += ridge;
  int nn = int(n), info = 0;
  dpotrf_("L", &nn, L, &nn, &info);  // symmetric: row-major G == column-major G
  return info == 0;
}

void SpdFactor::Solve(double* B, size_t nrhs) const {
  int nn = int(n), nr = int(nrhs), info = 0;
  dpotrs_("L", &nn, &nr, L_.as<double>(), &nn, B, &nn, &info);
  if (info != 0) throw std::runtime_error("dpotrs failed, info=" + std::to_string(info));
}

bool SpdInverse(const float* A, size_t n, float* Ainv) {
  std::vector<double> B(A, A + n * n);
  int nn = int(n), info = 0;
  dpotrf_("L", &nn, B.data(), &nn, &info);
  if (info != 0) return false;
  dpotri_("L", &nn, B.data(), &nn, &info);
  if (info != 0) return false;
  // lower triangle (column-major) holds the inverse: element (r, c), r >= c, at B[r + c*n]
  for (size_t c = 0; c < n; ++c)
    for (size_t r = c; r < n; ++r) Ainv[r * n + c] = Ainv[c * n + r] = float(B[r + c * n]);
  return AllFinite(Ainv, n * n);
}

}  // namespace sparsellm

// Run-time loading of cuBLAS / cuSOLVER (see dynlibs.h). Search order for each library:
//   1. $SPARSELLM_CUDA_LIBDIR (colon-separated folders),
//   2. the plain soname (the dynamic loader's own search: LD_LIBRARY_PATH, RUNPATH, ld.so.cache),
//   3. $CUDA_HOME, $CUDA_PATH, /usr/local/cuda (lib64, targets/x86_64-linux/lib),
//   4. NVIDIA pip wheels: <site-packages>/nvidia/{cublas,cusolver,...}/lib and nvidia/cu13/lib, for
//      site-packages under $VIRTUAL_ENV, $CONDA_PREFIX, PYTHONPATH, ~/.local, /usr/local, /usr, /opt/conda.
// Newer sonames are tried first (cuBLAS 13 then 12; cuSOLVER 12 (CUDA 13) then 11 (CUDA 12)).
// Dependencies of the wheels (cublasLt, nvJitLink, cusparse) are preloaded RTLD_GLOBAL from the same
// or sibling wheel folders, since torch-style venvs do not always put them on the loader path.
#include "cuda/dynlibs.h"

#include <dlfcn.h>
#include <glob.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <sstream>
#include <vector>

namespace sparsellm {
namespace cuda {
namespace {

std::vector<std::string> Split(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ':'))
    if (!item.empty()) out.push_back(item);
  return out;
}

void GlobInto(const std::string& pattern, std::vector<std::string>* out) {
  glob_t g;
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out->push_back(g.gl_pathv[i]);
  globfree(&g);
}

// Folders that may hold the library of the NVIDIA wheel `wheel` (cublas, cusolver, ...).
std::vector<std::string> CandidateDirs(const std::string& wheel) {
  std::vector<std::string> dirs = Split(std::getenv("SPARSELLM_CUDA_LIBDIR"));
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* root = std::getenv(env)) {
      dirs.push_back(std::string(root) + "/lib64");
      dirs.push_back(std::string(root) + "/lib");
      dirs.push_back(std::string(root) + "/targets/x86_64-linux/lib");
    }
  }
  dirs.push_back("/usr/local/cuda/lib64");
  dirs.push_back("/usr/local/cuda/targets/x86_64-linux/lib");
  std::vector<std::string> sites = Split(std::getenv("PYTHONPATH"));
  std::vector<std::string> roots;
  for (const char* env : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* r = std::getenv(env)) roots.push_back(r);
  if (const char* home = std::getenv("HOME")) roots.push_back(std::string(home) + "/.local");
  for (const char* r : {"/usr/local", "/usr", "/opt/conda"}) roots.push_back(r);
  for (const auto& r : roots) {
    GlobInto(r + "/lib/python3*/site-packages", &sites);
    GlobInto(r + "/lib/python3*/dist-packages", &sites);
  }
  for (const auto& s : sites) {
    dirs.push_back(s + "/nvidia/" + wheel + "/lib");
    dirs.push_back(s + "/nvidia/cu13/lib");  // CUDA 13 wheels put every library in one folder
  }
  return dirs;
}

void* TryOpen(const std::string& path, std::string* lastError) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char* e = dlerror();
    // Keep the most informative error: a library that exists but fails to load beats "not found".
    if (e && (lastError->empty() || std::string(e).find("No such file") == std::string::npos)) *lastError = e;
  }
  return h;
}

// Preload dependencies that sit beside `dir` or in sibling wheel folders (best effort, errors ignored).
void PreloadDeps(const std::string& dir, const std::vector<std::string>& names) {
  std::vector<std::string> places = {dir, dir + "/../../cublas/lib", dir + "/../../nvjitlink/lib",
                                     dir + "/../../cusparse/lib"};
  for (const auto& n : names) {
    for (const auto& p : places) {
      std::string ignored;
      if (TryOpen(p + "/" + n, &ignored)) break;
    }
  }
}

struct Found {
  void* handle = nullptr;
  std::string path;
  std::string error;
};

Found Open(const std::vector<std::string>& sonames, const std::string& wheel, const std::vector<std::string>& deps) {
  Found f;
  const std::vector<std::string> explicitDirs = Split(std::getenv("SPARSELLM_CUDA_LIBDIR"));
  const std::vector<std::string> dirs = CandidateDirs(wheel);
  for (const auto& so : sonames) {
    // An explicit folder wins over the loader path; the loader path wins over guessed folders.
    for (const auto& d : explicitDirs) {
      std::string p = d + "/" + so;
      if (access(p.c_str(), R_OK) != 0) continue;
      PreloadDeps(d, deps);
      if ((f.handle = TryOpen(p, &f.error))) return f.path = p, f;
    }
    if ((f.handle = TryOpen(so, &f.error))) return f.path = so + " (loader path)", f;
    for (const auto& d : dirs) {
      std::string p = d + "/" + so;
      if (access(p.c_str(), R_OK) != 0) continue;
      PreloadDeps(d, deps);
      if ((f.handle = TryOpen(p, &f.error))) return f.path = p, f;
    }
  }
  return f;
}

template <typename F>
bool Sym(void* h, const char* name, F* fn, std::string* missing) {
  *fn = reinterpret_cast<F>(dlsym(h, name));
  if (!*fn && missing) *missing += (missing->empty() ? "" : ", ") + std::string(name);
  return *fn != nullptr;
}

std::string NotFound(const std::string& what, const std::vector<std::string>& sonames, const Found& f,
                     const char* hint) {
  std::string names;
  for (const auto& s : sonames) names += (names.empty() ? "" : "/") + s;
  std::string r = what + " not found (" + names + ")";
  if (!f.error.empty() && f.error.find("No such file") == std::string::npos) r += ": " + f.error;
  return r + "; " + hint;
}

}  // namespace

const CublasApi* LoadCublas(std::string* reason) {
  static std::once_flag once;
  static CublasApi api;
  static const CublasApi* result = nullptr;
  static std::string why;
  std::call_once(once, [] {
    std::vector<std::string> sonames = {"libcublas.so.13", "libcublas.so.12"};
    Found f = Open(sonames, "cublas", {"libcublasLt.so.13", "libcublasLt.so.12"});
    if (!f.handle) {
      why = NotFound("cuBLAS", sonames, f,
                     "install CUDA 12/13 or `pip install nvidia-cublas-cu12` and put its lib folder on "
                     "LD_LIBRARY_PATH (or SPARSELLM_CUDA_LIBDIR)");
      return;
    }
    std::string missing;
    Sym(f.handle, "cublasCreate_v2", &api.Create, &missing);
    Sym(f.handle, "cublasDestroy_v2", &api.Destroy, &missing);
    Sym(f.handle, "cublasSetStream_v2", &api.SetStream, &missing);
    Sym(f.handle, "cublasSgemm_v2", &api.Sgemm, &missing);
    Sym(f.handle, "cublasSsyrk_v2", &api.Ssyrk, &missing);
    Sym(f.handle, "cublasSetMathMode", &api.SetMathMode, nullptr);
    if (!missing.empty()) {
      why = "cuBLAS at " + f.path + " lacks " + missing;
      return;
    }
    api.path = f.path;
    result = &api;
  });
  if (!result && reason) *reason = why;
  return result;
}

const CusolverApi* LoadCusolver(std::string* reason) {
  static std::once_flag once;
  static CusolverApi api;
  static const CusolverApi* result = nullptr;
  static std::string why;
  std::call_once(once, [] {
    std::vector<std::string> sonames = {"libcusolver.so.12", "libcusolver.so.11"};
    Found f = Open(sonames, "cusolver",
                   {"libnvJitLink.so.13", "libnvJitLink.so.12", "libcublasLt.so.13", "libcublasLt.so.12",
                    "libcublas.so.13", "libcublas.so.12", "libcusparse.so.12"});
    if (!f.handle) {
      why = NotFound("cuSOLVER", sonames, f,
                     "install CUDA 12/13 or `pip install nvidia-cusolver-cu12` and put its lib folder on "
                     "LD_LIBRARY_PATH (or SPARSELLM_CUDA_LIBDIR)");
      return;
    }
    std::string missing;
    Sym(f.handle, "cusolverDnCreate", &api.Create, &missing);
    Sym(f.handle, "cusolverDnDestroy", &api.Destroy, &missing);
    Sym(f.handle, "cusolverDnSetStream", &api.SetStream, &missing);
    Sym(f.handle, "cusolverDnSpotrf_bufferSize", &api.PotrfBufferSize, &missing);
    Sym(f.handle, "cusolverDnSpotrf", &api.Potrf, &missing);
    Sym(f.handle, "cusolverDnSpotrs", &api.Potrs, &missing);
    Sym(f.handle, "cusolverDnSpotri_bufferSize", &api.PotriBufferSize, nullptr);
    Sym(f.handle, "cusolverDnSpotri", &api.Potri, nullptr);
    if (!api.PotriBufferSize || !api.Potri) api.PotriBufferSize = nullptr, api.Potri = nullptr;
    if (!missing.empty()) {
      why = "cuSOLVER at " + f.path + " lacks " + missing;
      return;
    }
    api.path = f.path;
    result = &api;
  });
  if (!result && reason) *reason = why;
  return result;
}

}  // namespace cuda
}  // namespace sparsellm

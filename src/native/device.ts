// Device selection for the solvers: CUDA when an addon built with CUDA (native/build-cuda, see docs/CUDA.md)
// finds a GPU and cuBLAS, else the CPU. The CPU addon (native/build) always exports cudaInfo(), which
// reports {available: false, reason: 'built without CUDA'}.
import { UserError } from '../errors.js';
import { addonPath, loadAddon, native, type NativeAddon } from './addon.js';
import type { SparseGptResult } from './sparsegpt.js';

export type DeviceRequest = 'cuda' | 'cpu' | 'auto';

export interface CudaDevice {
  name: string;
  /** bytes */
  memory: number;
  /** compute capability, e.g. "9.0" */
  cc: string;
}

export interface CudaInfo {
  /** the addon was compiled with CUDA */
  built: boolean;
  /** a GPU is present and usable */
  available: boolean;
  /** why not (absent when available) */
  reason?: string;
  devices: CudaDevice[];
  /** cuBLAS / cuSOLVER were found and loaded at run time (dlopen) */
  cublas: boolean;
  cusolver: boolean;
  cublasPath?: string;
  cublasReason?: string;
  cusolverPath?: string;
  cusolverReason?: string;
  /** e.g. 13000; driverVersion 0 means no NVIDIA driver */
  runtimeVersion?: number;
  driverVersion?: number;
}

/** The exports of an addon compiled with SPARSELLM_CUDA=ON (the CPU solvers are there too). */
export interface CudaAddon extends NativeAddon {
  cudaInfo(): CudaInfo;
  cudaHessianAccumulate(
    H: Float32Array, X: Float32Array, rows: number, cols: number, nOld: number, nNew: number,
  ): Promise<{ seconds: number; cublas: boolean }>;
  /** options: sparseGptBindingOptions() (src/native/sparsegpt.ts), the same object the CPU binding reads */
  cudaSparseGptPrune(W: Float32Array, rows: number, cols: number, H: Float32Array, options: object): Promise<SparseGptResult>;
  /** SparseLLM with its SparseGPT prunes on the GPU: the arguments of NativeAddon.sparsellmOpt / sparsellmLlama */
  cudaSparsellmOpt: NativeAddon['sparsellmOpt'];
  cudaSparsellmLlama: NativeAddon['sparsellmLlama'];
  cudaReluZUpdate(z: Float32Array, p: Float32Array, m: Float32Array, alpha: number, gamma: number): Promise<void>;
  cudaSiluZUpdate(
    z: Float32Array, p: Float32Array, m: Float32Array, s: Float32Array, alpha: number, gamma: number,
  ): Promise<void>;
}

/** native/build-cuda/Release/sparsellm_native.node when it was built (`npm run build:native:cuda`). */
export function cudaAddonPath(): string | undefined {
  return addonPath('build-cuda');
}

let cudaCached: CudaAddon | null | undefined;
let cudaLoadError: string | undefined;

/**
 * The CUDA build of the addon, or undefined when it is not built, fails to load, or SPARSELLM_DEVICE=cpu.
 * It is a separate copy of the addon; the CPU solvers keep using native().
 */
export function cudaAddon(): CudaAddon | undefined {
  if (process.env.SPARSELLM_DEVICE === 'cpu') return undefined;
  if (cudaCached === undefined) {
    cudaCached = null;
    const p = cudaAddonPath();
    if (p) {
      try {
        const addon = loadAddon<CudaAddon>(p);
        if (typeof addon.cudaInfo === 'function' && typeof addon.cudaSparseGptPrune === 'function') cudaCached = addon;
        else cudaLoadError = `${p} was not built with CUDA`;
      } catch (e) {
        cudaLoadError = `cannot load ${p}: ${(e as Error).message.split('\n')[0]}`;
      }
    }
  }
  return cudaCached ?? undefined;
}

/** What the CUDA build reports, or why there is none (never throws). */
export function cudaInfo(): CudaInfo {
  const none = (reason: string): CudaInfo => ({ built: false, available: false, reason, devices: [], cublas: false, cusolver: false });
  if (process.env.SPARSELLM_DEVICE === 'cpu') return none('SPARSELLM_DEVICE=cpu');
  const gpu = cudaAddon();
  if (gpu) return gpu.cudaInfo();
  let cpuInfo: CudaInfo | undefined;
  try {
    const f = native().cudaInfo;
    if (typeof f === 'function') cpuInfo = (f as () => CudaInfo)();
  } catch {
    // the CPU addon is not built: say so below
  }
  if (cpuInfo?.built) return cpuInfo; // native/build itself was built with CUDA
  return none(cudaLoadError ?? 'built without CUDA');
}

export interface ResolvedDevice {
  device: 'cuda' | 'cpu';
  /** one line for the log, e.g. "device: cpu (CUDA unavailable: built without CUDA)" */
  line: string;
  info: CudaInfo;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function describeGpu(info: CudaInfo): string {
  const d = info.devices[Number(process.env.SPARSELLM_CUDA_DEVICE ?? 0)] ?? info.devices[0];
  const gpu = d ? `${d.name}, ${gib(d.memory)}, cc ${d.cc}` : 'GPU';
  const libs = [
    info.cublas ? 'cuBLAS' : 'no cuBLAS: built-in GEMM kernels',
    info.cusolver ? 'cuSOLVER' : 'no cuSOLVER: Cholesky on the CPU',
  ];
  return `${gpu}; ${libs.join(', ')}`;
}

/**
 * Picks the device. 'auto' takes CUDA only when a CUDA build sees a GPU and cuBLAS; 'cuda' takes it whenever a
 * GPU is usable (without cuBLAS the built-in kernels run) and throws a UserError otherwise; 'cpu' always gives cpu.
 * `info` may be passed to decide from a given report (tests).
 */
export function resolveDevice(requested: DeviceRequest = 'auto', info: CudaInfo = cudaInfo()): ResolvedDevice {
  if (requested === 'cpu') return { device: 'cpu', line: 'device: cpu (requested)', info };
  if (requested === 'cuda') {
    if (!info.available)
      throw new UserError(
        `--device cuda: CUDA unavailable (${info.reason ?? 'unknown reason'}); see docs/CUDA.md or use --device cpu`,
      );
    return { device: 'cuda', line: `device: cuda (${describeGpu(info)})`, info };
  }
  if (requested !== 'auto') throw new UserError(`unknown device '${String(requested)}': use cuda, cpu or auto`);
  if (!info.available) return { device: 'cpu', line: `device: cpu (CUDA unavailable: ${info.reason ?? 'unknown reason'})`, info };
  if (!info.cublas)
    return { device: 'cpu', line: `device: cpu (GPU found but cuBLAS missing: ${info.cublasReason ?? 'not found'})`, info };
  return { device: 'cuda', line: `device: cuda (${describeGpu(info)})`, info };
}

/** The CUDA addon, or a UserError saying why it cannot be used. */
export function requireCuda(): CudaAddon {
  const gpu = cudaAddon();
  const info = cudaInfo();
  if (!gpu || !info.available)
    throw new UserError(`CUDA unavailable (${info.reason ?? 'unknown reason'}); see docs/CUDA.md or use --device cpu`);
  return gpu;
}

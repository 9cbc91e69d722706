#!/usr/bin/python3
"""Independent PyTorch (CPU) baseline of the reference SparseLLM / SparseGPT sequential pruning flow.

What it is
    A self-contained re-implementation, written from ../shared/reference/ALGORITHMS.md (no code copied
    or downloaded), of the flow of the published reference code, for an OPT-shaped decoder with random
    weights, so that sparsellm's whole-model prune (issue 16: "SparseLLM at most 0.15x the PyTorch time")
    can be timed against PyTorch on the same machine.  It is a *timing* baseline: the calibration tokens are
    random, the model is random, and nothing is evaluated beyond cheap sanity checks.

Which ALGORITHMS.md section each piece follows
    OptModel / OptDecoderLayer  -- an OPT-125m-like pre-LN decoder (do_layer_norm_before=True, ReLU FFN,
                                   causal attention, learned positions with offset 2), written in torch.nn.
    Catcher, calibrate()        -- §1.3 step 1 / §2.4 step 1 (layer-0 Catcher, batch size 1, one shared mask).
    SparseGPT.add_batch         -- §2.2 (H = (2/nseq) sum_j X_j X_j^T as a running average, fp32), plus the
                                   SparseLLM aux caching of §1.3 (fc1/fc2 inputs and outputs).
    SparseGPT.fasterprune       -- §2.3 (dead-column fix, 1 % damping, upper Cholesky of H^-1, 128-column
                                   blocks with one shared threshold, OBS column loop, lazy block update; N:M).
    sparsellm_ffn()             -- §1.4 (OPT FFN global loop: Xinv = pinverse(X) once; per epoch: W update for
                                   epochs > 0 [fc1 = (z - b1) Xinv, fc2 = 10 GD steps], fc2 H refresh from p,
                                   SparseGPT of fc1 then fc2, p ridge update, z ReLU case split in 500-row chunks).
    prune_sparsellm()           -- §1.3 step 2 (one dense hooked pass; local SparseGPT of k,v,q,out_proj;
                                   global FFN loop; re-run of the pruned block).
    prune_sparsegpt()           -- §2.4 (opt_sequential: one dense hooked pass, fasterprune of every linear
                                   with the H of that pass, free, re-run).

Deliberate differences from the reference (all documented choices)
    * CPU, fp32 throughout (the reference is fp16 on a GPU).  The reference's fp16 storage casts (Xinv, X, Y,
      z, p, the refitted weights) are dropped by default; --fp16-casts re-introduces them as round trips
      through float16 (matmuls stay fp32, so this emulates precision loss only, not fp16 speed).
    * Epochs: the reference's OPT path hard-codes opt_epochs = 4 (§1.4) -- the same as sparsellm's default
      (SPARSELLM_DEFAULTS.epochs = 4), so --epochs defaults to 4 and no adjustment was needed.
    * alpha = beta = gamma = 0.1 (the reference's hard-coded OPT values, §1.4), exposed as options.
    * The in-place damping quirk of §1.4 step 3 is kept (fc1's H accumulates 1 % damping per epoch).
    * pinverse(X): the reference's rcond 1e-15 is replaced by linalg.pinv's default cut-off max(d, N) * eps32
      (--pinv-rcond 1e-15 restores it).  With layer norms at weight 1 / bias 0, every post-LN token vector sums
      to zero, so X [d, N] has rank d - 1; in fp32 that singular value comes out ~1e-7 of the largest, 1e-15
      keeps and inverts it, and the fc1 refit diverges (FFN error inf after 3 epochs, NaN in block 2 at the
      small test size).  In exact arithmetic both cut-offs give the same min-norm solution; the cost is the same SVD.
    * OMP_WAIT_POLICY=passive by default (--omp-wait-policy): on this shared 2-core machine libgomp's spinning
      barriers made small ops at 2 threads ~70x slower than at 1 thread.
    * The p and z updates of the last epoch are computed although unused, as in the reference (§1.4 step 6).
    * The per-block FFN output error and the one-block SparseGPT comparison are *checks*, not part of the
      reference flow; their time is excluded from every phase and from "total" (reported as checkSeconds).

Phases (like sparsellm's report)
    calibration -- making the random token ids + the embedding prologue up to layer 0's input (Catcher).
    statistics  -- the hooked dense forward passes of each block (Hessian accumulation, aux caching).
    solve       -- fasterprune of the attention projections + SparseLLM's alternating FFN loop
                   (for --method sparsegpt: fasterprune of all six linears).
    rerun       -- the forward pass of the pruned block that produces the next block's inputs.

Usage (full size, matching `npm run bench -- --sparsellm-model`):
    /usr/bin/python3 bench/torch-reference/reference.py --method sparsellm --out /tmp/torch-sparsellm.json
    /usr/bin/python3 bench/torch-reference/reference.py --method sparsegpt --out /tmp/torch-sparsegpt.json
Small smoke test:
    /usr/bin/python3 bench/torch-reference/reference.py --hidden 256 --layers 2 --ffn 1024 --heads 4 \
        --nsamples 4 --seqlen 128
"""
import argparse
import json
import math
import os
import resource
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--method', choices=['sparsellm', 'sparsegpt'], default='sparsellm')
    ap.add_argument('--hidden', type=int, default=768)
    ap.add_argument('--layers', type=int, default=12)
    ap.add_argument('--ffn', type=int, default=None, help='FFN width (default 4 x hidden)')
    ap.add_argument('--heads', type=int, default=None, help='attention heads (default hidden / 64)')
    ap.add_argument('--vocab', type=int, default=512)
    ap.add_argument('--positions', type=int, default=2048, help='max_position_embeddings (OPT adds an offset of 2)')
    ap.add_argument('--nsamples', type=int, default=32)
    ap.add_argument('--seqlen', type=int, default=512)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--sparsity', type=float, default=None, help='default 0.7 (sparsellm) / 0.5 (sparsegpt)')
    ap.add_argument('--prunen', type=int, default=0, help='N:M -- number pruned per group (reference naming)')
    ap.add_argument('--prunem', type=int, default=0)
    ap.add_argument('--percdamp', type=float, default=0.01)
    ap.add_argument('--blocksize', type=int, default=128)
    ap.add_argument('--epochs', type=int, default=4, help='SparseLLM opt_epochs (reference OPT: 4)')
    ap.add_argument('--alpha', type=float, default=0.1)
    ap.add_argument('--beta', type=float, default=0.1)
    ap.add_argument('--gamma', type=float, default=0.1)
    ap.add_argument('--gd-steps', type=int, default=10, help='fc2 gradient steps per epoch > 0')
    ap.add_argument('--gd-lr', type=float, default=0.01)
    ap.add_argument('--pinv-rcond', type=float, default=None,
                    help="relative singular-value cut-off of pinverse(X); default max(d, N) * eps(fp32) (torch.linalg.pinv's "
                         "default). The reference's 1e-15 diverges on this model: with layer-norm weight 1 / bias 0 every "
                         "post-LN token vector sums to 0, so X has rank d-1 and fp32 SVD leaves that singular value at "
                         "~1e-7 of the largest instead of 0, which 1e-15 then inverts")
    ap.add_argument('--z-chunk', type=int, default=500, help='rows per chunk of the z update (no effect on the result)')
    ap.add_argument('--fp16-casts', action='store_true', help="emulate the reference's fp16 storage casts")
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--omp-wait-policy', choices=['passive', 'active', 'default'], default='passive',
                    help="OMP_WAIT_POLICY for torch's OpenMP pool (unless already set in the environment). passive: on "
                         "a machine whose cores are busy with other jobs, libgomp's spinning barriers made the "
                         "column loop of fasterprune ~70x slower at 2 threads than at 1; passive removes that")
    ap.add_argument('--no-check', action='store_true', help='skip the FFN output-error checks')
    ap.add_argument('--compare-block', type=int, default=0,
                    help='block on which SparseLLM is compared with one-shot SparseGPT of fc1/fc2 (-1: none)')
    ap.add_argument('--verbose', action='store_true', help='print every fasterprune call (time, error)')
    ap.add_argument('--out', default=None, help='also write the result JSON here')
    a = ap.parse_args()
    if a.ffn is None:
        a.ffn = 4 * a.hidden
    if a.heads is None:
        a.heads = max(1, a.hidden // 64)
    if a.sparsity is None:
        a.sparsity = 0.7 if a.method == 'sparsellm' else 0.5
    assert a.hidden % a.heads == 0, '--hidden must be a multiple of --heads'
    assert a.seqlen <= a.positions, '--seqlen must be <= --positions'
    return a


ARGS = parse_args()
# OpenBLAS (pthread build) reads its thread count at load time: set it before torch is imported.
for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[var] = str(ARGS.threads)
if ARGS.omp_wait_policy != 'default' and 'OMP_WAIT_POLICY' not in os.environ:
    os.environ['OMP_WAIT_POLICY'] = ARGS.omp_wait_policy.upper()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_flush_denormal(True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_now():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class PhaseTimer:
    """Wall and CPU seconds per phase, plus a 'total' clock; pause() stops both (used by the checks)."""

    def __init__(self):
        self.wall = {k: 0.0 for k in ('calibration', 'statistics', 'solve', 'rerun')}
        self.cpu = dict(self.wall)
        self.current = None
        self.paused_wall = 0.0
        self.paused_cpu = 0.0
        self.t0 = self.c0 = None

    def begin(self):
        self.t0, self.c0 = time.perf_counter(), cpu_now()

    def end(self):
        self.total_wall = time.perf_counter() - self.t0 - self.paused_wall
        self.total_cpu = cpu_now() - self.c0 - self.paused_cpu

    def start(self, name):
        assert self.current is None
        self.current = (name, time.perf_counter(), cpu_now())

    def stop(self):
        name, t, c = self.current
        self.wall[name] += time.perf_counter() - t
        self.cpu[name] += cpu_now() - c
        self.current = None
        return name

    class _Phase:
        def __init__(self, timer, name):
            self.timer, self.name = timer, name

        def __enter__(self):
            self.timer.start(self.name)

        def __exit__(self, *exc):
            self.timer.stop()

    class _Pause:
        def __init__(self, timer):
            self.timer = timer

        def __enter__(self):
            self.name = self.timer.stop() if self.timer.current else None
            self.t, self.c = time.perf_counter(), cpu_now()

        def __exit__(self, *exc):
            self.timer.paused_wall += time.perf_counter() - self.t
            self.timer.paused_cpu += cpu_now() - self.c
            if self.name:
                self.timer.start(self.name)

    def phase(self, name):
        return PhaseTimer._Phase(self, name)

    def pause(self):
        return PhaseTimer._Pause(self)


TIMER = PhaseTimer()


def f16(t):
    """The reference's fp16 storage cast, emulated as a round trip (only with --fp16-casts)."""
    return t.half().float() if ARGS.fp16_casts else t


# ---------------------------------------------------------------------------------------------------------
# The model: OPT-shaped, pre-LN, ReLU FFN, causal attention, learned positions with offset 2, fp32.
# ---------------------------------------------------------------------------------------------------------

class OptAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.scaling = self.head_dim ** -0.5
        # module order as in HF OPT, which fixes find_layers' order: k, v, q, out
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, h, attention_mask):
        b, t, d = h.shape
        shape = lambda x: x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q = shape(self.q_proj(h) * self.scaling)
        k = shape(self.k_proj(h))
        v = shape(self.v_proj(h))
        w = torch.matmul(q, k.transpose(-1, -2)) + attention_mask
        w = torch.max(w, torch.tensor(torch.finfo(w.dtype).min))
        w = torch.softmax(w, dim=-1)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(o)


class OptDecoderLayer(nn.Module):
    def __init__(self, d, ffn, heads):
        super().__init__()
        self.self_attn = OptAttention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, h, attention_mask):
        r = h
        h = self.self_attn(self.self_attn_layer_norm(h), attention_mask)  # do_layer_norm_before=True
        h = r + h
        r = h
        h = self.fc2(torch.relu(self.fc1(self.final_layer_norm(h))))
        return (r + h,)  # HF layers return a tuple


class OptModel(nn.Module):
    OFFSET = 2

    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.embed_positions = nn.Embedding(a.positions + self.OFFSET, a.hidden)
        self.layers = nn.ModuleList([OptDecoderLayer(a.hidden, a.ffn, a.heads) for _ in range(a.layers)])
        self.final_layer_norm = nn.LayerNorm(a.hidden)

    def forward(self, input_ids):
        b, t = input_ids.shape
        attn = torch.ones(b, t, dtype=torch.long)
        positions = (torch.cumsum(attn, dim=1) * attn).long() - 1 + self.OFFSET
        h = self.embed_tokens(input_ids) + self.embed_positions(positions)
        mask = torch.full((t, t), torch.finfo(h.dtype).min).triu(1)[None, None]  # 4D additive causal mask
        for layer in self.layers:
            h = layer(h, attention_mask=mask)[0]
        return self.final_layer_norm(h)


def make_model(a):
    torch.manual_seed(a.seed)
    m = OptModel(a)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.weight.normal_(0.0, 0.02)
                if getattr(mod, 'bias', None) is not None:
                    mod.bias.normal_(0.0, 0.02)
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
    return m.eval()


def find_layers(module):
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------------------------------------------------
# SparseGPT (§2.2, §2.3) with SparseLLM's aux caching (§1.3)
# ---------------------------------------------------------------------------------------------------------

class SparseGPT:
    def __init__(self, layer, cache_aux=False):
        self.layer = layer
        self.rows, self.columns = layer.weight.shape
        self.H = torch.zeros(self.columns, self.columns)
        self.nsamples = 0
        self.cache_aux = cache_aux
        self.inps, self.outs = [], []

    def add_batch(self, inp, out):
        if self.cache_aux:  # SparseLLM: keep every sample's input and output of fc1/fc2
            self.inps.append(inp[0].clone())
            self.outs.append(out[0].clone())
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        x = inp.reshape(-1, inp.shape[-1]).t()  # [columns, tokens]
        # running average: H = (2 / nseq) sum_j X_j X_j^T, in fp32
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        x = math.sqrt(2 / self.nsamples) * x.float()
        self.H += x.matmul(x.t())

    def fasterprune(self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01, name=''):
        tick = time.perf_counter()
        W = self.layer.weight.data.clone().float()
        H = self.H  # an alias: the dead fix and the damping modify self.H in place (SparseLLM keeps self.H)
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0
        damp = percdamp * torch.mean(torch.diag(H))
        idx = torch.arange(self.columns)
        H[idx, idx] += damp
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
        Hinv = torch.linalg.cholesky(Hinv, upper=True)  # upper Cholesky factor of H^-1

        Losses = torch.zeros(self.rows)
        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Losses1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            hd = torch.diag(Hinv1)
            if prunen == 0:  # one shared threshold per block, chosen from the already-updated W1
                tmp = W1 ** 2 / hd.reshape(1, -1) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]
                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:i + prunem] ** 2 / hd[i:i + prunem].reshape(1, -1) ** 2
                    mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
                q = w.clone()
                q[mask1[:, i]] = 0
                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d ** 2
                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            Losses += torch.sum(Losses1, 1) / 2
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])  # lazy batch update
        self.layer.weight.data = W.to(self.layer.weight.dtype)
        if ARGS.verbose:
            log(f'    fasterprune {name:<8} time {time.perf_counter() - tick:.2f} error {torch.sum(Losses).item():.4g}')

    def free(self):
        self.H = None
        self.inps, self.outs = [], []


# ---------------------------------------------------------------------------------------------------------
# Sequential driver (§1.3 / §2.4)
# ---------------------------------------------------------------------------------------------------------

class Catcher(nn.Module):
    def __init__(self, module, inps, cache):
        super().__init__()
        self.module, self.inps, self.cache = module, inps, cache

    def forward(self, inp, attention_mask):
        self.inps[self.cache['i']] = inp[0]
        self.cache['i'] += 1
        self.cache['attention_mask'] = attention_mask
        raise ValueError


@torch.no_grad()
def calibrate(model, a):
    """Random calibration windows (timing only) + the Catcher at layer 0 (§1.3 step 1)."""
    g = torch.Generator().manual_seed(a.seed)
    samples = [torch.randint(0, a.vocab, (1, a.seqlen), generator=g) for _ in range(a.nsamples)]
    inps = torch.zeros(a.nsamples, a.seqlen, a.hidden)
    cache = {'i': 0, 'attention_mask': None}
    layer0 = model.layers[0]
    model.layers[0] = Catcher(layer0, inps, cache)
    for s in samples:  # batch size 1, as in the reference
        try:
            model(s)
        except ValueError:
            pass
    model.layers[0] = layer0
    return inps, cache['attention_mask']


def run_layer(layer, inps, outs, mask):
    for j in range(inps.shape[0]):
        outs[j] = layer(inps[j].unsqueeze(0), attention_mask=mask)[0]


def ffn_error(X, Y, w1, b1, w2, b2):
    """||Y - Y_pruned||^2 / ||Y||^2 of the FFN (pre-residual) on the cached calibration inputs X [d, N]."""
    Yp = w2 @ torch.relu(w1 @ X + b1[:, None]) + b2[:, None]
    return (torch.sum((Y - Yp) ** 2) / torch.sum(Y ** 2)).item()


def hessian_from(p, nsamples):
    """§1.4 step 2: fc2's H rebuilt from the aux p [ffn, N] with add_batch's running average, per sequence."""
    seqs = p.t().reshape(nsamples, -1, p.shape[0])  # [nsamples, seqlen, ffn]
    H = torch.zeros(p.shape[0], p.shape[0])
    n = 0
    for j in range(nsamples):
        H *= n / (n + 1)
        n += 1
        x = math.sqrt(2 / n) * seqs[j].t().float()
        H += x.matmul(x.t())
    return H


def sparsellm_ffn(layer, gpts, a, on_epoch=None):
    """§1.4: the OPT FFN global loop of SparseLLM (alternating closed-form updates + SparseGPT each epoch)."""
    fc1, fc2 = layer.fc1, layer.fc2
    d, ffn = a.hidden, a.ffn
    # feature-major aux matrices [dim, N], built as stack(list).reshape(-1, dim).T
    X = f16(torch.stack(gpts['fc1'].inps).reshape(-1, d).t())
    z = f16(torch.stack(gpts['fc1'].outs).reshape(-1, ffn).t())
    p = f16(torch.stack(gpts['fc2'].inps).reshape(-1, ffn).t())
    Y = f16(torch.stack(gpts['fc2'].outs).reshape(-1, d).t())
    gpts['fc1'].inps = gpts['fc1'].outs = gpts['fc2'].inps = gpts['fc2'].outs = []
    alpha, beta, gamma = a.alpha, a.beta, a.gamma
    b1 = fc1.bias.data
    b2 = fc2.bias.data
    # [N, d], once per layer.  The reference calls torch.pinverse (rcond 1e-15); see --pinv-rcond for why the
    # default here is linalg.pinv's own cut-off max(d, N) * eps32.
    Xinv = f16(torch.linalg.pinv(X.float(), rtol=a.pinv_rcond) if a.pinv_rcond is not None
               else torch.linalg.pinv(X.float()))
    for opt_step in range(a.epochs):
        if opt_step > 0:
            # 1. W update: fc1 least squares (b1 fixed), written dense; fc2 by plain gradient descent
            fc1.weight.data = f16((z - b1[:, None]) @ Xinv)
            W2 = fc2.weight.data.clone().float().requires_grad_(True)
            pf = p.float()
            with torch.enable_grad():
                for _ in range(a.gd_steps):
                    loss = torch.mean((W2 @ pf + b2[:, None] - Y) ** 2)
                    loss.backward()
                    with torch.no_grad():
                        W2 -= a.gd_lr * W2.grad
                    W2.grad.zero_()
            del pf
            fc2.weight.data = f16(W2.detach())
            del W2
            # 2. H refresh for fc2 from p (fc1's H is never refreshed)
            gpts['fc2'].H.copy_(hessian_from(p, a.nsamples))
        # 3. prune fc1 then fc2 (mask from scratch each epoch, OBS compensation on top of the W update)
        gpts['fc1'].fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name='fc1')
        gpts['fc2'].fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name='fc2')
        if on_epoch:
            on_epoch(opt_step, X, Y)
        # 4. p (a_l) update, ridge closed form with the just-pruned W2
        W2 = fc2.weight.data
        m2 = beta * (W2.t() @ W2) + gamma * torch.eye(ffn)
        p = f16(torch.inverse(m2) @ (beta * (W2.t() @ (Y - b2[:, None])) + gamma * torch.relu(z)))
        del m2
        # 5. z update: elementwise ReLU case split, in row chunks
        W1 = fc1.weight.data
        znew = torch.empty_like(z)
        for r0 in range(0, ffn, a.z_chunk):
            r1 = min(r0 + a.z_chunk, ffn)
            m = W1[r0:r1] @ X + b1[r0:r1, None]
            pc = p[r0:r1]
            sol1 = (gamma * pc + alpha * m) / (gamma + alpha)
            z1 = torch.where(sol1 >= 0, sol1, torch.zeros_like(sol1))
            z2 = torch.where(m <= 0, m, torch.zeros_like(m))
            f1 = gamma * (pc - torch.relu(z1)) ** 2 + alpha * (z1 - m) ** 2
            f2 = gamma * (pc - torch.relu(z2)) ** 2 + alpha * (z2 - m) ** 2
            znew[r0:r1] = torch.where(f1 <= f2, z1, z2)
        z = f16(znew)
        del znew
    return X, Y


@torch.no_grad()
def prune_block(i, layer, inps, outs, mask, a, report):
    subset = find_layers(layer)  # k_proj, v_proj, q_proj, out_proj, fc1, fc2 (module order)
    aux = a.method == 'sparsellm'
    gpts = {name: SparseGPT(subset[name], cache_aux=aux and name in ('fc1', 'fc2')) for name in subset}
    check = not a.no_check
    xcache = []

    def hook(name):
        def f(_, inp, out):
            gpts[name].add_batch(inp[0].data, out.data)
            if check and not aux and name == 'fc1':  # the check's own X copy, untimed
                with TIMER.pause():
                    xcache.append(inp[0].data[0].clone())
        return f

    with TIMER.phase('statistics'):
        handles = [subset[name].register_forward_hook(hook(name)) for name in gpts]
        run_layer(layer, inps, outs, mask)  # dense pass; outputs discarded
        for h in handles:
            h.remove()

    # untimed: dense FFN weights (and, on the compare block, dense Hessians) for the checks
    compare = check and i == a.compare_block
    with TIMER.pause():
        dense = {k: getattr(layer, k).weight.data.clone() for k in ('fc1', 'fc2')} if check else None
        denseH = {k: gpts[k].H.clone() for k in ('fc1', 'fc2')} if compare else None
    epoch_errors = []

    def on_epoch(step, X, Y):
        if compare:
            with TIMER.pause():
                epoch_errors.append(ffn_error(X, Y, layer.fc1.weight.data, layer.fc1.bias.data,
                                              layer.fc2.weight.data, layer.fc2.bias.data))

    X = Y = None
    with TIMER.phase('solve'):
        if a.method == 'sparsellm':
            for name in gpts:
                if name not in ('fc1', 'fc2'):  # local SparseGPT of the attention projections
                    gpts[name].fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name=name)
            X, Y = sparsellm_ffn(layer, gpts, a, on_epoch)
        else:
            for name in gpts:
                gpts[name].fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name=name)
        for g in gpts.values():
            g.free()
        del gpts

    entry = {'block': i}
    if check:
        with TIMER.pause():
            t = time.perf_counter()
            b1, b2 = layer.fc1.bias.data, layer.fc2.bias.data
            if X is None:  # sparsegpt: X from the untimed copy, Y from the dense weights
                X = torch.stack(xcache).reshape(-1, a.hidden).t()
                Y = dense['fc2'] @ torch.relu(dense['fc1'] @ X + b1[:, None]) + b2[:, None]
            entry['ffnOutputError'] = ffn_error(X, Y, layer.fc1.weight.data, b1, layer.fc2.weight.data, b2)
            if compare:
                c = {}
                if a.method == 'sparsellm':
                    # one-shot SparseGPT of the dense fc1/fc2 with their dense-pass Hessians
                    l1, l2 = nn.Linear(a.hidden, a.ffn), nn.Linear(a.ffn, a.hidden)
                    l1.weight.data, l2.weight.data = dense['fc1'].clone(), dense['fc2'].clone()
                    g1, g2 = SparseGPT(l1), SparseGPT(l2)
                    g1.H, g2.H = denseH['fc1'], denseH['fc2']
                    g1.fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name='cmp-fc1')
                    g2.fasterprune(a.sparsity, a.prunen, a.prunem, a.blocksize, a.percdamp, name='cmp-fc2')
                    c['sparsegptOneShot'] = ffn_error(X, Y, l1.weight.data, b1, l2.weight.data, b2)
                    c['sparsellmPerEpoch'] = epoch_errors
                    c['sparsellmFinal'] = entry['ffnOutputError']
                    c['sparsellmNotWorse'] = c['sparsellmFinal'] <= c['sparsegptOneShot'] * (1 + 1e-6)
                entry['compare'] = c
            entry['checkSeconds'] = time.perf_counter() - t
            REPORT_CHECK['seconds'] += entry['checkSeconds']
        del X, Y, xcache, dense

    with TIMER.phase('rerun'):
        run_layer(layer, inps, outs, mask)
    report.append(entry)


REPORT_CHECK = {'seconds': 0.0}


def measured_sparsity(model):
    zeros = total = 0
    per = {'attention': [0, 0], 'ffn': [0, 0]}
    per_matrix = []
    finite = True
    for li, layer in enumerate(model.layers):
        for name, m in find_layers(layer).items():
            w = m.weight.data
            nz = int((w == 0).sum())
            kind = 'ffn' if name in ('fc1', 'fc2') else 'attention'
            per[kind][0] += nz
            per[kind][1] += w.numel()
            zeros += nz
            total += w.numel()
            per_matrix.append(nz / w.numel())
            finite = finite and bool(torch.isfinite(w).all()) and bool(torch.isfinite(m.bias.data).all())
    for p in model.parameters():
        finite = finite and bool(torch.isfinite(p).all())
    return (zeros / total, {k: v[0] / v[1] for k, v in per.items()}, min(per_matrix), max(per_matrix), finite)


def main():
    a = ARGS
    t = time.perf_counter()
    model = make_model(a)
    model_init = time.perf_counter() - t
    load0 = [round(x, 2) for x in os.getloadavg()]
    log(f'torch {torch.__version__}, {torch.get_num_threads()} threads; {a.method} {a.sparsity:g}; '
        f'd={a.hidden} L={a.layers} ffn={a.ffn} heads={a.heads}; {a.nsamples}x{a.seqlen}; load {load0}')

    TIMER.begin()
    with TIMER.phase('calibration'):
        inps, mask = calibrate(model, a)
        outs = torch.zeros_like(inps)
    report = []
    for i, layer in enumerate(model.layers):
        w0 = dict(TIMER.wall)
        prune_block(i, layer, inps, outs, mask, a, report)
        inps, outs = outs, inps
        e = report[-1]
        msg = ' '.join(f'{k} {TIMER.wall[k] - w0[k]:.2f}s' for k in ('statistics', 'solve', 'rerun'))
        if 'ffnOutputError' in e:
            msg += f'; FFN output error {e["ffnOutputError"]:.4e}'
        if e.get('compare'):
            c = e['compare']
            msg += (f'; one-shot SparseGPT of fc1/fc2 {c["sparsegptOneShot"]:.4e}, SparseLLM per epoch '
                    + ' '.join(f'{x:.4e}' for x in c['sparsellmPerEpoch'])) if c else ''
        log(f'block {i + 1}/{a.layers}: {msg}')
    TIMER.end()

    sp, sp_kind, sp_min, sp_max, finite = measured_sparsity(model)
    finite = finite and bool(torch.isfinite(inps).all())
    if a.prunen:
        target = a.prunen / a.prunem
        ok_sp = abs(sp - target) < 1e-3
    else:
        # SparseGPT's shared per-block threshold prunes int(numel*s)+1 (+ ties) per 128-column block
        target = a.sparsity
        ok_sp = target - 1e-6 <= sp_min and sp_max <= target + 2e-3
    ru = resource.getrusage(resource.RUSAGE_SELF)
    phases = {k: round(v, 3) for k, v in TIMER.wall.items()}
    phases['total'] = round(TIMER.total_wall, 3)
    result = {
        'method': a.method,
        'shape': {'hidden': a.hidden, 'layers': a.layers, 'ffn': a.ffn, 'heads': a.heads, 'vocab': a.vocab,
                  'positions': a.positions},
        'nsamples': a.nsamples,
        'seqlen': a.seqlen,
        'sparsity': a.sparsity if not a.prunen else f'{a.prunen}:{a.prunem}',
        'epochs': a.epochs if a.method == 'sparsellm' else None,
        'threads': a.threads,
        'ompWaitPolicy': os.environ.get('OMP_WAIT_POLICY', 'default'),
        'torch': torch.__version__,
        'seconds': phases,
        'cpuSeconds': round(TIMER.total_cpu, 3),
        'cpuSecondsByPhase': {k: round(v, 3) for k, v in TIMER.cpu.items()},
        'cpuSecondsProcess': round(ru.ru_utime + ru.ru_stime, 3),
        'maxRssMb': round(ru.ru_maxrss / 1024, 1),
        'sparsity_measured': round(sp, 6),
        'sparsityByKind': {k: round(v, 6) for k, v in sp_kind.items()},
        'sparsityPerMatrixRange': [round(sp_min, 6), round(sp_max, 6)],
        'checks': {'sparsityOk': ok_sp, 'finite': finite},
        'ffnOutputErrors': [e.get('ffnOutputError') for e in report],
        'compare': next((dict(block=e['block'], **e['compare']) for e in report if e.get('compare')), None),
        'hyper': {'alpha': a.alpha, 'beta': a.beta, 'gamma': a.gamma, 'percdamp': a.percdamp,
                  'blocksize': a.blocksize, 'gdSteps': a.gd_steps, 'gdLr': a.gd_lr, 'fp16Casts': a.fp16_casts},
        'modelInitSeconds': round(model_init, 3),
        'checkSeconds': round(REPORT_CHECK['seconds'], 3),
        'loadAverageAtStart': load0,
        'loadAverageAtEnd': [round(x, 2) for x in os.getloadavg()],
    }
    if not (ok_sp and finite):
        log(f'CHECK FAILED: sparsity {sp} (target {target}, per matrix {sp_min}..{sp_max}), finite {finite}')
    line = json.dumps(result)
    print(line, flush=True)
    if a.out:
        with open(a.out, 'w') as fh:
            fh.write(line + '\n')
    return 0 if ok_sp and finite else 1


if __name__ == '__main__':
    sys.exit(main())
